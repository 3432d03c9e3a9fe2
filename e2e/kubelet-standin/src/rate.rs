//! kubelet's PodResources rate limit: a token bucket
//! (`golang.org/x/time/rate`, `Allow()`), rejecting instead of waiting.

use tokio::time::Instant;

use crate::options::RateLimit;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> TokenBucket {
        TokenBucket {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    /// Takes a token if one is there.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.qps).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_at_the_configured_rate() {
        let mut bucket = TokenBucket::new(RateLimit::KUBELET);
        let t0 = Instant::now();
        assert!((0..10).all(|_| bucket.allow(t0)));
        assert!(!bucket.allow(t0));
        // 100 qps: one token every 10 ms.
        assert!(bucket.allow(t0 + Duration::from_millis(10)));
        assert!(!bucket.allow(t0 + Duration::from_millis(10)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.allow(later)).count(), 10);
    }
}
