//! Per-principal rate limiting: a token bucket per token subject, refilled continuously. A
//! caller over its budget gets 429 with `Retry-After` (seconds until one request fits), so a
//! runaway script slows down instead of flooding the router with orders.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets idle this long are forgotten (they would be full anyway).
const IDLE: Duration = Duration::from_secs(300);
/// Above this many buckets, idle ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by principal.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_sec` requests per second on average, bursts up to `burst`; `per_sec == 0` admits
    /// everything.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(per_sec).max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `principal` now.
    pub fn check(&self, principal: &str) -> Result<(), ApiError> {
        self.check_at(principal, Instant::now())
    }

    /// Admits one request of `principal` at `now` (time passed in for tests).
    pub fn check_at(&self, principal: &str, now: Instant) -> Result<(), ApiError> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        // Never held across an await: a plain mutex is the cheapest correct choice.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > SWEEP_ABOVE {
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
        }
        let bucket = buckets.entry(principal.to_string()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_sec;
            Err(ApiError::RateLimited {
                retry_after_secs: wait.ceil().max(1.0) as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills() {
        let limiter = RateLimiter::new(2, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("a", t).is_ok());
        }
        match limiter.check_at("a", t) {
            Err(ApiError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
        // Another principal has its own bucket.
        assert!(limiter.check_at("b", t).is_ok());
        // Half a second refills one token at 2/s.
        assert!(
            limiter
                .check_at("a", t + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at("a", t + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn zero_rate_admits_everything() {
        let limiter = RateLimiter::new(0, 0);
        let t = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check_at("a", t).is_ok());
        }
    }
}
