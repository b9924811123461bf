//! The generic Kafka runner: feeds a pure [`Processor`] core from its input topics and
//! publishes what it returns.
//!
//! Per batch: decode (Confluent Avro) → process → encode → produce → wait for every
//! acknowledgement (acks=all, idempotent producer) → commit the input offsets. Offsets never
//! move before the outputs are durable, so a crash replays the batch; record ids are derived
//! from their cause, so downstream consumers drop the replayed duplicates. Records that cannot
//! be processed go to `<topic>.dlq` with the reason in headers and the batch goes on.

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
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = consumer.recv() => msg.map_err(|e| KafkaError::client("consuming", e))?.detach(),
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.max_batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(msg) => batch.push(
                    msg.map_err(|e| KafkaError::client("consuming", e))?
                        .detach(),
                ),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = process_batch(codec, core, &producer, &batch, metrics).await?;
        commit_offsets(consumer.clone(), outcome.offsets).await?;
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
    let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(batch.len());
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
        let record = match decode_with_retry(codec, topic, msg.payload().unwrap_or_default()).await
        {
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
            deliveries.push(enqueue(producer, topic.name(), out.key(), &bytes, None).await?);
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
        deliveries.push(enqueue(producer, &dlq, &key, &bytes, Some(info.headers())).await?);
        tracing::warn!(topic = %info.topic, partition = info.partition, offset = info.offset, reason = %info.message, "record dead-lettered");
        metrics
            .dead_lettered
            .with_label_values(&[name, &info.topic, &info.error_class])
            .inc();
    }
    // Outputs must be durable before the inputs' offsets move.
    try_join_all(deliveries.into_iter().map(|d| async move {
        match d.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(KafkaError::client("delivering output", e)),
            Err(_) => Err(KafkaError::Mock("producer dropped a delivery".into())),
        }
    }))
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

/// Decodes, retrying while the registry is unreachable (a registry outage must not turn good
/// records into dead letters).
async fn decode_with_retry(
    codec: &Codec,
    topic: Topic,
    bytes: &[u8],
) -> Result<AnyRecord, tradestream_schemas::SchemaError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match codec.decode_any(topic, bytes).await {
            Err(e) if e.class() == ErrorClass::Retryable => {
                tracing::warn!(error = %e, ?backoff, "schema registry unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
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
