//! The fixed model inputs derived from a `Features` record.
//!
//! Both models read scale-free quantities only (returns, ratios to the close, z-scores,
//! bounded oscillators), so one model works across price levels and instruments and a
//! model trained on 1999 prices still applies in 2018. The lists are part of each model
//! file; loading refuses a file whose list differs from the one compiled here, because the
//! coefficients would then be applied to the wrong inputs.
//!
//! A record whose required indicators are still warming up (absent from `values`) yields
//! `None`: the scorer then emits nothing for that model.

use rust_decimal::prelude::ToPrimitive;
use tradestream_schemas::{Features, Trend};

/// Inputs of the direction (signal) model, in order:
///
/// | name | definition |
/// |---|---|
/// | `return_1` | `return_1` (close-to-close simple return) |
/// | `rsi_14_centered` | `(rsi_14 − 50) / 50`, in [−1, 1] |
/// | `macd_hist_over_close` | `macd_hist / close` |
/// | `zscore_close_20` | `zscore_close_20` |
/// | `zscore_volume_20` | `zscore_volume_20` |
/// | `volatility_20` | `volatility_20` (std of 20 returns) |
/// | `range_pct` | `range_pct` (bar range relative to price) |
/// | `atr_14_over_close` | `atr_14 / close` |
/// | `close_over_sma_50` | `close / sma_50 − 1` |
/// | `trend_bullish` | 1 when the trend state is BULLISH, else 0 |
/// | `trend_bearish` | 1 when the trend state is BEARISH, else 0 |
///
/// `bb_percent_b_20` is deliberately not an input: with 2-σ bands it equals
/// `0.5 + zscore_close_20 / 4`, an exact linear copy of an input already here.
pub const SIGNAL_INPUTS: [&str; 11] = [
    "return_1",
    "rsi_14_centered",
    "macd_hist_over_close",
    "zscore_close_20",
    "zscore_volume_20",
    "volatility_20",
    "range_pct",
    "atr_14_over_close",
    "close_over_sma_50",
    "trend_bullish",
    "trend_bearish",
];

/// Inputs of the anomaly detector, in order: `return_1`, `range_pct`, `zscore_volume_20`
/// (the values of the same names in `Features.values`).
pub const ANOMALY_INPUTS: [&str; 3] = ["return_1", "range_pct", "zscore_volume_20"];

/// The anomaly `kind` named after each [`ANOMALY_INPUTS`] dimension.
pub const ANOMALY_KINDS: [&str; 3] = ["RETURN", "RANGE", "VOLUME"];

/// `kind` of an anomaly no single dimension dominates.
pub const JOINT_KIND: &str = "JOINT";

fn value(f: &Features, name: &str) -> Option<f64> {
    f.values.get(name).copied().filter(|v| v.is_finite())
}

/// The record's close as `f64`, if positive.
pub fn close_f64(f: &Features) -> Option<f64> {
    f.close.to_f64().filter(|c| c.is_finite() && *c > 0.0)
}

/// The signal model's input row, or `None` while any required indicator is absent.
pub fn signal_inputs(f: &Features) -> Option<[f64; SIGNAL_INPUTS.len()]> {
    let close = close_f64(f)?;
    let row = [
        value(f, "return_1")?,
        (value(f, "rsi_14")? - 50.0) / 50.0,
        value(f, "macd_hist")? / close,
        value(f, "zscore_close_20")?,
        value(f, "zscore_volume_20")?,
        value(f, "volatility_20")?,
        value(f, "range_pct")?,
        value(f, "atr_14")? / close,
        close / value(f, "sma_50").filter(|s| *s > 0.0)? - 1.0,
        f64::from(u8::from(f.trend == Trend::Bullish)),
        f64::from(u8::from(f.trend == Trend::Bearish)),
    ];
    row.iter().all(|v| v.is_finite()).then_some(row)
}

/// The anomaly detector's input row, or `None` while any required indicator is absent.
pub fn anomaly_inputs(f: &Features) -> Option<[f64; ANOMALY_INPUTS.len()]> {
    Some([
        value(f, ANOMALY_INPUTS[0])?,
        value(f, ANOMALY_INPUTS[1])?,
        value(f, ANOMALY_INPUTS[2])?,
    ])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tradestream_schemas::samples;

    /// A fully warmed-up features record with plausible daily values.
    pub(crate) fn warm_features(close: &str, values: &[(&str, f64)], trend: Trend) -> Features {
        let mut f = samples::features();
        f.close = close.parse().expect("decimal literal");
        f.trend = trend;
        let mut map: tradestream_schemas::FeatureValues = [
            ("return_1", 0.004),
            ("log_return_1", 0.00399),
            ("sma_5", 99.0),
            ("sma_10", 98.5),
            ("sma_20", 98.0),
            ("sma_50", 95.0),
            ("ema_12", 99.0),
            ("ema_26", 98.0),
            ("ema_50", 96.0),
            ("rsi_14", 61.2),
            ("macd", 1.0),
            ("macd_signal", 0.8),
            ("macd_hist", 0.2),
            ("bb_upper_20", 103.0),
            ("bb_middle_20", 98.0),
            ("bb_lower_20", 93.0),
            ("bb_percent_b_20", 0.7),
            ("atr_14", 1.5),
            ("volatility_20", 0.012),
            ("vwap_20", 98.2),
            ("zscore_close_20", 0.8),
            ("zscore_volume_20", 0.3),
            ("range_pct", 0.015),
            ("volume", 1.0e9),
        ]
        .into_iter()
        .collect();
        for (k, v) in values {
            map.insert(*k, *v);
        }
        f.values = map;
        f
    }

    #[test]
    fn signal_inputs_follow_the_documented_definitions() {
        let f = warm_features("100", &[], Trend::Bullish);
        let row = signal_inputs(&f).expect("warm record");
        let expected = [
            0.004,
            (61.2 - 50.0) / 50.0,
            0.002,
            0.8,
            0.3,
            0.012,
            0.015,
            0.015,
            100.0 / 95.0 - 1.0,
            1.0,
            0.0,
        ];
        for (i, (a, b)) in row.iter().zip(expected).enumerate() {
            assert!((a - b).abs() < 1e-12, "{}: {a} != {b}", SIGNAL_INPUTS[i]);
        }
        let bear = warm_features("100", &[], Trend::Bearish);
        assert_eq!(
            signal_inputs(&bear).map(|r| (r[9], r[10])),
            Some((0.0, 1.0))
        );
        let neutral = warm_features("100", &[], Trend::Neutral);
        assert_eq!(
            signal_inputs(&neutral).map(|r| (r[9], r[10])),
            Some((0.0, 0.0))
        );
    }

    #[test]
    fn warming_up_records_yield_nothing() {
        let mut f = warm_features("100", &[], Trend::Neutral);
        f.values.remove("sma_50");
        assert!(signal_inputs(&f).is_none());
        assert!(
            anomaly_inputs(&f).is_some(),
            "the detector does not need sma_50"
        );
        f.values.remove("zscore_volume_20");
        assert!(anomaly_inputs(&f).is_none());
        assert!(signal_inputs(&samples::features()).is_none());
    }
}
