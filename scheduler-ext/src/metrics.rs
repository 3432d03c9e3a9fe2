//! Prometheus metrics, served at `GET /metrics`.
//!
//! Request counters and latencies are recorded as requests finish; the
//! per-node memory gauges and fragmentation are refreshed from the ledger
//! at each scrape, so they are never stale and cost nothing between scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cluster_state::ClusterState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    pub kind: String,
}

/// Every metric of the service.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<VerbLabels, Histogram>,
    pub pods_placed: Counter,
    pub bind_conflicts: Counter,
    pub pods_requeued: Counter,
    /// kube-scheduler's preemption victims, by whether the extender kept or spared them.
    pub preemption_victims: Family<DecisionLabels, Counter>,
    /// Candidate nodes of kube-scheduler's preemption, by whether the extender kept or dropped them.
    pub preemption_nodes: Family<DecisionLabels, Counter>,
    /// Preemptions the extender carried out, by outcome.
    pub preemptions: Family<DecisionLabels, Counter>,
    /// Pods the extender evicted to free GPUs for higher-priority pods.
    pub preemption_evictions: Counter,
    /// Seconds from a preemption to its preemptor being admitted by kubelet.
    pub preemption_to_running: Histogram,
    /// Preemptors not admitted yet, with when their preemption started.
    preemptors: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub state_problems: Family<ProblemLabels, Counter>,
    pub gpu_memory_allocated: Family<NodeLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub gpu_memory_free: Family<NodeLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    pub fragmentation: Gauge<f64, AtomicU64>,
    /// Pods (pending and bound) the typical pod mix was last derived from.
    pub typical_mix_pods: Gauge,
    pub nodes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gpupack_extender");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Extender requests by verb and outcome",
            requests.clone(),
        );
        let latency = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by verb",
            latency.clone(),
        );
        let pods_placed = Counter::default();
        registry.register(
            "pods_placed",
            "Pods bound with a GPU assignment",
            pods_placed.clone(),
        );
        let bind_conflicts = Counter::default();
        registry.register(
            "bind_conflicts",
            "Reservation writes that lost a race to another bind on the node",
            bind_conflicts.clone(),
        );
        let pods_requeued = Counter::default();
        registry.register(
            "pods_requeued",
            "Pending pods kube-scheduler failed while the extender was unreachable, re-queued once it was back",
            pods_requeued.clone(),
        );
        let preemption_victims = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "preemption_victims",
            "Victims kube-scheduler proposed for preemption, by decision: kept (evicting them frees GPUs the pod needs) or spared (not needed)",
            preemption_victims.clone(),
        );
        let preemption_nodes = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "preemption_nodes",
            "Candidate nodes of kube-scheduler's preemption, by decision: kept, or dropped (evicting every proposed victim frees too little GPU)",
            preemption_nodes.clone(),
        );
        let preemptions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "preemptions",
            "Preemptions the extender carried out for pods no GPU set fits, by outcome: preempted, blocked (budgets forbid it), no_victims, skipped, error",
            preemptions.clone(),
        );
        let preemption_evictions = Counter::default();
        registry.register(
            "preemption_evictions",
            "Pods the extender evicted to free GPUs for higher-priority pods",
            preemption_evictions.clone(),
        );
        // 1 s to ~68 min.
        let preemption_to_running = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "preemption_to_running_seconds",
            "Time from a preemption to kubelet admitting its preemptor",
            preemption_to_running.clone(),
        );
        let state_problems = Family::<ProblemLabels, Counter>::default();
        registry.register(
            "state_problems",
            "Inventories, assignments or reservations that could not be taken in",
            state_problems.clone(),
        );
        let gpu_memory_allocated = Family::default();
        registry.register(
            "gpu_memory_allocated_bytes",
            "GPU memory held by pods and reservations, by node",
            gpu_memory_allocated.clone(),
        );
        let gpu_memory_free = Family::default();
        registry.register(
            "gpu_memory_free_bytes",
            "Healthy GPU memory not held, by node",
            gpu_memory_free.clone(),
        );
        let fragmentation = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "fragmentation_ratio",
            "Expected share of idle GPU capacity the typical pod mix cannot use",
            fragmentation.clone(),
        );
        let typical_mix_pods = Gauge::default();
        registry.register(
            "typical_mix_pods",
            "Pods, pending and bound, the typical pod mix of the fragmentation measure was derived from (0: the built-in mix)",
            typical_mix_pods.clone(),
        );
        let nodes = Gauge::default();
        registry.register("nodes", "Nodes with a valid GPU inventory", nodes.clone());
        Metrics {
            registry,
            requests,
            latency,
            pods_placed,
            bind_conflicts,
            pods_requeued,
            preemption_victims,
            preemption_nodes,
            preemptions,
            preemption_evictions,
            preemption_to_running,
            preemptors: Default::default(),
            state_problems,
            gpu_memory_allocated,
            gpu_memory_free,
            fragmentation,
            typical_mix_pods,
            nodes,
        }
    }

    /// Remembers when a preemption for `uid` started.
    pub fn note_preemptor(&self, uid: &str, at: std::time::Instant) {
        let mut p = self.preemptors.lock().unwrap_or_else(|e| e.into_inner());
        // Preemptors that never run are forgotten eventually.
        if p.len() >= 4096 {
            p.clear();
        }
        p.insert(uid.to_string(), at);
    }

    /// A pod was admitted by kubelet: if a preemption made room for it,
    /// records how long that took.
    pub fn admitted(&self, uid: &str) {
        let started = self
            .preemptors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        if let Some(at) = started {
            self.preemption_to_running
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// Counts one node's preemption decision and its victims.
    pub fn preemption(&self, kept_node: bool, kept: usize, spared: usize) {
        let decision = |d: &str| DecisionLabels { decision: d.into() };
        let node = if kept_node { "kept" } else { "dropped" };
        self.preemption_nodes.get_or_create(&decision(node)).inc();
        self.preemption_victims
            .get_or_create(&decision("kept"))
            .inc_by(kept as u64);
        self.preemption_victims
            .get_or_create(&decision("spared"))
            .inc_by(spared as u64);
    }

    /// Counts one finished request.
    pub fn observe(&self, verb: &str, outcome: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.latency
            .get_or_create(&VerbLabels { verb: verb.into() })
            .observe(seconds);
    }

    /// The text exposition, with the gauges refreshed from `state`.
    pub fn render(&self, state: &ClusterState) -> String {
        self.gpu_memory_allocated.clear();
        self.gpu_memory_free.clear();
        for n in state.memory_by_node() {
            let labels = NodeLabels { node: n.node };
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.gpu_memory_allocated
                .get_or_create(&labels)
                .set(clamp(n.allocated_bytes));
            self.gpu_memory_free
                .get_or_create(&labels)
                .set(clamp(n.total_bytes.saturating_sub(n.allocated_bytes)));
        }
        self.fragmentation.set(state.fragmentation());
        self.typical_mix_pods
            .set(i64::try_from(state.typical_pod_count()).unwrap_or(i64::MAX));
        self.nodes
            .set(i64::try_from(state.node_count()).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
