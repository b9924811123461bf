//! The router crate's error: each variant knows whether the runner should dead-letter the
//! input or stop, so the Kafka runner treats the router like every other processor.

use tradestream_schemas::{ErrorClass, OrderStatus, ProcessError, ValidationError};

/// Everything the router can fail at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    /// The configuration is invalid; every problem is listed, each naming its setting.
    #[error("invalid router configuration: {}", problems.join("; "))]
    Config {
        /// One entry per problem, `setting: what is wrong`.
        problems: Vec<String>,
    },
    /// An order event would move a known order through an illegal state transition.
    #[error("illegal order transition for {order_id}: {from} -> {to}")]
    IllegalTransition {
        /// Order concerned.
        order_id: String,
        /// State the router knows.
        from: &'static str,
        /// State the event implies.
        to: &'static str,
    },
    /// An input record breaks a semantic rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A record for an account the router is not configured for.
    #[error("unknown account {account} in {record}")]
    UnknownAccount {
        /// Account id.
        account: String,
        /// Which record named it.
        record: String,
    },
    /// A NEW order event that is not a manual request (only the REST API creates NEW orders).
    #[error("order {order_id}: a NEW order event must have origin MANUAL")]
    NotManual {
        /// Order concerned.
        order_id: String,
    },
    /// Amounts too large to compute exactly.
    #[error("arithmetic overflow computing {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A state snapshot that cannot be restored (other format version, corrupt bytes, or
    /// other accounts than configured).
    #[error("router snapshot cannot be restored: {0}")]
    Snapshot(String),
}

impl RouterError {
    /// How the runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            RouterError::Config { .. } | RouterError::Snapshot(_) => ErrorClass::Fatal,
            RouterError::IllegalTransition { .. }
            | RouterError::Invalid(_)
            | RouterError::UnknownAccount { .. }
            | RouterError::NotManual { .. }
            | RouterError::Overflow { .. } => ErrorClass::DeadLetter,
        }
    }
}

impl From<RouterError> for ProcessError {
    fn from(e: RouterError) -> Self {
        ProcessError {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

/// `NEW`, `ACCEPTED`, … as on the wire.
pub fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::New => "NEW",
        OrderStatus::Accepted => "ACCEPTED",
        OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
        OrderStatus::Filled => "FILLED",
        OrderStatus::Canceled => "CANCELED",
        OrderStatus::Rejected => "REJECTED",
        OrderStatus::Expired => "EXPIRED",
    }
}
