//! Bind: choose the pod's GPUs on the node kube-scheduler picked, check
//! them against every booking on that node, and create the Binding with the
//! assignment in its annotations (node and GPUs land on the pod in one
//! write).
//!
//! # Cost
//!
//! A bind reads the pod, reads and conditionally writes one per-node object,
//! and creates the Binding: four requests, none of which grows with the
//! cluster (no list of pods). Within one replica, binds for one node take
//! turns (a local lock), so they never race each other through the API;
//! only replicas do. The moment a bind arrives, its GPUs count as taken in
//! this replica's ledger (kube-scheduler's "assume"), so the filters of the
//! next pods, which kube-scheduler sends while the bind runs, see them.
//!
//! # Why no GPU is ever double-booked, with any number of replicas
//!
//! Each node's bookings live in one object, the node's `GpuNodeInventory`
//! (annotation `gpupack.io/reservations`, see [`crate::reservations`]):
//! one entry per pod that holds GPUs there, written before its Binding and
//! kept until the pod is gone. Bind decisions on a node are serialised
//! through optimistic concurrency on that object:
//!
//! 1. read the object (resourceVersion `rv`);
//! 2. keep every entry except those of pods that are gone (deleted or
//!    finished, which is final) and those whose bind never happened: an
//!    entry past its `expiresAt` whose pod this replica's watch does not
//!    show bound there is kept unless a read of that one pod, made now,
//!    shows it is not bound to the node;
//! 3. choose GPUs that fit on top of every kept entry and every pod the
//!    watch shows bound to the node;
//! 4. write the entry with a merge patch that carries `rv`: the API server
//!    refuses it with 409 if any other bind wrote the object since step 1,
//!    and we start again from step 1 (a bounded number of times);
//! 5. only then create the Binding, and only while the entry is well within
//!    its lifetime.
//!
//! Take two binds A and B on one node. Their step-4 writes are ordered by
//! the API server, say A's first. B's write succeeded, so the object B read
//! in step 1 already carried A's entry (otherwise A's write would lie
//! between B's read and B's write, and B would have got 409). B dropped it
//! in step 2 only if A's pod is gone (it holds nothing), or if A's entry had
//! expired and A's pod was not bound to the node when B read it. A creates
//! its Binding only before its entry expires less a margin (step 5), so by
//! the time the entry has expired the Binding exists and B's read sees it
//! (clocks of replicas are assumed within the margin). Either way B counted
//! A's GPUs. Entries stay while their pods run, so step 3 needs no list of
//! the node's pods; the watch's bound pods are added only for pods bound
//! before entries were kept this way.
//!
//! The device plugin owns the object's spec and never writes the
//! annotation; the extender writes only the annotation.
//!
//! # Why a container never receives another pod's GPUs
//!
//! kubelet does not tell the device plugin which pod it is admitting; the
//! plugin recognises a pod's containers by their requests (resource and
//! amount). Two pods on one node that kubelet has not admitted yet, whose
//! containers ask for the same amount but were assigned different GPUs,
//! could therefore be told apart only by guessing kubelet's admission order.
//! Step 3 never creates that situation (see [`crate::alike`]): an alike
//! pod shares a pending pod's devices when they have room, and otherwise
//! the bind waits (fails with an error kube-scheduler retries after its
//! backoff) until kubelet has admitted the other pod
//! ([`proto::pod::is_admitted`], as this replica's watch shows it).
//!
//! # Deadline
//!
//! A bind answers within [`BindConfig::deadline`], before kube-scheduler
//! gives up on it. A step that cannot finish in time abandons the bind:
//! the entry is withdrawn and no Binding is created afterwards. The Binding
//! itself is started only while the deadline leaves room for it, and its
//! outcome is the answer.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use placement::{Allocation, Ledger, PodKey, Policy, TypicalPods};
use proto::assignment::PodAssignment;
use proto::extender::ExtenderBindingArgs;
use proto::inventory::{GpuNodeInventory, NodeInventory};
use serde_json::json;

use crate::alike::{NotClear, Pending, choose_clear};
use crate::cluster_state::{ClusterState, tie_breaker};
use crate::demand::{DemandError, PodNeeds};
use crate::reservations::{self, Reservation, Reservations};
use crate::translate::{allocation_of, assignment_of, node_spec};

/// Seconds since the Unix epoch; reservations expire on this clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// Why a bind failed. kube-scheduler forgets the assumed pod and retries.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("pod {0} not found")]
    PodNotFound(String),
    #[error("pod {pod} has UID {found}, not {expected}: it was re-created")]
    UidMismatch {
        pod: String,
        expected: String,
        found: String,
    },
    #[error("pod {pod} is already bound to {node}")]
    AlreadyBound { pod: String, node: String },
    #[error("pod {pod}: {source}")]
    Demand {
        pod: String,
        #[source]
        source: DemandError,
    },
    #[error("node {0} has no GPU inventory")]
    NoInventory(String),
    #[error("pod {pod} no longer fits on node {node}: {reason}")]
    DoesNotFit {
        pod: String,
        node: String,
        reason: String,
    },
    #[error("node {node}: lost {attempts} races to reserve GPUs for pod {pod}; retry")]
    Contended {
        pod: String,
        node: String,
        attempts: u32,
    },
    #[error("pod {pod}: the reservation on {node} would expire before the Binding; retry")]
    Slow { pod: String, node: String },
    #[error(
        "pod {pod}: binding to {node} abandoned, {step} did not finish within the {deadline:?} \
         a bind may take; no Binding was created"
    )]
    Deadline {
        pod: String,
        node: String,
        step: &'static str,
        deadline: Duration,
    },
    #[error(
        "pod {pod}: node {node} is still admitting pod {other}, whose containers ask for the \
         same amount on other GPUs; retry once kubelet has admitted it"
    )]
    AwaitingAdmission {
        pod: String,
        node: String,
        other: String,
    },
    #[error(
        "pod {pod}: another bind of it is in flight on node {node} (by {holder}); retry once it has finished"
    )]
    InFlight {
        pod: String,
        node: String,
        holder: String,
    },
    #[error("Binding for pod {pod} was refused with 409 Conflict (already bound, or re-created)")]
    BindingConflict { pod: String },
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// A name no Kubernetes object can have; refused before any API call.
    #[error("{field} is {len} bytes long; Kubernetes names are at most {max}")]
    NameTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl BindError {
    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            BindError::PodNotFound(_) | BindError::UidMismatch { .. } => "pod_gone",
            BindError::AlreadyBound { .. } | BindError::BindingConflict { .. } => "conflict",
            BindError::Demand { .. } | BindError::NameTooLong { .. } => "bad_request",
            BindError::NoInventory(_) | BindError::DoesNotFit { .. } => "unfit",
            BindError::Contended { .. } | BindError::Slow { .. } | BindError::InFlight { .. } => {
                "contended"
            }
            BindError::AwaitingAdmission { .. } => "awaiting_admission",
            BindError::Deadline { .. } => "timeout",
            BindError::Api(_) => "api_error",
        }
    }
}

/// Settings of the binder.
#[derive(Clone, Debug)]
pub struct BindConfig {
    /// How long a reservation holds a pod's GPUs before its Binding exists
    /// (seconds); once bound, its entry holds until the pod is gone.
    pub reservation_ttl: u64,
    /// Seconds of a reservation's lifetime that must remain when the
    /// Binding is created.
    pub margin: u64,
    /// Attempts at the conditional reservation write.
    pub attempts: u32,
    /// Who writes reservations (e.g. the replica's pod name).
    pub holder: String,
    /// How long one bind may take, start to answer: below kube-scheduler's
    /// `httpTimeout` for the extender.
    pub deadline: Duration,
}

impl Default for BindConfig {
    fn default() -> Self {
        BindConfig {
            reservation_ttl: 60,
            margin: 20,
            attempts: 8,
            holder: "gpupack-scheduler-ext".into(),
            deadline: Duration::from_secs(4),
        }
    }
}

/// How long a bind waits, at most (and within half its deadline), for
/// kubelet to admit an alike pod on the node before refusing with
/// [`BindError::AwaitingAdmission`]; kubelet admits within tens of
/// milliseconds of seeing a bind.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// How often a bind waiting for an admission looks again.
const ADMISSION_POLL: Duration = Duration::from_millis(20);

/// The needs of pods filter sized recently, by UID, so that a bind can
/// assume the pod's GPUs before it has read anything from the API.
#[derive(Default)]
pub struct SizedPods {
    inner: Mutex<SizedInner>,
}

#[derive(Default)]
struct SizedInner {
    needs: HashMap<String, (u64, PodNeeds)>,
    seq: u64,
}

impl SizedPods {
    /// Entries kept; the oldest half goes when full.
    const CAPACITY: usize = 8192;

    pub fn remember(&self, uid: &str, needs: &PodNeeds) {
        if uid.is_empty() {
            return;
        }
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.seq += 1;
        let seq = s.seq;
        s.needs.insert(uid.to_string(), (seq, needs.clone()));
        if s.needs.len() > Self::CAPACITY {
            let cut = seq - (Self::CAPACITY as u64) / 2;
            s.needs.retain(|_, (at, _)| *at > cut);
        }
    }

    fn take(&self, uid: &str) -> Option<PodNeeds> {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.needs.remove(uid).map(|(_, n)| n)
    }
}

/// Creates Bindings, safely with other replicas doing the same.
#[derive(Clone)]
pub struct Binder {
    client: Client,
    state: Arc<RwLock<ClusterState>>,
    config: BindConfig,
    clock: Clock,
    models: Arc<dyn model_source::ModelLookup>,
    sized: Arc<SizedPods>,
    /// One lock per node: this replica's binds on a node take turns.
    node_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A successful bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// `None` when the pod asked for no GPUs.
    pub assignment: Option<PodAssignment>,
    /// Reservation attempts lost to other binds on the node.
    pub conflicts: u32,
}

/// Gives back an assumed holding unless the bind succeeded, also when the
/// bind is dropped half-way.
struct Assumption {
    state: Arc<RwLock<ClusterState>>,
    key: Option<PodKey>,
}

impl Assumption {
    fn keep(mut self) {
        self.key = None;
    }
}

impl Drop for Assumption {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .unassume(key);
        }
    }
}

impl Binder {
    pub fn new(
        client: Client,
        state: Arc<RwLock<ClusterState>>,
        config: BindConfig,
        clock: Clock,
    ) -> Binder {
        Binder {
            client,
            state,
            config,
            clock,
            models: Arc::new(model_source::Offline),
            sized: Arc::new(SizedPods::default()),
            node_locks: Arc::default(),
        }
    }

    /// Sizes models outside the catalog through `models` (the filter's).
    pub fn with_models(mut self, models: Arc<dyn model_source::ModelLookup>) -> Binder {
        self.models = models;
        self
    }

    /// Where filter leaves the needs of the pods it sized.
    pub fn sized_pods(&self) -> Arc<SizedPods> {
        self.sized.clone()
    }

    fn node_lock(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.node_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// Holds the pod's GPUs in this replica's ledger from now on.
    fn assume(&self, key: &PodKey, needs: &PodNeeds, node: &str) -> Option<Allocation> {
        let expires_at = (self.clock)() + self.config.reservation_ttl;
        self.state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .assume(key, needs, node, expires_at)
    }

    /// Binds the pod named in `args` to `args.node`.
    pub async fn bind(&self, args: &ExtenderBindingArgs) -> Result<Bound, BindError> {
        // Namespaces are DNS labels, pods and nodes DNS subdomains.
        for (field, name, max) in [
            ("PodNamespace", &args.pod_namespace, 63),
            ("PodName", &args.pod_name, 253),
            ("Node", &args.node, 253),
        ] {
            if name.len() > max {
                return Err(BindError::NameTooLong {
                    field,
                    len: name.len(),
                    max,
                });
            }
        }
        let deadline = Instant::now() + self.config.deadline;
        let ns = &args.pod_namespace;
        let who = format!("{ns}/{}", args.pod_name);
        let mut assumption = Assumption {
            state: self.state.clone(),
            key: None,
        };
        // Assume at once when filter sized this pod: before the first read.
        let mut assumed = None;
        if let Some(needs) = self.sized.take(&args.pod_uid) {
            let key = PodKey::new(ns, &args.pod_name, &args.pod_uid);
            assumed = self.assume(&key, &needs, &args.node);
            assumption.key = Some(key);
        }
        let late = |step: &'static str| BindError::Deadline {
            pod: format!("{ns}/{}", args.pod_name),
            node: args.node.clone(),
            step,
            deadline: self.config.deadline,
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = before(deadline, pods.get_opt(&args.pod_name))
            .await
            .map_err(|_| late("reading the pod"))??
            .ok_or_else(|| BindError::PodNotFound(who.clone()))?;
        let uid = pod.uid().unwrap_or_default();
        if !args.pod_uid.is_empty() && uid != args.pod_uid {
            return Err(BindError::UidMismatch {
                pod: who,
                expected: args.pod_uid.clone(),
                found: uid,
            });
        }
        if let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        {
            return Err(BindError::AlreadyBound { pod: who, node });
        }
        let needs = PodNeeds::from_pod_with(&pod, self.models.as_ref()).map_err(|source| {
            BindError::Demand {
                pod: who.clone(),
                source,
            }
        })?;
        if needs.is_empty() {
            drop(assumption);
            before(deadline, self.create_binding(&pods, args, &uid, None))
                .await
                .map_err(|_| late("the Binding"))??;
            return Ok(Bound {
                assignment: None,
                conflicts: 0,
            });
        }
        let key = PodKey::new(ns, &args.pod_name, &uid);
        if assumption.key.is_none() {
            assumed = self.assume(&key, &needs, &args.node);
            assumption.key = Some(key.clone());
        }
        let (policy, typical) = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            (s.policy(), s.typical().clone())
        };
        // This replica's binds on the node take turns.
        let lock = self.node_lock(&args.node);
        let _turn = before(deadline, lock.lock_owned())
            .await
            .map_err(|_| late("waiting for other binds on the node"))?;
        let inventories: Api<GpuNodeInventory> = Api::all(self.client.clone());
        let mut conflicts = 0;
        // Jittered, so that replicas racing for one node fall apart.
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(3))
            .with_max_delay(Duration::from_millis(40))
            .with_jitter()
            .without_max_times()
            .build();
        // Waiting for kubelet to admit an alike pod costs this bind a short
        // pause, not kube-scheduler's backoff of a second or more.
        let admission_wait_until = Instant::now()
            + ADMISSION_WAIT.min(deadline.saturating_duration_since(Instant::now()) / 2);
        let mut attempt = 0;
        let mut waited = false;
        while attempt < self.config.attempts {
            if attempt > 0 && !std::mem::take(&mut waited) {
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_millis(40))).await;
            }
            // Step 1: the per-node object and its resourceVersion.
            let inv = before(deadline, inventories.get_opt(&args.node))
                .await
                .map_err(|_| late("reading the node's GPU inventory"))??
                .ok_or_else(|| BindError::NoInventory(args.node.clone()))?;
            let rv = inv.resource_version().unwrap_or_default();
            let now = (self.clock)();
            // Step 2: drop what holds nothing.
            let mut bookings = self
                .bookings_on(&inv, &args.node, now, deadline, &late)
                .await?;
            // Another bind of this pod (kube-scheduler retrying after a
            // timeout, or another replica) holds an entry: replacing it
            // could leave the pod bound by that bind with GPUs no entry
            // holds. Its own nomination is the pod's to take.
            if let Some(other) = bookings
                .pods
                .get(&uid)
                .filter(|r| r.expires_at > now && r.victims.is_empty())
            {
                return Err(BindError::InFlight {
                    pod: who,
                    node: args.node.clone(),
                    holder: other.holder.clone(),
                });
            }
            bookings.pods.remove(&uid);
            // Step 3: choose on top of everything held.
            let held = self.held_on(&args.node, &bookings);
            let planned = plan_bind(
                &inv.spec,
                &held,
                assumed.as_ref(),
                &key,
                &needs,
                policy,
                &typical,
            );
            if let Err(NotClear::Awaiting(_)) = &planned
                && Instant::now() + ADMISSION_POLL < admission_wait_until
            {
                tokio::time::sleep(ADMISSION_POLL).await;
                waited = true;
                continue;
            }
            let alloc = planned.map_err(|e| match e {
                NotClear::Unfit(reason) => BindError::DoesNotFit {
                    pod: who.clone(),
                    node: args.node.clone(),
                    reason,
                },
                NotClear::Awaiting(other) => BindError::AwaitingAdmission {
                    pod: who.clone(),
                    node: args.node.clone(),
                    other,
                },
            })?;
            let mut assignment = assignment_of(&alloc, &inv.spec);
            needs.size_engines(&mut assignment, &inv.spec);
            // Step 4: the conditional write.
            let expires_at = now + self.config.reservation_ttl;
            let entry = Reservation {
                namespace: ns.clone(),
                name: args.pod_name.clone(),
                expires_at,
                holder: self.config.holder.clone(),
                assignment: assignment.clone(),
                victims: Vec::new(),
            };
            bookings.pods.insert(uid.clone(), entry.clone());
            let wrote = Instant::now();
            match before(
                deadline,
                write_reservations(&inventories, &args.node, &rv, &bookings),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(kube::Error::Api(e))) if e.code == 409 => {
                    conflicts += 1;
                    tracing::debug!(pod = %who, node = %args.node, attempt, "reservation lost a race; re-reading");
                    attempt += 1;
                    continue;
                }
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                    return Err(BindError::NoInventory(args.node.clone()));
                }
                Ok(Err(e)) => {
                    // The write may have landed before the error.
                    self.withdraw(&uid, &entry);
                    return Err(e.into());
                }
                Err(_) => {
                    self.withdraw(&uid, &entry);
                    return Err(late("reserving the GPUs"));
                }
            }
            // Step 5: the Binding, while the reservation and the deadline
            // leave room for it (about as long as the write took).
            let room = wrote.elapsed().max(Duration::from_millis(20));
            if Instant::now() + room >= deadline {
                self.withdraw(&uid, &entry);
                return Err(late("the Binding"));
            }
            if (self.clock)() + self.config.margin >= expires_at {
                self.withdraw(&uid, &entry);
                return Err(BindError::Slow {
                    pod: who,
                    node: args.node.clone(),
                });
            }
            if let Err(e) = self
                .create_binding(&pods, args, &uid, Some(&assignment))
                .await
            {
                // A refusal (4xx) is certain; a lost connection or a server
                // error may hide a Binding that was created: the pod says.
                let refused = matches!(&e, kube::Error::Api(s) if (400..500).contains(&s.code));
                let bound = if refused {
                    Some(false)
                } else {
                    self.bound_to(&pods, &args.pod_name, &uid, &args.node).await
                };
                if bound != Some(true) {
                    match bound {
                        Some(_) => self.withdraw(&uid, &entry),
                        // Unknown: the entry holds until the pod is seen
                        // unbound (then it goes) or bound (then it stays).
                        None => self.settle_later(pods.clone(), args, &uid, &entry),
                    }
                    return Err(match e {
                        kube::Error::Api(s) if s.code == 409 => {
                            BindError::BindingConflict { pod: who }
                        }
                        other => other.into(),
                    });
                }
                tracing::info!(pod = %who, node = %args.node, error = %e, "the Binding's answer was lost, but the pod is bound");
            }
            self.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(key, alloc, expires_at);
            assumption.keep();
            return Ok(Bound {
                assignment: Some(assignment),
                conflicts,
            });
        }
        Err(BindError::Contended {
            pod: who,
            node: args.node.clone(),
            attempts: self.config.attempts,
        })
    }

    /// The node's bookings that still hold (step 2): entries of pods gone,
    /// and expired entries whose pod is not bound to the node, dropped.
    async fn bookings_on(
        &self,
        inv: &GpuNodeInventory,
        node: &str,
        now: u64,
        deadline: Instant,
        late: &(dyn Fn(&'static str) -> BindError + Sync),
    ) -> Result<Reservations, BindError> {
        let mut bookings = Reservations::parse(
            inv.annotations()
                .get(reservations::ANNOTATION)
                .map(String::as_str),
        )
        .unwrap_or_else(|e| {
            tracing::warn!(%node, error = %e, "unreadable reservations; expiry bounds what they held, overwriting");
            Reservations::empty()
        });
        let doubtful = self.prune(&mut bookings, node, now);
        for (other, entry) in doubtful {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &entry.namespace);
            let found = before(deadline, api.get_opt(&entry.name))
                .await
                .map_err(|_| late("checking an expired reservation"))??;
            let bound_here = found.is_some_and(|p| {
                p.uid().as_deref() == Some(other.as_str())
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            });
            if bound_here {
                bookings.pods.insert(other, entry);
            }
        }
        Ok(bookings)
    }

    /// Books a preemptor's nomination on `node` (see [`crate::preemption`]):
    /// the GPUs its victims free, promised to it from now on. Refused when,
    /// by the node's bookings now, the nomination would over-commit a GPU
    /// even with the victims gone.
    pub async fn nominate(&self, uid: &str, entry: &Reservation) -> Result<(), BindError> {
        let node = entry.assignment.node.clone();
        let who = format!("{}/{}", entry.namespace, entry.name);
        let deadline = Instant::now() + self.config.deadline;
        let late = |step: &'static str| BindError::Deadline {
            pod: who.clone(),
            node: node.clone(),
            step,
            deadline: self.config.deadline,
        };
        let lock = self.node_lock(&node);
        let _turn = before(deadline, lock.lock_owned())
            .await
            .map_err(|_| late("waiting for other binds on the node"))?;
        let inventories: Api<GpuNodeInventory> = Api::all(self.client.clone());
        for _ in 0..self.config.attempts {
            let inv = before(deadline, inventories.get_opt(&node))
                .await
                .map_err(|_| late("reading the node's GPU inventory"))??
                .ok_or_else(|| BindError::NoInventory(node.clone()))?;
            let rv = inv.resource_version().unwrap_or_default();
            let now = (self.clock)();
            let mut bookings = self.bookings_on(&inv, &node, now, deadline, &late).await?;
            bookings.pods.insert(uid.to_string(), entry.clone());
            let on_node = self.held_on(&node, &bookings);
            ledger_of(&inv.spec, &on_node.held, "").map_err(|reason| BindError::DoesNotFit {
                pod: who.clone(),
                node: node.clone(),
                reason,
            })?;
            match before(
                deadline,
                write_reservations(&inventories, &node, &rv, &bookings),
            )
            .await
            .map_err(|_| late("writing the nomination"))?
            {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BindError::Contended {
            pod: who,
            node,
            attempts: self.config.attempts,
        })
    }

    /// Withdraws a nomination this replica wrote (the preemption failed).
    pub fn withdraw_nomination(&self, uid: &str, entry: &Reservation) {
        self.withdraw(uid, entry);
    }

    /// Step 2 without the API: drops entries of pods the watch saw gone
    /// (final) and entries of other nodes; returns, removed, the expired
    /// entries whose pod the watch does not show bound to `node`, for the
    /// caller to check against the API.
    fn prune(
        &self,
        bookings: &mut Reservations,
        node: &str,
        now: u64,
    ) -> Vec<(String, Reservation)> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut doubtful = Vec::new();
        for (uid, entry) in std::mem::take(&mut bookings.pods) {
            if s.is_gone(&uid) || entry.assignment.node != node {
                continue;
            }
            if entry.expires_at > now || s.is_bound_on(&uid, node) {
                bookings.pods.insert(uid, entry);
            } else {
                doubtful.push((uid, entry));
            }
        }
        doubtful
    }

    /// What the node holds for choosing: every booking and every pod the
    /// watch shows bound there; which of them kubelet has not admitted; and
    /// the victims of other pods' nominations, whose GPUs are promised.
    fn held_on(&self, node: &str, bookings: &Reservations) -> HeldOnNode {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(PodKey, PodAssignment)> = bookings
            .pods
            .iter()
            .map(|(uid, r)| {
                (
                    PodKey::new(&r.namespace, &r.name, uid),
                    r.assignment.clone(),
                )
            })
            .collect();
        for (key, a) in s.bound_on(node) {
            if !bookings.pods.contains_key(&key.uid) {
                held.push((key, a));
            }
        }
        let displaced: HashSet<String> = bookings
            .pods
            .values()
            .flat_map(|r| r.victims.iter().cloned())
            .collect();
        held.retain(|(k, _)| !displaced.contains(&k.uid));
        let pending = held
            .iter()
            .filter(|(k, _)| !s.is_admitted(&k.uid))
            .map(|(k, a)| Pending {
                who: k.to_string(),
                assignment: a.clone(),
            })
            .collect();
        HeldOnNode { held, pending }
    }

    /// After a Binding whose outcome is unknown: reads the pod until it
    /// tells, with backoff for up to about a minute, and withdraws the
    /// entry once the pod shows unbound. Until then the entry holds its
    /// GPUs (and, if no read ever tells, until it expires and step 2 of a
    /// later bind checks the pod).
    fn settle_later(
        &self,
        pods: Api<Pod>,
        args: &ExtenderBindingArgs,
        uid: &str,
        entry: &Reservation,
    ) {
        let binder = self.clone();
        let (name, node) = (args.pod_name.clone(), args.node.clone());
        let (uid, entry) = (uid.to_string(), entry.clone());
        tokio::spawn(async move {
            let mut pauses = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(10)
                .with_jitter()
                .build();
            loop {
                match binder.bound_to(&pods, &name, &uid, &node).await {
                    Some(true) => return,
                    Some(false) => {
                        binder.release_reservation(&uid, &entry).await;
                        return;
                    }
                    None => match pauses.next() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return,
                    },
                }
            }
        });
    }

    /// Whether the pod is bound to `node` now, by one read within a few
    /// seconds; `None` when the read does not tell.
    async fn bound_to(&self, pods: &Api<Pod>, name: &str, uid: &str, node: &str) -> Option<bool> {
        let read = tokio::time::timeout(Duration::from_secs(2), pods.get_opt(name)).await;
        let found = read.ok()?.ok()?;
        Some(found.is_some_and(|p| {
            p.uid().as_deref() == Some(uid)
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        }))
    }

    async fn create_binding(
        &self,
        pods: &Api<Pod>,
        args: &ExtenderBindingArgs,
        uid: &str,
        assignment: Option<&PodAssignment>,
    ) -> Result<(), kube::Error> {
        let binding = proto::pod::binding(
            &args.pod_namespace,
            &args.pod_name,
            uid,
            &args.node,
            assignment,
        );
        let _: kube::core::Status = pods
            .create_subresource("binding", &args.pod_name, &PostParams::default(), &binding)
            .await?;
        Ok(())
    }

    /// Removes a pod's reservation after a failed bind, in the background
    /// (the answer does not wait for it). Best effort: an entry left behind
    /// expires, and the next bind on the node drops it.
    /// Only the entry this bind wrote goes: a later bind of the same pod
    /// (kube-scheduler retrying) may have replaced it by then.
    fn withdraw(&self, uid: &str, entry: &Reservation) {
        let binder = self.clone();
        let (uid, entry) = (uid.to_string(), entry.clone());
        tokio::spawn(async move { binder.release_reservation(&uid, &entry).await });
    }

    async fn release_reservation(&self, uid: &str, ours: &Reservation) {
        let node = ours.assignment.node.as_str();
        let lock = self.node_lock(node);
        let _turn = lock.lock().await;
        let inventories: Api<GpuNodeInventory> = Api::all(self.client.clone());
        for _ in 0..self.config.attempts {
            let Ok(Some(inv)) = inventories.get_opt(node).await else {
                return;
            };
            let Ok(mut r) = Reservations::parse(
                inv.annotations()
                    .get(reservations::ANNOTATION)
                    .map(String::as_str),
            ) else {
                return;
            };
            if r.pods.get(uid) != Some(ours) {
                return;
            }
            r.pods.remove(uid);
            {
                let s = self.state.read().unwrap_or_else(|e| e.into_inner());
                r.pods.retain(|u, _| !s.is_gone(u));
            }
            let rv = inv.resource_version().unwrap_or_default();
            match write_reservations(&inventories, node, &rv, &r).await {
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(node, uid, error = %e, "could not remove a reservation; it will expire");
                    return;
                }
                Ok(()) => return,
            }
        }
    }
}

/// What a node holds, for choosing GPUs there.
#[derive(Clone, Debug, Default)]
pub struct HeldOnNode {
    /// Bookings and bound pods, less the victims of nominations (whose GPUs
    /// the nominations hold instead).
    pub held: Vec<(PodKey, PodAssignment)>,
    /// Those kubelet has not admitted yet.
    pub pending: Vec<Pending>,
}

/// `work`, unless `deadline` passes first.
async fn before<T>(
    deadline: Instant,
    work: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout_at(deadline.into(), work).await
}

/// The conditional write: a merge patch carrying the resourceVersion read,
/// which the API server treats as a precondition (409 when it moved).
async fn write_reservations(
    api: &Api<GpuNodeInventory>,
    node: &str,
    rv: &str,
    r: &Reservations,
) -> Result<(), kube::Error> {
    let value = if r.pods.is_empty() {
        serde_json::Value::Null
    } else {
        json!(r.to_json())
    };
    let patch = json!({
        "metadata": {
            "resourceVersion": rv,
            "annotations": { reservations::ANNOTATION: value }
        }
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Chooses the pod's GPUs on a node given everything held there (bookings
/// and bound pods of other pods) and which of those kubelet has not
/// admitted, by the rule of [`crate::alike`]. `preferred` is what this
/// replica assumed when the bind arrived. Pure.
#[allow(clippy::too_many_arguments)]
pub fn plan_bind(
    inv: &NodeInventory,
    on_node: &HeldOnNode,
    preferred: Option<&Allocation>,
    pod: &PodKey,
    needs: &PodNeeds,
    policy: Policy,
    typical: &TypicalPods,
) -> Result<Allocation, NotClear> {
    let (ledger, id) = ledger_of(inv, &on_node.held, &pod.uid).map_err(NotClear::Unfit)?;
    let demand = needs.demand(inv.memory_unit_bytes);
    let prep = ledger.prepare(&demand);
    let scorer = ledger.scorer(policy, typical);
    choose_clear(
        &ledger,
        id,
        &prep,
        &scorer,
        inv,
        &on_node.pending,
        preferred,
        &|a: &mut PodAssignment| needs.size_engines(a, inv),
        &mut tie_breaker(pod),
    )
}

/// A one-node ledger holding `held`, less the pod `except`.
fn ledger_of(
    inv: &NodeInventory,
    held: &[(PodKey, PodAssignment)],
    except: &str,
) -> Result<(Ledger, placement::NodeId), String> {
    let mut ledger = Ledger::new();
    let (id, _) = ledger
        .upsert_node(&node_spec(inv))
        .map_err(|e| e.to_string())?;
    for (key, a) in held {
        if key.uid == except {
            continue;
        }
        let alloc = allocation_of(a, inv)?;
        // `adopt` refuses what would over-commit a GPU; that would mean the
        // node is already over-booked, and nothing more may go there.
        ledger
            .adopt(key.clone(), alloc)
            .map_err(|e| format!("node is over-committed ({key} cannot be accounted: {e})"))?;
    }
    Ok((ledger, id))
}
