//! Client-side token bucket, so we stay under a provider's published request rate instead
//! of learning it from 429s (Alpha Vantage's free tier answers over-limit calls with a 200
//! and a "Note" body, which costs a request and tells us nothing about when to come back).
//!
//! Callers reserve a slot under a tokio mutex (never held across the sleep) and then sleep
//! until their slot, so concurrent callers are spaced fairly in arrival order.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket refilled at a constant rate, holding at most `burst` tokens.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// The instant at which the bucket would be full again if nobody took a token; a
    /// request may go at `max(now, tat - (burst - 1) * interval)` (GCRA form of the bucket).
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_minute` requests per minute, up to `burst` back to back. Zero values are treated
    /// as 1 (the config's `validate()` refuses them).
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            interval: Duration::from_secs(60) / per_minute,
            burst: burst.max(1),
            tat: Mutex::new(None),
        }
    }

    /// Minimum spacing between requests once the burst is spent.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits until a request may be sent, then returns.
    pub async fn acquire(&self) {
        let wait = {
            let mut tat = self.tat.lock().await;
            let now = Instant::now();
            let current = tat.map_or(now, |t| t.max(now));
            let allowance = self.interval * (self.burst - 1);
            let send_at = current.checked_sub(allowance).map_or(now, |t| t.max(now));
            *tat = Some(current + self.interval);
            send_at.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn spaces_requests_after_the_burst() {
        // 1200/min = one every 50 ms; burst 2: the first two go at once.
        let limiter = Arc::new(RateLimiter::per_minute(1_200, 2));
        assert_eq!(limiter.interval(), Duration::from_millis(50));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let l = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task").duration_since(start));
        }
        times.sort();
        assert!(times[1] < Duration::from_millis(30), "{times:?}");
        // 6 requests with burst 2 need 4 intervals after the first.
        assert!(times[5] >= Duration::from_millis(195), "{times:?}");
        assert!(times[5] < Duration::from_millis(600), "{times:?}");
        for w in times[1..].windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(45), "{times:?}");
        }
    }

    #[tokio::test]
    async fn an_idle_bucket_refills() {
        let limiter = RateLimiter::per_minute(600, 1);
        limiter.acquire().await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let t = Instant::now();
        limiter.acquire().await;
        assert!(t.elapsed() < Duration::from_millis(30));
    }
}
