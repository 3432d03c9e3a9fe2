//! Faults a test switches on while the server runs: conflicts on writes,
//! latency, server errors. Closing watches and outages live on the server
//! handle; this module decides, per request, what to inject.
//!
//! It also holds the one cost a real API server always has and the
//! stand-in models by default: the price of a consistent list (see
//! [`DEFAULT_CONSISTENT_LIST_COST`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What a consistent list costs per stored object of the listed resource,
/// by default: 30 µs.
///
/// A list with no `resourceVersion` (or an empty one) asks for the latest
/// state. kube-apiserver before 1.31, or without the
/// `ConsistentListFromCache` feature, serves it from etcd rather than from
/// its watch cache: etcd reads the resource's whole key range
/// (`/registry/pods/` for a cluster-wide list of pods,
/// `/registry/pods/NAMESPACE/` for one namespace), and the API server
/// decodes every object before the label and field selectors drop what
/// does not match. A list of one node's pods (`spec.nodeName=NODE`) thus
/// costs as much as a list of every pod. `resourceVersion=0` is served
/// from the watch cache at no such cost, and so is a watch.
///
/// The figure: the Kubernetes 1.31 release blog on consistent reads from
/// cache reports the 99th percentile of such pod lists on a 5,000-node
/// cluster (about 150,000 pods) falling from 5 s to 1.5 s once served from
/// the cache, so about 33 µs per stored pod through etcd; 30 µs is used.
pub const DEFAULT_CONSISTENT_LIST_COST: Duration = Duration::from_micros(30);

/// A set of faults, as the admin endpoint (`POST /_standin/faults`) takes
/// them. Every field is optional; absent ones switch that fault off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultPlan {
    /// Answer the next N writes with 409 Conflict.
    pub conflict_next_writes: u32,
    /// Answer each write with 409 Conflict with this probability.
    pub conflict_probability: f64,
    /// Seed for `conflict_probability`, so runs repeat.
    pub seed: u64,
    /// Delay before every API response, in milliseconds.
    pub latency_ms: u64,
    /// Further delay before the response to every write (create, update,
    /// patch, delete, binding), in milliseconds.
    pub write_latency_ms: u64,
    /// Further delay before the response to every list (not watches), in
    /// milliseconds.
    pub list_latency_ms: u64,
    /// Cost of a consistent list per stored object of the listed resource,
    /// in microseconds (see [`DEFAULT_CONSISTENT_LIST_COST`]); absent: the
    /// server's setting ([`crate::Options::consistent_list_cost`]), 0: free.
    pub consistent_list_cost_us: Option<u64>,
    /// Status code for failed requests (500 or 503; default 503).
    pub fail_status: Option<u16>,
    /// Fail every request for this many milliseconds.
    pub fail_for_ms: u64,
    /// Fail the next N requests.
    pub fail_next: u32,
    /// Fail every list and watch of these resources (plural names, e.g.
    /// `gpunodeinventories`), so no informer of them can sync.
    pub fail_lists: Vec<String>,
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Delay before serving: the all-request latency plus the write or list
    /// latency that applies.
    pub latency: Duration,
    /// Answer with this server error instead of serving the request.
    pub fail: Option<u16>,
    /// Answer this write with 409 Conflict.
    pub conflict: bool,
}

/// How many faults were injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Injected {
    pub conflicts: u64,
    pub failures: u64,
}

struct State {
    conflict_next: u32,
    conflict_probability: f64,
    rng: ChaCha8Rng,
    latency: Duration,
    write_latency: Duration,
    list_latency: Duration,
    /// Per stored object, for consistent lists.
    list_cost: Duration,
    /// What `list_cost` returns to when faults are cleared.
    base_list_cost: Duration,
    fail_status: u16,
    fail_until: Option<Instant>,
    fail_next: u32,
    fail_lists: BTreeSet<String>,
    refuse_evictions: u32,
    injected: Injected,
}

impl Default for State {
    fn default() -> Self {
        Self {
            conflict_next: 0,
            conflict_probability: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
            latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            list_latency: Duration::ZERO,
            list_cost: DEFAULT_CONSISTENT_LIST_COST,
            base_list_cost: DEFAULT_CONSISTENT_LIST_COST,
            fail_status: 503,
            fail_until: None,
            fail_next: 0,
            fail_lists: BTreeSet::new(),
            refuse_evictions: 0,
            injected: Injected::default(),
        }
    }
}

/// The fault switchboard; cheap to clone, shared with the server.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    /// A switchboard whose consistent lists cost `per_object` for each
    /// stored object of the listed resource, also after [`Faults::clear`].
    pub fn with_consistent_list_cost(per_object: Duration) -> Self {
        let f = Self::default();
        {
            let mut s = f.state();
            s.list_cost = per_object;
            s.base_list_cost = per_object;
        }
        f
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` writes (create, update, patch, delete, binding) get 409.
    pub fn conflict_next_writes(&self, n: u32) {
        self.state().conflict_next = n;
    }

    /// Each write gets 409 with probability `p`, drawn from a generator
    /// seeded with `seed`.
    pub fn conflict_probability(&self, p: f64, seed: u64) {
        let mut s = self.state();
        s.conflict_probability = p.clamp(0.0, 1.0);
        s.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Every API response is delayed by `d`.
    pub fn latency(&self, d: Duration) {
        self.state().latency = d;
    }

    /// Every write (create, update, patch, delete, binding) is delayed by a
    /// further `d`.
    pub fn write_latency(&self, d: Duration) {
        self.state().write_latency = d;
    }

    /// Every list (not a watch) is delayed by a further `d`.
    pub fn list_latency(&self, d: Duration) {
        self.state().list_latency = d;
    }

    /// A consistent list costs `per_object` for each stored object of the
    /// listed resource (until cleared; then the server's setting again).
    pub fn consistent_list_cost(&self, per_object: Duration) {
        self.state().list_cost = per_object;
    }

    /// What a consistent list of `objects` stored objects costs now.
    pub fn consistent_list_delay(&self, objects: usize) -> Duration {
        self.state()
            .list_cost
            .saturating_mul(u32::try_from(objects).unwrap_or(u32::MAX))
    }

    /// Every request fails with `status` (500, 503, ...) for the next `d`.
    pub fn fail_for(&self, status: u16, d: Duration) {
        let mut s = self.state();
        s.fail_status = status;
        s.fail_until = Some(Instant::now() + d);
    }

    /// The next `n` requests fail with `status`.
    pub fn fail_next(&self, status: u16, n: u32) {
        let mut s = self.state();
        s.fail_status = status;
        s.fail_next = n;
    }

    /// Every list and watch of `resource` (plural, e.g. `gpunodeinventories`)
    /// fails with `status` until cleared: a client's informer of it cannot
    /// sync, while every other request is served.
    pub fn fail_lists(&self, resource: &str, status: u16) {
        let mut s = self.state();
        s.fail_status = status;
        s.fail_lists.insert(resource.to_string());
    }

    /// The next `n` evictions are refused with 429 as when a
    /// PodDisruptionBudget lost its allowance between a client's read of it
    /// and the eviction (another eviction, a pod turning unhealthy): the
    /// eviction REST handler's `NewTooManyRequests` with the same message
    /// (`pkg/registry/core/pod/storage/eviction.go`).
    pub fn refuse_evictions(&self, n: u32) {
        self.state().refuse_evictions = n;
    }

    /// Whether this eviction is one [`Faults::refuse_evictions`] refuses.
    pub(crate) fn take_eviction_refusal(&self) -> bool {
        let mut s = self.state();
        let refuse = s.refuse_evictions > 0;
        s.refuse_evictions = s.refuse_evictions.saturating_sub(1);
        refuse
    }

    /// Switches every fault off (the counts of injected faults stay) and
    /// puts the cost of consistent lists back to the server's setting.
    pub fn clear(&self) {
        let mut s = self.state();
        let injected = s.injected;
        let base = s.base_list_cost;
        *s = State {
            injected,
            list_cost: base,
            base_list_cost: base,
            ..State::default()
        };
    }

    /// Replaces the faults with `plan`.
    pub fn set(&self, plan: &FaultPlan) {
        self.clear();
        self.conflict_next_writes(plan.conflict_next_writes);
        self.conflict_probability(plan.conflict_probability, plan.seed);
        self.latency(Duration::from_millis(plan.latency_ms));
        self.write_latency(Duration::from_millis(plan.write_latency_ms));
        self.list_latency(Duration::from_millis(plan.list_latency_ms));
        if let Some(us) = plan.consistent_list_cost_us {
            self.consistent_list_cost(Duration::from_micros(us));
        }
        let status = plan.fail_status.unwrap_or(503);
        if plan.fail_for_ms > 0 {
            self.fail_for(status, Duration::from_millis(plan.fail_for_ms));
        }
        if plan.fail_next > 0 {
            self.fail_next(status, plan.fail_next);
        }
        for resource in &plan.fail_lists {
            self.fail_lists(resource, status);
        }
    }

    pub fn injected(&self) -> Injected {
        self.state().injected
    }

    /// The failure for a list or watch of `resource`, if [`Faults::fail_lists`]
    /// holds it back; counted.
    pub(crate) fn list_failure(&self, resource: &str) -> Option<u16> {
        let mut s = self.state();
        if !s.fail_lists.contains(resource) {
            return None;
        }
        s.injected.failures += 1;
        Some(s.fail_status)
    }

    /// Decides the faults for one request (a write, a list, or neither)
    /// and counts them.
    pub(crate) fn decide(&self, write: bool, list: bool) -> Decision {
        let mut s = self.state();
        let mut extra = Duration::ZERO;
        if write {
            extra += s.write_latency;
        }
        if list {
            extra += s.list_latency;
        }
        let mut d = Decision {
            latency: s.latency + extra,
            ..Decision::default()
        };
        let failing_window = s.fail_until.is_some_and(|t| Instant::now() < t);
        if failing_window || s.fail_next > 0 {
            s.fail_next = s.fail_next.saturating_sub(u32::from(!failing_window));
            s.injected.failures += 1;
            d.fail = Some(s.fail_status);
            return d;
        }
        if write {
            let p = s.conflict_probability;
            let by_count = s.conflict_next > 0;
            let by_chance = p > 0.0 && s.rng.random_bool(p);
            if by_count || by_chance {
                s.conflict_next = s.conflict_next.saturating_sub(u32::from(by_count));
                s.injected.conflicts += 1;
                d.conflict = true;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_hit_only_writes_and_count_down() {
        let f = Faults::default();
        f.conflict_next_writes(2);
        assert!(!f.decide(false, false).conflict);
        assert!(f.decide(true, false).conflict);
        assert!(f.decide(true, false).conflict);
        assert!(!f.decide(true, false).conflict);
        assert_eq!(f.injected().conflicts, 2);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = || {
            let f = Faults::default();
            f.conflict_probability(0.3, 42);
            (0..1000)
                .map(|_| f.decide(true, false).conflict)
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let hits = a.iter().filter(|c| **c).count();
        assert!((200..400).contains(&hits), "{hits}");
    }

    #[test]
    fn failures_by_count_and_by_time() {
        let f = Faults::default();
        f.fail_next(500, 1);
        assert_eq!(f.decide(false, false).fail, Some(500));
        assert_eq!(f.decide(false, false).fail, None);
        f.fail_for(503, Duration::from_secs(60));
        assert_eq!(f.decide(true, false).fail, Some(503));
        f.clear();
        assert_eq!(f.decide(true, false), Decision::default());
        assert_eq!(f.injected().failures, 2);
    }

    #[test]
    fn lists_fail_by_resource_until_cleared() {
        let f = Faults::default();
        f.fail_lists("gpunodeinventories", 503);
        assert_eq!(f.list_failure("gpunodeinventories"), Some(503));
        assert_eq!(f.list_failure("pods"), None);
        assert_eq!(f.decide(false, false), Decision::default());
        f.clear();
        assert_eq!(f.list_failure("gpunodeinventories"), None);
        assert_eq!(f.injected().failures, 1);
    }

    #[test]
    fn write_and_list_latency_apply_apart() {
        let f = Faults::default();
        f.latency(Duration::from_millis(1));
        f.write_latency(Duration::from_millis(10));
        f.list_latency(Duration::from_millis(100));
        assert_eq!(f.decide(false, false).latency, Duration::from_millis(1));
        assert_eq!(f.decide(true, false).latency, Duration::from_millis(11));
        assert_eq!(f.decide(false, true).latency, Duration::from_millis(101));
        f.clear();
        assert_eq!(f.decide(true, false).latency, Duration::ZERO);
    }

    #[test]
    fn consistent_list_cost_scales_and_survives_clear() {
        let f = Faults::with_consistent_list_cost(Duration::from_micros(50));
        assert_eq!(f.consistent_list_delay(1000), Duration::from_millis(50));
        f.set(&FaultPlan {
            consistent_list_cost_us: Some(0),
            ..FaultPlan::default()
        });
        assert_eq!(f.consistent_list_delay(1000), Duration::ZERO);
        f.clear();
        assert_eq!(f.consistent_list_delay(10), Duration::from_micros(500));
        assert_eq!(
            Faults::default().consistent_list_delay(1),
            DEFAULT_CONSISTENT_LIST_COST
        );
    }

    #[test]
    fn plan_round_trips_and_applies() {
        let plan: FaultPlan =
            serde_json::from_str(r#"{"conflictNextWrites":1,"latencyMs":5,"writeLatencyMs":2,"listLatencyMs":7,"consistentListCostUs":3}"#).unwrap();
        let f = Faults::default();
        f.set(&plan);
        let d = f.decide(true, false);
        assert!(d.conflict);
        assert_eq!(d.latency, Duration::from_millis(7));
        assert_eq!(f.decide(false, true).latency, Duration::from_millis(12));
        assert_eq!(f.consistent_list_delay(1000), Duration::from_millis(3));
    }
}
