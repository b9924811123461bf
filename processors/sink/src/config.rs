//! Sink settings. Every field is also an environment variable (named on the field, constants
//! below) for the `tradestream run sink` wiring; [`SinkConfig::validate`] reports every
//! problem at once, each naming its setting.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Environment variable of [`SinkConfig::group_id`].
pub const ENV_GROUP_ID: &str = "TRADESTREAM_SINK_GROUP_ID";
/// Environment variable of [`SinkConfig::batch_size`].
pub const ENV_BATCH_SIZE: &str = "TRADESTREAM_SINK_BATCH_SIZE";
/// Environment variable of [`SinkConfig::batch_linger_ms`].
pub const ENV_BATCH_LINGER_MS: &str = "TRADESTREAM_SINK_BATCH_LINGER_MS";
/// Environment variable of [`SinkConfig::retry_initial_backoff_ms`].
pub const ENV_RETRY_INITIAL_BACKOFF_MS: &str = "TRADESTREAM_SINK_RETRY_INITIAL_BACKOFF_MS";
/// Environment variable of [`SinkConfig::retry_max_backoff_ms`].
pub const ENV_RETRY_MAX_BACKOFF_MS: &str = "TRADESTREAM_SINK_RETRY_MAX_BACKOFF_MS";

/// Largest accepted batch: beyond this a transaction holds locks (and memory) for long.
const MAX_BATCH_SIZE: usize = 100_000;
/// Longest accepted linger: records should not wait minutes for company.
const MAX_LINGER_MS: u64 = 60_000;

/// How the sink batches and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Consumer group (env `TRADESTREAM_SINK_GROUP_ID`): the key of the offsets stored in
    /// `consumed_offsets` and of the offsets committed to Kafka.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Most records written in one database transaction (env `TRADESTREAM_SINK_BATCH_SIZE`).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a batch waits for more records after its first one, in milliseconds (env
    /// `TRADESTREAM_SINK_BATCH_LINGER_MS`).
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// First pause before retrying a batch after a retryable failure (database or Kafka
    /// unavailable), in milliseconds; doubles per attempt (env
    /// `TRADESTREAM_SINK_RETRY_INITIAL_BACKOFF_MS`).
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    /// Longest pause between retries, in milliseconds (env
    /// `TRADESTREAM_SINK_RETRY_MAX_BACKOFF_MS`).
    #[serde(default = "default_retry_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
}

fn default_group_id() -> String {
    "tradestream-sink".into()
}
fn default_batch_size() -> usize {
    2000
}
fn default_batch_linger_ms() -> u64 {
    50
}
fn default_retry_initial_backoff_ms() -> u64 {
    100
}
fn default_retry_max_backoff_ms() -> u64 {
    5000
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            batch_size: default_batch_size(),
            batch_linger_ms: default_batch_linger_ms(),
            retry_initial_backoff_ms: default_retry_initial_backoff_ms(),
            retry_max_backoff_ms: default_retry_max_backoff_ms(),
        }
    }
}

impl SinkConfig {
    /// Defaults overridden by the `TRADESTREAM_SINK_*` environment variables.
    pub fn from_env() -> Result<Self, Vec<String>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Defaults overridden by the variables `lookup` knows (testable [`from_env`](Self::from_env)).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut config = Self::default();
        let mut problems = Vec::new();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get(ENV_GROUP_ID) {
            config.group_id = v;
        }
        fn number<T: std::str::FromStr>(
            name: &str,
            v: &str,
            problems: &mut Vec<String>,
        ) -> Option<T> {
            let parsed = v.trim().parse().ok();
            if parsed.is_none() {
                problems.push(format!(
                    "{name}: expected a non-negative integer, got {v:?}"
                ));
            }
            parsed
        }
        if let Some(v) = get(ENV_BATCH_SIZE).and_then(|v| number(ENV_BATCH_SIZE, &v, &mut problems))
        {
            config.batch_size = v;
        }
        if let Some(v) =
            get(ENV_BATCH_LINGER_MS).and_then(|v| number(ENV_BATCH_LINGER_MS, &v, &mut problems))
        {
            config.batch_linger_ms = v;
        }
        if let Some(v) = get(ENV_RETRY_INITIAL_BACKOFF_MS)
            .and_then(|v| number(ENV_RETRY_INITIAL_BACKOFF_MS, &v, &mut problems))
        {
            config.retry_initial_backoff_ms = v;
        }
        if let Some(v) = get(ENV_RETRY_MAX_BACKOFF_MS)
            .and_then(|v| number(ENV_RETRY_MAX_BACKOFF_MS, &v, &mut problems))
        {
            config.retry_max_backoff_ms = v;
        }
        if let Err(more) = config.validate() {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Every problem with the settings, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.group_id.trim().is_empty() {
            problems.push(format!("{ENV_GROUP_ID} (group_id): must not be empty"));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            problems.push(format!(
                "{ENV_BATCH_SIZE} (batch_size): must be within 1..={MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        if self.batch_linger_ms > MAX_LINGER_MS {
            problems.push(format!(
                "{ENV_BATCH_LINGER_MS} (batch_linger_ms): must be at most {MAX_LINGER_MS}, got {}",
                self.batch_linger_ms
            ));
        }
        if self.retry_initial_backoff_ms == 0 {
            problems.push(format!(
                "{ENV_RETRY_INITIAL_BACKOFF_MS} (retry_initial_backoff_ms): must be > 0"
            ));
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            problems.push(format!(
                "{ENV_RETRY_MAX_BACKOFF_MS} (retry_max_backoff_ms): must be >= retry_initial_backoff_ms ({}), got {}",
                self.retry_initial_backoff_ms, self.retry_max_backoff_ms
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// [`batch_linger_ms`](Self::batch_linger_ms) as a duration.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// Pause before retry number `attempt` (0-based): exponential, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.retry_initial_backoff_ms
                .saturating_mul(factor)
                .min(self.retry_max_backoff_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = SinkConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.group_id, "tradestream-sink");
        assert_eq!(c.batch_size, 2000);
        assert_eq!(c.batch_linger_ms, 50);
        let parsed: SinkConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(parsed, c);
        assert!(serde_json::from_str::<SinkConfig>(r#"{"batch_sise": 1}"#).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = SinkConfig::default();
        let ms: Vec<u128> = (0..10).map(|a| c.backoff(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
        assert_eq!(c.backoff(u32::MAX).as_millis(), 5000);
    }

    #[test]
    fn all_problems_are_reported_with_their_setting() {
        let vars: HashMap<&str, &str> = HashMap::from([
            (ENV_GROUP_ID, "g"),
            (ENV_BATCH_SIZE, "0"),
            (ENV_BATCH_LINGER_MS, "soon"),
            (ENV_RETRY_INITIAL_BACKOFF_MS, "500"),
            (ENV_RETRY_MAX_BACKOFF_MS, "100"),
        ]);
        let problems =
            SinkConfig::from_lookup(|k| vars.get(k).map(|v| v.to_string())).expect_err("invalid");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with(ENV_BATCH_SIZE)),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with(ENV_BATCH_LINGER_MS)),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(ENV_RETRY_MAX_BACKOFF_MS)),
            "{problems:?}"
        );

        let ok = SinkConfig::from_lookup(|k| (k == ENV_BATCH_SIZE).then(|| "10".to_string()))
            .expect("valid");
        assert_eq!(ok.batch_size, 10);
    }
}
