//! The instant barrier: holds a sequenced market instant's bars and signals until all of them
//! are in, and releases instants one at a time, in step order.
//!
//! Why: the trading core reads `market_data` and `trading_signals`, whose partitions arrive in
//! any order and at their own pace. Deciding in arrival order would make orders, fills and
//! books depend on timing. Ingest numbers its bars by *step* (every bar of one instant shares
//! a step; steps follow each other without gaps from 1; each bar says how many bars its step
//! has in `step_bars`), and the scorer emits exactly one signal per sequenced bar, so the
//! barrier knows when an instant is complete without asking anyone.
//!
//! Unsequenced bars and signals (step 0) do not pass through here: they are events of their
//! own, processed on arrival.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tradestream_schemas::{MarketData, TradingSignal};

/// What the barrier holds of one step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Held {
    /// How many bars the step has (from its bars' `step_bars`, at least 1).
    expected: usize,
    bars: Vec<MarketData>,
    signals: Vec<TradingSignal>,
}

impl Held {
    fn complete(&self) -> bool {
        self.expected > 0 && self.bars.len() >= self.expected && self.signals.len() >= self.expected
    }
}

/// One complete market instant, its bars and signals sorted by symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Instant {
    /// The step number (1, 2, ...).
    pub step: i64,
    /// Event time of the step's bars.
    pub time: DateTime<Utc>,
    /// The step's bars, by symbol.
    pub bars: Vec<MarketData>,
    /// The step's signals, by symbol.
    pub signals: Vec<TradingSignal>,
}

/// The barrier's state; part of the trading core's snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Barrier {
    /// The last step released; 0 before the first.
    done: i64,
    /// What is held of the steps after `done`.
    steps: BTreeMap<i64, Held>,
}

impl Barrier {
    /// The last step released (0 before the first).
    pub fn done(&self) -> i64 {
        self.done
    }

    /// How many steps are held, waiting for the rest of their inputs or for an earlier step.
    pub fn held(&self) -> usize {
        self.steps.len()
    }

    /// Holds a sequenced bar; false when its step was released already or the bar is held
    /// (a redelivery).
    pub fn add_bar(&mut self, bar: &MarketData) -> bool {
        if bar.step <= self.done {
            return false;
        }
        let step = self.steps.entry(bar.step).or_default();
        // Kept sorted by symbol: a repeat is found by binary search, and the instant is
        // released in symbol order without sorting.
        let Err(at) = step.bars.binary_search_by(|b| b.symbol.cmp(&bar.symbol)) else {
            return false;
        };
        step.expected = usize::try_from(bar.step_bars).unwrap_or(0).max(1);
        step.bars.insert(at, bar.clone());
        if step.bars.len() == 1 {
            self.warn_if_backlogged();
        }
        true
    }

    /// Holds a sequenced signal; false when its step was released already or a signal of its
    /// symbol is held.
    pub fn add_signal(&mut self, signal: &TradingSignal) -> bool {
        if signal.step <= self.done {
            return false;
        }
        let step = self.steps.entry(signal.step).or_default();
        let Err(at) = step
            .signals
            .binary_search_by(|s| s.symbol.cmp(&signal.symbol))
        else {
            return false;
        };
        step.signals.insert(at, signal.clone());
        true
    }

    /// The next instant, when all of its bars and signals are in.
    pub fn pop_ready(&mut self) -> Option<Instant> {
        let next = self.done + 1;
        if !self.steps.get(&next).is_some_and(Held::complete) {
            return None;
        }
        let held = self.steps.remove(&next)?;
        self.done = next;
        let (bars, signals) = (held.bars, held.signals);
        let time = bars
            .first()
            .map_or(DateTime::<Utc>::MIN_UTC, |b| b.event_time);
        Some(Instant {
            step: next,
            time,
            bars,
            signals,
        })
    }

    /// Logs when the steps held pass a power of two from 1,024 on: the core is then waiting
    /// for something that may never come (a bar or a signal of the next step was lost
    /// upstream, or the scorer does not run).
    fn warn_if_backlogged(&self) {
        let held = self.steps.len();
        if held >= 1024 && held.is_power_of_two() {
            let next = self.done + 1;
            let (bars, signals, expected) = self
                .steps
                .get(&next)
                .map_or((0, 0, 0), |s| (s.bars.len(), s.signals.len(), s.expected));
            tracing::warn!(
                held,
                next_step = next,
                bars,
                signals,
                expected,
                "trading: instants are piling up behind step {next}, which still misses bars \
                 or signals (expected while a replay's market data runs ahead of its signals; \
                 otherwise: is the scorer running? was a record of that step dead-lettered?)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradestream_schemas::{Symbol, samples};

    fn bar(symbol: &str, step: i64, step_bars: i32) -> MarketData {
        let mut b = samples::market_data();
        b.symbol = Symbol::canonical(symbol).expect("symbol");
        b.step = step;
        b.step_bars = step_bars;
        b
    }

    fn signal(symbol: &str, step: i64) -> TradingSignal {
        let mut s = samples::trading_signal();
        s.symbol = Symbol::canonical(symbol).expect("symbol");
        s.step = step;
        s
    }

    #[test]
    fn an_instant_is_released_with_all_its_bars_and_signals_in_step_order() {
        let mut b = Barrier::default();
        assert!(b.add_bar(&bar("BBB", 2, 1)));
        assert!(b.add_signal(&signal("BBB", 2)));
        assert!(b.pop_ready().is_none(), "step 2 waits for step 1");
        assert!(b.add_bar(&bar("BBB", 1, 2)));
        assert!(b.add_signal(&signal("BBB", 1)));
        assert!(!b.add_bar(&bar("BBB", 1, 2)), "a redelivered bar");
        assert!(b.add_signal(&signal("AAA", 1)));
        assert!(b.pop_ready().is_none(), "step 1 misses a bar");
        assert!(b.add_bar(&bar("AAA", 1, 2)));
        let first = b.pop_ready().expect("step 1");
        assert_eq!(first.step, 1);
        let symbols: Vec<&str> = first.bars.iter().map(|b| b.symbol.as_str()).collect();
        assert_eq!(symbols, ["AAA", "BBB"]);
        assert_eq!(b.pop_ready().map(|i| i.step), Some(2));
        assert!(!b.add_bar(&bar("AAA", 1, 2)), "a bar of a released step");
        assert_eq!((b.done(), b.held()), (2, 0));
    }
}
