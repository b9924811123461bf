//! The generic Kafka runner: feeds a pure [`Processor`] core from its input topics and
//! publishes what it returns.
//!
//! Per batch: decode (Confluent Avro) → process → encode → produce → wait for every
//! acknowledgement (acks=all, idempotent producer) → commit the input offsets. Offsets never
//! move before the outputs are durable, so a crash replays the batch; record ids are derived
//! from their cause, so downstream consumers drop the replayed duplicates. Records that cannot
//! be processed go to `<topic>.dlq` with the reason in headers and the batch goes on.
//!
//! Broker outages are waited out, never turned into skipped offsets: consumer errors pause
//! the loop with capped exponential backoff (librdkafka keeps the position and reconnects),
//! unacknowledged outputs are sent again, and commits are retried until they succeed or the
//! partitions were reassigned. On shutdown the batch in hand is finished and committed first.

use crate::client::{Kafka, commit_offsets};
use crate::dlq::DeadLetterInfo;
use crate::error::KafkaError;
use crate::metrics::Metrics;
use chrono::Utc;
use futures::future::try_join_all;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use tradestream_schemas::{AnyRecord, Codec, ErrorClass, Processor, Topic};

/// How the runner batches and identifies itself.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Consumer group id.
    pub group_id: String,
    /// Most records per batch.
    pub max_batch: usize,
    /// How long to wait for more records once a batch has started.
    pub linger: Duration,
    /// How often to refresh the consumer-lag gauge.
    pub lag_interval: Duration,
}

impl RunnerConfig {
    /// Defaults for `processor`: group `tradestream-<processor>`, batches of 1000, 5 ms linger.
    pub fn for_processor(processor: &str) -> Self {
        Self {
            group_id: format!("tradestream-{processor}"),
            max_batch: 1000,
            linger: Duration::from_millis(5),
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Records consumed.
    pub records_in: u64,
    /// Records produced.
    pub records_out: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Batches committed.
    pub batches: u64,
}

/// Runs `core` until `shutdown` resolves; then finishes the batch in flight, commits and
/// returns. Errors that are not a record's fault stop the run (the process should exit and
/// be restarted: it resumes from the last committed offsets).
pub async fn run_processor<P: Processor>(
    kafka: &Kafka,
    codec: &Codec,
    core: &mut P,
    config: &RunnerConfig,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, KafkaError> {
    let span = tracing::info_span!("processor", processor = core.name(), group = %config.group_id);
    run_loop(kafka, codec, core, config, metrics, shutdown)
        .instrument(span)
        .await
}

async fn run_loop<P: Processor>(
    kafka: &Kafka,
    codec: &Codec,
    core: &mut P,
    config: &RunnerConfig,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, KafkaError> {
    let name = core.name();
    let consumer = Arc::new(kafka.consumer(&config.group_id)?);
    let topics: Vec<&str> = core.inputs().iter().map(|t| t.name()).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| KafkaError::client("subscribing", e))?;
    let producer = kafka.producer()?;
    tracing::info!(inputs = ?topics, "processor started");
    let mut stats = RunStats::default();
    let mut last_lag = Instant::now();
    tokio::pin!(shutdown);
    let mut consume_failures = 0u32;
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = consumer.recv() => msg,
        };
        let first = match first {
            Ok(m) => {
                consume_failures = 0;
                m.detach()
            }
            Err(e) => {
                // librdkafka reconnects and refetches by itself; the position is kept, so
                // nothing is skipped. Pause so an unreachable broker is not spun on.
                let pause = backoff(consume_failures);
                consume_failures = consume_failures.saturating_add(1);
                consume_error(e, pause)?;
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.max_batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(msg)) => batch.push(msg.detach()),
                // Process what we have; the error is looked at on the next receive.
                Ok(Err(e)) => {
                    consume_error(e, Duration::ZERO)?;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = process_batch(codec, core, &producer, &batch, metrics).await?;
        commit_with_retry(&consumer, outcome.offsets).await?;
        metrics
            .processing_seconds
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        stats.records_in += batch.len() as u64;
        stats.records_out += outcome.produced;
        stats.dead_lettered += outcome.dead_lettered;
        stats.batches += 1;
        if last_lag.elapsed() >= config.lag_interval {
            last_lag = Instant::now();
            update_lag(consumer.clone(), name, metrics).await;
        }
    }
    consumer.unsubscribe();
    tracing::info!(
        records_in = stats.records_in,
        records_out = stats.records_out,
        dead_lettered = stats.dead_lettered,
        "processor stopped"
    );
    Ok(stats)
}

struct BatchOutcome {
    offsets: Vec<(String, i32, i64)>,
    produced: u64,
    dead_lettered: u64,
}

/// Decodes, processes and publishes one batch; returns the offsets to commit.
async fn process_batch<P: Processor>(
    codec: &Codec,
    core: &mut P,
    producer: &FutureProducer,
    batch: &[OwnedMessage],
    metrics: &Metrics,
) -> Result<BatchOutcome, KafkaError> {
    let name = core.name();
    let now = Utc::now();
    let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut deliveries: Vec<(DeliveryFuture, Pending)> = Vec::with_capacity(batch.len());
    let mut in_counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out_counts: BTreeMap<Topic, u64> = BTreeMap::new();
    let mut dead: Vec<(DeadLetterInfo, &OwnedMessage)> = Vec::new();
    let mut e2e: Vec<(Topic, f64)> = Vec::new();
    let mut rejections: BTreeMap<String, u64> = BTreeMap::new();
    for msg in batch {
        next_offsets.insert((msg.topic().to_string(), msg.partition()), msg.offset() + 1);
        *in_counts.entry(msg.topic()).or_default() += 1;
        let topic = Topic::from_name(msg.topic())
            .ok_or_else(|| KafkaError::UnknownTopic(msg.topic().to_string()))?;
        let record = match decode_record(codec, topic, msg.payload().unwrap_or_default()).await {
            Ok(r) => r,
            Err(e) if e.class() == ErrorClass::DeadLetter => {
                dead.push((dead_letter_info(msg, name, e.class(), &e.to_string()), msg));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let outputs = match core.process(&record, now) {
            Ok(o) => o,
            Err(e) if e.class == ErrorClass::Fatal => {
                return Err(KafkaError::Processor {
                    processor: name.into(),
                    message: e.message,
                });
            }
            Err(e) => {
                dead.push((dead_letter_info(msg, name, e.class, &e.message), msg));
                continue;
            }
        };
        let lag = (now - record.event_time())
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6;
        for out in outputs {
            if let AnyRecord::Order(o) = &out
                && o.status == tradestream_schemas::OrderStatus::Rejected
            {
                let reason = o.reject_reason.as_deref().unwrap_or("UNKNOWN");
                let category = reason.split(':').next().unwrap_or(reason).to_string();
                *rejections.entry(category).or_default() += 1;
            }
            let bytes = codec.encode_any(&out).await?;
            let topic = out.topic();
            *out_counts.entry(topic).or_default() += 1;
            e2e.push((topic, lag));
            let pending = Pending {
                topic: topic.name().to_string(),
                key: out.key().to_string(),
                payload: bytes,
                headers: None,
            };
            deliveries.push((pending.enqueue(producer).await?, pending));
        }
    }
    for (info, msg) in &dead {
        let envelope = info.envelope(
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
            now,
        );
        let bytes = codec.encode_dead_letter(&envelope).await?;
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        let dlq = tradestream_schemas::topics::dlq_topic(&info.topic);
        let pending = Pending {
            topic: dlq,
            key,
            payload: bytes,
            headers: Some(info.headers()),
        };
        deliveries.push((pending.enqueue(producer).await?, pending));
        tracing::warn!(topic = %info.topic, partition = info.partition, offset = info.offset, reason = %info.message, "record dead-lettered");
        metrics
            .dead_lettered
            .with_label_values(&[name, &info.topic, &info.error_class])
            .inc();
    }
    // Outputs must be durable before the inputs' offsets move.
    try_join_all(
        deliveries
            .into_iter()
            .map(|(d, pending)| deliver_with_retry(producer, d, pending)),
    )
    .await?;
    for (topic, n) in in_counts {
        metrics
            .records_in
            .with_label_values(&[name, topic])
            .inc_by(n);
    }
    let mut produced = 0;
    for (topic, n) in out_counts {
        metrics
            .records_out
            .with_label_values(&[name, topic.name()])
            .inc_by(n);
        produced += n;
    }
    for (category, n) in rejections {
        metrics
            .risk_rejections
            .with_label_values(&[&category])
            .inc_by(n);
    }
    for (topic, lag) in e2e {
        metrics
            .end_to_end_seconds
            .with_label_values(&[name, topic.name()])
            .observe(lag.max(0.0));
    }
    Ok(BatchOutcome {
        offsets: next_offsets
            .into_iter()
            .map(|((t, p), o)| (t, p, o))
            .collect(),
        produced,
        dead_lettered: dead.len() as u64,
    })
}

fn dead_letter_info(
    msg: &OwnedMessage,
    processor: &str,
    class: ErrorClass,
    message: &str,
) -> DeadLetterInfo {
    DeadLetterInfo {
        topic: msg.topic().to_string(),
        partition: msg.partition(),
        offset: msg.offset(),
        error_class: class.as_str().to_string(),
        message: message.to_string(),
        processor: processor.to_string(),
    }
}

/// Longest pause between retries of a broker operation.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Capped exponential backoff: 100 ms, 200 ms, ... up to [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    Duration::from_millis(100)
        .saturating_mul(factor)
        .min(MAX_BACKOFF)
}

/// A consumer error: fatal ones stop the run, the rest (broker down, transport failures) are
/// logged and waited out.
fn consume_error(e: rdkafka::error::KafkaError, pause: Duration) -> Result<(), KafkaError> {
    let err = KafkaError::client("consuming", e);
    if err.class() == ErrorClass::Fatal {
        return Err(err);
    }
    tracing::warn!(error = %err, ?pause, "consumer error; retrying");
    Ok(())
}

/// Whether a commit failed because this member no longer owns the partitions (a rebalance
/// moved them): retrying cannot succeed, and the new owner replays from the last committed
/// offset, whose outputs downstream consumers drop by id.
fn lost_ownership(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::Client { source, .. } if matches!(
            source.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::IllegalGeneration
                    | rdkafka::types::RDKafkaErrorCode::UnknownMemberId
                    | rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                    | rdkafka::types::RDKafkaErrorCode::FencedInstanceId
                    | rdkafka::types::RDKafkaErrorCode::AssignmentLost
            )
        )
    )
}

/// Commits the batch's offsets, retrying with capped exponential backoff while the broker is
/// unreachable: the outputs are already durable, so giving up here would replay the batch.
async fn commit_with_retry(
    consumer: &Arc<StreamConsumer>,
    offsets: Vec<(String, i32, i64)>,
) -> Result<(), KafkaError> {
    let mut attempt = 0u32;
    loop {
        match commit_offsets(consumer.clone(), offsets.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if lost_ownership(&e) => {
                tracing::warn!(error = %e, "offsets not committed: partitions were reassigned; the new owner replays them");
                return Ok(());
            }
            Err(e) if e.class() == ErrorClass::Retryable => {
                let pause = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %e, attempt, ?pause, "committing offsets failed; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An output kept until the broker acknowledges it, so a failed delivery can be sent again.
struct Pending {
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: Option<rdkafka::message::OwnedHeaders>,
}

impl Pending {
    async fn enqueue(&self, producer: &FutureProducer) -> Result<DeliveryFuture, KafkaError> {
        enqueue(
            producer,
            &self.topic,
            &self.key,
            &self.payload,
            self.headers.clone(),
        )
        .await
    }
}

/// Waits for an acknowledgement; a retryable failure (the producer gave up after
/// `message.timeout.ms` of outage) sends the same bytes again with capped backoff. Ids are
/// derived from the cause, so a copy the broker did keep is dropped downstream.
async fn deliver_with_retry(
    producer: &FutureProducer,
    mut delivery: DeliveryFuture,
    pending: Pending,
) -> Result<(), KafkaError> {
    let mut attempt = 0u32;
    loop {
        let err = match delivery.await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err((e, _))) => {
                KafkaError::client(format!("delivering output to {}", pending.topic), e)
            }
            Err(_) => KafkaError::client(
                format!("delivering output to {}", pending.topic),
                rdkafka::error::KafkaError::Canceled,
            ),
        };
        if err.class() != ErrorClass::Retryable {
            return Err(err);
        }
        let pause = backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(error = %err, attempt, ?pause, "output not acknowledged; sending it again");
        tokio::time::sleep(pause).await;
        delivery = pending.enqueue(producer).await?;
    }
}

/// Decodes a consumed record, retrying while the registry is unreachable (a registry outage
/// must not turn good records into dead letters). Any other failure is the record's fault and
/// comes back as [`SchemaError::Decode`]: decoding registers nothing, so a registry that
/// refuses the lookup (unknown id) or a body the schema cannot read (truncated, garbage)
/// says something about these bytes, not about the deployment.
///
/// [`SchemaError::Decode`]: tradestream_schemas::SchemaError::Decode
pub async fn decode_record(
    codec: &Codec,
    topic: Topic,
    bytes: &[u8],
) -> Result<AnyRecord, tradestream_schemas::SchemaError> {
    let mut attempt = 0u32;
    loop {
        match codec.decode_any(topic, bytes).await {
            Ok(record) => return Ok(record),
            Err(e) if e.class() == ErrorClass::Retryable => {
                let pause = backoff(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %e, ?pause, "schema registry unavailable; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) if e.class() == ErrorClass::DeadLetter => return Err(e),
            Err(e) => return Err(tradestream_schemas::SchemaError::Decode(e.to_string())),
        }
    }
}

/// Enqueues a record, waiting for room when librdkafka's local queue is full.
pub async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<rdkafka::message::OwnedHeaders>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers.clone() {
            record = record.headers(h);
        }
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(KafkaError::client(format!("producing to {topic}"), e)),
        }
    }
}

async fn update_lag(consumer: Arc<StreamConsumer>, processor: &'static str, metrics: &Metrics) {
    let lags = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let Ok(assignment) = consumer.assignment() else {
            return out;
        };
        let Ok(positions) = consumer.position() else {
            return out;
        };
        for elem in assignment.elements() {
            let (topic, partition) = (elem.topic().to_string(), elem.partition());
            let Ok((_, high)) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2))
            else {
                continue;
            };
            let position = positions
                .find_partition(&topic, partition)
                .and_then(|p| p.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(0);
            out.push((topic, partition, (high - position).max(0)));
        }
        out
    })
    .await
    .unwrap_or_default();
    for (topic, partition, lag) in lags {
        metrics
            .consumer_lag
            .with_label_values(&[processor, &topic, &partition.to_string()])
            .set(lag);
    }
}
