//! The sink's Kafka runner: the seven data topics, written by [`SinkWriter`] in five lanes
//! (see `LANES`) that run side by side, dead letters to `<topic>.dlq`.
//!
//! Delivery: the database is the source of truth for progress. At start each lane's consumer
//! is `assign`ed every partition of its topics (partition counts from the cluster metadata) at
//! the `consumed_offsets.next_offset` stored for the group, or at the beginning of a partition
//! never stored. No group rebalancing is involved, so **one sink instance owns all
//! partitions**; run a single replica (a second one would only write duplicates the ids and
//! row locks make harmless). Per batch of a lane:
//! 1. decode every message; undecodable or invalid ones go to `<topic>.dlq` (Avro envelope
//!    plus the `tradestream.dlq.*` headers) and are acknowledged by the broker first;
//! 2. write the batch (rows + offsets) in one transaction, but before committing it produce
//!    the records the database refused to their `.dlq` and wait for the acks;
//! 3. commit the transaction, then the Kafka offsets (informational for lag tools; a failure
//!    there is only logged, since a restart resumes from the database).
//!
//! A topic belongs to exactly one lane, so its rows and its stored offsets always commit
//! together, whatever the other lanes have committed when a crash comes.
//!
//! Retryable failures (database or broker unreachable, serialization conflicts, registry
//! down) roll the attempt back and retry it with exponential backoff; nothing is lost, and a
//! retry after an uncertain commit is skipped by the stored offsets. Dead letters are
//! at-least-once: a crash between their ack and the commit re-sends them.

use crate::config::SinkConfig;
use crate::error::SinkError;
use crate::writer::{BatchItem, BatchOutcome, SinkWriter};
use chrono::Utc;
use futures::FutureExt as _;
use futures::future::FusedFuture;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::postgres::PgPool;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::{Kafka, KafkaError, Metrics, commit_offsets};
use tradestream_schemas::{Codec, ErrorClass, SchemaError, Topic};

/// Name of this processor in dead-letter envelopes and headers.
pub const PROCESSOR: &str = "sink";

/// How long a dead letter may take to be acknowledged before the attempt is retried.
const DLQ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a batch that waits for the database or the broker is reported.
const STALL_WARNING: Duration = Duration::from_secs(5);
/// How long metadata requests may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a sink run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkStats {
    /// Batches committed.
    pub batches: u64,
    /// Messages consumed (committed batches only).
    pub records: u64,
    /// Rows newly stored per topic (orders: new order events).
    pub written: BTreeMap<Topic, u64>,
    /// Records that changed nothing (offset already stored, or id already stored).
    pub duplicates: u64,
    /// Records sent to a dead-letter topic (undecodable, invalid, or refused by the database).
    pub dead_letters: u64,
    /// Positions marked to market.
    pub marks: u64,
    /// Attempts retried after a retryable failure.
    pub retries: u64,
}

impl SinkStats {
    fn add(&mut self, outcome: &BatchOutcome, messages: usize, decode_dead: usize) {
        self.batches += 1;
        self.records += messages as u64;
        for (topic, n) in &outcome.written {
            *self.written.entry(*topic).or_insert(0) += n;
        }
        self.duplicates += outcome.duplicates;
        self.dead_letters += (outcome.dead_letters.len() + decode_dead) as u64;
        self.marks += outcome.marks;
    }

    fn merge(&mut self, lane: SinkStats) {
        self.batches += lane.batches;
        self.records += lane.records;
        for (topic, n) in lane.written {
            *self.written.entry(topic).or_insert(0) += n;
        }
        self.duplicates += lane.duplicates;
        self.dead_letters += lane.dead_letters;
        self.marks += lane.marks;
        self.retries += lane.retries;
    }
}

/// Consumes the data topics into Postgres until `shutdown` completes (the batch in hand is
/// finished first), or a fatal error. See the module docs for the guarantees.
///
/// Metrics (per committed batch, not per record): `records_in{processor="sink",topic}`,
/// `records_dead_lettered{processor="sink",topic,class}`, `batch_processing_seconds`, and
/// `portfolio_value{account}` re-read from `accounts` after batches that moved it.
pub async fn run_sink(
    kafka: &Kafka,
    codec: &Codec,
    pool: PgPool,
    config: SinkConfig,
    metrics: &Metrics,
    shutdown: impl Future,
) -> Result<SinkStats, SinkError> {
    config.validate().map_err(SinkError::Config)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let lanes = LANES.iter().map(|topics| {
        let mut stopped = stopped.clone();
        let span = tracing::info_span!("sink", group = %config.group_id, lane = topics[0].name());
        Sink {
            kafka,
            codec,
            pool: pool.clone(),
            writer: SinkWriter::new(pool.clone()),
            config: config.clone(),
            metrics,
            topics,
        }
        .run(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .instrument(span)
    });
    let all = futures::future::try_join_all(lanes);
    tokio::pin!(all);
    let shutdown = shutdown.fuse();
    tokio::pin!(shutdown);
    let per_lane = loop {
        tokio::select! {
            result = &mut all => break result?,
            _ = &mut shutdown, if !shutdown.is_terminated() => {
                let _ = stop.send(true);
            }
        }
    };
    let mut stats = SinkStats::default();
    for lane in per_lane {
        stats.merge(lane);
    }
    Ok(stats)
}

/// The topics each lane writes: one consumer, one connection and one transaction per batch
/// each, running side by side so the database works on several batches at once. Fills and
/// market data share a lane because both move the books (fills through their trigger, bars
/// through marks), in the order they were read; the other tables are independent of one
/// another. A topic's stored offsets are written only by its own lane, so each lane's
/// transaction still holds its rows and their offsets together.
const LANES: [&[Topic]; 5] = [
    &[Topic::MarketData, Topic::Fills],
    &[Topic::Features],
    &[Topic::TradingSignals, Topic::Anomalies],
    &[Topic::Orders],
    &[Topic::Valuations],
];

struct Sink<'a> {
    kafka: &'a Kafka,
    codec: &'a Codec,
    pool: PgPool,
    writer: SinkWriter,
    config: SinkConfig,
    metrics: &'a Metrics,
    /// The topics of this lane (see [`LANES`]).
    topics: &'static [Topic],
}

/// A message that will not be written, and why.
struct Refused {
    message: usize,
    class: ErrorClass,
    reason: String,
}

impl Sink<'_> {
    async fn run(self, shutdown: impl Future) -> Result<SinkStats, SinkError> {
        let consumer = Arc::new(self.kafka.consumer(&self.config.group_id)?);
        let producer = self.kafka.producer()?;
        self.assign(&consumer).await?;
        let mut stats = SinkStats::default();
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        let mut stopping = false;
        while !stopping {
            let messages = self
                .collect(&consumer, &mut shutdown, &mut stopping)
                .await?;
            if messages.is_empty() {
                continue;
            }
            match self
                .process(&consumer, &producer, &messages, &mut shutdown, &mut stats)
                .await?
            {
                Some(()) => {}
                None => break, // shut down while retrying: the batch is re-read next start
            }
        }
        tracing::info!(
            batches = stats.batches,
            records = stats.records,
            duplicates = stats.duplicates,
            dead_letters = stats.dead_letters,
            "sink stopped"
        );
        Ok(stats)
    }

    /// Assigns every partition of the lane's topics at the offsets stored in the database.
    async fn assign(&self, consumer: &Arc<StreamConsumer>) -> Result<(), SinkError> {
        let c = consumer.clone();
        let metadata =
            tokio::task::spawn_blocking(move || c.fetch_metadata(None, METADATA_TIMEOUT))
                .await
                .map_err(|e| SinkError::Invariant(format!("metadata task failed: {e}")))?
                .map_err(|e| KafkaError::client("fetching topic metadata", e))?;
        let stored = self.writer.stored_offsets(&self.config.group_id).await?;
        let mut tpl = TopicPartitionList::new();
        let mut missing = Vec::new();
        for &topic in self.topics {
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic.name())
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if partitions == 0 {
                missing.push(format!(
                    "topic {topic} does not exist on {}: create it first (`tradestream topics create`)",
                    self.kafka.bootstrap()
                ));
                continue;
            }
            for p in 0..partitions {
                let p = i32::try_from(p)
                    .map_err(|_| SinkError::Invariant(format!("{topic}: too many partitions")))?;
                let offset = match stored.get(&(topic, p)) {
                    Some(next) => Offset::Offset(*next),
                    None => Offset::Beginning,
                };
                tpl.add_partition_offset(topic.name(), p, offset)
                    .map_err(|e| KafkaError::client("building the assignment", e))?;
            }
        }
        if !missing.is_empty() {
            return Err(SinkError::Config(missing));
        }
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::client("assigning partitions", e))?;
        tracing::info!(
            partitions = tpl.count(),
            stored = stored.len(),
            "sink lane assigned its partitions at the stored offsets"
        );
        Ok(())
    }

    /// Waits for a first message, then gathers more until the batch is full or the linger
    /// time has passed. Returns early (possibly empty) when shutdown fires.
    async fn collect(
        &self,
        consumer: &StreamConsumer,
        shutdown: &mut (impl FusedFuture + Unpin),
        stopping: &mut bool,
    ) -> Result<Vec<OwnedMessage>, SinkError> {
        let mut messages = Vec::new();
        if shutdown.is_terminated() {
            *stopping = true;
            return Ok(messages);
        }
        let first = tokio::select! {
            biased;
            _ = &mut *shutdown => { *stopping = true; return Ok(messages); }
            m = consumer.recv() => m,
        };
        match first {
            Ok(m) => messages.push(m.detach()),
            Err(e) => {
                Self::consume_error(e)?;
                // Do not spin on a broker that keeps failing.
                tokio::time::sleep(self.config.backoff(0)).await;
                return Ok(messages);
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.batch_linger();
        while messages.len() < self.config.batch_size {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = &mut *shutdown, if !shutdown.is_terminated() => { *stopping = true; break; }
                m = consumer.recv() => match m {
                    Ok(m) => messages.push(m.detach()),
                    Err(e) => Self::consume_error(e)?,
                },
            }
        }
        Ok(messages)
    }

    fn consume_error(e: rdkafka::error::KafkaError) -> Result<(), SinkError> {
        let err = KafkaError::client("consuming", e);
        if err.class() == ErrorClass::Fatal {
            return Err(err.into());
        }
        // librdkafka retries by itself; the consumer keeps its position.
        tracing::warn!(error = %err, "consumer error");
        Ok(())
    }

    /// Writes one batch, retrying retryable failures. `None` when shutdown interrupted the
    /// retries (nothing was committed).
    async fn process(
        &self,
        consumer: &Arc<StreamConsumer>,
        producer: &FutureProducer,
        messages: &[OwnedMessage],
        shutdown: &mut (impl FusedFuture + Unpin),
        stats: &mut SinkStats,
    ) -> Result<Option<()>, SinkError> {
        let mut attempt = 0u32;
        let mut decode_dead_sent = false;
        loop {
            let started = std::time::Instant::now();
            let pending = self.attempt(producer, messages, &mut decode_dead_sent);
            tokio::pin!(pending);
            // The pool and the producer wait for an unreachable server by themselves (the
            // pool up to its acquire timeout) before any error surfaces: say so meanwhile.
            let result = loop {
                tokio::select! {
                    r = &mut pending => break r,
                    _ = tokio::time::sleep(STALL_WARNING) => tracing::warn!(
                        waited = ?started.elapsed(),
                        records = messages.len(),
                        "batch still waiting for Postgres or Kafka"
                    ),
                }
            };
            match result {
                Ok((outcome, decode_dead)) => {
                    stats.add(&outcome, messages.len(), decode_dead);
                    self.observe(messages, &outcome, started.elapsed()).await;
                    tracing::debug!(
                        records = messages.len(),
                        written = outcome.total_written(),
                        duplicates = outcome.duplicates,
                        dead_letters = outcome.dead_letters.len() + decode_dead,
                        "batch committed"
                    );
                    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
                    for m in messages {
                        let n = next
                            .entry((m.topic().to_string(), m.partition()))
                            .or_insert(0);
                        *n = (*n).max(m.offset() + 1);
                    }
                    let offsets = next.into_iter().map(|((t, p), n)| (t, p, n)).collect();
                    if let Err(e) = commit_offsets(consumer.clone(), offsets).await {
                        // The database holds the offsets that count; Kafka's are for lag tools.
                        tracing::warn!(error = %e, "committing offsets to Kafka failed");
                    }
                    return Ok(Some(()));
                }
                Err(e) if e.is_retryable() => {
                    let pause = self.config.backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    stats.retries += 1;
                    tracing::warn!(error = %e, attempt, ?pause, "batch failed; retrying");
                    if shutdown.is_terminated() {
                        return Ok(None);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut *shutdown => return Ok(None),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sink stopped by a fatal error");
                    return Err(e);
                }
            }
        }
    }

    /// Updates the metrics for one committed batch.
    async fn observe(
        &self,
        messages: &[OwnedMessage],
        outcome: &BatchOutcome,
        took: std::time::Duration,
    ) {
        let mut per_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for m in messages {
            *per_topic.entry(m.topic()).or_default() += 1;
        }
        for (topic, n) in &per_topic {
            self.metrics
                .records_in
                .with_label_values(&[PROCESSOR, topic])
                .inc_by(*n);
        }
        self.metrics
            .processing_seconds
            .with_label_values(&[PROCESSOR])
            .observe(took.as_secs_f64());
        let moved = [Topic::Fills, Topic::MarketData]
            .iter()
            .any(|t| outcome.written.get(t).is_some_and(|n| *n > 0));
        if moved {
            match sqlx::query_as::<_, (String, rust_decimal::Decimal)>(
                "SELECT account_id, total_value FROM accounts",
            )
            .fetch_all(&self.pool)
            .await
            {
                Ok(rows) => {
                    for (account, value) in rows {
                        let v = rust_decimal::prelude::ToPrimitive::to_f64(&value).unwrap_or(0.0);
                        self.metrics
                            .portfolio_value
                            .with_label_values(&[account.as_str()])
                            .set(v);
                    }
                }
                // A gauge is not worth failing a committed batch for.
                Err(e) => tracing::debug!(error = %e, "reading portfolio values for metrics"),
            }
        }
    }

    /// One attempt at a batch: decode, dead-letter the undecodable, write, dead-letter what
    /// the database refused, commit.
    async fn attempt(
        &self,
        producer: &FutureProducer,
        messages: &[OwnedMessage],
        decode_dead_sent: &mut bool,
    ) -> Result<(BatchOutcome, usize), SinkError> {
        let mut items: Vec<BatchItem> = Vec::with_capacity(messages.len());
        let mut item_message: Vec<usize> = Vec::with_capacity(messages.len());
        let mut refused: Vec<Refused> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let topic = Topic::from_name(m.topic()).ok_or_else(|| {
                SinkError::Invariant(format!("message from unassigned topic {}", m.topic()))
            })?;
            let decoded = match m.payload() {
                // Retries while the registry is unreachable; any other failure is the record's.
                Some(bytes) => {
                    tradestream_kafka::runner::decode_record(self.codec, topic, bytes).await
                }
                None => Err(SchemaError::Decode(
                    "message has no value (tombstone)".into(),
                )),
            };
            match decoded {
                Ok(record) => {
                    items.push((topic, m.partition(), m.offset(), record));
                    item_message.push(i);
                }
                Err(e) if e.class() == ErrorClass::DeadLetter => refused.push(Refused {
                    message: i,
                    class: e.class(),
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e.into()),
            }
        }
        let decode_dead = refused.len();
        if !*decode_dead_sent {
            self.send_dead_letters(producer, messages, &refused).await?;
            *decode_dead_sent = true;
        }
        let also_consumed: Vec<(Topic, i32, i64)> = refused
            .iter()
            .filter_map(|r| {
                let m = &messages[r.message];
                Topic::from_name(m.topic()).map(|t| (t, m.partition(), m.offset()))
            })
            .collect();

        let prepared = self
            .writer
            .prepare(&self.config.group_id, &items, &also_consumed)
            .await?;
        let db_refused: Vec<Refused> = prepared
            .outcome()
            .dead_letters
            .iter()
            .map(|d| Refused {
                message: item_message[d.index],
                class: d.class,
                reason: d.reason.clone(),
            })
            .collect();
        if let Err(e) = self
            .send_dead_letters(producer, messages, &db_refused)
            .await
        {
            let _ = prepared.rollback().await;
            return Err(e);
        }
        Ok((prepared.commit().await?, decode_dead))
    }

    /// Produces each refused message to its `.dlq` and waits for every acknowledgement.
    async fn send_dead_letters(
        &self,
        producer: &FutureProducer,
        messages: &[OwnedMessage],
        refused: &[Refused],
    ) -> Result<(), SinkError> {
        let mut sends = Vec::with_capacity(refused.len());
        let mut counted: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for r in refused {
            *counted
                .entry((messages[r.message].topic(), r.class.as_str()))
                .or_default() += 1;
        }
        for ((topic, class), n) in counted {
            self.metrics
                .dead_lettered
                .with_label_values(&[PROCESSOR, topic, class])
                .inc_by(n);
        }
        for r in refused {
            let m = &messages[r.message];
            tracing::warn!(
                topic = m.topic(), partition = m.partition(), offset = m.offset(),
                reason = %r.reason, "record dead-lettered"
            );
            let info = DeadLetterInfo {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                error_class: r.class.as_str().to_string(),
                message: r.reason.clone(),
                processor: PROCESSOR.to_string(),
            };
            let envelope = info.envelope(
                m.key().map(<[u8]>::to_vec),
                m.payload().map(<[u8]>::to_vec),
                Utc::now(),
            );
            let value = self.codec.encode_dead_letter(&envelope).await?;
            let headers = info.headers();
            let dlq = tradestream_schemas::topics::dlq_topic(m.topic());
            let key = m.key().map(<[u8]>::to_vec);
            let producer = producer.clone();
            sends.push(async move {
                let mut record = FutureRecord::<[u8], [u8]>::to(&dlq)
                    .payload(&value)
                    .headers(headers);
                if let Some(k) = &key {
                    record = record.key(k.as_slice());
                }
                producer.send(record, DLQ_TIMEOUT).await.map_err(|(e, _)| {
                    KafkaError::client(format!("producing a dead letter to {dlq}"), e)
                })
            });
        }
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(())
    }
}
