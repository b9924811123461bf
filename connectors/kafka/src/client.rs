//! [`Kafka`]: one resolved cluster (configured brokers or the embedded mock) plus the
//! settings every client of the process is built from.

use crate::config::KafkaConfig;
use crate::error::KafkaError;
use crate::mock::MockKafka;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// A Kafka cluster to talk to and how.
#[derive(Debug, Clone)]
pub struct Kafka {
    config: KafkaConfig,
    bootstrap: String,
    mock: Option<Arc<MockKafka>>,
}

/// What a health check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Bootstrap address checked.
    pub bootstrap: String,
    /// Brokers in the metadata.
    pub brokers: usize,
    /// Topics (name, partition count), sorted.
    pub topics: Vec<(String, usize)>,
}

impl Kafka {
    /// Validates `config` and resolves the cluster: the configured brokers, or a fresh
    /// embedded mock cluster when `brokers` is unset.
    pub fn connect(config: KafkaConfig) -> Result<Self, KafkaError> {
        config.validate().map_err(KafkaError::Config)?;
        match config.brokers.clone() {
            Some(bootstrap) => Ok(Self {
                config,
                bootstrap,
                mock: None,
            }),
            None => {
                let mock = Arc::new(MockKafka::start_keeping(1, config.mock_partition_max_mb)?);
                Ok(Self::with_mock(config, mock))
            }
        }
    }

    /// Uses an already running embedded mock cluster.
    pub fn with_mock(mut config: KafkaConfig, mock: Arc<MockKafka>) -> Self {
        config.brokers = None;
        Self {
            bootstrap: mock.bootstrap().to_string(),
            config,
            mock: Some(mock),
        }
    }

    /// Bootstrap servers clients connect to.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The settings.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The embedded mock, when this is one.
    pub fn mock(&self) -> Option<&Arc<MockKafka>> {
        self.mock.as_ref()
    }

    /// Base librdkafka config with connection and security settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        for (k, v) in self.config.client_properties(&self.bootstrap) {
            cc.set(k, v);
        }
        cc
    }

    /// Batch compression: LZ4 over a network; none for the embedded mock cluster, where
    /// batches never leave the process and compressing them only costs CPU.
    fn compression(&self) -> &'static str {
        if self.config.brokers.is_some() {
            "lz4"
        } else {
            "none"
        }
    }

    /// `fetch.wait.max.ms` (see [`Self::consumer_config`]).
    fn fetch_wait_ms(&self) -> &'static str {
        if self.config.brokers.is_some() {
            "20"
        } else {
            "100"
        }
    }

    /// An idempotent producer: acks from all replicas, retries without reordering or
    /// duplicates, records batched briefly for throughput.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.producer_config()
            .create()
            .map_err(|e| KafkaError::client("creating producer", e))
    }

    /// The settings of [`Self::producer`], for a producer with a context of its own.
    pub fn producer_config(&self) -> ClientConfig {
        let mut cc = self.client_config();
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", self.config.linger_ms.to_string())
            .set("compression.type", self.compression())
            .set("message.timeout.ms", "300000");
        for (k, v) in &self.config.extra {
            cc.set(k, v);
        }
        cc
    }

    /// The settings of a transactional producer with `transactional_id` (for `--guarantee
    /// exactly-once`): idempotent, and fenced by the broker if another instance takes over
    /// the id. Call `init_transactions` (blocking) before use.
    pub fn transactional_config(&self, transactional_id: &str) -> ClientConfig {
        let mut cc = self.client_config();
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", self.config.linger_ms.to_string())
            .set("compression.type", self.compression())
            .set("message.timeout.ms", "55000");
        for (k, v) in &self.config.extra {
            cc.set(k, v);
        }
        cc
    }

    fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut cc = self.client_config();
        let session = self.config.session_timeout_ms;
        cc.set("group.id", group_id)
            // Offsets move only when the runner says outputs are durable.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).max(100).to_string())
            .set("enable.partition.eof", "false")
            // How long a fetch with nothing new waits. Brokers answer at once when data
            // arrives, so this costs no latency, and the embedded mock does too since our
            // patch (vendor/README.md; upstream held an empty fetch for the whole wait,
            // which made us poll it every 2 ms: about a third of a core at 1k records/s).
            .set("fetch.wait.max.ms", self.fetch_wait_ms())
            .set("fetch.error.backoff.ms", "20");
        for (k, v) in &self.config.extra {
            cc.set(k, v);
        }
        cc
    }

    /// An async consumer in `group_id` with manual offset management.
    pub fn consumer(&self, group_id: &str) -> Result<StreamConsumer, KafkaError> {
        self.consumer_config(group_id)
            .create()
            .map_err(|e| KafkaError::client(format!("creating consumer in group {group_id}"), e))
    }

    /// A polling consumer (for tools and tests that read topics end to end).
    pub fn base_consumer(&self, group_id: &str) -> Result<BaseConsumer, KafkaError> {
        self.consumer_config(group_id)
            .create()
            .map_err(|e| KafkaError::client(format!("creating consumer in group {group_id}"), e))
    }

    /// Checks the cluster answers a metadata request within `timeout`.
    pub async fn health(&self, timeout: Duration) -> Result<ClusterHealth, KafkaError> {
        let cc = self.client_config();
        let bootstrap = self.bootstrap.clone();
        // fetch_metadata blocks; keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let unreachable = |message: String| KafkaError::Unreachable {
                bootstrap: bootstrap.clone(),
                message,
            };
            let client: BaseConsumer = cc.create().map_err(|e| unreachable(e.to_string()))?;
            let md = client
                .fetch_metadata(None, timeout)
                .map_err(|e| unreachable(e.to_string()))?;
            let mut topics: Vec<(String, usize)> = md
                .topics()
                .iter()
                .map(|t| (t.name().to_string(), t.partitions().len()))
                .collect();
            topics.sort();
            Ok(ClusterHealth {
                bootstrap: bootstrap.clone(),
                brokers: md.brokers().len(),
                topics,
            })
        })
        .await
        .map_err(|e| KafkaError::Mock(format!("health check task failed: {e}")))?
    }
}

/// Commits `next_offset` per (topic, partition): call only once every output produced from
/// the records before those offsets has been acknowledged. Runs the blocking commit off the
/// async workers.
pub async fn commit_offsets(
    consumer: Arc<StreamConsumer>,
    offsets: Vec<(String, i32, i64)>,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in &offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| KafkaError::client("building offset list", e))?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| KafkaError::client("committing offsets", e))
    })
    .await
    .map_err(|e| KafkaError::Mock(format!("commit task failed: {e}")))?
}

/// Committed offsets of `group_id` for `topic`'s partitions (None: nothing committed).
pub async fn committed_offsets(
    kafka: &Kafka,
    group_id: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>, KafkaError> {
    let consumer = kafka.base_consumer(group_id)?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| KafkaError::client("reading committed offsets", e))?;
        Ok((0..partitions)
            .map(
                |p| match got.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect())
    })
    .await
    .map_err(|e| KafkaError::Mock(format!("offset task failed: {e}")))?
}
