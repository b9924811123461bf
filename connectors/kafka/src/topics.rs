//! Topic provisioning: partition counts and retention from config. Real clusters get the
//! admin API; the embedded mock (which has no CreateTopics) gets its own call.

use crate::client::Kafka;
use crate::config::KafkaConfig;
use crate::error::KafkaError;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;
use tradestream_schemas::Topic;
use tradestream_schemas::topics::dlq_topic;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Retention in ms (-1 forever).
    pub retention_ms: i64,
}

/// What provisioning did for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// Newly created.
    Created,
    /// Already there (left as it was).
    Existed,
}

/// Dead-letter topics keep records long enough for an operator to inspect and replay them.
const DLQ_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

/// The pipeline's topics (the data topics and `controls`) and their dead-letter topics, sized
/// from `config`. Orders and fills are the money trail, and `controls` the operators' commands:
/// kept forever.
pub fn standard_topics(config: &KafkaConfig) -> Vec<TopicSpec> {
    let mut specs = Vec::new();
    for topic in Topic::EVERY {
        let retention_ms = match topic {
            Topic::Orders | Topic::Fills | Topic::Controls => -1,
            _ => config.retention_ms,
        };
        specs.push(TopicSpec {
            name: topic.name().into(),
            partitions: config.partitions,
            retention_ms,
        });
        specs.push(TopicSpec {
            name: dlq_topic(topic.name()),
            partitions: 1,
            retention_ms: DLQ_RETENTION_MS.max(config.retention_ms),
        });
    }
    specs
}

impl Kafka {
    /// Creates the topics that do not exist yet.
    pub async fn provision(
        &self,
        specs: &[TopicSpec],
    ) -> Result<Vec<(String, Provisioned)>, KafkaError> {
        // Ask first: existing topics are left alone, and a broker without CreateTopics (the
        // mock, or a shared `tradestream broker`) is then only asked for what is missing.
        let existing = self.health(Duration::from_secs(10)).await?.topics;
        let (present, missing): (Vec<&TopicSpec>, Vec<&TopicSpec>) = specs
            .iter()
            .partition(|s| existing.iter().any(|(n, _)| n == &s.name));
        let mut out: Vec<(String, Provisioned)> = present
            .iter()
            .map(|s| (s.name.clone(), Provisioned::Existed))
            .collect();
        if missing.is_empty() {
            return Ok(out);
        }
        if let Some(mock) = self.mock() {
            for spec in missing {
                mock.create_topic(&spec.name, spec.partitions)?;
                out.push((spec.name.clone(), Provisioned::Created));
            }
            return Ok(out);
        }
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| KafkaError::client("creating admin client", e))?;
        let retention: Vec<String> = missing.iter().map(|s| s.retention_ms.to_string()).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&retention)
            .map(|(s, r)| {
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(self.config().replication_factor),
                )
                .set("retention.ms", r)
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(30)));
        let no_admin_api = |topic: String| KafkaError::Provision {
            topic,
            message: "the broker does not support CreateTopics; create the topic on the broker \
                      (a `tradestream broker` creates the standard topics at start)"
                .into(),
        };
        let results = match admin.create_topics(&new_topics, &opts).await {
            Ok(results) => results,
            Err(e) if is_unsupported(e.rdkafka_error_code()) => {
                return Err(no_admin_api(missing[0].name.clone()));
            }
            Err(e) => return Err(KafkaError::client("CreateTopics", e)),
        };
        for result in results {
            match result {
                Ok(name) => out.push((name, Provisioned::Created)),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    out.push((name, Provisioned::Existed))
                }
                Err((name, code)) if is_unsupported(Some(code)) => return Err(no_admin_api(name)),
                Err((name, code)) => {
                    return Err(KafkaError::Provision {
                        topic: name,
                        message: code.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }
}

fn is_unsupported(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::InvalidRequest
        )
    )
}
