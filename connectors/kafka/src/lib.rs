//! Kafka connector: producers and consumers built from one [`KafkaConfig`], the embedded
//! librdkafka mock cluster (in-process or as a shared `tradestream broker`), topic
//! provisioning, manual offset management, dead-letter headers and a health check.

pub mod acked;
pub mod changelog;
pub mod client;
mod committer;
pub mod config;
pub mod dlq;
pub mod error;
pub mod metrics;
pub mod mock;
pub mod runner;
pub mod topics;

pub use client::{ClusterHealth, Kafka, commit_offsets, committed_offsets};
pub use config::KafkaConfig;
pub use error::KafkaError;
pub use metrics::{Metrics, ReadinessCheck};
pub use mock::MockKafka;
pub use rdkafka;
pub use runner::{Guarantee, RunStats, RunnerConfig, run_processor};
pub use topics::{Provisioned, TopicSpec, standard_topics};
