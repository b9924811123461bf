//! Rust mirrors of the topic schemas. Field names, order and types match the `.avsc` files
//! exactly (the `contract` tests fail when they drift apart). `validate()` holds the semantic
//! rules Avro cannot express, so every processor refuses the same bad records the same way.

use crate::decimal;
use crate::feature_values::FeatureValues;
use crate::ids::{AccountId, Symbol};
use crate::topics::Topic;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A record that fails a semantic rule; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {record}: {field}: {reason}")]
pub struct ValidationError {
    /// Record type name.
    pub record: &'static str,
    /// Offending field.
    pub field: &'static str,
    /// Rule it broke, with the value.
    pub reason: String,
}

/// A record type bound to its topic.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The topic this record type is published on.
    const TOPIC: Topic;
    /// Record type name as in the `.avsc`.
    const NAME: &'static str;
    /// Unique id of this record: consumers drop duplicates by it.
    fn id(&self) -> &str;
    /// Kafka message key (symbol or account).
    fn key(&self) -> &str;
    /// Event time the record refers to.
    fn event_time(&self) -> DateTime<Utc>;
    /// Semantic checks beyond the schema.
    fn validate(&self) -> Result<(), ValidationError>;
}

fn invalid(
    record: &'static str,
    field: &'static str,
    reason: impl Into<String>,
) -> ValidationError {
    ValidationError {
        record,
        field,
        reason: reason.into(),
    }
}

fn positive(record: &'static str, field: &'static str, v: Decimal) -> Result<(), ValidationError> {
    if v > Decimal::ZERO {
        Ok(())
    } else {
        Err(invalid(record, field, format!("must be > 0, got {v}")))
    }
}

fn finite(record: &'static str, field: &'static str, v: f64) -> Result<(), ValidationError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(invalid(record, field, format!("must be finite, got {v}")))
    }
}

/// Bar or tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarketDataKind {
    /// Aggregated OHLCV bar.
    Bar,
    /// Single trade.
    Tick,
}

/// `market_data`: one OHLCV bar or trade tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketData {
    /// Deterministic id derived from source, symbol and event time.
    pub record_id: String,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Bar open / trade time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub event_time: DateTime<Utc>,
    /// Bar or tick.
    pub kind: MarketDataKind,
    /// Bar interval (1d, 1m...), none for ticks.
    pub interval: Option<String>,
    /// Open price.
    #[serde(with = "decimal::avro")]
    pub open: Decimal,
    /// High price.
    #[serde(with = "decimal::avro")]
    pub high: Decimal,
    /// Low price.
    #[serde(with = "decimal::avro")]
    pub low: Decimal,
    /// Close price.
    #[serde(with = "decimal::avro")]
    pub close: Decimal,
    /// Volume (size for ticks).
    #[serde(with = "decimal::avro")]
    pub volume: Decimal,
    /// Data source.
    pub source: String,
    /// Ingestion wall-clock time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub ingest_time: DateTime<Utc>,
    /// Lockstep step: the bar's instant's position in the ingest's event-time order, from 1,
    /// shared by every bar of the instant; 0 when the producer does not sequence its bars.
    #[serde(default)]
    pub step: i64,
    /// How many bars the step has (0 when unsequenced).
    #[serde(default)]
    pub step_bars: i32,
}

impl Record for MarketData {
    const TOPIC: Topic = Topic::MarketData;
    const NAME: &'static str = "MarketData";
    fn id(&self) -> &str {
        &self.record_id
    }
    fn key(&self) -> &str {
        self.symbol.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "MarketData";
        positive(R, "open", self.open)?;
        positive(R, "high", self.high)?;
        positive(R, "low", self.low)?;
        positive(R, "close", self.close)?;
        if self.volume < Decimal::ZERO {
            return Err(invalid(
                R,
                "volume",
                format!("must be >= 0, got {}", self.volume),
            ));
        }
        if self.high < self.low {
            return Err(invalid(
                R,
                "high",
                format!("high {} < low {}", self.high, self.low),
            ));
        }
        if self.open > self.high || self.close > self.high {
            return Err(invalid(
                R,
                "high",
                format!("high {} below open/close", self.high),
            ));
        }
        if self.open < self.low || self.close < self.low {
            return Err(invalid(
                R,
                "low",
                format!("low {} above open/close", self.low),
            ));
        }
        if self.record_id.is_empty() {
            return Err(invalid(R, "record_id", "must not be empty"));
        }
        Ok(())
    }
}

/// Bar classification against the previous bar's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BarClass {
    /// Closed above the previous high.
    RealBull,
    /// Closed below the previous low.
    RealBear,
    /// Neither.
    Fake,
}

/// Trend state machine output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trend {
    /// No confirmed trend yet.
    Neutral,
    /// Two consecutive real bull bars confirmed.
    Bullish,
    /// Two consecutive real bear bars confirmed.
    Bearish,
}

/// `features`: indicator values for one bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Deterministic id.
    pub record_id: String,
    /// Source market-data record id.
    pub source_id: String,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Source bar event time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub event_time: DateTime<Utc>,
    /// Source bar close.
    #[serde(with = "decimal::avro")]
    pub close: Decimal,
    /// Indicator values by name; warming-up indicators are absent.
    pub values: FeatureValues,
    /// Bar classification.
    pub bar_class: BarClass,
    /// Trend after this bar.
    pub trend: Trend,
    /// Feature definitions version.
    pub feature_set_version: String,
    /// Lockstep step of the source bar (0 when unsequenced).
    #[serde(default)]
    pub step: i64,
}

impl Record for Features {
    const TOPIC: Topic = Topic::Features;
    const NAME: &'static str = "Features";
    fn id(&self) -> &str {
        &self.record_id
    }
    fn key(&self) -> &str {
        self.symbol.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        positive("Features", "close", self.close)?;
        for v in self.values.values() {
            finite("Features", "values", *v)?;
        }
        Ok(())
    }
}

/// Signal direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignalSide {
    /// Go long / add.
    Buy,
    /// Go short / reduce.
    Sell,
    /// Do nothing.
    Hold,
}

/// `trading_signals`: a model's call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradingSignal {
    /// Deterministic id.
    pub signal_id: String,
    /// Source features record id.
    pub source_id: String,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Bar event time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub event_time: DateTime<Utc>,
    /// Suggested side.
    pub side: SignalSide,
    /// Probability of the chosen side.
    pub confidence: f64,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Price the signal was computed at.
    #[serde(with = "decimal::avro")]
    pub reference_price: Decimal,
    /// Suggested stop-loss.
    #[serde(with = "decimal::avro_option")]
    pub stop_loss: Option<Decimal>,
    /// Suggested take-profit.
    #[serde(with = "decimal::avro_option")]
    pub take_profit: Option<Decimal>,
    /// Explanation.
    pub reason: String,
    /// Lockstep step of the source bar (0 when unsequenced).
    #[serde(default)]
    pub step: i64,
}

impl Record for TradingSignal {
    const TOPIC: Topic = Topic::TradingSignals;
    const NAME: &'static str = "TradingSignal";
    fn id(&self) -> &str {
        &self.signal_id
    }
    fn key(&self) -> &str {
        self.symbol.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "TradingSignal";
        if !(0.0..=1.0).contains(&self.confidence) {
            return Err(invalid(
                R,
                "confidence",
                format!("must be in [0, 1], got {}", self.confidence),
            ));
        }
        positive(R, "reference_price", self.reference_price)?;
        if let Some(sl) = self.stop_loss {
            positive(R, "stop_loss", sl)?;
        }
        if let Some(tp) = self.take_profit {
            positive(R, "take_profit", tp)?;
        }
        Ok(())
    }
}

/// Anomaly severity bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Mildly unusual.
    Low,
    /// Unusual.
    Medium,
    /// Very unusual.
    High,
    /// Extreme.
    Critical,
}

/// `anomalies`: an unusual bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Deterministic id.
    pub anomaly_id: String,
    /// Source features record id.
    pub source_id: String,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Bar event time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub event_time: DateTime<Utc>,
    /// What was unusual.
    pub kind: String,
    /// Anomaly score.
    pub score: f64,
    /// Severity bucket.
    pub severity: Severity,
    /// Detector version.
    pub detector_version: String,
}

impl Record for Anomaly {
    const TOPIC: Topic = Topic::Anomalies;
    const NAME: &'static str = "Anomaly";
    fn id(&self) -> &str {
        &self.anomaly_id
    }
    fn key(&self) -> &str {
        self.symbol.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        finite("Anomaly", "score", self.score)
    }
}

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    /// `BUY` / `SELL`, as in the schemas and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// Order type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderType {
    /// Fill at the next available price.
    Market,
    /// Fill at the limit price or better.
    Limit,
    /// Becomes a market order once the stop price trades.
    Stop,
    /// Becomes a limit order once the stop price trades.
    StopLimit,
}

/// Time in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimeInForce {
    /// Until the end of the trading day.
    Day,
    /// Good till canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
}

/// Order status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Created, not yet risk-checked.
    New,
    /// Passed risk checks, live at the venue.
    Accepted,
    /// Partly executed.
    PartiallyFilled,
    /// Fully executed.
    Filled,
    /// Canceled before completion.
    Canceled,
    /// Refused by risk checks or validation.
    Rejected,
    /// Time in force ran out.
    Expired,
}

impl OrderStatus {
    /// Whether the order state machine allows going from `self` to `to`:
    /// NEW → ACCEPTED | REJECTED | CANCELED; ACCEPTED → PARTIALLY_FILLED | FILLED | CANCELED |
    /// EXPIRED; PARTIALLY_FILLED → PARTIALLY_FILLED | FILLED | CANCELED | EXPIRED; terminal
    /// states go nowhere.
    pub fn can_transition_to(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (New, Accepted | Rejected | Canceled)
                | (Accepted, PartiallyFilled | Filled | Canceled | Expired)
                | (
                    PartiallyFilled,
                    PartiallyFilled | Filled | Canceled | Expired
                )
        )
    }

    /// Whether no further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Filled | Self::Canceled | Self::Rejected | Self::Expired
        )
    }
}

/// What caused an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OriginKind {
    /// A model signal.
    Signal,
    /// A manual request (REST).
    Manual,
    /// A bracket child of another order.
    Bracket,
}

/// `orders`: one state of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// `<order_id>:<sequence>`.
    pub event_id: String,
    /// Deterministic order id.
    pub order_id: String,
    /// Event sequence within the order.
    pub sequence: i32,
    /// Client order id.
    pub client_order_id: Option<String>,
    /// Account.
    pub account: AccountId,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Side.
    pub side: Side,
    /// Type.
    pub order_type: OrderType,
    /// Quantity.
    #[serde(with = "decimal::avro")]
    pub quantity: Decimal,
    /// Limit price.
    #[serde(with = "decimal::avro_option")]
    pub limit_price: Option<Decimal>,
    /// Stop price.
    #[serde(with = "decimal::avro_option")]
    pub stop_price: Option<Decimal>,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Status after this event.
    pub status: OrderStatus,
    /// Cumulative filled quantity.
    #[serde(with = "decimal::avro")]
    pub filled_quantity: Decimal,
    /// Origin kind.
    pub origin_kind: OriginKind,
    /// Origin id.
    pub origin_id: String,
    /// Bracket parent.
    pub parent_order_id: Option<String>,
    /// Rejection / cancel reason.
    pub reject_reason: Option<String>,
    /// Creation time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_time: DateTime<Utc>,
    /// Time of this state.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub updated_time: DateTime<Utc>,
}

impl Order {
    /// A request to cancel this order for `cause` (an id: the API's request, the order whose
    /// fill closed the position): a request, not a state. It keeps the order's last known
    /// sequence, so it never moves the order on (the venue's CANCELED event does), and has
    /// an id of its own, `<order_id>:cancel:<cause>`, distinct from every event's.
    pub fn cancel_request(&self, cause: &str, reason: String, at: DateTime<Utc>) -> Order {
        let mut cancel = self.clone();
        cancel.event_id = format!("{}:cancel:{cause}", self.order_id);
        cancel.status = OrderStatus::Canceled;
        cancel.reject_reason = Some(reason);
        cancel.updated_time = at;
        cancel
    }

    /// Whether this is a [`Order::cancel_request`].
    pub fn is_cancel_request(&self) -> bool {
        self.status == OrderStatus::Canceled
            && self
                .event_id
                .strip_prefix(self.order_id.as_str())
                .is_some_and(|rest| rest.starts_with(":cancel:"))
    }
}

impl Record for Order {
    const TOPIC: Topic = Topic::Orders;
    const NAME: &'static str = "Order";
    fn id(&self) -> &str {
        &self.event_id
    }
    fn key(&self) -> &str {
        self.account.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.updated_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "Order";
        if self.status == OrderStatus::Rejected {
            // A rejection records what was refused, bad values included.
            return Ok(());
        }
        positive(R, "quantity", self.quantity)?;
        let needs_limit = matches!(self.order_type, OrderType::Limit | OrderType::StopLimit);
        let needs_stop = matches!(self.order_type, OrderType::Stop | OrderType::StopLimit);
        match (needs_limit, self.limit_price) {
            (true, None) => {
                return Err(invalid(
                    R,
                    "limit_price",
                    "required for LIMIT and STOP_LIMIT",
                ));
            }
            (_, Some(p)) => positive(R, "limit_price", p)?,
            _ => {}
        }
        match (needs_stop, self.stop_price) {
            (true, None) => {
                return Err(invalid(R, "stop_price", "required for STOP and STOP_LIMIT"));
            }
            (_, Some(p)) => positive(R, "stop_price", p)?,
            _ => {}
        }
        if self.filled_quantity < Decimal::ZERO || self.filled_quantity > self.quantity {
            return Err(invalid(
                R,
                "filled_quantity",
                format!("must be within 0..={}", self.quantity),
            ));
        }
        Ok(())
    }
}

/// Liquidity flag of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Liquidity {
    /// Resting order was hit.
    Maker,
    /// Order crossed the market.
    Taker,
}

/// `fills`: one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    /// Deterministic id.
    pub fill_id: String,
    /// Order filled.
    pub order_id: String,
    /// Account.
    pub account: AccountId,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Side.
    pub side: Side,
    /// Executed quantity.
    #[serde(with = "decimal::avro")]
    pub quantity: Decimal,
    /// Execution price.
    #[serde(with = "decimal::avro")]
    pub price: Decimal,
    /// Commission.
    #[serde(with = "decimal::avro")]
    pub commission: Decimal,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// Execution event time.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub fill_time: DateTime<Utc>,
}

impl Record for Fill {
    const TOPIC: Topic = Topic::Fills;
    const NAME: &'static str = "Fill";
    fn id(&self) -> &str {
        &self.fill_id
    }
    fn key(&self) -> &str {
        self.account.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.fill_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "Fill";
        positive(R, "quantity", self.quantity)?;
        positive(R, "price", self.price)?;
        if self.commission < Decimal::ZERO {
            return Err(invalid(
                R,
                "commission",
                format!("must be >= 0, got {}", self.commission),
            ));
        }
        Ok(())
    }
}

/// `controls`: an operator command to the trading stages (the kill switch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// `control:<name>:<request id>`.
    pub control_id: String,
    /// Which control ([`Control::KILL_SWITCH`]).
    pub name: String,
    /// On or off.
    pub enabled: bool,
    /// Why the operator changed it.
    pub reason: String,
    /// Subject of the principal that issued it.
    pub actor: String,
    /// When it was issued.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub issued_time: DateTime<Utc>,
}

impl Control {
    /// The manual kill switch: while on, the router rejects every new order.
    pub const KILL_SWITCH: &'static str = "KILL_SWITCH";
    /// Every control name a consumer must understand.
    pub const NAMES: [&'static str; 1] = [Self::KILL_SWITCH];
}

impl Record for Control {
    const TOPIC: Topic = Topic::Controls;
    const NAME: &'static str = "Control";
    fn id(&self) -> &str {
        &self.control_id
    }
    fn key(&self) -> &str {
        &self.name
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.issued_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "Control";
        if self.control_id.is_empty() {
            return Err(invalid(R, "control_id", "must not be empty"));
        }
        if !Self::NAMES.contains(&self.name.as_str()) {
            return Err(invalid(
                R,
                "name",
                format!(
                    "unknown control {:?} (known: {})",
                    self.name,
                    Self::NAMES.join(", ")
                ),
            ));
        }
        if self.reason.trim().is_empty() {
            return Err(invalid(R, "reason", "must not be empty"));
        }
        if self.reason.len() > 500 {
            return Err(invalid(R, "reason", "at most 500 bytes"));
        }
        if self.reason.chars().any(char::is_control) {
            return Err(invalid(
                R,
                "reason",
                "one line without control characters (NUL, newlines, ...)",
            ));
        }
        if self.actor.is_empty() || self.actor.chars().any(char::is_control) {
            return Err(invalid(
                R,
                "actor",
                "must not be empty or hold control characters",
            ));
        }
        Ok(())
    }
}

/// `valuations`: one account's value at the end of a market instant, as the trading core's
/// books hold it. The amounts are exact decimals of any scale (Avro strings): a quantity
/// times a price can have more than the 8 decimal places of the schemas' `decimal` type. The
/// sink stores each as the account's portfolio snapshot at the instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Valuation {
    /// `<account>:<instant>` (see [`Valuation::new`]).
    pub valuation_id: String,
    /// The account.
    pub account: AccountId,
    /// The instant's step (0: an unsequenced bar, an instant of its own).
    pub step: i64,
    /// Event time of the instant's bars.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub event_time: DateTime<Utc>,
    /// Cash after every fill up to the instant.
    #[serde(with = "rust_decimal::serde::str")]
    pub cash: Decimal,
    /// Σ quantity × the symbol's last close up to the instant, over the held symbols.
    #[serde(with = "rust_decimal::serde::str")]
    pub positions_value: Decimal,
    /// `cash + positions_value`.
    #[serde(with = "rust_decimal::serde::str")]
    pub total_value: Decimal,
}

impl Valuation {
    /// `account`'s value at the instant (`step`, `event_time`). Its id is
    /// `<account>:step:<step>` for a sequenced instant and `<account>:<bar record id>` for an
    /// unsequenced bar (`bar`), which is an instant of its own: several may share a time.
    pub fn new(
        account: AccountId,
        (step, event_time, bar): (i64, DateTime<Utc>, Option<&str>),
        cash: Decimal,
        positions_value: Decimal,
    ) -> Self {
        let valuation_id = match bar {
            Some(bar) => format!("{account}:{bar}"),
            None => format!("{account}:step:{step}"),
        };
        Self {
            valuation_id,
            account,
            step,
            event_time,
            cash,
            positions_value,
            total_value: cash + positions_value,
        }
    }
}

impl Record for Valuation {
    const TOPIC: Topic = Topic::Valuations;
    const NAME: &'static str = "Valuation";
    fn id(&self) -> &str {
        &self.valuation_id
    }
    fn key(&self) -> &str {
        self.account.as_str()
    }
    fn event_time(&self) -> DateTime<Utc> {
        self.event_time
    }
    fn validate(&self) -> Result<(), ValidationError> {
        const R: &str = "Valuation";
        if self.step < 0 {
            return Err(invalid(
                R,
                "step",
                format!("must be >= 0, got {}", self.step),
            ));
        }
        if !self
            .valuation_id
            .strip_prefix(self.account.as_str())
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with(':'))
        {
            return Err(invalid(
                R,
                "valuation_id",
                format!(
                    "must be <account>:<instant> for account {}, got {:?}",
                    self.account, self.valuation_id
                ),
            ));
        }
        if self.cash + self.positions_value != self.total_value {
            return Err(invalid(
                R,
                "total_value",
                format!(
                    "must be cash + positions_value ({} + {}), got {}",
                    self.cash, self.positions_value, self.total_value
                ),
            ));
        }
        Ok(())
    }
}

/// Value of `<topic>.dlq`: a refused record and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source topic.
    pub source_topic: String,
    /// Source partition.
    pub source_partition: i32,
    /// Source offset.
    pub source_offset: i64,
    /// Original key bytes.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// Original value bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Option<Vec<u8>>,
    /// Error class name.
    pub error_class: String,
    /// Error message.
    pub error_message: String,
    /// Processor that refused it.
    pub processor: String,
    /// When it was dead-lettered.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub failed_time: DateTime<Utc>,
}
