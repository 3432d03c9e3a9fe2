//! Bind: choose the pod's GPUs on the node kube-scheduler picked, re-check
//! them against the latest state in the API, and create the Binding with
//! the assignment in its annotations (node and GPUs land on the pod in one
//! write).
//!
//! # Why no GPU is ever double-booked, with any number of replicas
//!
//! The watch-fed ledger can lag: a pod another replica bound a moment ago
//! may not be in it yet. Re-reading the node's pods at bind time is not
//! enough either, since two replicas can both read before either binds.
//! So each node's bind decisions are serialised through optimistic
//! concurrency on one object per node, its `GpuNodeInventory`:
//!
//! 1. read the inventory object (resourceVersion `rv`);
//! 2. list the node's pods from the API (a consistent read, after step 1);
//! 3. account bound assignments ∪ unexpired pending reservations (from the
//!    object's `gpupack.io/reservations` annotation), and choose GPUs that
//!    fit on top of both;
//! 4. write the reservation with a merge patch that carries `rv`: the API
//!    server refuses it with 409 if any other bind wrote the object since
//!    step 1, and we start again from step 1 (a bounded number of times);
//! 5. only then create the Binding.
//!
//! Take two binds A and B on one node. Their step-4 writes are ordered by
//! the API server, say A's first. B's write succeeded, so the object B read
//! in step 1 already carried A's reservation (otherwise A's write would lie
//! between B's read and B's write, and B would have got 409). In step 3 B
//! either still saw that reservation or pruned it because A's pod was in
//! B's step-2 list, bound with its assignment; either way B counted A's
//! GPUs. A pod bound by A after its reservation expired would escape this,
//! so A checks before step 5 that its reservation is still well within its
//! lifetime and gives up otherwise (the TTL is tens of seconds, a bind
//! takes milliseconds; clocks of replicas are assumed within the margin).
//!
//! The per-node object is written once per bind; binds on different nodes
//! never contend. The device plugin owns the object's spec and never writes
//! the annotation.
//!
//! # Why a container never receives another pod's GPUs
//!
//! kubelet does not tell the device plugin which pod it is admitting; the
//! plugin recognises a pod's containers by their requests (resource and
//! amount). Two pods on one node that kubelet has not admitted yet, whose
//! containers ask for the same amount but were assigned different GPUs,
//! could therefore be told apart only by guessing kubelet's admission order.
//! Step 3 refuses to create that situation: a bind waits (fails with an
//! error kube-scheduler retries after its backoff) while such a pod is
//! still waiting for kubelet on the node, unless the two assignments are
//! interchangeable (same GPUs, same sizes). kubelet has admitted a pod once
//! it writes any status of its own (see [`admitted_by_kubelet`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use placement::{Allocation, Ledger, PodKey, Policy, TypicalPods};
use proto::assignment::PodAssignment;
use proto::extender::ExtenderBindingArgs;
use proto::inventory::{GpuNodeInventory, NodeInventory};
use serde_json::json;

use crate::cluster_state::ClusterState;
use crate::demand::{DemandError, PodNeeds};
use crate::reservations::{self, Reservation, Reservations};
use crate::translate::{Held, allocation_of, assignment_of, held, node_spec, pod_key};

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
        "pod {pod}: node {node} is still admitting pod {other}, whose containers ask for the \
         same amount on other GPUs; retry once kubelet has admitted it"
    )]
    AwaitingAdmission {
        pod: String,
        node: String,
        other: String,
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
            BindError::Contended { .. }
            | BindError::Slow { .. }
            | BindError::AwaitingAdmission { .. } => "contended",
            BindError::Api(_) => "api_error",
        }
    }
}

/// Settings of the binder.
#[derive(Clone, Debug)]
pub struct BindConfig {
    /// How long a reservation holds (seconds).
    pub reservation_ttl: u64,
    /// Seconds of a reservation's lifetime that must remain when the
    /// Binding is created.
    pub margin: u64,
    /// Attempts at the conditional reservation write.
    pub attempts: u32,
    /// Who writes reservations (e.g. the replica's pod name).
    pub holder: String,
}

impl Default for BindConfig {
    fn default() -> Self {
        BindConfig {
            reservation_ttl: 60,
            margin: 20,
            attempts: 8,
            holder: "gpupack-scheduler-ext".into(),
        }
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
}

/// A successful bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// `None` when the pod asked for no GPUs.
    pub assignment: Option<PodAssignment>,
    /// Reservation attempts lost to other binds on the node.
    pub conflicts: u32,
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
        }
    }

    /// Sizes models outside the catalog through `models` (the filter's).
    pub fn with_models(mut self, models: Arc<dyn model_source::ModelLookup>) -> Binder {
        self.models = models;
        self
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
        let ns = &args.pod_namespace;
        let who = format!("{ns}/{}", args.pod_name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = pods
            .get_opt(&args.pod_name)
            .await?
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
            self.create_binding(&pods, args, &uid, None).await?;
            return Ok(Bound {
                assignment: None,
                conflicts: 0,
            });
        }
        let key = PodKey::new(ns, &args.pod_name, &uid);
        let (policy, typical) = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            (s.policy(), s.typical().clone())
        };
        let inventories: Api<GpuNodeInventory> = Api::all(self.client.clone());
        let mut conflicts = 0;
        // Jittered, so that replicas racing for one node fall apart.
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(3))
            .with_max_delay(Duration::from_millis(40))
            .with_jitter()
            .without_max_times()
            .build();
        for attempt in 0..self.config.attempts {
            if attempt > 0 {
                tokio::time::sleep(pauses.next().unwrap_or(Duration::from_millis(40))).await;
            }
            // Step 1: the per-node object and its resourceVersion.
            let inv = inventories
                .get_opt(&args.node)
                .await?
                .ok_or_else(|| BindError::NoInventory(args.node.clone()))?;
            let rv = inv.resource_version().unwrap_or_default();
            // Step 2: the node's pods, read after the object.
            let (on_node, awaiting_kubelet) = pods_on_node(&self.client, &args.node).await?;
            // Step 3: account both, choose.
            let now = (self.clock)();
            let mut reservations = Reservations::parse(
                inv.annotations()
                    .get(reservations::ANNOTATION)
                    .map(String::as_str),
            )
            .unwrap_or_else(|e| {
                tracing::warn!(node = %args.node, error = %e, "unreadable reservations; expiry bounds what they held, overwriting");
                Reservations::empty()
            });
            // Entries of pods deleted or finished hold nothing. Bound pods
            // are told by the list read after the object (`on_node`), never
            // by the watch, which may be newer than that list: an entry
            // pruned for a pod the list still shows unbound would escape
            // both the reservations and the pods awaiting admission.
            let settled: std::collections::HashSet<String> = {
                let s = self.state.read().unwrap_or_else(|e| e.into_inner());
                reservations
                    .pods
                    .keys()
                    .filter(|u| s.is_gone(u))
                    .cloned()
                    .collect()
            };
            reservations.prune(now, |u| {
                u == uid || settled.contains(u) || on_node.iter().any(|(k, _)| k.uid == u)
            });
            let alloc = plan_bind(
                &inv.spec,
                &on_node,
                &reservations,
                now,
                &key,
                &needs,
                policy,
                &typical,
            )
            .map_err(|reason| BindError::DoesNotFit {
                pod: who.clone(),
                node: args.node.clone(),
                reason,
            })?;
            let assignment = assignment_of(&alloc, &inv.spec);
            let pending_others = awaiting_kubelet
                .iter()
                .map(|(who, a)| (who.clone(), a))
                .chain(
                    reservations
                        .live(now)
                        .filter(|(u, _)| **u != uid)
                        .map(|(_, r)| (format!("{}/{}", r.namespace, r.name), &r.assignment)),
                );
            if let Some(other) = confusable_with(&assignment, pending_others) {
                return Err(BindError::AwaitingAdmission {
                    pod: who,
                    node: args.node.clone(),
                    other,
                });
            }
            // Step 4: the conditional write.
            let expires_at = now + self.config.reservation_ttl;
            reservations.pods.insert(
                uid.clone(),
                Reservation {
                    namespace: ns.clone(),
                    name: args.pod_name.clone(),
                    expires_at,
                    holder: self.config.holder.clone(),
                    assignment: assignment.clone(),
                },
            );
            match write_reservations(&inventories, &args.node, &rv, &reservations).await {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    conflicts += 1;
                    tracing::debug!(pod = %who, node = %args.node, attempt, "reservation lost a race; re-reading");
                    continue;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Err(BindError::NoInventory(args.node.clone()));
                }
                Err(e) => return Err(e.into()),
            }
            // The reservation must outlive the Binding by a margin.
            if (self.clock)() + self.config.margin >= expires_at {
                self.release_reservation(&args.node, &uid).await;
                return Err(BindError::Slow {
                    pod: who,
                    node: args.node.clone(),
                });
            }
            // Step 5.
            if let Err(e) = self
                .create_binding(&pods, args, &uid, Some(&assignment))
                .await
            {
                self.release_reservation(&args.node, &uid).await;
                return Err(match e {
                    kube::Error::Api(s) if s.code == 409 => BindError::BindingConflict { pod: who },
                    other => other.into(),
                });
            }
            self.state
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(key, alloc, expires_at);
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

    /// Removes a pod's reservation after a failed bind. Best effort: if it
    /// cannot be removed, it expires.
    async fn release_reservation(&self, node: &str, uid: &str) {
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
            if r.pods.remove(uid).is_none() {
                return;
            }
            let settled: std::collections::HashSet<String> = {
                let s = self.state.read().unwrap_or_else(|e| e.into_inner());
                r.pods.keys().filter(|u| s.is_gone(u)).cloned().collect()
            };
            r.prune((self.clock)(), |u| settled.contains(u));
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

/// A node's pods that kubelet has not admitted yet, with their assignments.
type AwaitingKubelet = Vec<(String, PodAssignment)>;

/// Bound pods on a node with their assignments, freshly listed; and, of
/// those, the ones kubelet has not admitted yet.
async fn pods_on_node(
    client: &Client,
    node: &str,
) -> Result<(Vec<(PodKey, PodAssignment)>, AwaitingKubelet), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut bound = Vec::new();
    let mut awaiting = Vec::new();
    for p in &list.items {
        match held(p) {
            Held::Assignment(a) if a.node == node => {
                if !admitted_by_kubelet(p) {
                    let ns = p.namespace().unwrap_or_default();
                    awaiting.push((format!("{ns}/{}", p.name_any()), a.clone()));
                }
                if let Some(k) = pod_key(p) {
                    bound.push((k, a));
                }
            }
            Held::Malformed(e) => {
                tracing::warn!(pod = %p.name_any(), error = %e, "bound pod with an unreadable assignment holds nothing");
            }
            _ => {}
        }
    }
    Ok((bound, awaiting))
}

/// Whether kubelet has admitted a bound pod, and so has already asked the
/// device plugin for its devices. Until admission only the scheduler has
/// written the pod's status (the `PodScheduled` condition); kubelet's first
/// status write after admission adds container statuses, its own
/// conditions (`Initialized`, `PodReadyToStartContainers`, ...) or a phase.
pub fn admitted_by_kubelet(pod: &Pod) -> bool {
    let Some(s) = &pod.status else {
        return false;
    };
    s.phase.as_deref().is_some_and(|p| p != "Pending")
        || s.container_statuses.as_ref().is_some_and(|c| !c.is_empty())
        || s.init_container_statuses
            .as_ref()
            .is_some_and(|c| !c.is_empty())
        || s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ != "PodScheduled")
}

/// The first of `pending` (pods on the node kubelet has not admitted) that
/// the device plugin could mistake for `ours`: a container asking for the
/// same number of GPUs, the same total memory, or the same MIG profiles,
/// on GPUs that differ. Identical container assignments (same GPUs, same
/// sizes) are interchangeable and never confused.
pub fn confusable_with<'a>(
    ours: &PodAssignment,
    pending: impl IntoIterator<Item = (String, &'a PodAssignment)>,
) -> Option<String> {
    pending.into_iter().find_map(|(who, other)| {
        ours.containers
            .iter()
            .any(|c| other.containers.iter().any(|o| c.confusable_with(o)))
            .then_some(who)
    })
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

/// Chooses the pod's GPUs on a node given everything held there: bound
/// assignments and live reservations of other pods. Pure.
#[allow(clippy::too_many_arguments)]
pub fn plan_bind(
    inv: &NodeInventory,
    bound: &[(PodKey, PodAssignment)],
    reservations: &Reservations,
    now: u64,
    pod: &PodKey,
    needs: &PodNeeds,
    policy: Policy,
    typical: &TypicalPods,
) -> Result<Allocation, String> {
    let mut ledger = Ledger::new();
    let (id, _) = ledger
        .upsert_node(&node_spec(inv))
        .map_err(|e| e.to_string())?;
    let held = bound.iter().map(|(k, a)| (k.clone(), a)).chain(
        reservations
            .live(now)
            .filter(|(uid, _)| **uid != pod.uid)
            .map(|(uid, r)| (PodKey::new(&r.namespace, &r.name, uid), &r.assignment)),
    );
    for (key, a) in held {
        if key.uid == pod.uid {
            continue;
        }
        let alloc = allocation_of(a, inv)?;
        // `adopt` refuses what would over-commit a GPU; that would mean the
        // node is already over-booked, and nothing more may go there.
        ledger
            .adopt(key.clone(), alloc)
            .map_err(|e| format!("node is over-committed ({key} cannot be accounted: {e})"))?;
    }
    let demand = needs.demand(inv.memory_unit_bytes);
    let prep = ledger.prepare(&demand);
    let scorer = ledger.scorer(policy, typical);
    ledger
        .choose(id, &prep, &scorer, &mut rand::rng())
        .map_err(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodStatus};
    use proto::assignment::{AssignedGpu, AssignedMig, ContainerAssignment};

    fn gpus(list: &[(&str, u64)]) -> PodAssignment {
        PodAssignment {
            version: proto::assignment::VERSION.into(),
            node: "n".into(),
            containers: vec![ContainerAssignment {
                name: "server".into(),
                gpus: list
                    .iter()
                    .enumerate()
                    .map(|(i, (u, gib))| AssignedGpu {
                        uuid: format!("GPU-{u}"),
                        index: i as u32,
                        memory_bytes: gib << 30,
                    })
                    .collect(),
                mig: vec![],
            }],
        }
    }

    fn mig(uuid: &str, profile: &str) -> PodAssignment {
        PodAssignment {
            version: proto::assignment::VERSION.into(),
            node: "n".into(),
            containers: vec![ContainerAssignment {
                name: "server".into(),
                gpus: vec![],
                mig: vec![AssignedMig {
                    uuid: format!("MIG-{uuid}"),
                    parent_uuid: "GPU-p".into(),
                    profile: profile.into(),
                }],
            }],
        }
    }

    fn first(ours: &PodAssignment, others: &[PodAssignment]) -> Option<String> {
        confusable_with(
            ours,
            others
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("ns/p{i}"), a)),
        )
    }

    #[test]
    fn same_request_on_other_gpus_is_confusable() {
        let ours = gpus(&[("a", 20)]);
        assert_eq!(first(&ours, &[gpus(&[("b", 20)])]), Some("ns/p0".into()));
        // Same GPU count, other memory: the slice request alone is alike.
        assert_eq!(first(&ours, &[gpus(&[("b", 30)])]), Some("ns/p0".into()));
        // Same total memory over a different GPU count.
        assert_eq!(
            first(&ours, &[gpus(&[("b", 10), ("c", 10)])]),
            Some("ns/p0".into())
        );
        assert_eq!(
            first(&mig("x", "1g.10gb"), &[mig("y", "1g.10gb")]),
            Some("ns/p0".into())
        );
    }

    #[test]
    fn interchangeable_or_different_requests_are_not() {
        let ours = gpus(&[("a", 20)]);
        assert_eq!(first(&ours, &[gpus(&[("a", 20)])]), None);
        assert_eq!(first(&ours, &[gpus(&[("b", 30), ("c", 30)])]), None);
        assert_eq!(first(&mig("x", "1g.10gb"), &[mig("y", "3g.40gb")]), None);
        assert_eq!(first(&ours, &[]), None);
    }

    #[test]
    fn admission_is_read_from_kubelet_status() {
        let mut pod = Pod::default();
        assert!(!admitted_by_kubelet(&pod));
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!admitted_by_kubelet(&pod));
        let mut initialized = pod.clone();
        if let Some(s) = initialized.status.as_mut() {
            s.conditions.get_or_insert_default().push(PodCondition {
                type_: "Initialized".into(),
                status: "True".into(),
                ..Default::default()
            });
        }
        assert!(admitted_by_kubelet(&initialized));
        let mut creating = pod.clone();
        if let Some(s) = creating.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                name: "server".into(),
                ..Default::default()
            }]);
        }
        assert!(admitted_by_kubelet(&creating));
        let mut running = pod;
        if let Some(s) = running.status.as_mut() {
            s.phase = Some("Running".into());
        }
        assert!(admitted_by_kubelet(&running));
    }
}
