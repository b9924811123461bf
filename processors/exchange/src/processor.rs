//! The paper venue: holds accepted orders and fills them against later market data.
//!
//! It is one part of the trading core (`tradestream-trading`), which calls it once per market
//! instant with the instant's bars, then with the orders decided on them, so inputs arrive
//! in time order: an order only trades on bars whose `event_time` is strictly after its
//! `created_time` (a bracket child also only after the bar that filled its parent), and a
//! bar is applied to its symbol's orders one order at a time, in (created_time, order_id)
//! order, so OCO and parent/child effects are fixed by the input.
//!
//! What an account holds is not the venue's to track: a cash account's sell executes only
//! up to the position the books passed in ([`Holdings`]; the trading core passes the
//! router's, the one books model) say it holds, plus what this bar's earlier fills moved.
//!
//! Outputs: `fills` (`fill_id = order_id:fill:n`, n from 0) and the order's next states on
//! `orders` (sequence = last seen + 1, cumulative `filled_quantity`).
//!
//! Delivery guarantees: the whole venue state (held and finished orders, OCO winners)
//! round-trips through [`ExchangeProcessor::snapshot_bytes`] (a format-version byte, then
//! MessagePack), so a restarted venue continues exactly. Redelivered inputs change nothing:
//! an ACCEPTED order the venue holds or has finished, a cancel for an order it no longer
//! holds, an echoed update and a bar an order has already seen are all no-ops. Finished
//! orders are forgotten past `dedup_orders` newer ones and `dedup_horizon_hours` of creation
//! time (see [`ExchangeConfig::dedup_orders`]), so the state stays bounded on a long run; an
//! ACCEPTED order it does not know, created at or before the last one forgotten, is then
//! taken for a copy and dropped.

use crate::config::{DaySession, ExchangeConfig};
use crate::error::ExchangeError;
use crate::matching::{OrderPrices, Prices, evaluate, slip};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tradestream_router::Commission;
use tradestream_router::error::status_name;
use tradestream_router::forgetting::Forgetting;
use tradestream_schemas::{
    AccountId, AnyRecord, Fill, MarketData, Order, OrderStatus, OriginKind, Record, Side, Symbol,
    TimeInForce,
};

/// Version of the snapshot layout, the first byte of every snapshot; bump it whenever a
/// serialized state type changes shape, so an old snapshot is refused instead of misread.
pub const SNAPSHOT_FORMAT: u8 = 3;

/// What each account holds, as the books say: a cash account sells only up to it.
pub trait Holdings {
    /// The signed quantity `account` holds of `symbol` (0 when none).
    fn held(&self, account: &AccountId, symbol: &Symbol) -> Decimal;
}

/// An order the venue holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    /// Latest state (published or received).
    order: Order,
    /// Fills so far.
    fills: u32,
    /// Bracket child waiting for its parent to fill.
    active: bool,
    /// Only bars strictly after this time may fill it.
    not_before: DateTime<Utc>,
    /// Last bar applied.
    last_bar: Option<DateTime<Utc>>,
    rested: bool,
    triggered: bool,
    /// UTC day a DAY order lives for, fixed at its first eligible bar.
    session: Option<NaiveDate>,
}

/// How an order the venue no longer holds ended (and when, for parents that filled).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Finished {
    status: OrderStatus,
    at: DateTime<Utc>,
    /// The order's creation time (absent from snapshots of builds before forgetting, which
    /// then use `at`).
    #[serde(default)]
    created: Option<DateTime<Utc>>,
}

impl Finished {
    /// The time it is forgotten by.
    fn created_or_end(&self) -> DateTime<Utc> {
        self.created.unwrap_or(self.at)
    }
}

/// The paper venue: see the module documentation.
#[derive(Debug, Clone)]
pub struct ExchangeProcessor {
    config: ExchangeConfig,
    commission: Commission,
    held: BTreeMap<String, Held>,
    finished: BTreeMap<String, Finished>,
    /// Bracket parent → the child that executed first (its siblings are canceled, including
    /// any that arrive later).
    oco_done: BTreeMap<String, String>,
    /// Held orders per symbol in (created_time, id) order: the orders a bar may fill, found
    /// without scanning every held order (scans per record and per bar made the venue six
    /// times slower than with the index, `benches/venue_loop.rs`). Derived from `held`, so
    /// not snapshotted.
    by_symbol: BTreeMap<Symbol, BTreeSet<(DateTime<Utc>, String)>>,
    /// The finished orders by creation time, in the order they are forgotten (see
    /// [`ExchangeConfig::dedup_orders`]). By creation, not by end: the router creates orders
    /// in about event-time order, while a resting order can end on any later bar, so ends
    /// say little about which orders may still arrive again.
    forgetting: Forgetting,
}

/// The snapshotted state, borrowed for writing (ordered maps: equal states, equal bytes).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    held: &'a BTreeMap<String, Held>,
    finished: &'a BTreeMap<String, Finished>,
    oco_done: &'a BTreeMap<String, String>,
    forgotten_through: Option<DateTime<Utc>>,
}

/// The snapshotted state, owned for reading.
#[derive(Deserialize)]
struct SnapshotOwned {
    held: BTreeMap<String, Held>,
    finished: BTreeMap<String, Finished>,
    oco_done: BTreeMap<String, String>,
    forgotten_through: Option<DateTime<Utc>>,
}

/// Adds a held order to the index of held orders by symbol.
fn index_held(
    by_symbol: &mut BTreeMap<Symbol, BTreeSet<(DateTime<Utc>, String)>>,
    id: &str,
    h: &Held,
) {
    by_symbol
        .entry(h.order.symbol.clone())
        .or_default()
        .insert((h.order.created_time, id.to_string()));
}

fn next_event(
    held: &Held,
    status: OrderStatus,
    at: DateTime<Utc>,
    reason: Option<String>,
) -> Order {
    let mut o = held.order.clone();
    o.sequence = o.sequence.saturating_add(1);
    o.event_id = format!("{}:{}", o.order_id, o.sequence);
    o.status = status;
    o.updated_time = at;
    o.reject_reason = reason;
    o
}

impl ExchangeProcessor {
    /// A venue with no orders; fails on an invalid config.
    pub fn new(config: ExchangeConfig) -> Result<Self, ExchangeError> {
        config.validate()?;
        Ok(Self {
            commission: config.commission(),
            config,
            held: BTreeMap::new(),
            finished: BTreeMap::new(),
            oco_done: BTreeMap::new(),
            by_symbol: BTreeMap::new(),
            forgetting: Forgetting::default(),
        })
    }

    /// Records how an order ended, then forgets the finished orders past both horizons.
    fn end(&mut self, id: String, status: OrderStatus, at: DateTime<Utc>, created: DateTime<Utc>) {
        let before = self.finished.get(&id).map(Finished::created_or_end);
        self.forgetting.note(&id, before, created);
        self.finished.insert(
            id,
            Finished {
                status,
                at,
                created: Some(created),
            },
        );
        let gone = self.forgetting.forget(
            self.config.dedup_orders,
            self.config.dedup_horizon_hours,
            |_| true,
        );
        for id in gone {
            self.finished.remove(&id);
            // A bracket parent's OCO winner: its children are created with it, so any copy
            // of them is now dropped as one too.
            self.oco_done.remove(&id);
        }
    }

    /// Whether an accepted order the venue does not know is a copy of one it forgot.
    fn forgotten(&self, o: &Order) -> bool {
        self.forgetting.covers(o.created_time)
    }

    /// Starts holding an order.
    fn hold(&mut self, h: Held) {
        let id = h.order.order_id.clone();
        index_held(&mut self.by_symbol, &id, &h);
        self.held.insert(id, h);
    }

    /// Stops holding an order.
    fn release(&mut self, id: &str) -> Option<Held> {
        let h = self.held.remove(id)?;
        if let Some(ids) = self.by_symbol.get_mut(&h.order.symbol) {
            ids.remove(&(h.order.created_time, id.to_string()));
            if ids.is_empty() {
                self.by_symbol.remove(&h.order.symbol);
            }
        }
        Some(h)
    }

    /// Rebuilds the indexes derived from `held`.
    fn reindex(&mut self) {
        self.by_symbol.clear();
        self.forgetting.rebuild(
            self.finished
                .iter()
                .map(|(id, f)| (f.created_or_end(), id.clone())),
        );
        for (id, h) in &self.held {
            index_held(&mut self.by_symbol, id, h);
        }
    }

    /// Ids of the held orders of `symbol` a bar applies to, in (created_time, id) order.
    fn workable(&self, symbol: &Symbol) -> impl Iterator<Item = (&String, &Held)> {
        self.by_symbol
            .get(symbol)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.held.get(id).map(|h| (id, h)))
            .filter(|(_, h)| h.active)
    }

    /// The state as snapshot bytes: [`SNAPSHOT_FORMAT`], then MessagePack with named fields.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, ExchangeError> {
        let state = SnapshotRef {
            held: &self.held,
            finished: &self.finished,
            oco_done: &self.oco_done,
            forgotten_through: self.forgetting.through(),
        };
        tradestream_schemas::snapshot::encode(SNAPSHOT_FORMAT, &state)
            .map_err(ExchangeError::Snapshot)
    }

    /// Replaces the state with a snapshot from [`Self::snapshot_bytes`]. Refuses (and changes
    /// nothing) another format version or corrupt bytes.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), ExchangeError> {
        let state: SnapshotOwned = tradestream_schemas::snapshot::decode(SNAPSHOT_FORMAT, bytes)
            .map_err(ExchangeError::Snapshot)?;
        self.held = state.held;
        self.finished = state.finished;
        self.oco_done = state.oco_done;
        self.forgetting.set_through(state.forgotten_through);
        self.reindex();
        Ok(())
    }

    /// Ids of the orders the venue holds (resting or waiting for a parent).
    pub fn held_orders(&self) -> Vec<&str> {
        self.held.keys().map(String::as_str).collect()
    }

    /// An ACCEPTED order to hold, a cancel request, or anything else (ignored).
    pub fn on_order(&mut self, o: &Order) -> Result<Vec<AnyRecord>, ExchangeError> {
        match o.status {
            OrderStatus::Accepted => self.on_accepted(o),
            OrderStatus::Canceled => Ok(self.on_cancel(o)),
            // Our own updates echoed back, rejections and NEW requests are not for the venue;
            // still track the highest sequence of held orders so ours stays above it.
            _ => {
                if let Some(h) = self.held.get_mut(&o.order_id)
                    && o.sequence > h.order.sequence
                {
                    h.order.sequence = o.sequence;
                }
                Ok(Vec::new())
            }
        }
    }

    fn on_accepted(&mut self, o: &Order) -> Result<Vec<AnyRecord>, ExchangeError> {
        if self.held.contains_key(&o.order_id)
            || self.finished.contains_key(&o.order_id)
            || self.forgotten(o)
        {
            return Ok(Vec::new()); // duplicate
        }
        o.validate()?;
        let mut held = Held {
            order: o.clone(),
            fills: 0,
            active: true,
            not_before: o.created_time,
            last_bar: None,
            rested: false,
            triggered: false,
            session: None,
        };
        if o.origin_kind == OriginKind::Bracket {
            let parent =
                o.parent_order_id
                    .as_ref()
                    .ok_or_else(|| ExchangeError::MissingParent {
                        order_id: o.order_id.clone(),
                    })?;
            if let Some(first) = self.oco_done.get(parent) {
                let reason = format!("OCO_SIBLING_FILLED: order_id={first}");
                let cancel = next_event(&held, OrderStatus::Canceled, o.updated_time, Some(reason));
                self.end(
                    o.order_id.clone(),
                    OrderStatus::Canceled,
                    o.updated_time,
                    o.created_time,
                );
                return Ok(vec![AnyRecord::Order(cancel)]);
            }
            match self.finished.get(parent) {
                Some(Finished {
                    status: OrderStatus::Filled,
                    at,
                    ..
                }) => held.not_before = held.not_before.max(*at),
                Some(Finished { status, .. }) => {
                    let reason = format!(
                        "BRACKET_PARENT_ENDED: parent={parent}, status={}",
                        status_name(*status)
                    );
                    let cancel =
                        next_event(&held, OrderStatus::Canceled, o.updated_time, Some(reason));
                    self.end(
                        o.order_id.clone(),
                        OrderStatus::Canceled,
                        o.updated_time,
                        o.created_time,
                    );
                    return Ok(vec![AnyRecord::Order(cancel)]);
                }
                None => held.active = false,
            }
        }
        self.hold(held);
        Ok(Vec::new())
    }

    fn on_cancel(&mut self, o: &Order) -> Vec<AnyRecord> {
        let Some(mut h) = self.release(&o.order_id) else {
            return Vec::new(); // not held: finished already, or never seen
        };
        h.order.sequence = h.order.sequence.max(o.sequence);
        let at = o.updated_time;
        let mut out = vec![AnyRecord::Order(next_event(
            &h,
            OrderStatus::Canceled,
            at,
            o.reject_reason.clone(),
        ))];
        self.end(
            o.order_id.clone(),
            OrderStatus::Canceled,
            at,
            h.order.created_time,
        );
        out.extend(self.end_children(&o.order_id, OrderStatus::Canceled, at));
        out
    }

    /// A parent ended without filling: its waiting children can never become active.
    fn end_children(
        &mut self,
        parent: &str,
        status: OrderStatus,
        at: DateTime<Utc>,
    ) -> Vec<AnyRecord> {
        let children: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.order.parent_order_id.as_deref() == Some(parent) && !h.active)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        for id in children {
            if let Some(h) = self.release(&id) {
                let reason = format!(
                    "BRACKET_PARENT_ENDED: parent={parent}, status={}",
                    status_name(status)
                );
                out.push(AnyRecord::Order(next_event(
                    &h,
                    OrderStatus::Canceled,
                    at,
                    Some(reason),
                )));
                let created = h.order.created_time;
                self.end(id, OrderStatus::Canceled, at, created);
            }
        }
        out
    }

    /// Fills the held orders of the bar's symbol that may trade on it, in (created_time,
    /// order_id) order; a cash account's sells only up to what `holdings` says it holds plus
    /// what this bar's earlier fills moved. The caller validates the bar.
    pub fn on_market_data(
        &mut self,
        bar: &MarketData,
        holdings: &impl Holdings,
    ) -> Result<Vec<AnyRecord>, ExchangeError> {
        let ids: Vec<String> = self
            .workable(&bar.symbol)
            .map(|(id, _)| id.clone())
            .collect();
        let mut moved = BTreeMap::new();
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.step(&id, bar, holdings, &mut moved)?);
        }
        Ok(out)
    }

    /// One order against one bar; `moved` is what the bar's earlier fills moved per account.
    fn step(
        &mut self,
        id: &str,
        bar: &MarketData,
        holdings: &impl Holdings,
        moved: &mut BTreeMap<AccountId, Decimal>,
    ) -> Result<Vec<AnyRecord>, ExchangeError> {
        let Some(h) = self.held.get_mut(id) else {
            return Ok(Vec::new());
        };
        if !h.active
            || bar.event_time <= h.not_before
            || h.last_bar.is_some_and(|t| bar.event_time <= t)
        {
            return Ok(Vec::new());
        }
        h.last_bar = Some(bar.event_time);
        let at = bar.event_time;
        let o = h.order.clone();
        let session = *h.session.get_or_insert(match self.config.day_session {
            DaySession::FirstBar => at.date_naive(),
            DaySession::Created => o.created_time.date_naive(),
        });
        if o.time_in_force == TimeInForce::Day && at.date_naive() > session {
            return Ok(self.finish(
                id,
                OrderStatus::Expired,
                at,
                Some("EXPIRED_DAY: tif=DAY".into()),
            ));
        }
        let prices = OrderPrices {
            side: o.side,
            order_type: o.order_type,
            limit: o.limit_price,
            stop: o.stop_price,
            triggered: h.triggered,
            rested: h.rested,
        };
        let m = evaluate(&prices, Prices::of(bar));
        h.triggered = m.triggered;
        let remaining = o.quantity - o.filled_quantity;
        let cap = match self.config.max_participation_pct {
            Some(pct) => (bar.volume * pct / Decimal::ONE_HUNDRED).trunc_with_scale(8),
            None => remaining,
        };
        let mut quantity = remaining.min(cap);
        let ioc = o.time_in_force == TimeInForce::Ioc;
        // A cash account's sell executes only up to what it holds: a protective stop can
        // fill at the venue on the same bar as a closing sell the router decided before it
        // knew, and a broker refuses the second for a cash account; so does this venue.
        let mut held_short = None;
        if m.price.is_some()
            && o.side == Side::Sell
            && !self.config.short_accounts.contains(&o.account)
        {
            let sellable = (holdings.held(&o.account, &o.symbol)
                + moved.get(&o.account).copied().unwrap_or_default())
            .max(Decimal::ZERO);
            if sellable < quantity {
                quantity = sellable;
                held_short = Some(sellable);
            }
        }
        if held_short == Some(Decimal::ZERO) {
            return Ok(self.finish(
                id,
                OrderStatus::Canceled,
                at,
                Some("VENUE_NO_POSITION: held=0".into()),
            ));
        }
        let Some(h) = self.held.get_mut(id) else {
            return Ok(Vec::new());
        };
        let Some(raw) = m.price.filter(|_| quantity > Decimal::ZERO) else {
            h.rested = true;
            if ioc {
                return Ok(self.finish(
                    id,
                    OrderStatus::Canceled,
                    at,
                    Some("IOC_UNFILLED: filled=0".into()),
                ));
            }
            return Ok(Vec::new());
        };
        let price = if m.slips {
            slip(raw, o.side, self.config.slippage_bps)
        } else {
            raw
        };
        let commission = self.commission.charge(quantity, price)?;
        let fill = Fill {
            fill_id: format!("{id}:fill:{}", h.fills),
            order_id: id.to_string(),
            account: o.account.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            quantity,
            price,
            commission,
            liquidity: m.liquidity,
            fill_time: at,
        };
        h.fills += 1;
        h.order.filled_quantity += quantity;
        let filled = h.order.filled_quantity;
        let signed = match o.side {
            Side::Buy => quantity,
            Side::Sell => -quantity,
        };
        *moved.entry(o.account.clone()).or_default() += signed;
        let mut out = vec![AnyRecord::Fill(fill)];
        if filled >= o.quantity {
            out.extend(self.finish(id, OrderStatus::Filled, at, None));
        } else if let Some(held) = held_short {
            let update = next_event(h, OrderStatus::PartiallyFilled, at, None);
            h.order = update.clone();
            out.push(AnyRecord::Order(update));
            let reason = format!(
                "VENUE_NO_POSITION: held={}, filled={}",
                held.normalize(),
                filled.normalize()
            );
            out.extend(self.finish(id, OrderStatus::Canceled, at, Some(reason)));
        } else {
            let update = next_event(h, OrderStatus::PartiallyFilled, at, None);
            h.order = update.clone();
            h.rested = true;
            out.push(AnyRecord::Order(update));
            if ioc {
                let reason = format!("IOC_UNFILLED: filled={}", filled.normalize());
                out.extend(self.finish(id, OrderStatus::Canceled, at, Some(reason)));
            }
        }
        // One-cancels-other: the first execution of a bracket child ends its sibling.
        if let Some(parent) = o
            .parent_order_id
            .as_deref()
            .filter(|_| o.origin_kind == OriginKind::Bracket)
        {
            self.oco_done
                .entry(parent.to_string())
                .or_insert_with(|| id.to_string());
            let siblings: Vec<String> = self
                .held
                .iter()
                .filter(|(sid, s)| {
                    sid.as_str() != id && s.order.parent_order_id.as_deref() == Some(parent)
                })
                .map(|(sid, _)| sid.clone())
                .collect();
            for sid in siblings {
                let reason = format!("OCO_SIBLING_FILLED: order_id={id}");
                out.extend(self.finish(&sid, OrderStatus::Canceled, at, Some(reason)));
            }
        }
        Ok(out)
    }

    /// Ends a held order with `status` and publishes it; a filled parent activates its
    /// children, any other end cancels them.
    fn finish(
        &mut self,
        id: &str,
        status: OrderStatus,
        at: DateTime<Utc>,
        reason: Option<String>,
    ) -> Vec<AnyRecord> {
        let Some(h) = self.release(id) else {
            return Vec::new();
        };
        let mut out = vec![AnyRecord::Order(next_event(&h, status, at, reason))];
        self.end(id.to_string(), status, at, h.order.created_time);
        if status == OrderStatus::Filled {
            for child in self
                .held
                .values_mut()
                .filter(|c| c.order.parent_order_id.as_deref() == Some(id) && !c.active)
            {
                child.active = true;
                child.not_before = child.not_before.max(at);
            }
        } else {
            out.extend(self.end_children(id, status, at));
        }
        out
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
