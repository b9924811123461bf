//! The HTTP loop shared by all providers: rate limit, send, classify the answer, and retry
//! transient failures with exponential backoff and jitter, honouring `Retry-After`.
//!
//! Providers plug in a body check (`inspect`) because some report errors inside a 200
//! response (Alpha Vantage's "Note" rate-limit body); a retryable error from it is retried
//! exactly like a 429.

use crate::config::ProviderConfig;
use crate::error::{ProviderError, snippet};
use crate::rate_limit::RateLimiter;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

/// One answered request: the status and the body text.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// A reqwest client with a provider's retry policy and rate limiter.
#[derive(Debug)]
pub(crate) struct HttpClient {
    provider: &'static str,
    client: reqwest::Client,
    limiter: RateLimiter,
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
}

impl HttpClient {
    pub(crate) fn new(
        provider: &'static str,
        cfg: &ProviderConfig,
        default_per_minute: u32,
    ) -> Result<Self, ProviderError> {
        cfg.validate()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout())
            .connect_timeout(cfg.connect_timeout())
            .user_agent(cfg.user_agent.clone())
            .build()
            .map_err(|e| ProviderError::Config(vec![format!("http client: {e}")]))?;
        Ok(Self {
            provider,
            client,
            limiter: RateLimiter::per_minute(
                cfg.requests_per_minute.unwrap_or(default_per_minute),
                cfg.burst,
            ),
            max_attempts: cfg.max_attempts,
            backoff_initial: Duration::from_millis(cfg.backoff_initial_ms),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms),
            max_retry_after: Duration::from_secs(cfg.max_retry_after_secs),
        })
    }

    /// GETs `url` until it yields a usable answer, a fatal error, or attempts run out.
    /// `inspect` turns a 2xx body into the caller's value or a classified error.
    pub(crate) async fn get<T>(
        &self,
        url: reqwest::Url,
        mut inspect: impl FnMut(HttpResponse) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut attempt = 1;
        loop {
            self.limiter.acquire().await;
            let outcome = match self.send(url.clone()).await {
                Ok(resp) => inspect(resp),
                Err(e) => Err(e),
            };
            let err = match outcome {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() || attempt >= self.max_attempts {
                return Err(err);
            }
            let wait = match err.retry_after() {
                Some(asked) if asked > self.max_retry_after => return Err(err),
                Some(asked) => asked,
                None => backoff(self.backoff_initial, self.backoff_max, attempt),
            };
            tracing::warn!(
                provider = self.provider,
                attempt,
                max_attempts = self.max_attempts,
                wait_ms = wait.as_millis() as u64,
                error = %err,
                "market-data request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One request: the response for 2xx, a classified error for anything else.
    async fn send(&self, url: reqwest::Url) -> Result<HttpResponse, ProviderError> {
        let provider = self.provider;
        let transport = |e: reqwest::Error| {
            let retryable = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
            let timeout = e.is_timeout();
            // The URL may carry an API key in its query: never put it in the message.
            let e = e.without_url();
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            if timeout && !message.contains("timed out") {
                message.push_str(" (timed out)");
            }
            ProviderError::Transport {
                provider,
                message,
                retryable,
            }
        };
        let resp = self.client.get(url).send().await.map_err(transport)?;
        let status = resp.status();
        let retry_after = parse_retry_after(resp.headers(), Utc::now());
        let body = resp.text().await.map_err(transport)?;
        if status.is_success() {
            return Ok(HttpResponse { status, body });
        }
        let message = snippet(&body, 512);
        Err(match status.as_u16() {
            429 => ProviderError::RateLimited {
                provider,
                message,
                retry_after,
            },
            401 | 403 => ProviderError::Unauthorized { provider, message },
            s if status.is_server_error() => ProviderError::Server {
                provider,
                status: s,
                message,
            },
            s => ProviderError::Refused {
                provider,
                status: s,
                message,
            },
        })
    }
}

/// Exponential backoff with "equal jitter": half the doubled delay plus a random share of
/// the other half, so synchronized clients spread out but never retry immediately.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let jitter = rand::rng().random_range(0.0..=1.0);
    half + half.mul_f64(jitter)
}

/// `Retry-After` as delay-seconds or an HTTP date (relative to `now`).
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let b1 = backoff(i, m, 1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = backoff(i, m, 3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b30 = backoff(i, m, 30);
            assert!(b30 >= Duration::from_millis(500) && b30 <= m, "{b30:?}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("lit")
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:27:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }
}
