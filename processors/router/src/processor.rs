//! The router core: model signals and manual requests in, accepted or rejected orders out.
//!
//! It keeps, per account, the books the database keeps (cash and positions from `fills`, marks
//! from `market_data`) plus what only a pre-trade gate needs: open orders and their
//! reservations, an order-rate window, the session day's starting equity and the equity peak.
//! Every decision uses event times (the signal's `event_time`, the manual order's
//! `created_time`), never a clock, so a replay of the same inputs in the same order produces
//! the same orders, byte for byte.
//!
//! It decides in the order it is called: the trading core (`tradestream-trading`) calls it
//! once per market instant, after the venue's fills of that instant, which is what makes the
//! orders and fills independent of how the input topics interleave.
//!
//! Pending orders count against limits as if they filled (worst case), so two quick signals
//! cannot together break a limit neither breaks alone. Bracket children are excluded from
//! reservations: they only ever reduce the position they protect, and the router cancels them
//! when it closes that position.
//!
//! Delivery guarantees: the whole state (books, marks and their history, live and finished
//! orders, applied fills and controls, kill switch, session, drawdown and rate-limit state)
//! round-trips through [`Processor::snapshot`] (a format-version byte, then MessagePack), so a
//! restarted router continues exactly. Every input is idempotent: a signal, manual request,
//! order event, fill, bar or control the router has already applied is recognised (by order
//! id, sequence, fill id, bar time and close, control id) and changes nothing.
//!
//! Memory stays bounded: a finished order (and the ids of its fills) is forgotten once it is
//! neither among the newest `dedup_orders` finished orders nor within `dedup_horizon_hours`
//! of event time of the newest, and only once all its fills arrived. An input about an
//! order the router does not know, dated at or before the last order it forgot, is a
//! redelivery from before that horizon and is dropped: every order is created here, so an
//! unknown one can only be one it forgot.

use crate::accounting::{Book, Commission, check_available_funds, mul, required_cash};
use crate::config::{AccountConfig, RouterConfig, SignalOrderType};
use crate::error::{RouterError, status_name};
use crate::forgetting::Forgetting;
use crate::reason::RejectReason;
use crate::sizing::{SizingInput, size};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tradestream_schemas::{
    AccountId, AnyRecord, Control, Fill, MarketData, Order, OrderStatus, OrderType, OriginKind,
    ProcessError, Processor, Record, Side, SignalSide, Symbol, TaskScope, Topic, TradingSignal,
};

/// Version of the snapshot layout, the first byte of every snapshot; bump it whenever a
/// serialized state type changes shape, so an old snapshot is refused instead of misread.
pub const SNAPSHOT_FORMAT: u8 = 3;

/// Per-account state. The configuration parts are not snapshotted: a restore takes them
/// from the configuration of the core it restores into.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountState {
    #[serde(skip)]
    cfg: AccountConfig,
    #[serde(skip)]
    commission: Commission,
    book: Book,
    peak: Decimal,
    /// (equity, peak) when the drawdown switch tripped; cleared only by a manual reset.
    drawdown_halt: Option<(Decimal, Decimal)>,
    session_day: Option<NaiveDate>,
    day_start_equity: Decimal,
    /// Session P&L when the daily loss limit tripped; cleared at the next session day.
    daily_halt: Option<Decimal>,
    /// Event times of accepted orders (rate limit).
    recent: VecDeque<DateTime<Utc>>,
}

/// An order the router knows is live.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tracked {
    last: Order,
    /// Filled quantity: the larger of the order events' and the sum of applied fills.
    filled: Decimal,
    fills_qty: Decimal,
    /// Price the reservation is computed at.
    price: Decimal,
    cancel_requested: bool,
}

impl Tracked {
    fn remaining(&self) -> Decimal {
        (self.last.quantity - self.filled).max(Decimal::ZERO)
    }
    fn reserves(&self) -> bool {
        self.last.origin_kind != OriginKind::Bracket && self.remaining() > Decimal::ZERO
    }
}

/// How an order ended, kept while its inputs may still arrive again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Finished {
    status: OrderStatus,
    sequence: i32,
    /// Event time it ended at.
    at: DateTime<Utc>,
    /// Its final filled quantity: once its applied fills add up to it, any further fill of
    /// it is a copy.
    filled: Decimal,
}

/// The fills applied to one order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedFills {
    quantity: Decimal,
    ids: BTreeSet<String>,
}

/// Read-only view of one account, for the REST API and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountView {
    /// Cash and positions.
    pub book: Book,
    /// Cash + marked positions.
    pub equity: Decimal,
    /// Highest equity seen.
    pub equity_peak: Decimal,
    /// Equity change since the session day began.
    pub session_pnl: Decimal,
    /// Current session day (UTC).
    pub session_day: Option<NaiveDate>,
    /// Whether the drawdown kill switch has tripped.
    pub drawdown_halted: bool,
    /// Whether the daily loss limit has tripped for the session day.
    pub daily_loss_halted: bool,
    /// Ids of live orders.
    pub open_orders: Vec<String>,
}

/// Closes kept per symbol for as-of-time marks.
const MARK_HISTORY: usize = 8192;

/// The router: see the module documentation.
#[derive(Debug, Clone)]
pub struct RouterProcessor {
    config: RouterConfig,
    accounts: BTreeMap<AccountId, AccountState>,
    marks: BTreeMap<Symbol, (DateTime<Utc>, Decimal)>,
    /// Recent closes per symbol in event-time order, so a decision about time `t` uses the
    /// prices known at `t` even when market data has run ahead of the signals (replays).
    history: BTreeMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
    /// Event time of the decision being made; marks are read as of it.
    as_of: Option<DateTime<Utc>>,
    live: BTreeMap<String, Tracked>,
    finished: BTreeMap<String, Finished>,
    /// Per order id.
    applied_fills: BTreeMap<String, AppliedFills>,
    /// The finished orders by end time, in the order they are forgotten.
    forgetting: Forgetting,
    /// Ids of the controls applied, so a redelivered command cannot undo a later one.
    applied_controls: BTreeSet<String>,
    kill_switch: Option<String>,
}

/// Closes as of a decision time, borrowed from the router's fields (not through `&self`, so
/// an account can be borrowed mutably beside it). Looked up per position held: building a map
/// of every symbol's close for each decision was the router's hottest path.
#[derive(Clone, Copy)]
struct MarkView<'a> {
    latest: &'a BTreeMap<Symbol, (DateTime<Utc>, Decimal)>,
    history: &'a BTreeMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
    as_of: Option<DateTime<Utc>>,
}

impl<'a> MarkView<'a> {
    fn of(
        latest: &'a BTreeMap<Symbol, (DateTime<Utc>, Decimal)>,
        history: &'a BTreeMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
        as_of: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            latest,
            history,
            as_of,
        }
    }

    /// The latest close, or during a decision the last one at or before its event time.
    fn get(&self, symbol: &Symbol) -> Option<Decimal> {
        let Some(at) = self.as_of else {
            return self.latest.get(symbol).map(|(_, p)| *p);
        };
        let history = self.history.get(symbol)?;
        // The decision is usually about the newest bar or one a step or two behind it (market
        // data runs ahead of signals): look at the last few closes before searching.
        if let Some((_, p)) = history.iter().rev().take(4).find(|(t, _)| *t <= at) {
            return Some(*p);
        }
        match history.partition_point(|(t, _)| *t <= at) {
            0 => None,
            n => history.get(n - 1).map(|(_, p)| *p),
        }
    }
}

/// The snapshotted state, borrowed for writing (every map is ordered: equal states give
/// equal bytes).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    accounts: &'a BTreeMap<AccountId, AccountState>,
    marks: &'a BTreeMap<Symbol, (DateTime<Utc>, Decimal)>,
    history: &'a BTreeMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
    live: &'a BTreeMap<String, Tracked>,
    finished: &'a BTreeMap<String, Finished>,
    applied_fills: &'a BTreeMap<String, AppliedFills>,
    forgetting: &'a Forgetting,
    applied_controls: &'a BTreeSet<String>,
    kill_switch: &'a Option<String>,
}

/// The snapshotted state, owned for reading.
#[derive(Deserialize)]
struct SnapshotOwned {
    accounts: BTreeMap<AccountId, AccountState>,
    marks: BTreeMap<Symbol, (DateTime<Utc>, Decimal)>,
    history: BTreeMap<Symbol, VecDeque<(DateTime<Utc>, Decimal)>>,
    live: BTreeMap<String, Tracked>,
    finished: BTreeMap<String, Finished>,
    applied_fills: BTreeMap<String, AppliedFills>,
    forgetting: Forgetting,
    applied_controls: BTreeSet<String>,
    kill_switch: Option<String>,
}

/// An order about to be risk-checked.
struct Candidate {
    order: Order,
    /// Price checks and reservations use (limit, stop or reference).
    price: Decimal,
    children: Vec<Order>,
}

fn event(mut o: Order, sequence: i32, status: OrderStatus, at: DateTime<Utc>) -> Order {
    o.sequence = sequence;
    o.event_id = format!("{}:{sequence}", o.order_id);
    o.status = status;
    o.updated_time = at;
    o
}

fn pct_of(x: Decimal, pct: Decimal) -> Decimal {
    x * pct / Decimal::ONE_HUNDRED
}

impl RouterProcessor {
    /// A router with empty books (cash = initial capital); fails on an invalid config.
    pub fn new(config: RouterConfig) -> Result<Self, RouterError> {
        config.validate()?;
        let accounts = config
            .accounts
            .iter()
            .map(|(id, cfg)| {
                let state = AccountState {
                    commission: cfg.commission(),
                    book: Book::new(cfg.initial_capital),
                    peak: cfg.initial_capital,
                    drawdown_halt: None,
                    session_day: None,
                    day_start_equity: cfg.initial_capital,
                    daily_halt: None,
                    recent: VecDeque::new(),
                    cfg: cfg.clone(),
                };
                (id.clone(), state)
            })
            .collect();
        let kill_switch = config.kill_switch.then(|| "config".to_string());
        Ok(Self {
            config,
            accounts,
            marks: BTreeMap::new(),
            history: BTreeMap::new(),
            as_of: None,
            live: BTreeMap::new(),
            finished: BTreeMap::new(),
            applied_fills: BTreeMap::new(),
            forgetting: Forgetting::default(),
            applied_controls: BTreeSet::new(),
            kill_switch,
        })
    }

    /// The state as snapshot bytes: [`SNAPSHOT_FORMAT`], then MessagePack with named fields.
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, RouterError> {
        let state = SnapshotRef {
            accounts: &self.accounts,
            marks: &self.marks,
            history: &self.history,
            live: &self.live,
            finished: &self.finished,
            applied_fills: &self.applied_fills,
            forgetting: &self.forgetting,
            applied_controls: &self.applied_controls,
            kill_switch: &self.kill_switch,
        };
        tradestream_schemas::snapshot::encode(SNAPSHOT_FORMAT, &state)
            .map_err(RouterError::Snapshot)
    }

    /// Replaces the state with a snapshot from [`Self::snapshot_bytes`]; account settings and
    /// limits stay those of this core's configuration. Refuses (and changes nothing) another
    /// format version, corrupt bytes, or a snapshot whose accounts differ from the configured
    /// ones. The kill switch is restored as it was: one switched on by `kill_switch = true`
    /// in the configuration and later switched off by a control stays off.
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), RouterError> {
        let state: SnapshotOwned = tradestream_schemas::snapshot::decode(SNAPSHOT_FORMAT, bytes)
            .map_err(RouterError::Snapshot)?;
        let configured: Vec<&AccountId> = self.accounts.keys().collect();
        let snapshotted: Vec<&AccountId> = state.accounts.keys().collect();
        if configured != snapshotted {
            let names = |ids: &[&AccountId]| {
                ids.iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(RouterError::Snapshot(format!(
                "it holds accounts [{}] but the router is configured with [{}]",
                names(&snapshotted),
                names(&configured)
            )));
        }
        let mut accounts = state.accounts;
        for (id, a) in &mut accounts {
            if let Some(current) = self.accounts.get(id) {
                a.cfg = current.cfg.clone();
                a.commission = current.commission;
            }
        }
        self.accounts = accounts;
        self.marks = state.marks;
        self.history = state.history;
        self.as_of = None;
        self.live = state.live;
        self.finished = state.finished;
        self.applied_fills = state.applied_fills;
        self.forgetting = state.forgetting;
        self.forgetting
            .rebuild(self.finished.iter().map(|(id, f)| (f.at, id.clone())));
        self.applied_controls = state.applied_controls;
        self.kill_switch = state.kill_switch;
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Switches the manual kill switch on (every new order is rejected with
    /// `RISK_KILL_SWITCH: reason=<reason>`) or off.
    pub fn set_kill_switch(&mut self, on: bool, reason: impl Into<String>) {
        self.kill_switch = on.then(|| reason.into());
    }

    /// Applies an operator command from `controls`: the kill switch takes effect for every
    /// order decided after it (commands carry no market event time, so they act in arrival
    /// order). A command this router does not understand is dead-lettered, never ignored.
    pub fn on_control(&mut self, c: &Control) -> Result<Vec<AnyRecord>, ProcessError> {
        c.validate()
            .map_err(|e| ProcessError::dead_letter(e.to_string()))?;
        if !self.applied_controls.insert(c.control_id.clone()) {
            return Ok(Vec::new()); // redelivered: a later command may have superseded it
        }
        if c.name == Control::KILL_SWITCH {
            self.set_kill_switch(c.enabled, c.reason.clone());
        }
        Ok(Vec::new())
    }

    /// The kill switch's reason when it is on.
    pub fn kill_switch(&self) -> Option<&str> {
        self.kill_switch.as_deref()
    }

    /// Clears a tripped drawdown kill switch; the equity peak restarts at current equity.
    /// Returns false for an unknown account.
    pub fn reset_drawdown(&mut self, account: &AccountId) -> bool {
        let marks = MarkView::of(&self.marks, &self.history, self.as_of);
        let Some(a) = self.accounts.get_mut(account) else {
            return false;
        };
        a.drawdown_halt = None;
        a.peak = a.book.equity(|s| marks.get(s));
        true
    }

    /// One account's books (cash, positions), as the risk checks and the venue see them.
    pub fn book(&self, account: &AccountId) -> Option<&Book> {
        self.accounts.get(account).map(|a| &a.book)
    }

    /// One account's books and its equity (cash + positions at their latest closes), without
    /// the rest of [`Self::account`]'s view: what the trading core values every instant.
    pub fn valued_book(&self, account: &AccountId) -> Option<(&Book, Decimal)> {
        let book = self.book(account)?;
        Some((book, book.equity(|s| self.mark(s))))
    }

    /// A snapshot of one account.
    pub fn account(&self, account: &AccountId) -> Option<AccountView> {
        let a = self.accounts.get(account)?;
        let (_, equity) = self.valued_book(account)?;
        Some(AccountView {
            book: a.book.clone(),
            equity,
            equity_peak: a.peak,
            session_pnl: equity - a.day_start_equity,
            session_day: a.session_day,
            drawdown_halted: a.drawdown_halt.is_some(),
            daily_loss_halted: a.daily_halt.is_some(),
            open_orders: self
                .live
                .iter()
                .filter(|(_, t)| &t.last.account == account)
                .map(|(id, _)| id.clone())
                .collect(),
        })
    }

    /// Market-data close per symbol: the latest one, or during a decision the last one at or
    /// before the decision's event time.
    pub fn mark_prices(&self) -> BTreeMap<Symbol, Decimal> {
        self.marks
            .keys()
            .filter_map(|s| self.mark(s).map(|p| (s.clone(), p)))
            .collect()
    }

    /// One symbol's close as of the decision time (see [`Self::mark_prices`]).
    fn mark(&self, symbol: &Symbol) -> Option<Decimal> {
        MarkView::of(&self.marks, &self.history, self.as_of).get(symbol)
    }

    fn known(&self, order_id: &str) -> bool {
        self.live.contains_key(order_id) || self.finished.contains_key(order_id)
    }

    /// Whether an input about `order_id` dated `at` is about an order this router forgot
    /// (see the module documentation): a copy to drop.
    fn forgotten(&self, order_id: &str, at: DateTime<Utc>) -> bool {
        self.forgetting.covers(at)
            && !self.known(order_id)
            && !self.applied_fills.contains_key(order_id)
    }

    /// Remembers how an order ended, then forgets the finished orders past both horizons.
    fn finish(
        &mut self,
        order_id: String,
        status: OrderStatus,
        sequence: i32,
        at: DateTime<Utc>,
        filled: Decimal,
    ) {
        let before = self.finished.get(&order_id).map(|f| f.at);
        self.forgetting.note(&order_id, before, at);
        self.finished.insert(
            order_id,
            Finished {
                status,
                sequence,
                at,
                filled,
            },
        );
        self.forget_old();
    }

    fn forget_old(&mut self) {
        let (finished, applied_fills) = (&self.finished, &self.applied_fills);
        let gone = self.forgetting.forget(
            self.config.dedup_orders,
            self.config.dedup_horizon_hours,
            // Still waiting for fills (they travel apart from the order events): keep it.
            |id| {
                let applied = applied_fills.get(id).map_or(Decimal::ZERO, |a| a.quantity);
                finished.get(id).is_none_or(|f| applied >= f.filled)
            },
        );
        for id in gone {
            self.finished.remove(&id);
            self.applied_fills.remove(&id);
        }
    }

    /// Starts a new session day for every account whose day is before `t`'s UTC date: the
    /// day's P&L is measured from the equity at that moment.
    fn roll_sessions(&mut self, t: DateTime<Utc>) {
        let day = t.date_naive();
        let marks = MarkView::of(&self.marks, &self.history, self.as_of);
        for a in self.accounts.values_mut() {
            if a.session_day.is_none_or(|d| d < day) {
                a.session_day = Some(day);
                a.day_start_equity = a.book.equity(|s| marks.get(s));
                a.daily_halt = None;
            }
        }
    }

    /// Updates the equity peak and trips the drawdown and daily-loss switches.
    fn refresh_risk(&mut self, account: &AccountId) {
        let marks = MarkView::of(&self.marks, &self.history, self.as_of);
        let Some(a) = self.accounts.get_mut(account) else {
            return;
        };
        let equity = a.book.equity(|s| marks.get(s));
        a.peak = a.peak.max(equity);
        if let Some(dd) = a.cfg.limits.max_drawdown_pct
            && a.drawdown_halt.is_none()
            && equity < a.peak - pct_of(a.peak, dd)
        {
            a.drawdown_halt = Some((equity, a.peak));
        }
        let pnl = equity - a.day_start_equity;
        if let Some(limit) = a.cfg.limits.daily_loss_limit
            && a.daily_halt.is_none()
            && pnl < -limit
        {
            a.daily_halt = Some(pnl);
        }
    }

    /// Applies a bar's close (marks, sessions, risk state); produces nothing.
    pub fn on_market_data(&mut self, m: &MarketData) -> Result<Vec<AnyRecord>, RouterError> {
        m.validate()?;
        self.apply_close(&m.symbol, m.event_time, m.close, true);
        Ok(Vec::new())
    }

    /// A symbol's close at `at`, from its bar or from a signal made from that bar. Keeps the
    /// latest close: the input topics interleave arbitrarily, and the latest close again is
    /// not news either. A signal's reference price is its bar's close, so when signals run
    /// ahead of market data (after a restart the backlogs of the two topics drain at their
    /// own pace) the decision still sees the price of its own bar instead of an older one,
    /// exactly as if the bar had arrived first, as it does in an undisturbed run. Only a
    /// bar (`from_bar`) may correct the close of an instant the router already has.
    fn apply_close(&mut self, symbol: &Symbol, at: DateTime<Utc>, close: Decimal, from_bar: bool) {
        let newer = self
            .marks
            .get(symbol)
            .is_none_or(|(t, p)| *t < at || (from_bar && *t == at && *p != close));
        if !newer {
            return;
        }
        // Looked up before inserting: a symbol's key is cloned once, not on every bar.
        let history = match self.history.get_mut(symbol) {
            Some(h) => h,
            None => self.history.entry(symbol.clone()).or_default(),
        };
        if history.len() >= MARK_HISTORY {
            history.pop_front();
        }
        history.push_back((at, close));
        self.as_of = Some(at);
        self.roll_sessions(at);
        match self.marks.get_mut(symbol) {
            Some(mark) => *mark = (at, close),
            None => {
                self.marks.insert(symbol.clone(), (at, close));
            }
        }
        let holders: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|(_, a)| {
                a.book
                    .positions
                    .get(symbol)
                    .is_some_and(|p| !p.quantity.is_zero())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in holders {
            self.refresh_risk(&id);
        }
        self.as_of = None;
    }

    /// Applies a venue fill to its account's book; a copy changes nothing.
    pub fn on_fill(&mut self, f: &Fill) -> Result<Vec<AnyRecord>, RouterError> {
        f.validate()?;
        if !self.accounts.contains_key(&f.account) {
            return Err(RouterError::UnknownAccount {
                account: f.account.to_string(),
                record: format!("fill {}", f.fill_id),
            });
        }
        if self
            .applied_fills
            .get(&f.order_id)
            .is_some_and(|a| a.ids.contains(&f.fill_id))
            || self.forgotten(&f.order_id, f.fill_time)
        {
            return Ok(Vec::new());
        }
        self.roll_sessions(f.fill_time);
        if let Some(a) = self.accounts.get_mut(&f.account) {
            a.book
                .apply_fill(&f.symbol, f.side, f.quantity, f.price, f.commission)?;
        }
        let applied = self.applied_fills.entry(f.order_id.clone()).or_default();
        applied.quantity += f.quantity;
        applied.ids.insert(f.fill_id.clone());
        if let Some(t) = self.live.get_mut(&f.order_id) {
            t.fills_qty += f.quantity;
            t.filled = t.filled.max(t.fills_qty);
        }
        self.refresh_risk(&f.account);
        Ok(Vec::new())
    }

    /// A manual NEW request (decided now) or a later state of a known order (applied).
    pub fn on_order(&mut self, o: &Order) -> Result<Vec<AnyRecord>, RouterError> {
        if o.status == OrderStatus::New {
            return self.on_manual(o);
        }
        if let Some(t) = self.live.get_mut(&o.order_id) {
            if o.sequence <= t.last.sequence {
                return Ok(Vec::new()); // replay or our own event echoed back
            }
            if !t.last.status.can_transition_to(o.status) {
                return Err(RouterError::IllegalTransition {
                    order_id: o.order_id.clone(),
                    from: status_name(t.last.status),
                    to: status_name(o.status),
                });
            }
            t.filled = t.filled.max(o.filled_quantity);
            t.last = o.clone();
            if o.status.is_terminal() {
                let filled = t.filled;
                self.live.remove(&o.order_id);
                self.finish(
                    o.order_id.clone(),
                    o.status,
                    o.sequence,
                    o.updated_time,
                    filled,
                );
            }
            return Ok(Vec::new());
        }
        if let Some(Finished {
            status, sequence, ..
        }) = self.finished.get(&o.order_id).copied()
        {
            // A cancel request for a finished order is a no-op, as at the venue.
            if o.sequence <= sequence || o.status == OrderStatus::Canceled {
                return Ok(Vec::new());
            }
            return Err(RouterError::IllegalTransition {
                order_id: o.order_id.clone(),
                from: status_name(status),
                to: status_name(o.status),
            });
        }
        if self.forgotten(&o.order_id, o.updated_time) {
            return Ok(Vec::new());
        }
        // An order from before this router's state began (e.g. a restart): learn it.
        if o.status.is_terminal() {
            self.finish(
                o.order_id.clone(),
                o.status,
                o.sequence,
                o.updated_time,
                o.filled_quantity,
            );
        } else if o.status != OrderStatus::Rejected {
            let price = o
                .limit_price
                .or(o.stop_price)
                .or_else(|| self.mark(&o.symbol))
                .unwrap_or(Decimal::ZERO);
            self.live.insert(
                o.order_id.clone(),
                Tracked {
                    last: o.clone(),
                    filled: o.filled_quantity,
                    fills_qty: Decimal::ZERO,
                    price,
                    cancel_requested: false,
                },
            );
        }
        Ok(Vec::new())
    }

    fn on_manual(&mut self, o: &Order) -> Result<Vec<AnyRecord>, RouterError> {
        self.as_of = Some(o.created_time);
        let out = self.on_manual_as_of(o);
        self.as_of = None;
        out
    }

    fn on_manual_as_of(&mut self, o: &Order) -> Result<Vec<AnyRecord>, RouterError> {
        if o.origin_kind != OriginKind::Manual {
            return Err(RouterError::NotManual {
                order_id: o.order_id.clone(),
            });
        }
        if self.known(&o.order_id) || self.forgotten(&o.order_id, o.created_time) {
            return Ok(Vec::new());
        }
        let at = o.created_time;
        let sequence = o.sequence.saturating_add(1);
        self.roll_sessions(at);
        let reject =
            |this: &mut Self, reason: RejectReason| this.reject(o.clone(), sequence, at, &reason);
        if !self.accounts.contains_key(&o.account) {
            return Ok(reject(
                self,
                RejectReason::ValidationAccount {
                    account: o.account.clone(),
                },
            ));
        }
        if let Err(e) = o.validate() {
            let reason = if e.field == "quantity" {
                RejectReason::ValidationQuantity {
                    quantity: o.quantity,
                    lot_size: self.config.lot_size,
                }
            } else {
                RejectReason::ValidationOrder {
                    field: e.field,
                    reason: e.reason,
                }
            };
            return Ok(reject(self, reason));
        }
        let lots = o
            .quantity
            .checked_div(self.config.lot_size)
            .unwrap_or(Decimal::ONE);
        if !lots.fract().is_zero() || !o.filled_quantity.is_zero() {
            return Ok(reject(
                self,
                RejectReason::ValidationQuantity {
                    quantity: o.quantity,
                    lot_size: self.config.lot_size,
                },
            ));
        }
        let price = match o.order_type {
            OrderType::Limit | OrderType::StopLimit => o.limit_price,
            OrderType::Stop => o.stop_price,
            OrderType::Market => self.mark(&o.symbol),
        };
        let Some(price) = price else {
            return Ok(reject(
                self,
                RejectReason::ValidationPrice {
                    symbol: o.symbol.clone(),
                },
            ));
        };
        let candidate = Candidate {
            order: event(o.clone(), sequence, OrderStatus::Accepted, at),
            price,
            children: Vec::new(),
        };
        self.decide(candidate, at)
    }

    /// Decides a model signal: an order (with its bracket), a rejection or nothing.
    pub fn on_signal(&mut self, s: &TradingSignal) -> Result<Vec<AnyRecord>, RouterError> {
        s.validate()?;
        self.apply_close(&s.symbol, s.event_time, s.reference_price, false);
        self.as_of = Some(s.event_time);
        let out = self.on_signal_as_of(s);
        self.as_of = None;
        out
    }

    /// `s` is validated by [`Self::on_signal`].
    fn on_signal_as_of(&mut self, s: &TradingSignal) -> Result<Vec<AnyRecord>, RouterError> {
        // Most signals are HOLD: settled before building the order id.
        if s.side == SignalSide::Hold || s.confidence < self.config.min_confidence {
            return Ok(Vec::new());
        }
        let order_id = format!("order:{}", s.signal_id);
        if self.known(&order_id) || self.forgotten(&order_id, s.event_time) {
            return Ok(Vec::new());
        }
        self.roll_sessions(s.event_time);
        let account = self.config.default_account.clone();
        let Some(a) = self.accounts.get(&account) else {
            return Err(RouterError::UnknownAccount {
                account: account.to_string(),
                record: format!("signal {}", s.signal_id),
            });
        };
        let entry = s.reference_price;
        let pos = a.book.quantity(&s.symbol);
        // What is not already being closed by a pending order gets closed now.
        let (pending_buys, pending_sells) = self.pending(&account, &s.symbol);
        let (side, closing, wants_open) = match s.side {
            SignalSide::Buy => (Side::Buy, (-pos - pending_buys).max(Decimal::ZERO), true),
            _ => (
                Side::Sell,
                (pos - pending_sells).max(Decimal::ZERO),
                a.cfg.allow_short,
            ),
        };
        // A stop on the winning side of the entry is no stop: fall back to the distance rule.
        let stop = s.stop_loss.filter(|sl| match side {
            Side::Buy => *sl < entry,
            Side::Sell => *sl > entry,
        });
        let take = s.take_profit.filter(|tp| match side {
            Side::Buy => *tp > entry,
            Side::Sell => *tp < entry,
        });
        let opening = if wants_open {
            size(&SizingInput {
                equity: a.book.equity(|s| self.mark(s)),
                risk_per_trade_pct: self.config.risk_per_trade_pct,
                confidence: s.confidence,
                min_confidence: self.config.min_confidence,
                entry,
                stop,
                fallback_stop_pct: self.config.fallback_stop_pct,
                lot_size: self.config.lot_size,
            })
            .unwrap_or(Decimal::ZERO)
        } else {
            Decimal::ZERO
        };
        if !wants_open && closing.is_zero() {
            return Ok(Vec::new()); // a SELL for a flat account that may not short
        }
        let quantity = closing + opening;
        let (order_type, limit_price) = match self.config.signal_order_type {
            SignalOrderType::Market => (OrderType::Market, None),
            SignalOrderType::Limit => (OrderType::Limit, Some(entry)),
        };
        let order = Order {
            event_id: format!("{order_id}:0"),
            order_id: order_id.clone(),
            sequence: 0,
            client_order_id: None,
            account: account.clone(),
            symbol: s.symbol.clone(),
            side,
            order_type,
            quantity,
            limit_price,
            stop_price: None,
            time_in_force: self.config.signal_time_in_force,
            status: OrderStatus::Accepted,
            filled_quantity: Decimal::ZERO,
            origin_kind: OriginKind::Signal,
            origin_id: s.signal_id.clone(),
            parent_order_id: None,
            reject_reason: None,
            created_time: s.event_time,
            updated_time: s.event_time,
        };
        if quantity.is_zero() {
            let reason = RejectReason::ValidationQuantity {
                quantity,
                lot_size: self.config.lot_size,
            };
            return Ok(self.reject(order, 0, s.event_time, &reason));
        }
        let mut children = Vec::new();
        if self.config.brackets && opening > Decimal::ZERO {
            let exit = match side {
                Side::Buy => Side::Sell,
                Side::Sell => Side::Buy,
            };
            let child = |suffix: &str, order_type, limit_price, stop_price| Order {
                event_id: format!("{order_id}:{suffix}:0"),
                order_id: format!("{order_id}:{suffix}"),
                side: exit,
                order_type,
                quantity: opening,
                limit_price,
                stop_price,
                time_in_force: self.config.bracket_time_in_force,
                origin_kind: OriginKind::Bracket,
                origin_id: order_id.clone(),
                parent_order_id: Some(order_id.clone()),
                ..order.clone()
            };
            if let Some(sl) = stop {
                children.push(child("sl", OrderType::Stop, None, Some(sl)));
            }
            if let Some(tp) = take {
                children.push(child("tp", OrderType::Limit, Some(tp), None));
            }
        }
        self.decide(
            Candidate {
                order,
                price: entry,
                children,
            },
            s.event_time,
        )
    }

    /// Publishes a rejection and remembers the order as finished.
    fn reject(
        &mut self,
        order: Order,
        sequence: i32,
        at: DateTime<Utc>,
        reason: &RejectReason,
    ) -> Vec<AnyRecord> {
        let mut o = event(order, sequence, OrderStatus::Rejected, at);
        o.reject_reason = Some(reason.to_string());
        self.finish(
            o.order_id.clone(),
            OrderStatus::Rejected,
            sequence,
            at,
            Decimal::ZERO,
        );
        vec![AnyRecord::Order(o)]
    }

    fn decide(&mut self, c: Candidate, at: DateTime<Utc>) -> Result<Vec<AnyRecord>, RouterError> {
        self.refresh_risk(&c.order.account);
        if let Err(reason) = self.check(&c, at)? {
            let sequence = c.order.sequence;
            return Ok(self.reject(c.order, sequence, at, &reason));
        }
        let Candidate {
            order,
            price,
            children,
        } = c;
        let account = order.account.clone();
        let pos = self
            .accounts
            .get(&account)
            .map_or(Decimal::ZERO, |a| a.book.quantity(&order.symbol));
        if let Some(a) = self.accounts.get_mut(&account) {
            a.recent.push_back(at);
            // Keep only the last second (of the latest time seen) for the rate window.
            let latest = a.recent.iter().max().copied().unwrap_or(at);
            while a
                .recent
                .front()
                .is_some_and(|t| latest - *t >= Duration::seconds(1))
            {
                a.recent.pop_front();
            }
        }
        let mut out = Vec::with_capacity(1 + children.len());
        // Closing the whole position: its protective bracket children would re-open it.
        let closes = match order.side {
            Side::Sell => pos > Decimal::ZERO && order.quantity >= pos,
            Side::Buy => pos < Decimal::ZERO && order.quantity >= -pos,
        };
        if closes {
            for t in self.live.values_mut() {
                if t.last.account == account
                    && t.last.symbol == order.symbol
                    && t.last.origin_kind == OriginKind::Bracket
                    && t.last.side == order.side
                    && !t.cancel_requested
                {
                    t.cancel_requested = true;
                    let cancel = t.last.cancel_request(
                        &order.order_id,
                        format!("CANCEL_POSITION_CLOSED: order_id={}", order.order_id),
                        at,
                    );
                    out.push(AnyRecord::Order(cancel));
                }
            }
        }
        for o in std::iter::once(order).chain(children) {
            let p = o.limit_price.or(o.stop_price).unwrap_or(price);
            self.live.insert(
                o.order_id.clone(),
                Tracked {
                    last: o.clone(),
                    filled: Decimal::ZERO,
                    fills_qty: Decimal::ZERO,
                    price: p,
                    cancel_requested: false,
                },
            );
            out.push(AnyRecord::Order(o));
        }
        Ok(out)
    }

    /// Pending (non-bracket) remaining quantity per side for `account`/`symbol`.
    fn pending(&self, account: &AccountId, symbol: &Symbol) -> (Decimal, Decimal) {
        self.live
            .values()
            .filter(|t| t.reserves() && &t.last.account == account && &t.last.symbol == symbol)
            .fold((Decimal::ZERO, Decimal::ZERO), |(b, s), t| {
                match t.last.side {
                    Side::Buy => (b + t.remaining(), s),
                    Side::Sell => (b, s + t.remaining()),
                }
            })
    }

    /// Worst-case gross exposure of `account`: for every symbol the larger of |position +
    /// pending buys| and |position − pending sells|, at its mark. `extra` adds one order.
    /// `symbol` is valued at `price` (the order's), so with and without the order compare
    /// like for like.
    fn gross(
        &self,
        account: &AccountId,
        symbol: &Symbol,
        price: Decimal,
        extra: Option<(Side, Decimal)>,
    ) -> Result<Decimal, RouterError> {
        let Some(a) = self.accounts.get(account) else {
            return Ok(Decimal::ZERO);
        };
        let mut symbols: Vec<&Symbol> = a.book.positions.keys().collect();
        symbols.extend(
            self.live
                .values()
                .filter(|t| &t.last.account == account)
                .map(|t| &t.last.symbol),
        );
        symbols.push(symbol);
        symbols.sort();
        symbols.dedup();
        let mut total = Decimal::ZERO;
        for s in symbols {
            let pos = a.book.quantity(s);
            let (mut buys, mut sells) = self.pending(account, s);
            let mut mark = self
                .mark(s)
                .or_else(|| a.book.positions.get(s).map(|p| p.avg_price))
                .or_else(|| {
                    self.live
                        .values()
                        .find(|t| &t.last.symbol == s)
                        .map(|t| t.price)
                })
                .unwrap_or(Decimal::ZERO);
            if s == symbol {
                mark = price;
                match extra {
                    Some((Side::Buy, q)) => buys += q,
                    Some((Side::Sell, q)) => sells += q,
                    None => {}
                }
            }
            let worst = (pos + buys).abs().max((pos - sells).abs());
            total += mul(worst, mark, "gross exposure")?;
        }
        Ok(total)
    }

    /// The pre-trade checks, in order; the first failure is the reason.
    fn check(
        &self,
        c: &Candidate,
        at: DateTime<Utc>,
    ) -> Result<Result<(), RejectReason>, RouterError> {
        let o = &c.order;
        let Some(a) = self.accounts.get(&o.account) else {
            return Ok(Err(RejectReason::ValidationAccount {
                account: o.account.clone(),
            }));
        };
        let limits = &a.cfg.limits;
        if let Some(reason) = &self.kill_switch {
            return Ok(Err(RejectReason::KillSwitch {
                reason: reason.clone(),
            }));
        }
        if let (Some((equity, peak)), Some(limit_pct)) = (a.drawdown_halt, limits.max_drawdown_pct)
        {
            return Ok(Err(RejectReason::MaxDrawdown {
                equity,
                peak,
                limit_pct,
            }));
        }
        if let Some(h) = limits.trading_hours
            && !h.contains(at.time())
        {
            return Ok(Err(RejectReason::TradingHours {
                time: at.time(),
                start: h.start,
                end: h.end,
            }));
        }
        if let Some(limit) = limits.max_orders_per_second {
            let count = a
                .recent
                .iter()
                .filter(|t| **t <= at && at - **t < Duration::seconds(1))
                .count();
            if count + 1 > limit as usize {
                return Ok(Err(RejectReason::RateLimit { limit, count }));
            }
        }
        let pos = a.book.quantity(&o.symbol);
        let reducing = match o.side {
            Side::Sell => pos > Decimal::ZERO && o.quantity <= pos,
            Side::Buy => pos < Decimal::ZERO && o.quantity <= -pos,
        };
        if let Some(limit) = limits.daily_loss_limit
            && !reducing
        {
            let pnl = a.book.equity(|s| self.mark(s)) - a.day_start_equity;
            if let Some(halted) = a.daily_halt {
                return Ok(Err(RejectReason::DailyLoss { pnl: halted, limit }));
            }
            if pnl < -limit {
                return Ok(Err(RejectReason::DailyLoss { pnl, limit }));
            }
        }
        if let (Some(band), Some(last)) = (limits.price_band_pct, self.mark(&o.symbol).as_ref()) {
            let prices = [Some(c.price), o.limit_price, o.stop_price];
            for p in prices.into_iter().flatten() {
                if (p - *last).abs() > pct_of(*last, band) {
                    return Ok(Err(RejectReason::PriceBand {
                        price: p,
                        last: *last,
                        band_pct: band,
                    }));
                }
            }
        }
        let notional = mul(o.quantity, c.price, "order notional")?;
        if let Some(limit) = limits.max_order_notional
            && notional > limit
        {
            return Ok(Err(RejectReason::MaxOrderNotional { notional, limit }));
        }
        let (buys, sells) = self.pending(&o.account, &o.symbol);
        let resulting = match o.side {
            Side::Buy => pos + buys + o.quantity,
            Side::Sell => pos - sells - o.quantity,
        }
        .abs();
        let grows = resulting > pos.abs();
        if let Some(limit) = limits.max_position_qty
            && grows
            && resulting > limit
        {
            return Ok(Err(RejectReason::MaxPositionQty {
                symbol: o.symbol.clone(),
                limit,
                resulting,
            }));
        }
        let resulting_notional = mul(resulting, c.price, "position notional")?;
        if let Some(limit) = limits.max_position_notional
            && grows
            && resulting_notional > limit
        {
            return Ok(Err(RejectReason::MaxPositionNotional {
                symbol: o.symbol.clone(),
                limit,
                resulting: resulting_notional,
            }));
        }
        if let Some(limit) = limits.max_gross_exposure {
            let before = self.gross(&o.account, &o.symbol, c.price, None)?;
            let after = self.gross(&o.account, &o.symbol, c.price, Some((o.side, o.quantity)))?;
            if after > limit && after > before {
                return Ok(Err(RejectReason::MaxGrossExposure {
                    limit,
                    resulting: after,
                }));
            }
        }
        if let Some(limit) = limits.max_open_orders {
            let open = self
                .live
                .values()
                .filter(|t| t.last.account == o.account)
                .count();
            let resulting = open + 1 + c.children.len();
            if resulting > limit as usize {
                return Ok(Err(RejectReason::MaxOpenOrders { limit, resulting }));
            }
        }
        // check_available_funds, over cash and position net of what pending orders commit.
        let mut reserved = Decimal::ZERO;
        let mut committed = Decimal::ZERO;
        for t in self
            .live
            .values()
            .filter(|t| t.reserves() && t.last.account == o.account)
        {
            match t.last.side {
                Side::Buy => reserved += required_cash(&a.commission, t.remaining(), t.price)?,
                Side::Sell if t.last.symbol == o.symbol => committed += t.remaining(),
                Side::Sell => {}
            }
        }
        let available = a.book.cash - reserved;
        let held = pos - committed;
        let ok = check_available_funds(
            available,
            held,
            a.cfg.allow_short,
            &a.commission,
            o.side,
            o.quantity,
            Some(c.price),
        );
        match (ok, o.side) {
            (Ok(true), _) => Ok(Ok(())),
            (Err(_), _) => Ok(Err(RejectReason::ValidationQuantity {
                quantity: o.quantity,
                lot_size: self.config.lot_size,
            })),
            (Ok(false), Side::Buy) => Ok(Err(RejectReason::BuyingPower {
                required: required_cash(&a.commission, o.quantity, c.price)?,
                available,
            })),
            (Ok(false), Side::Sell) => Ok(Err(RejectReason::InsufficientPosition {
                symbol: o.symbol.clone(),
                side: o.side,
                quantity: o.quantity,
                held,
            })),
        }
    }
}

impl Processor for RouterProcessor {
    fn name(&self) -> &'static str {
        "router"
    }

    fn inputs(&self) -> &'static [Topic] {
        &[
            Topic::TradingSignals,
            Topic::Orders,
            Topic::Fills,
            Topic::MarketData,
            Topic::Controls,
        ]
    }

    fn process(
        &mut self,
        input: &AnyRecord,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError> {
        let out = match input {
            AnyRecord::Signal(s) => self.on_signal(s),
            AnyRecord::Order(o) => self.on_order(o),
            AnyRecord::Fill(f) => self.on_fill(f),
            AnyRecord::MarketData(m) => self.on_market_data(m),
            AnyRecord::Control(c) => return self.on_control(c),
            other => {
                return Err(ProcessError::dead_letter(format!(
                    "router does not read {}",
                    other.topic()
                )));
            }
        };
        Ok(out?)
    }

    /// Accounts, orders and marks span every key and topic: one copy sees everything.
    fn scope(&self) -> TaskScope {
        TaskScope::Single
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(Some(self.snapshot_bytes()?))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ProcessError> {
        Ok(self.restore_bytes(snapshot)?)
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
