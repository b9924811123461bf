//! Lockstep: the bookkeeping that lets the router and the exchange decide every step on
//! exactly the same inputs, however the topics interleave.
//!
//! Why: the router decides with the fills and order updates it has seen, and the venue fills
//! with the orders it has seen. Left to arrival order, two runs over the same market data
//! (or a run with a crash) decide differently whenever a fill comes back a moment later.
//!
//! How: ingest numbers its bars by *step* (every bar of one instant shares a step; steps
//! follow each other without gaps; each bar says how many bars its step has). Both cores
//! collect a step's inputs here and go step by step:
//! - the router decides step `k` (all its bars, then all its signals, by symbol) once it
//!   holds them all and the exchange's mark of step `k − 1`, whose fills and order updates
//!   it applies first;
//! - the exchange starts step `k` once it holds the router's mark of step `k − 1`, whose
//!   orders it applies first, then fills the step's bars.
//!
//! Each publishes a [`Progress`] mark per finished step, carrying what the other must apply,
//! so neither reads the other's records from `orders` or `fills` (whose partitions arrive in
//! any order). The two waits alternate and never deadlock: the router's step `k` and the
//! exchange's step `k` each need only the other's step `k − 1`.
//!
//! Unsequenced bars (step 0) keep arrival order, as does everything from outside the two
//! cores (manual requests, controls): those are events of their own, with no step to wait
//! for.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use tradestream_schemas::{ErrorClass, MarketData, Order, Progress, Symbol, TradingSignal};

/// The result of applying one input of a step. A fatal error is returned: the core stops and
/// restarts from its snapshot, before the step. Any other is logged and the step goes on
/// without that input (`None`), as arrival order would dead-letter that one record and go
/// on: a step cannot be dead-lettered, and stopping it would stop every later one.
pub fn within_step<T, E: Display>(
    result: Result<T, E>,
    class: impl Fn(&E) -> ErrorClass,
    what: &str,
    id: &str,
) -> Result<Option<T>, E> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if class(&e) == ErrorClass::Fatal => Err(e),
        Err(e) => {
            tracing::warn!(what, id, error = %e, "lockstep input refused");
            Ok(None)
        }
    }
}

/// What a core holds of one step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepInputs {
    /// Event time of the step's bars.
    pub time: Option<DateTime<Utc>>,
    /// How many bars the step has (from its bars' `step_bars`).
    pub expected: usize,
    /// The step's bars not yet processed, by symbol.
    pub bars: BTreeMap<Symbol, MarketData>,
    /// Symbols whose bar of the step was already processed (the exchange processes bars one
    /// by one, as they arrive).
    pub processed: BTreeSet<Symbol>,
    /// The step's signals, by symbol (the router only).
    pub signals: BTreeMap<Symbol, TradingSignal>,
}

impl StepInputs {
    /// Whether every bar of the step has arrived (processed or not).
    pub fn has_all_bars(&self) -> bool {
        self.expected > 0 && self.bars.len() + self.processed.len() >= self.expected
    }
}

/// A core's lockstep state; part of its snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lockstep {
    /// The last step finished (its mark published); 0 before the first.
    pub done: i64,
    /// Inputs of the steps after `done`.
    pub steps: BTreeMap<i64, StepInputs>,
    /// The peer's marks not yet applied, by step.
    pub peer: BTreeMap<i64, Progress>,
    /// Orders for the peer decided outside any step (manual requests, relayed cancels),
    /// carried by the next mark.
    pub carry: Vec<Order>,
}

impl Lockstep {
    /// Whether lockstep governs the core: from its first finished step on. Before it, the
    /// peer cannot have published anything that belongs to a step.
    pub fn engaged(&self) -> bool {
        self.done > 0
    }

    /// Holds a sequenced bar for `processor`, whose peer is `peer`; false when its step is
    /// finished or the bar already held (a redelivery). Warns when the steps held pile up
    /// (see [`Self::warn_if_backlogged`]).
    pub fn add_bar(&mut self, bar: &MarketData, processor: &str, peer: &str) -> bool {
        if bar.step <= self.done {
            return false;
        }
        let step = self.steps.entry(bar.step).or_default();
        if step.bars.contains_key(&bar.symbol) || step.processed.contains(&bar.symbol) {
            return false;
        }
        step.time = Some(bar.event_time);
        step.expected = usize::try_from(bar.step_bars).unwrap_or(0).max(1);
        step.bars.insert(bar.symbol.clone(), bar.clone());
        self.warn_if_backlogged(processor, peer);
        true
    }

    /// Logs when the steps held pass a power of two from 1,024 on: a core that holds that
    /// many is waiting for something that may never come (the peer stopped, runs without
    /// lockstep, or a bar or signal of the next step was lost upstream).
    fn warn_if_backlogged(&self, processor: &str, peer: &str) {
        let held = self.steps.len();
        // Once per new step (its first bar) at each power of two, not once per bar.
        let new_step = self
            .steps
            .last_key_value()
            .is_some_and(|(_, s)| s.bars.len() + s.processed.len() == 1);
        if held >= 1024 && held.is_power_of_two() && new_step {
            let next = self.next();
            let has_next = self.steps.get(&next).is_some_and(StepInputs::has_all_bars);
            let has_mark = next == 1 || self.peer.contains_key(&(next - 1));
            tracing::warn!(
                processor,
                held,
                next_step = next,
                next_step_bars_complete = has_next,
                peer_mark_present = has_mark,
                "lockstep: steps are piling up; the next step waits for its bars or signals \
                 or for the {peer}'s mark of the step before (is the {peer} running, with \
                 lockstep on?)"
            );
        }
    }

    /// Holds a sequenced signal; false when its step is finished or it is already held.
    pub fn add_signal(&mut self, signal: &TradingSignal) -> bool {
        if signal.step <= self.done {
            return false;
        }
        let step = self.steps.entry(signal.step).or_default();
        if step.signals.contains_key(&signal.symbol) {
            return false;
        }
        step.signals.insert(signal.symbol.clone(), signal.clone());
        true
    }

    /// Holds a mark of the peer; false for one already applied or held.
    pub fn add_peer(&mut self, mark: &Progress, applied_through: i64) -> bool {
        if mark.step <= applied_through || self.peer.contains_key(&mark.step) {
            return false;
        }
        self.peer.insert(mark.step, mark.clone());
        true
    }

    /// Its progress, for the runner's gauges.
    pub fn status(&self) -> tradestream_schemas::LockstepStatus {
        tradestream_schemas::LockstepStatus {
            done: self.done,
            held: self.steps.len(),
        }
    }

    /// The next step's number.
    pub fn next(&self) -> i64 {
        self.done + 1
    }

    /// Finishes step `done + 1`: the mark to publish, with the carried orders first.
    pub fn finish(&mut self, processor: &str, mut orders: Vec<Order>) -> Progress {
        let step = self.next();
        let time = self
            .steps
            .remove(&step)
            .and_then(|s| s.time)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut all = std::mem::take(&mut self.carry);
        all.append(&mut orders);
        self.done = step;
        Progress::new(processor, step, time, all, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradestream_schemas::samples;

    fn bar(symbol: &str, step: i64, step_bars: i32) -> MarketData {
        let mut b = samples::market_data();
        b.symbol = Symbol::canonical(symbol).expect("symbol");
        b.step = step;
        b.step_bars = step_bars;
        b
    }

    #[test]
    fn a_step_is_complete_with_all_its_bars_and_repeats_are_refused() {
        let mut l = Lockstep::default();
        assert!(l.add_bar(&bar("AAA", 1, 2), "router", "exchange"));
        assert!(
            !l.add_bar(&bar("AAA", 1, 2), "router", "exchange"),
            "a redelivered bar"
        );
        assert!(!l.steps[&1].has_all_bars());
        assert!(l.add_bar(&bar("BBB", 1, 2), "router", "exchange"));
        assert!(l.steps[&1].has_all_bars());
        let mark = l.finish("router", Vec::new());
        assert_eq!((mark.step, l.done), (1, 1));
        assert!(
            !l.add_bar(&bar("AAA", 1, 2), "router", "exchange"),
            "a bar of a finished step"
        );
        assert!(l.engaged());
    }
}
