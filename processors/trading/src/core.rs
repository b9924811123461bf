//! [`TradingCore`]: the router and the venue in one task (see the crate documentation for the
//! order of one instant).
//!
//! Inputs and when they take effect:
//! - sequenced bars and signals (step > 0) wait in the [`Barrier`] and are processed per
//!   instant, in step order, whatever order they arrive in;
//! - manual NEW orders and API cancel requests (from `orders`) and kill-switch commands (from
//!   `controls`) take effect on arrival, that is *between* instants: after every instant
//!   released before they arrived and before the next. A manual order's risk verdict
//!   (ACCEPTED or REJECTED) is therefore published at once, decided on the books as of the
//!   last instant processed, and the venue holds it from then on; a cancel ends the order
//!   before the next instant's bars; a kill switch governs the next instant's decisions.
//!   The runner logs the order in which a single task saw its inputs (the changelog), so a
//!   restart reproduces these effects instead of deciding them anew;
//! - unsequenced bars and signals (step 0) are instants of their own, processed on arrival.
//!
//! Everything else on `orders` is the core's own output coming back and is skipped. That is
//! the one place where arrival order would matter if the venue were external: a broker
//! adapter's fills and order updates would enter here, in the order the broker reports them.
//!
//! Outputs: the router's orders and the venue's fills and order updates, on `orders` and
//! `fills` exactly as before the two were composed, and at the end of each instant (a
//! sequenced one, or an unsequenced bar) a [`Valuation`] on `valuations` for every account
//! that holds a position or traded in it: its value from the books the risk checks use,
//! which the sink stores as the account's portfolio snapshot at the instant.
//!
//! Delivery guarantees: the whole state (router, venue, barrier) round-trips through
//! [`Processor::snapshot`], and every input is idempotent (each part recognises what it has
//! applied; the barrier refuses a bar or signal of a released instant).

use crate::barrier::{Barrier, Instant};
use crate::error::TradingError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use tradestream_exchange::{ExchangeConfig, ExchangeError, ExchangeProcessor, Holdings};
use tradestream_router::{AccountView, RouterConfig, RouterError, RouterProcessor};
use tradestream_schemas::{
    AccountId, AnyRecord, BarrierStatus, ErrorClass, Fill, MarketData, Order, OrderStatus,
    ProcessError, Processor, Record, Symbol, TaskScope, Topic, TradingSignal, Valuation,
};

/// Version of the snapshot layout, the first byte of every snapshot; bump it whenever a
/// serialized state type changes shape, so an old snapshot is refused instead of misread.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// The trading core's settings: the `[router]` and `[exchange]` sections of the pipeline
/// configuration.
#[derive(Debug, Clone, Default)]
pub struct TradingConfig {
    /// Accounts, sizing and risk limits.
    pub router: RouterConfig,
    /// The paper venue: slippage, commissions, time in force, shorting.
    pub exchange: ExchangeConfig,
}

/// The trading core: see the module documentation.
#[derive(Debug, Clone)]
pub struct TradingCore {
    router: RouterProcessor,
    venue: ExchangeProcessor,
    barrier: Barrier,
}

/// The snapshotted state, borrowed for writing.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    #[serde(with = "serde_bytes")]
    router: &'a [u8],
    #[serde(with = "serde_bytes")]
    venue: &'a [u8],
    barrier: &'a Barrier,
}

/// The snapshotted state, owned for reading.
#[derive(Deserialize)]
struct SnapshotOwned {
    #[serde(with = "serde_bytes")]
    router: Vec<u8>,
    #[serde(with = "serde_bytes")]
    venue: Vec<u8>,
    barrier: Barrier,
}

/// The result of one input inside an instant. A fatal error is returned: the core stops and
/// restarts from its snapshot, before the instant. Any other is logged and the instant goes
/// on without that input, as arrival order would dead-letter that one record and go on: an
/// instant cannot be dead-lettered, and stopping it would stop every later one.
fn within_instant<T, E: Display>(
    result: Result<T, E>,
    class: impl Fn(&E) -> ErrorClass,
    what: &str,
    id: &str,
) -> Result<Option<T>, E> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if class(&e) == ErrorClass::Fatal => Err(e),
        Err(e) => {
            tracing::warn!(what, id, error = %e, "trading: input of an instant refused");
            Ok(None)
        }
    }
}

/// The router's books, which the venue consults for what a cash account may sell: one books
/// model for the risk checks and the venue.
struct Books<'a>(&'a RouterProcessor);

impl Holdings for Books<'_> {
    fn held(&self, account: &AccountId, symbol: &Symbol) -> Decimal {
        self.0
            .book(account)
            .map_or(Decimal::ZERO, |b| b.quantity(symbol))
    }
}

/// What one instant (or one arrival) produced, with the fills kept apart for the valuations.
#[derive(Default)]
struct Outputs {
    records: Vec<AnyRecord>,
    fills: Vec<Fill>,
}

impl TradingCore {
    /// A core with no orders; fails on an invalid configuration.
    pub fn new(config: TradingConfig) -> Result<Self, TradingError> {
        Ok(Self {
            router: RouterProcessor::new(config.router)?,
            venue: ExchangeProcessor::new(config.exchange)?,
            barrier: Barrier::default(),
        })
    }

    /// The router part (books, risk state).
    pub fn router(&self) -> &RouterProcessor {
        &self.router
    }

    /// The venue part (resting orders).
    pub fn venue(&self) -> &ExchangeProcessor {
        &self.venue
    }

    /// The instant barrier (last instant processed, instants held).
    pub fn barrier(&self) -> &Barrier {
        &self.barrier
    }

    /// One account's books as the risk checks see them.
    pub fn account(&self, account: &AccountId) -> Option<AccountView> {
        self.router.account(account)
    }

    /// The state as snapshot bytes: [`SNAPSHOT_FORMAT`], then MessagePack.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, TradingError> {
        let router = self.router.snapshot_bytes()?;
        let venue = self.venue.snapshot_bytes()?;
        let state = SnapshotRef {
            router: &router,
            venue: &venue,
            barrier: &self.barrier,
        };
        tradestream_schemas::snapshot::encode(SNAPSHOT_FORMAT, &state)
            .map_err(TradingError::Snapshot)
    }

    /// Replaces the state with one from [`Self::snapshot_bytes`]; refuses (and changes
    /// nothing) another format version or corrupt bytes.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), TradingError> {
        let state: SnapshotOwned = tradestream_schemas::snapshot::decode(SNAPSHOT_FORMAT, bytes)
            .map_err(TradingError::Snapshot)?;
        let mut router = self.router.clone();
        router.restore_bytes(&state.router)?;
        let mut venue = self.venue.clone();
        venue.restore_bytes(&state.venue)?;
        self.router = router;
        self.venue = venue;
        self.barrier = state.barrier;
        Ok(())
    }

    /// Processes every instant the barrier releases.
    fn advance(&mut self) -> Result<Vec<AnyRecord>, TradingError> {
        let mut records = Vec::new();
        while let Some(instant) = self.barrier.pop_ready() {
            records.extend(self.instant(instant)?);
        }
        Ok(records)
    }

    /// One sequenced instant, in the fixed order; ends with its valuations.
    fn instant(&mut self, instant: Instant) -> Result<Vec<AnyRecord>, TradingError> {
        let mut out = Outputs::default();
        self.fill_bars(&instant.bars, &mut out)?;
        for bar in &instant.bars {
            within_instant(
                self.router.on_market_data(bar),
                RouterError::class,
                "bar",
                &bar.record_id,
            )?;
        }
        let mut decided = Vec::new();
        for s in &instant.signals {
            if let Some(records) = within_instant(
                self.router.on_signal(s),
                RouterError::class,
                "signal",
                &s.signal_id,
            )? {
                decided.extend(records);
            }
        }
        self.accept(decided, &mut out)?;
        Ok(self.valued(out, (instant.step, instant.time, None)))
    }

    /// The instant's records followed by its valuations: every account holding a position at
    /// its end or with a fill in it, valued at each held symbol's last close (the books the
    /// risk checks use; `connectors/postgres/tests/portfolio_model.rs` keeps them equal to
    /// the SQL's), in the configuration's account order.
    fn valued(&self, out: Outputs, instant: (i64, DateTime<Utc>, Option<&str>)) -> Vec<AnyRecord> {
        let Outputs { mut records, fills } = out;
        for id in self.router.config().accounts.keys() {
            let Some((book, equity)) = self.router.valued_book(id) else {
                continue;
            };
            let holds = book.positions.values().any(|p| !p.quantity.is_zero());
            if holds || fills.iter().any(|f| &f.account == id) {
                records.push(AnyRecord::Valuation(Valuation::new(
                    id.clone(),
                    instant,
                    book.cash,
                    equity - book.cash,
                )));
            }
        }
        records
    }

    /// Step 1 and 2 of an instant: the venue fills the bars against the resting orders, the
    /// router applies what the venue published.
    fn fill_bars(&mut self, bars: &[MarketData], out: &mut Outputs) -> Result<(), TradingError> {
        for bar in bars {
            if let Some(records) = within_instant(
                self.venue.on_market_data(bar, &Books(&self.router)),
                ExchangeError::class,
                "bar",
                &bar.record_id,
            )? {
                self.apply_venue(records, out)?;
            }
        }
        Ok(())
    }

    /// Applies the venue's fills and order updates to the router and publishes them.
    fn apply_venue(
        &mut self,
        records: Vec<AnyRecord>,
        out: &mut Outputs,
    ) -> Result<(), TradingError> {
        for r in records {
            match &r {
                AnyRecord::Fill(f) => {
                    within_instant(
                        self.router.on_fill(f),
                        RouterError::class,
                        "fill",
                        &f.fill_id,
                    )?;
                    out.fills.push(f.clone());
                }
                AnyRecord::Order(o) => {
                    within_instant(
                        self.router.on_order(o),
                        RouterError::class,
                        "order event",
                        &o.event_id,
                    )?;
                }
                _ => {}
            }
            out.records.push(r);
        }
        Ok(())
    }

    /// Step 4: publishes the router's decisions and hands the venue every one it must act
    /// on (accepted orders and cancel requests; not rejections).
    fn accept(&mut self, decided: Vec<AnyRecord>, out: &mut Outputs) -> Result<(), TradingError> {
        let mut for_venue = Vec::new();
        for r in decided {
            if let AnyRecord::Order(o) = &r
                && o.status != OrderStatus::Rejected
            {
                for_venue.push(o.clone());
            }
            out.records.push(r);
        }
        for o in &for_venue {
            if let Some(records) = within_instant(
                self.venue.on_order(o),
                ExchangeError::class,
                "order",
                &o.event_id,
            )? {
                self.apply_venue(records, out)?;
            }
        }
        Ok(())
    }

    /// An unsequenced bar: an instant of its own, on arrival, valued like a sequenced one.
    fn on_bar(&mut self, bar: &MarketData) -> Result<Vec<AnyRecord>, TradingError> {
        let mut out = Outputs::default();
        let records = self.venue.on_market_data(bar, &Books(&self.router))?;
        self.apply_venue(records, &mut out)?;
        self.router.on_market_data(bar)?;
        Ok(self.valued(out, (0, bar.event_time, Some(&bar.record_id))))
    }

    /// An unsequenced signal: decided on arrival.
    fn on_signal(&mut self, signal: &TradingSignal) -> Result<Vec<AnyRecord>, TradingError> {
        let mut out = Outputs::default();
        let decided = self.router.on_signal(signal)?;
        self.accept(decided, &mut out)?;
        Ok(out.records)
    }

    /// A record from `orders`: a manual request or an API cancel, decided on arrival; the
    /// core's own events coming back are skipped.
    fn on_order(&mut self, o: &Order) -> Result<Vec<AnyRecord>, TradingError> {
        let mut out = Outputs::default();
        if o.status != OrderStatus::New {
            // A NEW request that breaks a rule is rejected by the router (a REJECTED order
            // with the reason); any other order event must be well formed to be skipped.
            o.validate().map_err(RouterError::from)?;
        }
        if o.status == OrderStatus::New {
            let decided = self.router.on_order(o)?;
            self.accept(decided, &mut out)?;
        } else if o.is_cancel_request() {
            let records = self.venue.on_order(o)?;
            self.apply_venue(records, &mut out)?;
        }
        Ok(out.records)
    }
}

impl Processor for TradingCore {
    fn name(&self) -> &'static str {
        "trading"
    }

    fn inputs(&self) -> &'static [Topic] {
        &[
            Topic::MarketData,
            Topic::TradingSignals,
            Topic::Orders,
            Topic::Controls,
        ]
    }

    fn process(
        &mut self,
        input: &AnyRecord,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError> {
        let out = match input {
            AnyRecord::MarketData(m) if m.step > 0 => {
                m.validate().map_err(RouterError::from)?;
                self.barrier.add_bar(m);
                self.advance()
            }
            AnyRecord::Signal(s) if s.step > 0 => {
                s.validate().map_err(RouterError::from)?;
                self.barrier.add_signal(s);
                self.advance()
            }
            AnyRecord::MarketData(m) => {
                m.validate().map_err(RouterError::from)?;
                self.on_bar(m)
            }
            AnyRecord::Signal(s) => {
                s.validate().map_err(RouterError::from)?;
                self.on_signal(s)
            }
            AnyRecord::Order(o) => self.on_order(o),
            AnyRecord::Control(c) => return self.router.on_control(c),
            other => {
                return Err(ProcessError::dead_letter(format!(
                    "the trading core does not read {}",
                    other.topic()
                )));
            }
        };
        Ok(out?)
    }

    /// Accounts, orders and resting orders span every key and topic: one copy sees all.
    fn scope(&self) -> TaskScope {
        TaskScope::Single
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(Some(self.snapshot_bytes()?))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ProcessError> {
        Ok(self.restore_bytes(snapshot)?)
    }

    fn barrier(&self) -> Option<BarrierStatus> {
        Some(BarrierStatus {
            done: self.barrier.done(),
            held: self.barrier.held(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_pipeline_watches_it_read() -> Result<(), TradingError> {
        // Controls aside: a control-plane topic nobody waits on to drain.
        let core = TradingCore::new(TradingConfig::default())?;
        assert_eq!(
            tradestream_schemas::topics::data_inputs(core.inputs()),
            tradestream_schemas::topics::stage_inputs("trading").expect("listed")
        );
        Ok(())
    }

    #[test]
    fn a_snapshot_of_another_format_is_refused() -> Result<(), TradingError> {
        let mut core = TradingCore::new(TradingConfig::default())?;
        let mut bytes = core.snapshot_bytes()?;
        core.restore_bytes(&bytes)?;
        bytes[0] = SNAPSHOT_FORMAT + 1;
        assert!(matches!(
            core.restore_bytes(&bytes),
            Err(TradingError::Snapshot(_))
        ));
        Ok(())
    }

    #[test]
    fn only_cancel_requests_are_taken_from_orders() {
        let mut o = tradestream_schemas::samples::order();
        o.status = OrderStatus::Canceled;
        assert!(!o.is_cancel_request(), "the venue's own update");
        let o = o.cancel_request("req-1", "MANUAL_CANCEL: by=test".into(), o.updated_time);
        assert!(o.is_cancel_request());
    }
}
