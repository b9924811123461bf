//! Dead-letter headers: the same facts as the Avro envelope, readable by any Kafka tool
//! without a schema registry.

use chrono::{DateTime, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tradestream_schemas::DeadLetter;

/// Header: topic the record was read from.
pub const SOURCE_TOPIC: &str = "tradestream.dlq.source.topic";
/// Header: partition it was read from.
pub const SOURCE_PARTITION: &str = "tradestream.dlq.source.partition";
/// Header: offset it was read at.
pub const SOURCE_OFFSET: &str = "tradestream.dlq.source.offset";
/// Header: error class (retryable, dead_letter, fatal).
pub const ERROR_CLASS: &str = "tradestream.dlq.error.class";
/// Header: error message.
pub const ERROR_MESSAGE: &str = "tradestream.dlq.error.message";
/// Header: processor that refused the record.
pub const PROCESSOR: &str = "tradestream.dlq.processor";

/// Where a refused record came from and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Error class name.
    pub error_class: String,
    /// Error message.
    pub message: String,
    /// Refusing processor.
    pub processor: String,
}

impl DeadLetterInfo {
    /// Kafka headers carrying this information.
    pub fn headers(&self) -> OwnedHeaders {
        let partition = self.partition.to_string();
        let offset = self.offset.to_string();
        OwnedHeaders::new()
            .insert(Header {
                key: SOURCE_TOPIC,
                value: Some(self.topic.as_str()),
            })
            .insert(Header {
                key: SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: SOURCE_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: ERROR_CLASS,
                value: Some(self.error_class.as_str()),
            })
            .insert(Header {
                key: ERROR_MESSAGE,
                value: Some(self.message.as_str()),
            })
            .insert(Header {
                key: PROCESSOR,
                value: Some(self.processor.as_str()),
            })
    }

    /// The Avro envelope (value of `<topic>.dlq`) carrying these facts and the original bytes.
    pub fn envelope(
        &self,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        failed_time: DateTime<Utc>,
    ) -> DeadLetter {
        DeadLetter {
            source_topic: self.topic.clone(),
            source_partition: self.partition,
            source_offset: self.offset,
            key,
            payload,
            error_class: self.error_class.clone(),
            error_message: self.message.clone(),
            processor: self.processor.clone(),
            failed_time,
        }
    }

    /// Reads the information back from a dead-lettered message's headers.
    pub fn from_headers<H: Headers>(headers: &H) -> Option<Self> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Some(Self {
            topic: get(SOURCE_TOPIC)?,
            partition: get(SOURCE_PARTITION)?.parse().ok()?,
            offset: get(SOURCE_OFFSET)?.parse().ok()?,
            error_class: get(ERROR_CLASS)?,
            message: get(ERROR_MESSAGE)?,
            processor: get(PROCESSOR)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let info = DeadLetterInfo {
            topic: "market_data".into(),
            partition: 3,
            offset: 17,
            error_class: "dead_letter".into(),
            message: "negative price".into(),
            processor: "features".into(),
        };
        assert_eq!(DeadLetterInfo::from_headers(&info.headers()), Some(info));
    }
}
