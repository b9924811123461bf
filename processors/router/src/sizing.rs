//! Position sizing of signal orders: a fixed fraction of equity is put at risk down to the
//! stop, scaled by how far the model's confidence is above the minimum, and rounded down to
//! whole lots (never up: rounding up would risk more than configured).

use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;

/// Inputs of one sizing decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizingInput {
    /// Account equity (cash + marked positions).
    pub equity: Decimal,
    /// Percent of equity at risk per trade.
    pub risk_per_trade_pct: Decimal,
    /// Signal confidence in [0, 1].
    pub confidence: f64,
    /// Minimum confidence; below it there is no order.
    pub min_confidence: f64,
    /// Entry (reference) price.
    pub entry: Decimal,
    /// Stop price, already checked to lie on the losing side of the entry.
    pub stop: Option<Decimal>,
    /// Stop distance in percent of the entry when there is no stop.
    pub fallback_stop_pct: Decimal,
    /// Lot size.
    pub lot_size: Decimal,
}

/// Confidence mapped linearly from `min_confidence` (0) to 1.0 (1); `None` below the minimum.
pub fn confidence_scale(confidence: f64, min_confidence: f64) -> Option<Decimal> {
    if !(confidence.is_finite() && confidence >= min_confidence) {
        return None;
    }
    let c = Decimal::from_f64(confidence)?.round_dp(8);
    let m = Decimal::from_f64(min_confidence)?.round_dp(8);
    let span = Decimal::ONE - m;
    if span <= Decimal::ZERO {
        return Some(Decimal::ONE);
    }
    Some(((c - m) / span).clamp(Decimal::ZERO, Decimal::ONE))
}

/// Rounds a non-negative quantity down to whole lots.
pub fn floor_to_lot(quantity: Decimal, lot_size: Decimal) -> Decimal {
    if quantity <= Decimal::ZERO || lot_size <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    quantity
        .checked_div(lot_size)
        .map_or(Decimal::ZERO, |lots| (lots.floor() * lot_size).normalize())
}

/// `floor_to_lot(equity × risk% × scale / |entry − stop|)`; `None` when the confidence is
/// below the minimum. Zero when equity is not positive or the distance is zero.
pub fn size(input: &SizingInput) -> Option<Decimal> {
    let scale = confidence_scale(input.confidence, input.min_confidence)?;
    let distance = match input.stop {
        Some(stop) => (input.entry - stop).abs(),
        None => input.entry * input.fallback_stop_pct / Decimal::ONE_HUNDRED,
    };
    if distance <= Decimal::ZERO || input.equity <= Decimal::ZERO {
        return Some(Decimal::ZERO);
    }
    let risk = input
        .equity
        .checked_mul(input.risk_per_trade_pct / Decimal::ONE_HUNDRED)
        .and_then(|r| r.checked_mul(scale))
        .unwrap_or(Decimal::ZERO);
    Some(
        risk.checked_div(distance)
            .map_or(Decimal::ZERO, |q| floor_to_lot(q, input.lot_size)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn input() -> SizingInput {
        SizingInput {
            equity: dec!(100000),
            risk_per_trade_pct: dec!(1),
            confidence: 1.0,
            min_confidence: 0.55,
            entry: dec!(100),
            stop: Some(dec!(95)),
            fallback_stop_pct: dec!(2),
            lot_size: dec!(1),
        }
    }

    #[test]
    fn full_confidence_risks_one_percent_to_the_stop() {
        // 100000 × 1 % / 5 = 200
        assert_eq!(size(&input()), Some(dec!(200)));
    }

    #[test]
    fn confidence_scales_linearly() {
        // (0.775 − 0.55) / 0.45 = 0.5 → 100
        assert_eq!(
            size(&SizingInput {
                confidence: 0.775,
                ..input()
            }),
            Some(dec!(100))
        );
        assert_eq!(
            size(&SizingInput {
                confidence: 0.55,
                ..input()
            }),
            Some(dec!(0))
        );
        assert_eq!(
            size(&SizingInput {
                confidence: 0.549,
                ..input()
            }),
            None
        );
    }

    #[test]
    fn fallback_stop_and_lots() {
        // 1000 / (2 % of 100 = 2) = 500
        assert_eq!(
            size(&SizingInput {
                stop: None,
                ..input()
            }),
            Some(dec!(500))
        );
        // 1000 / 3 = 333.33… → 333 whole, 333.333 in 0.001 lots
        assert_eq!(
            size(&SizingInput {
                stop: Some(dec!(97)),
                ..input()
            }),
            Some(dec!(333))
        );
        assert_eq!(
            size(&SizingInput {
                stop: Some(dec!(97)),
                lot_size: dec!(0.001),
                ..input()
            }),
            Some(dec!(333.333))
        );
        assert_eq!(
            size(&SizingInput {
                stop: Some(dec!(97)),
                lot_size: dec!(10),
                ..input()
            }),
            Some(dec!(330))
        );
        assert_eq!(
            size(&SizingInput {
                equity: dec!(-5),
                ..input()
            }),
            Some(dec!(0))
        );
    }
}
