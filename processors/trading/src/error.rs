//! The trading crate's error, classified for the runner (dead-letter the input or stop).

use tradestream_exchange::ExchangeError;
use tradestream_router::RouterError;
use tradestream_schemas::{ErrorClass, ProcessError};

/// Everything the trading core can fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TradingError {
    /// The router part refused an input or its configuration.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The venue part refused an input or its configuration.
    #[error(transparent)]
    Venue(#[from] ExchangeError),
    /// A state snapshot that cannot be restored (other format version or corrupt bytes).
    #[error("trading snapshot cannot be restored: {0}")]
    Snapshot(String),
}

impl TradingError {
    /// How the runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            TradingError::Router(e) => e.class(),
            TradingError::Venue(e) => e.class(),
            TradingError::Snapshot(_) => ErrorClass::Fatal,
        }
    }
}

impl From<TradingError> for ProcessError {
    fn from(e: TradingError) -> Self {
        ProcessError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}
