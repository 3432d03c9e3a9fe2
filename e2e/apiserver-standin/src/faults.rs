//! Faults a test switches on while the server runs: conflicts on writes,
//! latency, server errors. Closing watches and outages live on the server
//! handle; this module decides, per request, what to inject.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
    fail_status: u16,
    fail_until: Option<Instant>,
    fail_next: u32,
    fail_lists: BTreeSet<String>,
    injected: Injected,
}

impl Default for State {
    fn default() -> Self {
        Self {
            conflict_next: 0,
            conflict_probability: 0.0,
            rng: ChaCha8Rng::seed_from_u64(0),
            latency: Duration::ZERO,
            fail_status: 503,
            fail_until: None,
            fail_next: 0,
            fail_lists: BTreeSet::new(),
            injected: Injected::default(),
        }
    }
}

/// The fault switchboard; cheap to clone, shared with the server.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
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

    /// Switches every fault off (the counts of injected faults stay).
    pub fn clear(&self) {
        let mut s = self.state();
        let injected = s.injected;
        *s = State {
            injected,
            ..State::default()
        };
    }

    /// Replaces the faults with `plan`.
    pub fn set(&self, plan: &FaultPlan) {
        self.clear();
        self.conflict_next_writes(plan.conflict_next_writes);
        self.conflict_probability(plan.conflict_probability, plan.seed);
        self.latency(Duration::from_millis(plan.latency_ms));
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

    /// Decides the faults for one request and counts them.
    pub(crate) fn decide(&self, write: bool) -> Decision {
        let mut s = self.state();
        let mut d = Decision {
            latency: s.latency,
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
        assert!(!f.decide(false).conflict);
        assert!(f.decide(true).conflict);
        assert!(f.decide(true).conflict);
        assert!(!f.decide(true).conflict);
        assert_eq!(f.injected().conflicts, 2);
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = || {
            let f = Faults::default();
            f.conflict_probability(0.3, 42);
            (0..1000)
                .map(|_| f.decide(true).conflict)
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
        assert_eq!(f.decide(false).fail, Some(500));
        assert_eq!(f.decide(false).fail, None);
        f.fail_for(503, Duration::from_secs(60));
        assert_eq!(f.decide(true).fail, Some(503));
        f.clear();
        assert_eq!(f.decide(true), Decision::default());
        assert_eq!(f.injected().failures, 2);
    }

    #[test]
    fn lists_fail_by_resource_until_cleared() {
        let f = Faults::default();
        f.fail_lists("gpunodeinventories", 503);
        assert_eq!(f.list_failure("gpunodeinventories"), Some(503));
        assert_eq!(f.list_failure("pods"), None);
        assert_eq!(f.decide(false), Decision::default());
        f.clear();
        assert_eq!(f.list_failure("gpunodeinventories"), None);
        assert_eq!(f.injected().failures, 1);
    }

    #[test]
    fn plan_round_trips_and_applies() {
        let plan: FaultPlan =
            serde_json::from_str(r#"{"conflictNextWrites":1,"latencyMs":5}"#).unwrap();
        let f = Faults::default();
        f.set(&plan);
        let d = f.decide(true);
        assert!(d.conflict);
        assert_eq!(d.latency, Duration::from_millis(5));
    }
}
