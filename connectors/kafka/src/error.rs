//! The Kafka connector's error, classified for the runner.

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use tradestream_schemas::ErrorClass;

/// Everything that can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Invalid settings; each line names its setting.
    #[error("invalid Kafka configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The embedded mock cluster could not be started or driven.
    #[error("mock cluster: {0}")]
    Mock(String),
    /// A processor's state changelog could not be written, read or applied.
    #[error("state changelog: {0}")]
    Changelog(String),
    /// The background offset committer of a single task stopped (see `committer`).
    #[error("offset committer: {0}")]
    Committer(String),
    /// A librdkafka call failed.
    #[error("{context}: {source}")]
    Client {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        #[source]
        source: RdError,
    },
    /// Topic provisioning failed for a topic.
    #[error("creating topic {topic}: {message}")]
    Provision {
        /// Topic name.
        topic: String,
        /// Broker's answer.
        message: String,
    },
    /// The cluster did not answer in time.
    #[error("Kafka at {bootstrap} unreachable: {message}")]
    Unreachable {
        /// Bootstrap address tried.
        bootstrap: String,
        /// Details.
        message: String,
    },
    /// Encoding or decoding through the schema registry failed in a way that is not the
    /// record's fault (the registry is down, or refused our own schema).
    #[error(transparent)]
    Schema(#[from] tradestream_schemas::SchemaError),
    /// A processor core reported an error it cannot continue from.
    #[error("processor {processor}: {message}")]
    Processor {
        /// Processor name.
        processor: String,
        /// The core's message.
        message: String,
    },
    /// A record arrived on a topic the runner does not know.
    #[error("record on unknown topic {0}")]
    UnknownTopic(String),
    /// Local I/O (the broker's TCP listener).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl KafkaError {
    /// Wraps a librdkafka error with context.
    pub fn client(context: impl Into<String>, source: RdError) -> Self {
        Self::Client {
            context: context.into(),
            source,
        }
    }

    /// How a runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            KafkaError::Config(_)
            | KafkaError::Mock(_)
            | KafkaError::Changelog(_)
            | KafkaError::Committer(_)
            | KafkaError::Io { .. } => ErrorClass::Fatal,
            KafkaError::Provision { .. } => ErrorClass::Fatal,
            KafkaError::Unreachable { .. } => ErrorClass::Retryable,
            KafkaError::Schema(e) => e.class(),
            KafkaError::Processor { .. } | KafkaError::UnknownTopic(_) => ErrorClass::Fatal,
            KafkaError::Client { source, .. } => match source.rdkafka_error_code() {
                Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage) => {
                    ErrorClass::DeadLetter
                }
                Some(
                    RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::Fatal,
                ) => ErrorClass::Fatal,
                _ => ErrorClass::Retryable,
            },
        }
    }
}
