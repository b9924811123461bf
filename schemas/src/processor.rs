//! The contract between pure processor cores and the runners that feed them.
//!
//! A core turns one input record (plus its own state and the time it is given) into output
//! records. It does no I/O and reads no clock, so the live Kafka runner, the backtester and
//! unit tests drive exactly the same code. Records travel as [`AnyRecord`] because several
//! processors read more than one topic (the router reads signals and fills) or write more
//! than one (the scorer writes signals and anomalies).

use crate::ErrorClass;
use crate::records::*;
use crate::topics::Topic;
use chrono::{DateTime, Utc};

/// Any record of the data topics or of the control-plane topic.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyRecord {
    /// `market_data`.
    MarketData(MarketData),
    /// `features`.
    Features(Features),
    /// `trading_signals`.
    Signal(TradingSignal),
    /// `anomalies`.
    Anomaly(Anomaly),
    /// `orders`.
    Order(Order),
    /// `fills`.
    Fill(Fill),
    /// `controls`.
    Control(Control),
    /// `valuations`.
    Valuation(Valuation),
}

macro_rules! dispatch {
    ($self:expr, $r:ident => $e:expr) => {
        match $self {
            AnyRecord::MarketData($r) => $e,
            AnyRecord::Features($r) => $e,
            AnyRecord::Signal($r) => $e,
            AnyRecord::Anomaly($r) => $e,
            AnyRecord::Order($r) => $e,
            AnyRecord::Fill($r) => $e,
            AnyRecord::Control($r) => $e,
            AnyRecord::Valuation($r) => $e,
        }
    };
}

impl AnyRecord {
    /// The topic the record belongs on.
    pub fn topic(&self) -> Topic {
        match self {
            AnyRecord::MarketData(_) => Topic::MarketData,
            AnyRecord::Features(_) => Topic::Features,
            AnyRecord::Signal(_) => Topic::TradingSignals,
            AnyRecord::Anomaly(_) => Topic::Anomalies,
            AnyRecord::Order(_) => Topic::Orders,
            AnyRecord::Fill(_) => Topic::Fills,
            AnyRecord::Control(_) => Topic::Controls,
            AnyRecord::Valuation(_) => Topic::Valuations,
        }
    }

    /// The record's unique id.
    pub fn id(&self) -> &str {
        dispatch!(self, r => r.id())
    }

    /// The Kafka key.
    pub fn key(&self) -> &str {
        dispatch!(self, r => r.key())
    }

    /// The event time.
    pub fn event_time(&self) -> DateTime<Utc> {
        dispatch!(self, r => r.event_time())
    }

    /// Semantic validation.
    pub fn validate(&self) -> Result<(), ValidationError> {
        dispatch!(self, r => r.validate())
    }
}

macro_rules! from_record {
    ($t:ty, $v:ident) => {
        impl From<$t> for AnyRecord {
            fn from(r: $t) -> Self {
                AnyRecord::$v(r)
            }
        }
    };
}
from_record!(MarketData, MarketData);
from_record!(Features, Features);
from_record!(TradingSignal, Signal);
from_record!(Anomaly, Anomaly);
from_record!(Order, Order);
from_record!(Fill, Fill);
from_record!(Control, Control);
from_record!(Valuation, Valuation);

/// Why a core could not process a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    /// Retry, dead-letter or stop.
    pub class: ErrorClass,
    /// What went wrong, for the dead-letter headers and logs.
    pub message: String,
}

impl ProcessError {
    /// The input record is bad: dead-letter it.
    pub fn dead_letter(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::DeadLetter,
            message: message.into(),
        }
    }

    /// The core cannot go on.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Fatal,
            message: message.into(),
        }
    }
}

/// A pure stream-processing core.
pub trait Processor: Send {
    /// Stable name: consumer group suffix, metric label, DLQ header.
    fn name(&self) -> &'static str;

    /// Topics this core reads.
    fn inputs(&self) -> &'static [Topic];

    /// Processes one input record at processing time `now` (event-time logic should use the
    /// record's own times; `now` is for stamping and wall-clock rules like trading hours in a
    /// live run, and is the replayed time in a backtest).
    fn process(
        &mut self,
        input: &AnyRecord,
        now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError>;

    /// How the runner may divide the input among copies of this core. Cores whose state is
    /// keyed by the record key (per symbol) say [`TaskScope::PerPartition`]: each input
    /// partition gets its own copy, which can move to another instance on a rebalance. Cores
    /// whose state spans keys or topics (accounts, the venue) keep the default
    /// [`TaskScope::Single`]: one copy sees every partition, and the order it saw them in is
    /// logged so a restart replays the same interleaving.
    fn scope(&self) -> TaskScope {
        TaskScope::Single
    }

    /// The core's state as bytes, or `None` for a stateless core. Together with the input
    /// offsets it was taken at, a snapshot lets a restarted task continue exactly where the
    /// last one stopped: restoring it into a fresh core built from the same configuration and
    /// feeding the same records in the same order must give the same outputs as never
    /// having stopped.
    fn snapshot(&self) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(None)
    }

    /// Where the core's instant barrier stands, for the runner's gauges; `None` for a core
    /// that does not hold inputs per market instant. The runner reads it once per batch, so
    /// it must be cheap.
    fn barrier(&self) -> Option<BarrierStatus> {
        None
    }

    /// Replaces the state of a fresh core with one taken by [`Processor::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ProcessError> {
        let _ = snapshot;
        Err(ProcessError::fatal(format!(
            "{} keeps no state to restore",
            self.name()
        )))
    }
}

/// Where an instant barrier stands (see [`Processor::barrier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierStatus {
    /// The last instant (step) processed; 0 before the first.
    pub done: i64,
    /// Instants whose inputs are held, waiting for the rest of their inputs or an earlier
    /// instant.
    pub held: usize,
}

/// How a core's input is divided among its copies; see [`Processor::scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskScope {
    /// One copy per input partition (state keyed by the record key).
    PerPartition,
    /// One copy for all input partitions and topics.
    Single,
}
