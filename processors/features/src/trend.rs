//! Bar classification and the trend state machine.
//!
//! A bar is REAL_BULL when it closes above the previous bar's high, REAL_BEAR when it closes
//! below the previous bar's low, and FAKE otherwise (the first bar of a symbol has no previous
//! bar and is FAKE). Prices are compared as exact decimals, so a close equal to the previous
//! high is FAKE, never a rounding accident.
//!
//! The trend starts NEUTRAL and flips only on two consecutive real bars of the same direction:
//! two REAL_BULL bars in a row make it BULLISH, two REAL_BEAR bars in a row make it BEARISH.
//! "Consecutive" means adjacent bars: a FAKE bar in between resets the run, so FAKE bars never
//! change the trend and a single opposite real bar never reverses it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tradestream_schemas::{BarClass, Trend};

/// Classifies a bar's close against the previous bar's range (`None` for a symbol's first bar).
pub fn classify(close: Decimal, previous_high_low: Option<(Decimal, Decimal)>) -> BarClass {
    match previous_high_low {
        Some((high, _)) if close > high => BarClass::RealBull,
        Some((_, low)) if close < low => BarClass::RealBear,
        _ => BarClass::Fake,
    }
}

/// The trend state machine of one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendMachine {
    trend: Trend,
    /// The previous bar's class.
    previous: Option<BarClass>,
}

impl Default for TrendMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl TrendMachine {
    /// A machine in the NEUTRAL state with no bars seen.
    pub fn new() -> Self {
        Self {
            trend: Trend::Neutral,
            previous: None,
        }
    }

    /// The current trend.
    pub fn trend(&self) -> Trend {
        self.trend
    }

    /// Feeds the next bar's class and returns the trend after it.
    pub fn update(&mut self, class: BarClass) -> Trend {
        match (self.previous, class) {
            (Some(BarClass::RealBull), BarClass::RealBull) => self.trend = Trend::Bullish,
            (Some(BarClass::RealBear), BarClass::RealBear) => self.trend = Trend::Bearish,
            _ => {}
        }
        self.previous = Some(class);
        self.trend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class() -> impl Strategy<Value = BarClass> {
        prop_oneof![
            Just(BarClass::RealBull),
            Just(BarClass::RealBear),
            Just(BarClass::Fake)
        ]
    }

    fn opposite(t: Trend) -> Option<BarClass> {
        match t {
            Trend::Bullish => Some(BarClass::RealBear),
            Trend::Bearish => Some(BarClass::RealBull),
            Trend::Neutral => None,
        }
    }

    fn run(classes: &[BarClass]) -> TrendMachine {
        let mut m = TrendMachine::new();
        for &c in classes {
            m.update(c);
        }
        m
    }

    #[test]
    fn classification_is_strict() {
        let d = |s: &str| s.parse::<Decimal>().expect("literal");
        let prev = Some((d("10"), d("8")));
        assert_eq!(classify(d("10.00000001"), prev), BarClass::RealBull);
        assert_eq!(classify(d("10"), prev), BarClass::Fake);
        assert_eq!(classify(d("8"), prev), BarClass::Fake);
        assert_eq!(classify(d("7.99999999"), prev), BarClass::RealBear);
        assert_eq!(classify(d("100"), None), BarClass::Fake);
    }

    #[test]
    fn examples() {
        use BarClass::*;
        assert_eq!(run(&[RealBull]).trend(), Trend::Neutral);
        assert_eq!(run(&[RealBull, RealBull]).trend(), Trend::Bullish);
        assert_eq!(run(&[RealBull, Fake, RealBull]).trend(), Trend::Neutral);
        assert_eq!(run(&[RealBull, RealBull, RealBear]).trend(), Trend::Bullish);
        assert_eq!(
            run(&[RealBull, RealBull, RealBear, Fake, RealBear]).trend(),
            Trend::Bullish
        );
        assert_eq!(
            run(&[RealBull, RealBull, RealBear, RealBear]).trend(),
            Trend::Bearish
        );
        assert_eq!(
            run(&[RealBear, RealBear, RealBull, RealBull, RealBull]).trend(),
            Trend::Bullish
        );
    }

    proptest! {
        #[test]
        fn fake_bars_never_change_the_trend(history in prop::collection::vec(class(), 0..60)) {
            let mut m = run(&history);
            let before = m.trend();
            prop_assert_eq!(m.update(BarClass::Fake), before);
        }

        #[test]
        fn a_single_opposite_real_bar_never_reverses(
            history in prop::collection::vec(class(), 0..60),
            after in prop::option::of(class()),
        ) {
            let mut m = run(&history);
            let before = m.trend();
            let Some(against) = opposite(before) else { return Ok(()) };
            // "Single": the bar before it was not of the same opposite class.
            prop_assume!(history.last() != Some(&against));
            prop_assert_eq!(m.update(against), before);
            // Whatever follows, unless it is a second opposite bar, the trend is not reversed.
            if let Some(next) = after.filter(|n| *n != against) {
                prop_assert_eq!(m.update(next), before);
            }
        }

        #[test]
        fn two_consecutive_real_bars_always_set_their_trend(
            history in prop::collection::vec(class(), 0..60),
            bull in any::<bool>(),
        ) {
            let mut m = run(&history);
            let (c, expected) = if bull { (BarClass::RealBull, Trend::Bullish) } else { (BarClass::RealBear, Trend::Bearish) };
            m.update(c);
            prop_assert_eq!(m.update(c), expected);
        }

    }
}
