//! The node agent's one retry schedule: jittered exponential backoff, so
//! that the plugins of many nodes restarted together (a DaemonSet rollout,
//! an API server or kubelet coming back) do not retry in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays from `min`, doubling up to `max`, each stretched by a random
/// share of up to itself; never exhausted.
pub fn backoff(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The next delay of `schedule` (`max` should it ever run dry).
pub fn next_delay(schedule: &mut ExponentialBackoff, max: Duration) -> Duration {
    schedule.next().unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_never_ends() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut b = backoff(min, max);
        let delays: Vec<Duration> = (0..20).map(|_| next_delay(&mut b, max)).collect();
        assert!(delays[0] >= min && delays[0] <= 2 * min, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * max), "{delays:?}");
        assert!(delays[19] >= max, "{delays:?}");
    }
}
