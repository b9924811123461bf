//! HTTP settings shared by every provider: where to send requests, how long to wait, how
//! often to retry and how fast to go. Providers differ only in their defaults (base URL and
//! request rate), so one struct serves them all and the CLI exposes one set of flags.

use crate::ProviderError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Connection, retry and rate-limit settings of one provider client. The `tradestream`
/// binary exposes each field as a CLI flag and a `MARKETDATA_<FIELD>` environment variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Base URL of the API (scheme, host, optional port and path prefix). Unset: the
    /// provider's public endpoint. Tests point it at a local server.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Whole-request timeout (connect, send, read the body), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TCP/TLS connect timeout, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Attempts per request, the first included (1 = never retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry, in milliseconds; doubles per attempt, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest backoff between attempts, in milliseconds.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` we are willing to honour, in seconds; a provider asking for
    /// more fails the request as rate limited instead of stalling the job.
    #[serde(default = "default_max_retry_after_secs")]
    pub max_retry_after_secs: u64,
    /// Client-side request budget per minute (token bucket). Unset: the provider's default
    /// (Yahoo 60, Alpha Vantage 5, its free tier's limit).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests that may go out back to back before the per-minute pacing applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// `User-Agent` header (Yahoo refuses requests without a browser-like one).
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_max_retry_after_secs() -> u64 {
    120
}
fn default_burst() -> u32 {
    1
}
fn default_user_agent() -> String {
    concat!(
        "Mozilla/5.0 (compatible; tradestream/",
        env!("CARGO_PKG_VERSION"),
        ")"
    )
    .to_string()
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_attempts: default_max_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            max_retry_after_secs: default_max_retry_after_secs(),
            requests_per_minute: None,
            burst: default_burst(),
            user_agent: default_user_agent(),
        }
    }
}

impl ProviderConfig {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let mut problems = Vec::new();
        if let Some(url) = &self.base_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                Ok(u) => problems.push(format!(
                    "base_url: must be an http(s) URL with a host, got {u}"
                )),
                Err(e) => problems.push(format!("base_url: {url:?} is not a URL: {e}")),
            }
        }
        if self.timeout_ms == 0 {
            problems.push("timeout_ms: must be > 0".into());
        }
        if self.connect_timeout_ms == 0 {
            problems.push("connect_timeout_ms: must be > 0".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            problems.push(format!(
                "max_attempts: must be 1 to 100, got {}",
                self.max_attempts
            ));
        }
        if self.backoff_initial_ms == 0 {
            problems.push("backoff_initial_ms: must be > 0".into());
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            problems.push(format!(
                "backoff_max_ms: must be >= backoff_initial_ms ({}), got {}",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        if self.requests_per_minute == Some(0) {
            problems.push(
                "requests_per_minute: must be > 0 (leave it unset for the provider's default)"
                    .into(),
            );
        }
        if self.burst == 0 {
            problems.push("burst: must be > 0".into());
        }
        if self.user_agent.trim().is_empty()
            || reqwest::header::HeaderValue::from_str(&self.user_agent).is_err()
        {
            problems.push("user_agent: must be a non-empty printable header value".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::Config(problems))
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_fields_refused() {
        let c: ProviderConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(c, ProviderConfig::default());
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<ProviderConfig>(r#"{"retries": 3}"#).is_err());
    }

    #[test]
    fn validate_lists_every_problem() {
        let c = ProviderConfig {
            base_url: Some("ftp://x".into()),
            timeout_ms: 0,
            connect_timeout_ms: 0,
            max_attempts: 0,
            backoff_initial_ms: 10,
            backoff_max_ms: 5,
            requests_per_minute: Some(0),
            burst: 0,
            user_agent: " ".into(),
            ..ProviderConfig::default()
        };
        let Err(ProviderError::Config(problems)) = c.validate() else {
            panic!("expected config error")
        };
        assert_eq!(problems.len(), 8, "{problems:?}");
        for name in [
            "base_url",
            "timeout_ms",
            "connect_timeout_ms",
            "max_attempts",
            "backoff_max_ms",
            "requests_per_minute",
            "burst",
            "user_agent",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name} missing in {problems:?}"
            );
        }
    }
}
