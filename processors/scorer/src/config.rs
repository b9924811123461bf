//! Scorer settings. Every field is also an environment variable (`TRADESTREAM_SCORER_*`,
//! named in each field's doc) and a CLI flag of `tradestream run scorer`; `validate()`
//! reports every problem at once, each naming its setting.

use crate::error::{Result, ScorerError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Settings of the scorer processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorerConfig {
    /// Directory holding `signal-model.json` and `anomaly-model.json`
    /// (`TRADESTREAM_SCORER_MODEL_DIR`).
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// BUY when the model's p(up) is at least this (`TRADESTREAM_SCORER_BUY_THRESHOLD`),
    /// in [0.5, 1].
    #[serde(default = "default_buy_threshold")]
    pub buy_threshold: f64,
    /// SELL when p(down) = 1 − p(up) is at least this, i.e. p(up) ≤ 1 − sell_threshold
    /// (`TRADESTREAM_SCORER_SELL_THRESHOLD`), in [0.5, 1]. The default 0.55 sells at
    /// p(up) ≤ 0.45.
    #[serde(default = "default_sell_threshold")]
    pub sell_threshold: f64,
    /// Stop-loss distance in ATR(14) multiples from the close (`TRADESTREAM_SCORER_STOP_LOSS_ATR`),
    /// > 0.
    #[serde(default = "default_stop_loss_atr")]
    pub stop_loss_atr: f64,
    /// Take-profit distance in ATR(14) multiples from the close
    /// (`TRADESTREAM_SCORER_TAKE_PROFIT_ATR`), > 0.
    #[serde(default = "default_take_profit_atr")]
    pub take_profit_atr: f64,
    /// How often the runner checks `model_dir` for changed model files, in seconds; 0 turns
    /// hot reload off (`TRADESTREAM_SCORER_RELOAD_INTERVAL_SECS`).
    #[serde(default = "default_reload_interval_secs")]
    pub reload_interval_secs: u64,
}

fn default_model_dir() -> PathBuf {
    PathBuf::from("models")
}
fn default_buy_threshold() -> f64 {
    0.55
}
fn default_sell_threshold() -> f64 {
    0.55
}
fn default_stop_loss_atr() -> f64 {
    2.0
}
fn default_take_profit_atr() -> f64 {
    3.0
}
fn default_reload_interval_secs() -> u64 {
    10
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            model_dir: default_model_dir(),
            buy_threshold: default_buy_threshold(),
            sell_threshold: default_sell_threshold(),
            stop_loss_atr: default_stop_loss_atr(),
            take_profit_atr: default_take_profit_atr(),
            reload_interval_secs: default_reload_interval_secs(),
        }
    }
}

impl ScorerConfig {
    /// Checks every setting and reports all problems at once, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.model_dir.as_os_str().is_empty() {
            problems.push("TRADESTREAM_SCORER_MODEL_DIR: must not be empty".to_string());
        }
        for (name, v) in [
            ("TRADESTREAM_SCORER_BUY_THRESHOLD", self.buy_threshold),
            ("TRADESTREAM_SCORER_SELL_THRESHOLD", self.sell_threshold),
        ] {
            if !(0.5..=1.0).contains(&v) {
                problems.push(format!("{name}: must be within [0.5, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("TRADESTREAM_SCORER_STOP_LOSS_ATR", self.stop_loss_atr),
            ("TRADESTREAM_SCORER_TAKE_PROFIT_ATR", self.take_profit_atr),
        ] {
            if !(v.is_finite() && v > 0.0) {
                problems.push(format!("{name}: must be a finite number > 0, got {v}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// [`validate`](Self::validate) as this crate's error.
    pub fn checked(&self) -> Result<()> {
        self.validate().map_err(ScorerError::Config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = ScorerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.model_dir, PathBuf::from("models"));
        assert_eq!((c.buy_threshold, c.sell_threshold), (0.55, 0.55));
        assert_eq!((c.stop_loss_atr, c.take_profit_atr), (2.0, 3.0));
        let parsed: ScorerConfig = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, c);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<ScorerConfig>(r#"{"buy_treshold": 0.6}"#).is_err());
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = ScorerConfig {
            model_dir: PathBuf::new(),
            buy_threshold: 0.4,
            sell_threshold: 1.5,
            stop_loss_atr: 0.0,
            take_profit_atr: f64::NAN,
            reload_interval_secs: 0,
        };
        let problems = c.validate().err().unwrap_or_default();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for setting in [
            "MODEL_DIR",
            "BUY_THRESHOLD",
            "SELL_THRESHOLD",
            "STOP_LOSS_ATR",
            "TAKE_PROFIT_ATR",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(setting)),
                "{setting} missing in {problems:?}"
            );
        }
        assert!(c.checked().is_err());
    }
}
