//! The features crate's error. Every variant knows its [`ErrorClass`], so the runner treats a
//! bad bar (dead-letter) and a broken deployment (fatal) the same way it does for every other
//! processor.

use chrono::{DateTime, Utc};
use tradestream_schemas::{ErrorClass, ProcessError, Symbol, Topic, ValidationError};

/// Everything the features processor can refuse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeaturesError {
    /// Invalid configuration; each line names its setting.
    #[error("invalid features configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The core was handed a record from a topic it does not read (a wiring bug).
    #[error("the features processor reads only market_data, got a {0} record")]
    WrongTopic(Topic),
    /// The bar breaks a semantic rule of `MarketData`.
    #[error(transparent)]
    InvalidBar(#[from] ValidationError),
    /// A trade tick: indicators are defined over bars, and mixing ticks into a symbol's bar
    /// series would silently corrupt every window.
    #[error(
        "record {record_id} for {symbol} is a TICK; the features processor needs bars (aggregate ticks upstream)"
    )]
    Tick {
        /// The refused record.
        record_id: String,
        /// Its symbol.
        symbol: Symbol,
    },
    /// A bar of another interval than the symbol's earlier bars (e.g. `1m` into a `1d` series).
    #[error(
        "record {record_id} for {symbol} has interval {found:?}, but the symbol's series is {expected:?}"
    )]
    IntervalChanged {
        /// The refused record.
        record_id: String,
        /// Its symbol.
        symbol: Symbol,
        /// Interval of the symbol's series so far.
        expected: Option<String>,
        /// Interval of the refused bar.
        found: Option<String>,
    },
    /// A bar the processor already processed (same `record_id` among the symbol's last
    /// `dedup_window` bars): an upstream redelivery. [`tradestream_schemas::Processor::process`]
    /// drops it silently; only [`crate::FeaturesProcessor::compute`], which must return a
    /// record, reports it.
    #[error("record {record_id} for {symbol} was already processed (redelivery)")]
    Redelivered {
        /// The redelivered record.
        record_id: String,
        /// Its symbol.
        symbol: Symbol,
    },
    /// A state snapshot that cannot be restored (other format version, corrupt bytes, or
    /// taken under other indicator settings).
    #[error("features snapshot cannot be restored: {0}")]
    Snapshot(String),
    /// A bar at or before the symbol's last processed bar: a duplicate or out of order.
    #[error(
        "{kind} bar for {symbol}: record {record_id} has event time {time}, last processed bar is at {last}"
    )]
    OutOfOrder {
        /// `duplicate` (same time) or `out-of-order` (earlier time).
        kind: &'static str,
        /// The refused record.
        record_id: String,
        /// Its symbol.
        symbol: Symbol,
        /// Its event time.
        time: DateTime<Utc>,
        /// Event time of the symbol's last processed bar.
        last: DateTime<Utc>,
    },
}

impl FeaturesError {
    /// How a runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            FeaturesError::Config(_)
            | FeaturesError::WrongTopic(_)
            | FeaturesError::Snapshot(_) => ErrorClass::Fatal,
            FeaturesError::InvalidBar(_)
            | FeaturesError::Redelivered { .. }
            | FeaturesError::Tick { .. }
            | FeaturesError::IntervalChanged { .. }
            | FeaturesError::OutOfOrder { .. } => ErrorClass::DeadLetter,
        }
    }
}

impl From<FeaturesError> for ProcessError {
    fn from(e: FeaturesError) -> Self {
        ProcessError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(
            FeaturesError::Config(vec!["x".into()]).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            FeaturesError::WrongTopic(Topic::Fills).class(),
            ErrorClass::Fatal
        );
        let e = FeaturesError::Tick {
            record_id: "r".into(),
            symbol: Symbol::new("A").expect("symbol"),
        };
        assert_eq!(e.class(), ErrorClass::DeadLetter);
        let p = ProcessError::from(e);
        assert_eq!(p.class, ErrorClass::DeadLetter);
        assert!(p.message.contains("TICK"), "{}", p.message);
    }
}
