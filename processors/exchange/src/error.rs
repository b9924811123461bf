//! The exchange crate's error, classified for the runner (dead-letter the input or stop).

use tradestream_router::RouterError;
use tradestream_schemas::{ErrorClass, ProcessError, ValidationError};

/// Everything the exchange can fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExchangeError {
    /// The configuration is invalid; every problem is listed, each naming its setting.
    #[error("invalid exchange configuration: {}", problems.join("; "))]
    Config {
        /// One entry per problem, `setting: what is wrong`.
        problems: Vec<String>,
    },
    /// An input record breaks a semantic rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A BRACKET order without `parent_order_id`.
    #[error("bracket order {order_id} has no parent_order_id")]
    MissingParent {
        /// Order concerned.
        order_id: String,
    },
    /// Amounts too large to compute exactly.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A state snapshot that cannot be restored (other format version or corrupt bytes).
    #[error("exchange snapshot cannot be restored: {0}")]
    Snapshot(String),
}

impl From<RouterError> for ExchangeError {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::Overflow { what } => ExchangeError::Overflow { what },
            _ => ExchangeError::Overflow { what: "commission" },
        }
    }
}

impl ExchangeError {
    /// How the runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            ExchangeError::Config { .. } | ExchangeError::Snapshot(_) => ErrorClass::Fatal,
            ExchangeError::Invalid(_)
            | ExchangeError::MissingParent { .. }
            | ExchangeError::Overflow { .. } => ErrorClass::DeadLetter,
        }
    }
}

impl From<ExchangeError> for ProcessError {
    fn from(e: ExchangeError) -> Self {
        ProcessError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}
