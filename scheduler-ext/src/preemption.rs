//! Priority preemption for GPUs, carried out by the extender.
//!
//! kube-scheduler's own preemption re-runs only its in-tree filters, which
//! see node-level counts of `gpupack.io/gpu` and `gpupack.io/gpu-memory`. On
//! a node whose every GPU is partly used those still fit, so it finds no
//! victim and never asks the extender. When filter finds no node for a pod
//! that may preempt, the extender preempts itself, in the background
//! (filter never waits for it):
//!
//! 1. the pod is read again: still pending, and not claimed by a replica;
//! 2. on each candidate node, the cheapest minimal set of lower-priority
//!    victims whose eviction lets the pod fit ([`placement::Ledger::select_victims`]),
//!    with the PodDisruptionBudgets that select them; a set some budget
//!    forbids is not taken (the Eviction API would refuse it), and the
//!    cheapest node wins;
//! 3. the pod is claimed: annotation [`CLAIM_ANNOTATION`] written with the
//!    pod's resourceVersion as a precondition, so that of several replicas
//!    only one preempts for a pod, once;
//! 4. the freed GPUs are booked for the pod: a nomination in the node's
//!    reservations annotation, naming the victims. Every replica's binds
//!    count it instead of the victims, so no third pod gets those GPUs in
//!    between; it lapses if the pod goes away or does not bind in time;
//! 5. the victims are evicted through the Eviction API, so budgets are
//!    honoured; a refusal withdraws the nomination and is reported;
//! 6. the pod's `status.nominatedNodeName` is set, and Events tell the pod
//!    and each victim why.
//!
//! The pod binds once its victims are gone: filter offers it the nominated
//! node then, and bind counts the nomination as its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::{Client, ResourceExt};
use placement::{DisruptionBudget, PodKey, Preemption};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bind::{BindError, Binder, Clock};
use crate::cluster_state::ClusterState;
use crate::demand::PodNeeds;
use crate::events::{Events, PodEvent, Reason};
use crate::metrics::{DecisionLabels, Metrics};
use crate::reservations::Reservation;
use crate::translate::assignment_of;

/// The claim on a preemptor; its name is a contract, so it lives in `proto`.
pub use proto::assignment::PREEMPTION_ANNOTATION as CLAIM_ANNOTATION;

/// What [`CLAIM_ANNOTATION`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub node: String,
    /// `namespace/name` of each victim.
    pub victims: Vec<String>,
    /// Unix seconds when the preemption started.
    pub at: u64,
    pub holder: String,
}

/// Why a preemption stopped.
#[derive(Debug, thiserror::Error)]
pub enum PreemptError {
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("booking the freed GPUs: {0}")]
    Nominate(#[source] BindError),
    #[error("evicting {victim}: {source}")]
    Evict {
        victim: String,
        #[source]
        source: kube::Error,
    },
}

/// How a preemption ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod may not preempt, is gone, bound, or claimed already.
    Skipped(&'static str),
    /// Nothing to evict would make the pod fit on any candidate node.
    NoVictims,
    /// Every set of victims that would do is protected by a budget.
    Blocked(String),
    Preempted {
        node: String,
        victims: Vec<String>,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Skipped(_) => "skipped",
            Outcome::NoVictims => "no_victims",
            Outcome::Blocked(_) => "blocked",
            Outcome::Preempted { .. } => "preempted",
        }
    }
}

/// Carries out preemptions; cheap to clone.
#[derive(Clone)]
pub struct Preemptor {
    client: Client,
    state: Arc<RwLock<ClusterState>>,
    binder: Binder,
    events: Events,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// How long a nomination holds the freed GPUs for the pod (seconds).
    nomination_ttl: u64,
    holder: String,
    /// Pods this replica is preempting for right now.
    inflight: Arc<Mutex<HashSet<String>>>,
}

impl Preemptor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        state: Arc<RwLock<ClusterState>>,
        binder: Binder,
        events: Events,
        metrics: Arc<Metrics>,
        clock: Clock,
        nomination_ttl: u64,
        holder: String,
    ) -> Preemptor {
        Preemptor {
            client,
            state,
            binder,
            events,
            metrics,
            clock,
            nomination_ttl,
            holder,
            inflight: Arc::default(),
        }
    }

    /// Starts a preemption for `pod`, which fits none of `nodes` now, unless
    /// it may not preempt or one is under way already. Never waits.
    pub fn consider(&self, pod: &Pod, needs: &PodNeeds, nodes: Vec<String>) {
        if may_preempt(pod).is_err() || nodes.is_empty() || needs.is_empty() {
            return;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(c) = claim_of(pod)
            && !self.lapsed(&c)
        {
            return;
        }
        if !self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
        {
            return;
        }
        let this = self.clone();
        let (pod, needs) = (pod.clone(), needs.clone());
        tokio::spawn(async move {
            let who = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            let outcome = this.run(&pod, &needs, &nodes).await;
            let label = match &outcome {
                Ok(o) => {
                    tracing::info!(pod = %who, outcome = ?o, "preemption");
                    o.label()
                }
                Err(e) => {
                    tracing::warn!(pod = %who, error = %e, "preemption failed");
                    "error"
                }
            };
            this.metrics
                .preemptions
                .get_or_create(&DecisionLabels {
                    decision: label.into(),
                })
                .inc();
            this.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        });
    }

    /// Whether a claim is old enough that its nomination has lapsed.
    fn lapsed(&self, c: &Claim) -> bool {
        (self.clock)() >= c.at + self.nomination_ttl
    }

    async fn run(
        &self,
        seen: &Pod,
        needs: &PodNeeds,
        nodes: &[String],
    ) -> Result<Outcome, PreemptError> {
        let ns = seen.namespace().unwrap_or_default();
        let name = seen.name_any();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        // 1. The pod as it is now.
        let Some(pod) = pods.get_opt(&name).await? else {
            return Ok(Outcome::Skipped("pod is gone"));
        };
        if pod.uid() != seen.uid() {
            return Ok(Outcome::Skipped("pod was re-created"));
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            return Ok(Outcome::Skipped("pod is bound"));
        }
        if let Err(why) = may_preempt(&pod) {
            return Ok(Outcome::Skipped(why));
        }
        if let Some(c) = claim_of(&pod)
            && !self.lapsed(&c)
        {
            return Ok(Outcome::Skipped("another replica preempts for the pod"));
        }
        let uid = pod.uid().unwrap_or_default();
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        // 2. The cheapest victims.
        let (budgets, selects) = self.budgets(nodes).await;
        let mut best: Option<(String, Preemption)> = None;
        let mut forbidden: Vec<String> = Vec::new();
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            for node in nodes {
                let Ok(plan) = state.plan_preemption(node, needs, priority, &budgets, &|k| {
                    selects.get(&k.uid).cloned().unwrap_or_default()
                }) else {
                    continue;
                };
                if plan.victims.is_empty() {
                    continue;
                }
                if plan.cost.budget_violations > 0 {
                    forbidden.push(node.clone());
                    continue;
                }
                let better = best
                    .as_ref()
                    .is_none_or(|(n, b)| (plan.cost, node) < (b.cost, n));
                if better {
                    best = Some((node.clone(), plan));
                }
            }
        }
        let Some((node, plan)) = best else {
            if forbidden.is_empty() {
                return Ok(Outcome::NoVictims);
            }
            let why = format!(
                "preempting lower-priority pods would free GPUs on {} but PodDisruptionBudgets forbid the evictions there",
                forbidden.join(", ")
            );
            self.emit(&pod, Reason::PreemptionBlocked, &why);
            return Ok(Outcome::Blocked(why));
        };
        let victims: Vec<String> = plan.victims.iter().map(PodKey::to_string).collect();
        // 3. The claim, once for the pod among all replicas.
        let claim = Claim {
            node: node.clone(),
            victims: victims.clone(),
            at: (self.clock)(),
            holder: self.holder.clone(),
        };
        let patch = json!({
            "metadata": {
                "resourceVersion": pod.resource_version(),
                "annotations": {
                    CLAIM_ANNOTATION: serde_json::to_string(&claim).unwrap_or_default()
                }
            }
        });
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Outcome::Skipped("another replica preempts for the pod"));
            }
            Err(e) => return Err(e.into()),
        }
        let started = Instant::now();
        // 4. The freed GPUs, promised to the pod.
        let Some(inventory) = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .inventory(&node)
        else {
            return Ok(Outcome::NoVictims);
        };
        let entry = Reservation {
            namespace: ns.clone(),
            name: name.clone(),
            expires_at: claim.at + self.nomination_ttl,
            holder: self.holder.clone(),
            assignment: assignment_of(&plan.allocation, &inventory),
            victims: plan.victims.iter().map(|k| k.uid.clone()).collect(),
        };
        self.binder
            .nominate(&uid, &entry)
            .await
            .map_err(PreemptError::Nominate)?;
        // 5. The evictions.
        let freed = freed_text(&plan, &inventory);
        for victim in &plan.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
            match api.evict(&victim.name, &EvictParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 429 => {
                    self.binder.withdraw_nomination(&uid, &entry);
                    let why = format!(
                        "preempting on node {node} stopped: evicting {victim} is refused ({})",
                        e.message
                    );
                    self.emit(&pod, Reason::PreemptionBlocked, &why);
                    return Ok(Outcome::Blocked(why));
                }
                Err(source) => {
                    self.binder.withdraw_nomination(&uid, &entry);
                    return Err(PreemptError::Evict {
                        victim: victim.to_string(),
                        source,
                    });
                }
            }
            self.events.emit(PodEvent {
                namespace: victim.namespace.clone(),
                name: victim.name.clone(),
                uid: victim.uid.clone(),
                reason: Reason::Preempted,
                message: format!(
                    "preempted by {ns}/{name} (priority {priority}) on node {node} to free {freed}"
                ),
            });
        }
        self.metrics
            .preemption_evictions
            .inc_by(plan.victims.len() as u64);
        self.metrics.note_preemptor(&uid, started);
        // 6. Where the pod goes, and why.
        let status = json!({ "status": { "nominatedNodeName": node } });
        if let Err(e) = pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "could not set nominatedNodeName");
        }
        self.emit(
            &pod,
            Reason::Preempting,
            &format!(
                "preempting {} of lower priority on node {node} to free {freed}: {}",
                if victims.len() == 1 {
                    "1 pod".to_string()
                } else {
                    format!("{} pods", victims.len())
                },
                victims.join(", ")
            ),
        );
        Ok(Outcome::Preempted { node, victims })
    }

    fn emit(&self, pod: &Pod, reason: Reason, message: &str) {
        self.events.emit(PodEvent {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            reason,
            message: message.to_string(),
        });
    }

    /// The PodDisruptionBudgets, and which of them select each pod on
    /// `nodes` (by UID). Read from the API server's cache; without them
    /// (unreadable) the Eviction API still enforces them.
    async fn budgets(
        &self,
        nodes: &[String],
    ) -> (Vec<DisruptionBudget>, HashMap<String, Vec<usize>>) {
        let cached = ListParams::default().match_any();
        let pdbs = match Api::<PodDisruptionBudget>::all(self.client.clone())
            .list(&cached)
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list PodDisruptionBudgets; the Eviction API enforces them");
                return (Vec::new(), HashMap::new());
            }
        };
        let mut budgets = Vec::new();
        let mut selectors: Vec<(String, Selector)> = Vec::new();
        for p in &pdbs {
            // A budget without a selector selects no pod (policy/v1).
            let Some(sel) = p.spec.as_ref().and_then(|s| s.selector.clone()) else {
                continue;
            };
            let Ok(sel) = Selector::try_from(sel) else {
                continue;
            };
            budgets.push(DisruptionBudget {
                name: format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                disruptions_allowed: p
                    .status
                    .as_ref()
                    .map(|s| s.disruptions_allowed.max(0) as u32)
                    .unwrap_or(0),
            });
            selectors.push((p.namespace().unwrap_or_default(), sel));
        }
        let mut selects = HashMap::new();
        if budgets.is_empty() {
            return (budgets, selects);
        }
        for node in nodes {
            let on_node = cached.clone().fields(&format!("spec.nodeName={node}"));
            let Ok(list) = Api::<Pod>::all(self.client.clone()).list(&on_node).await else {
                continue;
            };
            for p in list.items {
                let labels: BTreeMap<String, String> = p.labels().clone();
                let ns = p.namespace().unwrap_or_default();
                let chosen: Vec<usize> = selectors
                    .iter()
                    .enumerate()
                    .filter(|(_, (sns, sel))| *sns == ns && sel.matches(&labels))
                    .map(|(i, _)| i)
                    .collect();
                if let Some(uid) = p.uid() {
                    selects.insert(uid, chosen);
                }
            }
        }
        (budgets, selects)
    }
}

/// Whether the pod may preempt others: not with `preemptionPolicy: Never`.
pub fn may_preempt(pod: &Pod) -> Result<(), &'static str> {
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
    {
        Some("Never") => Err("preemptionPolicy is Never"),
        _ => Ok(()),
    }
}

/// The claim on a pod, if it carries a readable one.
pub fn claim_of(pod: &Pod) -> Option<Claim> {
    pod.annotations()
        .get(CLAIM_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
}

/// "GPU3 40.0 GiB, GPU5 80.0 GiB": what the pod gets, for messages.
fn freed_text(plan: &Preemption, inventory: &proto::inventory::NodeInventory) -> String {
    let a = assignment_of(&plan.allocation, inventory);
    let mut parts: Vec<String> = Vec::new();
    for c in &a.containers {
        for g in &c.gpus {
            parts.push(format!(
                "GPU{} {:.1} GiB",
                g.index,
                g.memory_bytes as f64 / (1u64 << 30) as f64
            ));
        }
        for m in &c.mig {
            parts.push(format!("MIG {} on {}", m.profile, m.parent_uuid));
        }
    }
    parts.join(", ")
}
