//! The direction model (logistic regression fitted with linfa) and the rules that turn its
//! probability into a trading signal: side from two thresholds, confidence as the chosen
//! side's probability, stop-loss and take-profit from ATR.

use crate::error::{Result, ScorerError};
use crate::inputs::SIGNAL_INPUTS;
use crate::model::{TrainingInfo, version_of};
use crate::standardize::Standardizer;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use serde::{Deserialize, Serialize};
use tradestream_schemas::SignalSide;

/// Algorithm tag stored in the file.
pub const SIGNAL_ALGORITHM: &str = "logistic_regression";

/// Decimal places of suggested stop-loss / take-profit prices (the wire scale).
const PRICE_DP: u32 = 8;

/// Parameters of the direction model: p(up) = σ(intercept + coefficients · standardize(x)),
/// where x is [`SIGNAL_INPUTS`] and "up" means the next bar closes above this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalParams {
    /// Model name carried by every signal (`model_name`).
    pub name: String,
    /// [`SIGNAL_ALGORITHM`].
    pub algorithm: String,
    /// Input names; must equal [`SIGNAL_INPUTS`].
    pub inputs: Vec<String>,
    /// Training-set statistics of the inputs.
    pub standardizer: Standardizer,
    /// One weight per standardized input.
    pub coefficients: Vec<f64>,
    /// Bias term.
    pub intercept: f64,
}

impl SignalParams {
    /// Checks the parameters fit this build's inputs and are all finite.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.algorithm != SIGNAL_ALGORITHM {
            return Err(format!(
                "algorithm {:?} is not {SIGNAL_ALGORITHM:?}",
                self.algorithm
            ));
        }
        if self.inputs.iter().map(String::as_str).ne(SIGNAL_INPUTS) {
            return Err(format!(
                "inputs {:?} differ from this build's {:?}",
                self.inputs, SIGNAL_INPUTS
            ));
        }
        self.standardizer.check(SIGNAL_INPUTS.len())?;
        if self.coefficients.len() != SIGNAL_INPUTS.len() {
            return Err(format!(
                "{} coefficients for {} inputs",
                self.coefficients.len(),
                SIGNAL_INPUTS.len()
            ));
        }
        if let Some(c) = self
            .coefficients
            .iter()
            .chain([&self.intercept])
            .find(|c| !c.is_finite())
        {
            return Err(format!("coefficient {c} is not finite"));
        }
        Ok(())
    }
}

/// A validated direction model with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalModel {
    params: SignalParams,
    version: String,
    training: Option<TrainingInfo>,
}

impl SignalModel {
    /// Validates `params` and computes the version.
    pub fn new(params: SignalParams, training: Option<TrainingInfo>) -> Result<Self> {
        params
            .check()
            .map_err(|m| ScorerError::invalid("signal", m))?;
        let version = version_of(&params)?;
        Ok(Self {
            params,
            version,
            training,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SignalParams {
        &self.params
    }

    /// Version: hash of the parameters.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Model name.
    pub fn name(&self) -> &str {
        &self.params.name
    }

    /// Provenance, if known.
    pub fn training(&self) -> Option<&TrainingInfo> {
        self.training.as_ref()
    }

    /// p(next close > this close) for a raw (unstandardized) input row.
    pub fn p_up(&self, row: &[f64]) -> f64 {
        let z = self.params.standardizer.apply(row);
        let logit = self.params.intercept
            + z.iter()
                .zip(&self.params.coefficients)
                .map(|(x, w)| x * w)
                .sum::<f64>();
        sigmoid(logit)
    }
}

/// Numerically stable logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Side and confidence for p(up): BUY when `p_up ≥ buy_threshold`, SELL when
/// `1 − p_up ≥ sell_threshold`, HOLD otherwise; confidence is the chosen side's
/// probability, `max(p, 1 − p)` for HOLD. BUY wins a tie (only possible with both
/// thresholds at 0.5 and p = 0.5).
pub fn decide(p_up: f64, buy_threshold: f64, sell_threshold: f64) -> (SignalSide, f64) {
    let p = p_up.clamp(0.0, 1.0);
    if p >= buy_threshold {
        (SignalSide::Buy, p)
    } else if 1.0 - p >= sell_threshold {
        (SignalSide::Sell, 1.0 - p)
    } else {
        (SignalSide::Hold, p.max(1.0 - p))
    }
}

/// Suggested (stop-loss, take-profit) for `side` at `close`: BUY stops at
/// `close − k_sl·ATR` and takes profit at `close + k_tp·ATR`, SELL mirrors that; HOLD, a
/// missing or non-positive ATR give `None`. Prices are rounded to 8 decimal places and a
/// level that would not be > 0 is `None`.
pub fn bracket(
    side: SignalSide,
    close: Decimal,
    atr: Option<f64>,
    k_sl: f64,
    k_tp: f64,
) -> (Option<Decimal>, Option<Decimal>) {
    let Some(atr) = atr.filter(|a| a.is_finite() && *a > 0.0) else {
        return (None, None);
    };
    let dir = match side {
        SignalSide::Buy => Decimal::ONE,
        SignalSide::Sell => Decimal::NEGATIVE_ONE,
        SignalSide::Hold => return (None, None),
    };
    let level = |k: f64, toward: Decimal| {
        let offset = Decimal::from_f64(k * atr)?;
        let price = close
            .checked_add(toward.checked_mul(offset)?)?
            .round_dp(PRICE_DP);
        (price > Decimal::ZERO).then_some(price)
    };
    (level(k_sl, -dir), level(k_tp, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn params() -> SignalParams {
        SignalParams {
            name: "logreg-direction".into(),
            algorithm: SIGNAL_ALGORITHM.into(),
            inputs: SIGNAL_INPUTS.iter().map(|s| s.to_string()).collect(),
            standardizer: Standardizer {
                mean: vec![0.0; 11],
                std: vec![1.0; 11],
            },
            coefficients: vec![0.0; 11],
            intercept: 0.0,
        }
    }

    #[test]
    fn thresholds_map_to_sides() {
        assert_eq!(decide(0.55, 0.55, 0.55), (SignalSide::Buy, 0.55));
        assert_eq!(decide(0.9, 0.55, 0.55), (SignalSide::Buy, 0.9));
        let (side, conf) = decide(0.45, 0.55, 0.55);
        assert_eq!(side, SignalSide::Sell);
        assert!((conf - 0.55).abs() < 1e-12);
        let (side, conf) = decide(0.2, 0.55, 0.55);
        assert_eq!(side, SignalSide::Sell);
        assert!((conf - 0.8).abs() < 1e-12);
        assert_eq!(decide(0.5, 0.55, 0.55), (SignalSide::Hold, 0.5));
        assert_eq!(decide(0.54, 0.55, 0.55), (SignalSide::Hold, 0.54));
        let (side, conf) = decide(0.46, 0.55, 0.55);
        assert_eq!(side, SignalSide::Hold);
        assert!((conf - 0.54).abs() < 1e-12);
        assert_eq!(
            decide(0.5, 0.5, 0.5).0,
            SignalSide::Buy,
            "BUY wins the only possible tie"
        );
        assert_eq!(
            decide(0.7, 0.8, 0.6).0,
            SignalSide::Hold,
            "asymmetric thresholds"
        );
        assert_eq!(decide(0.39, 0.8, 0.6).0, SignalSide::Sell);
    }

    #[test]
    fn stop_loss_and_take_profit_from_atr() {
        let close = dec!(100);
        assert_eq!(
            bracket(SignalSide::Buy, close, Some(1.5), 2.0, 3.0),
            (Some(dec!(97)), Some(dec!(104.5)))
        );
        assert_eq!(
            bracket(SignalSide::Sell, close, Some(1.5), 2.0, 3.0),
            (Some(dec!(103)), Some(dec!(95.5)))
        );
        assert_eq!(
            bracket(SignalSide::Hold, close, Some(1.5), 2.0, 3.0),
            (None, None)
        );
        assert_eq!(
            bracket(SignalSide::Buy, close, None, 2.0, 3.0),
            (None, None)
        );
        assert_eq!(
            bracket(SignalSide::Buy, close, Some(0.0), 2.0, 3.0),
            (None, None)
        );
        // A stop below zero is dropped, the take-profit kept.
        assert_eq!(
            bracket(SignalSide::Buy, dec!(1), Some(1.0), 2.0, 3.0),
            (None, Some(dec!(4)))
        );
        // A short's take-profit below zero is dropped.
        assert_eq!(
            bracket(SignalSide::Sell, dec!(1), Some(1.0), 2.0, 3.0),
            (Some(dec!(3)), None)
        );
    }

    #[test]
    fn levels_are_rounded_to_eight_places() {
        let (sl, tp) = bracket(
            SignalSide::Buy,
            dec!(6635.279785),
            Some(1.0 / 3.0),
            2.0,
            3.0,
        );
        assert_eq!(sl, Some(dec!(6634.61311833)));
        assert_eq!(tp, Some(dec!(6636.279785)));
        for p in [sl, tp].into_iter().flatten() {
            assert!(p.scale() <= 8, "{p}");
        }
    }

    proptest! {
        /// Stops sit on the losing side of the close, targets on the winning side, both
        /// positive with at most 8 decimals.
        #[test]
        fn bracket_levels_are_on_the_right_side(
            close_cents in 1i64..100_000_000, atr in 1e-6f64..1e4, k_sl in 0.1f64..5.0, k_tp in 0.1f64..5.0,
            buy in any::<bool>(),
        ) {
            let close = Decimal::new(close_cents, 2);
            let side = if buy { SignalSide::Buy } else { SignalSide::Sell };
            let (sl, tp) = bracket(side, close, Some(atr), k_sl, k_tp);
            for p in [sl, tp].into_iter().flatten() {
                prop_assert!(p > Decimal::ZERO && p.scale() <= 8);
            }
            if let Some(sl) = sl {
                let losing_side = if buy { sl <= close } else { sl >= close };
                prop_assert!(losing_side, "stop {} vs close {}", sl, close);
            }
            if let Some(tp) = tp {
                let winning_side = if buy { tp >= close } else { tp <= close };
                prop_assert!(winning_side, "take-profit {} vs close {}", tp, close);
            }
            if buy { prop_assert!(tp.is_some()); } else { prop_assert!(sl.is_some()); }
        }

        /// Confidence is a probability and never below one half.
        #[test]
        fn confidence_is_the_chosen_sides_probability(p in 0.0f64..=1.0, b in 0.5f64..=1.0, s in 0.5f64..=1.0) {
            let (side, c) = decide(p, b, s);
            prop_assert!((0.5..=1.0).contains(&c));
            match side {
                SignalSide::Buy => prop_assert!(c == p && p >= b),
                SignalSide::Sell => prop_assert!((c - (1.0 - p)).abs() < 1e-12 && 1.0 - p >= s),
                SignalSide::Hold => prop_assert!(p < b && 1.0 - p < s),
            }
        }
    }

    #[test]
    fn probability_and_validation() {
        let mut p = params();
        p.intercept = 0.5;
        p.coefficients[0] = 2.0;
        p.standardizer.mean[0] = 1.0;
        p.standardizer.std[0] = 2.0;
        let m = SignalModel::new(p.clone(), None).expect("valid");
        let mut row = [0.0; 11];
        row[0] = 3.0; // z = 1 → logit 2.5
        assert!((m.p_up(&row) - sigmoid(2.5)).abs() < 1e-15);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert!(sigmoid(-800.0) >= 0.0 && sigmoid(800.0) <= 1.0);

        let mut bad = p.clone();
        bad.inputs.swap(0, 1);
        assert!(SignalModel::new(bad, None).is_err());
        let mut bad = p.clone();
        bad.coefficients[3] = f64::INFINITY;
        assert!(SignalModel::new(bad, None).is_err());
        let mut bad = p;
        bad.coefficients.pop();
        assert!(SignalModel::new(bad, None).is_err());
    }
}
