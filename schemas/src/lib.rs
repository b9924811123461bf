//! Topic contracts for tradestream: the Avro schemas (`schemas/avro/*.avsc`, the source of
//! truth), the Rust record types that mirror them and the Confluent wire codec. No server and
//! no database: the schema registry tradestream serves is `tradestream-registry`
//! (`connectors/registry`).

pub mod codec;
pub mod datum;
pub mod decimal;
pub mod error;
pub mod feature_values;
pub mod ids;
pub mod processor;
pub mod records;
pub mod samples;
pub mod snapshot;
pub mod topics;

pub use codec::Codec;
pub use error::SchemaError;
pub use feature_values::{FeatureName, FeatureValues};
pub use ids::{AccountId, InvalidId, Symbol};
pub use processor::{AnyRecord, BarrierStatus, ProcessError, Processor, TaskScope};
pub use records::*;
pub use topics::{KeyField, Topic};

use serde::{Deserialize, Serialize};

/// How a caller should react to an error, so runners decide uniformly across crates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// Transient: try again (with backoff); the input is fine.
    Retryable,
    /// The input record itself is bad: send it to the dead-letter topic and go on.
    DeadLetter,
    /// The process cannot continue (misconfiguration, broken invariant): stop.
    Fatal,
}

impl ErrorClass {
    /// Stable lower-case name, used in DLQ headers, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::DeadLetter => "dead_letter",
            Self::Fatal => "fatal",
        }
    }
}
