//! The venue's own record of what each account holds, so a cash account can never sell more
//! than it owns, whatever order the router's decisions and the venue's fills race in.
//!
//! The router checks positions before it accepts a sell, but it decides on the fills it has
//! seen: a protective stop can fill at the venue while the router, not yet knowing, sends a
//! closing sell for the same shares. A broker refuses the second sell for a cash account; so
//! does this venue. Because late orders are filled against buffered bars (see the processor),
//! a sell can land *before* fills that already happened, so the rule is checked over time: a
//! sell of `q` at `t` is allowed only if the position stays ≥ `q` at `t` and at every later
//! fill already booked.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Signed position changes of one account in one symbol, by fill time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ledger {
    /// Position from fills older than anything that can still be filled.
    base: Decimal,
    deltas: BTreeMap<DateTime<Utc>, Decimal>,
}

impl Ledger {
    /// Books a fill: `signed` is + for buys, − for sells.
    pub(crate) fn book(&mut self, at: DateTime<Utc>, signed: Decimal) {
        *self.deltas.entry(at).or_default() += signed;
    }

    /// The most that can be sold at `at` without the position going below zero then or at
    /// any later booked fill.
    pub(crate) fn sellable(&self, at: DateTime<Utc>) -> Decimal {
        let mut running = self.base + self.deltas.range(..=at).map(|(_, d)| *d).sum::<Decimal>();
        let mut low = running;
        for d in self
            .deltas
            .range(at..)
            .filter(|(t, _)| **t > at)
            .map(|(_, d)| d)
        {
            running += *d;
            low = low.min(running);
        }
        low.max(Decimal::ZERO)
    }

    /// Folds fills before `before` into the base: no order can be filled before then any more.
    pub(crate) fn compact(&mut self, before: DateTime<Utc>) {
        let recent = self.deltas.split_off(&before);
        self.base += self.deltas.values().copied().sum::<Decimal>();
        self.deltas = recent;
    }

    /// The position after every booked fill.
    #[cfg(test)]
    pub(crate) fn position(&self) -> Decimal {
        self.base + self.deltas.values().copied().sum::<Decimal>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 1, day, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn a_sell_before_a_later_sell_sees_it() {
        let mut l = Ledger::default();
        l.book(t(1), Decimal::from(10));
        l.book(t(5), Decimal::from(-10)); // the stop filled on day 5
        assert_eq!(l.sellable(t(6)), Decimal::ZERO);
        // A late closing order filled against day 3's bar would make day 5 short.
        assert_eq!(l.sellable(t(3)), Decimal::ZERO);
        assert_eq!(l.sellable(t(1)), Decimal::ZERO);
        l.book(t(7), Decimal::from(4));
        assert_eq!(l.sellable(t(8)), Decimal::from(4));
        assert_eq!(l.sellable(t(3)), Decimal::ZERO);
    }

    #[test]
    fn compaction_keeps_the_position() {
        let mut l = Ledger::default();
        l.book(t(1), Decimal::from(10));
        l.book(t(2), Decimal::from(-3));
        l.book(t(4), Decimal::from(5));
        l.compact(t(3));
        assert_eq!(l.position(), Decimal::from(12));
        assert_eq!(l.sellable(t(3)), Decimal::from(7));
        assert_eq!(l.deltas.len(), 1);
    }

    proptest! {
        /// Booking only what `sellable` allows keeps the time-ordered position ≥ 0 at every
        /// fill, whatever order the fills are booked in.
        #[test]
        fn sells_within_sellable_never_go_short(
            ops in prop::collection::vec((1u32..28, -20i64..20), 1..60)
        ) {
            let mut l = Ledger::default();
            for (day, q) in ops {
                let q = Decimal::from(q);
                if q < Decimal::ZERO {
                    let allowed = l.sellable(t(day)).min(-q);
                    l.book(t(day), -allowed);
                } else {
                    l.book(t(day), q);
                }
                let mut running = l.base;
                for d in l.deltas.values() {
                    running += *d;
                    prop_assert!(running >= Decimal::ZERO, "{l:?}");
                }
            }
        }
    }
}
