//! The sink's one error type. Each variant knows its [`ErrorClass`], so the runner decides
//! uniformly: retry the whole batch with backoff (nothing was committed), or stop. Records the
//! database refuses never surface here: they come back as dead letters in the batch outcome.

use tradestream_kafka::KafkaError;
use tradestream_postgres::PostgresError;
use tradestream_schemas::{ErrorClass, SchemaError};

/// Everything that can stop or delay the sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Invalid settings; each line names its setting.
    #[error("invalid sink configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The database failed (connection lost, serialization failure, ...).
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// Kafka failed (consuming, producing a dead letter, metadata).
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The schema registry could not be reached or refused the dead-letter schema.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A caller broke the contract of [`SinkWriter`](crate::SinkWriter) (e.g. a record on the
    /// wrong topic, a negative offset): a bug, not bad data.
    #[error("sink invariant broken: {0}")]
    Invariant(String),
}

impl SinkError {
    /// How the runner reacts.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::Invariant(_) => ErrorClass::Fatal,
            Self::Postgres(e) => e.class(),
            Self::Kafka(e) => e.class(),
            Self::Schema(e) => e.class(),
        }
    }

    /// Whether retrying the batch later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

impl From<sqlx::Error> for SinkError {
    fn from(e: sqlx::Error) -> Self {
        Self::Postgres(PostgresError::from_sqlx(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_connectors() {
        assert_eq!(
            SinkError::Config(vec!["x".into()]).class(),
            ErrorClass::Fatal
        );
        assert_eq!(SinkError::Invariant("x".into()).class(), ErrorClass::Fatal);
        assert!(SinkError::from(sqlx::Error::PoolTimedOut).is_retryable());
        let conflict = PostgresError::Conflict {
            code: "40001".into(),
            message: String::new(),
        };
        assert!(SinkError::from(conflict).is_retryable());
        let retry = SchemaError::Registry {
            message: "down".into(),
            retryable: true,
        };
        assert!(SinkError::from(retry).is_retryable());
        assert_eq!(
            SinkError::from(sqlx::Error::RowNotFound).class(),
            ErrorClass::Fatal
        );
    }
}
