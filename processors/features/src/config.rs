//! Settings of the features processor: the feature-set version and the indicator windows.
//!
//! Indicator names carry their window (`sma_20`, `rsi_14`, `bb_upper_20`, ...), so changing a
//! window changes the names a model sees. Because models refuse feature sets they were not
//! trained on by `feature_set_version`, `validate()` insists that non-default windows come with
//! a version other than the default one.

use serde::{Deserialize, Serialize};

/// The feature-set version of the default configuration: the indicator definitions of this
/// crate with the default windows.
pub const FEATURE_SET_VERSION: &str = "fs-1";

/// Longest window accepted; far beyond any sensible indicator, it bounds per-symbol memory.
pub const MAX_PERIOD: usize = 10_000;

/// Features processor settings. Each field is meant to be exposed by the CLI as a
/// `TRADESTREAM_FEATURES_<FIELD>` environment variable and a `--features-<field>` flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Version stamped on every features record; models refuse versions they were not trained
    /// on. Must change whenever a window below changes.
    #[serde(default = "default_feature_set_version")]
    pub feature_set_version: String,
    /// Windows of the simple moving averages of the close (`sma_<n>`).
    #[serde(default = "default_sma_periods")]
    pub sma_periods: Vec<usize>,
    /// Periods of the exponential moving averages of the close (`ema_<n>`, TA-Lib seeding:
    /// SMA of the first n closes, then k = 2/(n+1)).
    #[serde(default = "default_ema_periods")]
    pub ema_periods: Vec<usize>,
    /// RSI period with Wilder smoothing (`rsi_<n>`).
    #[serde(default = "default_rsi_period")]
    pub rsi_period: usize,
    /// MACD fast EMA period (`macd`, `macd_signal`, `macd_hist`).
    #[serde(default = "default_macd_fast")]
    pub macd_fast: usize,
    /// MACD slow EMA period; must exceed `macd_fast`.
    #[serde(default = "default_macd_slow")]
    pub macd_slow: usize,
    /// MACD signal line period (EMA of the MACD line).
    #[serde(default = "default_macd_signal")]
    pub macd_signal: usize,
    /// Bollinger band window (`bb_upper_<n>`, `bb_middle_<n>`, `bb_lower_<n>`,
    /// `bb_percent_b_<n>`).
    #[serde(default = "default_bollinger_period")]
    pub bollinger_period: usize,
    /// Bollinger band width in population standard deviations.
    #[serde(default = "default_bollinger_stddev")]
    pub bollinger_stddev: f64,
    /// ATR period with Wilder smoothing (`atr_<n>`).
    #[serde(default = "default_atr_period")]
    pub atr_period: usize,
    /// Window of the rolling statistics `volatility_<n>` (sample stddev of log returns),
    /// `vwap_<n>`, `zscore_close_<n>` and `zscore_volume_<n>`; at least 2.
    #[serde(default = "default_stats_period")]
    pub stats_period: usize,
    /// How many of a symbol's most recent bar record ids are remembered to recognise a
    /// redelivery: an upstream replay re-publishes bars with the same `record_id`, which are
    /// then dropped silently instead of being dead-lettered as duplicates. At least 1. Not an
    /// indicator setting, so changing it needs no new `feature_set_version`.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: usize,
}

fn default_feature_set_version() -> String {
    FEATURE_SET_VERSION.to_string()
}
fn default_sma_periods() -> Vec<usize> {
    vec![5, 10, 20, 50]
}
fn default_ema_periods() -> Vec<usize> {
    vec![12, 26, 50]
}
fn default_rsi_period() -> usize {
    14
}
fn default_macd_fast() -> usize {
    12
}
fn default_macd_slow() -> usize {
    26
}
fn default_macd_signal() -> usize {
    9
}
fn default_bollinger_period() -> usize {
    20
}
fn default_bollinger_stddev() -> f64 {
    2.0
}
fn default_atr_period() -> usize {
    14
}
fn default_stats_period() -> usize {
    20
}
fn default_dedup_window() -> usize {
    256
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        Self {
            feature_set_version: default_feature_set_version(),
            sma_periods: default_sma_periods(),
            ema_periods: default_ema_periods(),
            rsi_period: default_rsi_period(),
            macd_fast: default_macd_fast(),
            macd_slow: default_macd_slow(),
            macd_signal: default_macd_signal(),
            bollinger_period: default_bollinger_period(),
            bollinger_stddev: default_bollinger_stddev(),
            atr_period: default_atr_period(),
            stats_period: default_stats_period(),
            dedup_window: default_dedup_window(),
        }
    }
}

impl FeaturesConfig {
    /// Checks every setting and reports all problems at once, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let version = self.feature_set_version.trim();
        if version.is_empty() {
            problems.push("feature_set_version: must not be empty".to_string());
        } else if version != self.feature_set_version {
            problems.push(format!(
                "feature_set_version: {:?} has leading or trailing whitespace",
                self.feature_set_version
            ));
        }
        let mut period = |name: &str, value: usize, min: usize| {
            if !(min..=MAX_PERIOD).contains(&value) {
                problems.push(format!(
                    "{name}: must be between {min} and {MAX_PERIOD}, got {value}"
                ));
            }
        };
        for (name, list) in [
            ("sma_periods", &self.sma_periods),
            ("ema_periods", &self.ema_periods),
        ] {
            for &p in list {
                period(name, p, 1);
            }
        }
        period("rsi_period", self.rsi_period, 1);
        period("macd_fast", self.macd_fast, 1);
        period("macd_slow", self.macd_slow, 2);
        period("macd_signal", self.macd_signal, 1);
        period("bollinger_period", self.bollinger_period, 1);
        period("atr_period", self.atr_period, 1);
        period("stats_period", self.stats_period, 2);
        if !(1..=MAX_PERIOD).contains(&self.dedup_window) {
            problems.push(format!(
                "dedup_window: must be between 1 and {MAX_PERIOD}, got {}",
                self.dedup_window
            ));
        }
        for (name, list) in [
            ("sma_periods", &self.sma_periods),
            ("ema_periods", &self.ema_periods),
        ] {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                problems.push(format!("{name}: period {} is listed twice", w[0]));
            }
        }
        if self.macd_fast >= self.macd_slow {
            problems.push(format!(
                "macd_fast: must be below macd_slow ({}), got {}",
                self.macd_slow, self.macd_fast
            ));
        }
        if !(self.bollinger_stddev.is_finite() && self.bollinger_stddev > 0.0) {
            problems.push(format!(
                "bollinger_stddev: must be a positive number, got {}",
                self.bollinger_stddev
            ));
        }
        let defaults = Self {
            feature_set_version: self.feature_set_version.clone(),
            dedup_window: self.dedup_window,
            ..Self::default()
        };
        if self.feature_set_version == FEATURE_SET_VERSION && *self != defaults {
            problems.push(format!(
                "feature_set_version: the windows differ from the defaults, so the version must differ from \
                 {FEATURE_SET_VERSION:?} (models trained on {FEATURE_SET_VERSION:?} would misread these features)"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Whether `other` computes the same indicators (every setting except `dedup_window`):
    /// a snapshot of per-symbol state is meaningful only under the same indicator settings.
    pub fn same_indicators(&self, other: &Self) -> bool {
        *self
            == Self {
                dedup_window: self.dedup_window,
                ..other.clone()
            }
    }

    /// Bars a symbol needs before every indicator is present (the longest warm-up). A runner
    /// that restarts without its state can replay at least this many bars per symbol to make
    /// the windowed indicators exact again; the recursive ones (EMA, RSI, ATR, MACD) then agree
    /// with an uninterrupted run only approximately, since they depend on the whole history.
    pub fn warm_up_bars(&self) -> usize {
        let longest_list = |l: &[usize]| l.iter().copied().max().unwrap_or(1);
        [
            longest_list(&self.sma_periods),
            longest_list(&self.ema_periods),
            self.rsi_period + 1,
            self.macd_slow + self.macd_signal - 1,
            self.bollinger_period,
            self.atr_period + 1,
            self.stats_period + 1,
            2,
        ]
        .into_iter()
        .max()
        .unwrap_or(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_serde_fills_them() {
        let c = FeaturesConfig::default();
        assert_eq!(c.validate(), Ok(()));
        let parsed: FeaturesConfig = serde_json::from_str("{}").expect("empty object");
        assert_eq!(parsed, c);
        assert_eq!(c.warm_up_bars(), 50);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e =
            serde_json::from_str::<FeaturesConfig>(r#"{"sma_period": [3]}"#).expect_err("unknown");
        assert!(e.to_string().contains("sma_period"), "{e}");
    }

    #[test]
    fn reports_every_problem_naming_the_setting() {
        let c = FeaturesConfig {
            feature_set_version: " ".into(),
            sma_periods: vec![5, 0, 5],
            ema_periods: vec![MAX_PERIOD + 1],
            rsi_period: 0,
            macd_fast: 30,
            macd_slow: 26,
            macd_signal: 0,
            bollinger_period: 0,
            bollinger_stddev: f64::NAN,
            atr_period: 0,
            stats_period: 1,
            dedup_window: 0,
        };
        let problems = c.validate().expect_err("invalid");
        for setting in [
            "feature_set_version",
            "sma_periods: must be between",
            "sma_periods: period 5 is listed twice",
            "ema_periods",
            "rsi_period",
            "macd_fast",
            "macd_signal",
            "bollinger_period",
            "bollinger_stddev",
            "atr_period",
            "stats_period",
            "dedup_window",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(setting)),
                "{setting} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn changed_windows_need_a_new_version() {
        let c = FeaturesConfig {
            sma_periods: vec![7],
            ..FeaturesConfig::default()
        };
        let problems = c.validate().expect_err("same version");
        assert!(
            problems[0].starts_with("feature_set_version"),
            "{problems:?}"
        );
        let c = FeaturesConfig {
            feature_set_version: "fs-1-sma7".into(),
            ..c
        };
        assert_eq!(c.validate(), Ok(()));
        // The redelivery window is not an indicator setting: no new version needed.
        let c = FeaturesConfig {
            dedup_window: 16,
            ..FeaturesConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    /// The indicator settings, everything that shapes a symbol's state except the
    /// redelivery window.
    #[test]
    fn indicator_settings_ignore_the_dedup_window() {
        let a = FeaturesConfig::default();
        let b = FeaturesConfig {
            dedup_window: 3,
            ..FeaturesConfig::default()
        };
        assert!(a.same_indicators(&b));
        let c = FeaturesConfig {
            rsi_period: 9,
            ..FeaturesConfig::default()
        };
        assert!(!a.same_indicators(&c));
    }
}
