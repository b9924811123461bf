//! A producer whose acknowledgements are counted per batch, in its delivery callback.
//!
//! The runner waits for a batch's outputs as a whole, never for one record, so it needs no
//! future per record. rdkafka's `FutureProducer` allocates a channel per message, and its
//! futures were then polled and joined one by one: about 5 % of the features processor's
//! CPU. Here every record carries a reference to its batch's [`Acks`]; the callback (on the
//! producer's polling thread) counts it down and keeps a copy of any record the broker
//! refused, and [`AckBatch::settle`] sends exactly those again, so a lost output is retried
//! as before while an acknowledged one costs one atomic decrement.

use crate::error::KafkaError;
use crate::runner::backoff;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tradestream_schemas::ErrorClass;

/// The delivery callback: counts a batch's records down.
#[derive(Debug)]
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<Acks>) {
        if let Err((error, msg)) = result {
            let refused = Refused {
                topic: msg.topic().to_string(),
                partition: (msg.partition() >= 0).then(|| msg.partition()),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec),
                headers: msg.headers().map(|h| h.detach()),
                error: error.clone(),
            };
            // A poisoned lock only means another callback panicked; the list is still valid.
            acks.refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(refused);
        }
        if acks.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            acks.settled.notify_one();
        }
    }
}

/// One batch's outstanding acknowledgements and the records the broker refused.
#[derive(Debug, Default)]
pub struct Acks {
    outstanding: AtomicUsize,
    refused: Mutex<Vec<Refused>>,
    settled: Notify,
}

/// A record the broker did not take, copied out of the delivery report to be sent again.
#[derive(Debug)]
struct Refused {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
    error: rdkafka::error::KafkaError,
}

/// An idempotent (or transactional) producer with per-batch acknowledgement counting.
pub type AckedProducer = ThreadedProducer<AckContext>;

/// Creates an [`AckedProducer`] from a producer configuration.
pub fn acked_producer(config: &ClientConfig, what: &str) -> Result<AckedProducer, KafkaError> {
    config
        .create_with_context(AckContext)
        .map_err(|e| KafkaError::client(format!("creating {what}"), e))
}

/// Records handed to the producer together, awaited together.
#[derive(Debug)]
pub struct AckBatch {
    acks: Arc<Acks>,
}

impl Default for AckBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl AckBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            acks: Arc::new(Acks::default()),
        }
    }

    /// Hands one record to the producer (librdkafka copies it), waiting for room when its
    /// local queue is full. `partition` fixes the partition; `None` lets the key choose.
    pub async fn send(
        &mut self,
        producer: &AckedProducer,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        self.send_opt(
            producer,
            topic,
            partition,
            Some(key),
            Some(payload),
            headers,
        )
        .await
    }

    async fn send_opt(
        &mut self,
        producer: &AckedProducer,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        // Counted before the send: the callback may run before `send` returns.
        self.acks.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut record: BaseRecord<'_, [u8], [u8], Arc<Acks>> =
            BaseRecord::with_opaque_to(topic, self.acks.clone());
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    self.acks.outstanding.fetch_sub(1, Ordering::AcqRel);
                    return Err(KafkaError::client(format!("producing to {topic}"), e));
                }
            }
        }
    }

    /// Waits until every record is acknowledged (outputs must be durable before the inputs'
    /// offsets move). A retryable refusal (the producer gave up after `message.timeout.ms`
    /// of outage) sends the same bytes again with capped backoff: ids are derived from the
    /// cause, so a copy the broker did keep is dropped downstream. Cancel safe: the counts
    /// live in the batch, so a dropped wait can be started again.
    pub async fn settle(&mut self, producer: &AckedProducer) -> Result<(), KafkaError> {
        let mut attempt = 0u32;
        loop {
            while self.acks.outstanding.load(Ordering::Acquire) > 0 {
                self.acks.settled.notified().await;
            }
            let refused = std::mem::take(
                &mut *self
                    .acks
                    .refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            let Some(first) = refused.first() else {
                return Ok(());
            };
            for r in &refused {
                let err = KafkaError::client(
                    format!("delivering output to {}", r.topic),
                    r.error.clone(),
                );
                if err.class() != ErrorClass::Retryable {
                    return Err(err);
                }
            }
            let pause = backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(error = %first.error, topic = %first.topic, records = refused.len(), attempt, ?pause, "outputs not acknowledged; sending them again");
            tokio::time::sleep(pause).await;
            // A fresh count: the old one may still hold a stored wake-up.
            self.acks = Arc::new(Acks::default());
            for r in refused {
                self.send_opt(
                    producer,
                    &r.topic,
                    r.partition,
                    r.key.as_deref(),
                    r.payload.as_deref(),
                    r.headers,
                )
                .await?;
            }
        }
    }
}
