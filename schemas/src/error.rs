//! The schemas crate's error: registry, codec and validation failures, each classified so
//! runners treat them uniformly (retry, dead-letter, or stop).

use crate::ErrorClass;
use crate::ids::InvalidId;
use crate::records::ValidationError;
use schema_registry_converter::error::SRCError;

/// Everything that can go wrong encoding, decoding or registering a record.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not a decodable Confluent Avro record of the expected schema.
    #[error("cannot decode record: {0}")]
    Decode(String),
    /// A record of another type was found on the topic.
    #[error("expected a {expected} record, found {found}")]
    WrongRecord {
        /// Expected record name.
        expected: &'static str,
        /// Record name found.
        found: String,
    },
    /// The record decoded but breaks a semantic rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// An identifier is malformed.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The schema registry refused or failed a request.
    #[error("schema registry: {message}")]
    Registry {
        /// What happened.
        message: String,
        /// Whether trying again may help (network, 5xx).
        retryable: bool,
    },
    /// Bad configuration (names the setting).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<SRCError> for SchemaError {
    fn from(e: SRCError) -> Self {
        let message = match &e.cause {
            Some(cause) => format!("{}: {cause}", e.error),
            None => e.error.clone(),
        };
        // Unknown ids and undecodable bodies surface as non-retriable registry errors; the
        // record is what is wrong then, so it is dead-lettered rather than retried forever.
        if !e.retriable
            && (message.contains("Could not get")
                || message.contains("decode")
                || message.contains("40403")
                || message.contains("invalid"))
        {
            return SchemaError::Decode(message);
        }
        SchemaError::Registry {
            message,
            retryable: e.retriable,
        }
    }
}

impl SchemaError {
    /// How a runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            SchemaError::Decode(_)
            | SchemaError::WrongRecord { .. }
            | SchemaError::Invalid(_)
            | SchemaError::InvalidId(_) => ErrorClass::DeadLetter,
            SchemaError::Registry {
                retryable: true, ..
            } => ErrorClass::Retryable,
            // A registry that refuses our own schema (incompatible change) is a deployment
            // problem, not a bad record.
            SchemaError::Registry {
                retryable: false, ..
            }
            | SchemaError::Config(_) => ErrorClass::Fatal,
        }
    }
}
