//! What every handler shares: the Postgres pool (the API reads state the sink wrote), a
//! Kafka publisher (manual orders, cancels and controls go onto the topics, never straight
//! into the database, so they pass the router's risk checks like model signals), the token
//! verifier, the rate limiter and the readiness probe.

use crate::auth::Authenticator;
use crate::config::RestConfig;
use crate::error::ApiError;
use crate::limits::RateLimiter;
use std::sync::Arc;
use std::time::Duration;
use tradestream_kafka::rdkafka::producer::FutureProducer;
use tradestream_kafka::{Kafka, ReadinessCheck};
use tradestream_schemas::{AnyRecord, Codec};

/// Shared state of the API (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: sqlx::PgPool,
    publisher: Publisher,
    auth: Authenticator,
    limiter: RateLimiter,
    config: RestConfig,
    readiness: Option<ReadinessCheck>,
    metrics: Option<tradestream_kafka::Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Publishes records onto their topics and waits for the broker's acknowledgement, so a 202
/// means the record is durably in Kafka.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    codec: Codec,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher on `kafka`'s idempotent producer.
    pub fn new(kafka: &Kafka, codec: Codec, timeout: Duration) -> Result<Self, ApiError> {
        Ok(Self {
            producer: kafka.producer()?,
            codec,
            timeout,
        })
    }

    /// Encodes and produces `record` on its topic, keyed as the topic says; returns once
    /// acknowledged.
    pub async fn publish(&self, record: &AnyRecord) -> Result<(), ApiError> {
        record
            .validate()
            .map_err(|e| ApiError::invalid(e.field, e.reason))?;
        let bytes = self.codec.encode_any(record).await?;
        let delivery = tradestream_kafka::runner::enqueue(
            &self.producer,
            record.topic().name(),
            record.key(),
            &bytes,
            None,
        )
        .await?;
        match tokio::time::timeout(self.timeout, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(ApiError::Unavailable(format!(
                "producing to {}: {e}",
                record.topic()
            ))),
            Ok(Err(_)) => Err(ApiError::Unavailable("producer dropped the record".into())),
            Err(_) => Err(ApiError::Unavailable(format!(
                "no acknowledgement from {} within {:?}",
                record.topic(),
                self.timeout
            ))),
        }
    }
}

impl AppState {
    /// Builds the state; `config` is validated here.
    pub fn new(
        config: RestConfig,
        pool: sqlx::PgPool,
        publisher: Publisher,
    ) -> Result<Self, ApiError> {
        config.validate().map_err(ApiError::Config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                publisher,
                auth: Authenticator::new(&config)?,
                limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
                config,
                readiness: None,
                metrics: None,
            }),
        })
    }

    /// Adds the `/readyz` probe (broker, Postgres, registry) and the process's metrics for
    /// `/metrics`. Call before [`crate::app`].
    pub fn with_probes(
        self,
        readiness: Option<ReadinessCheck>,
        metrics: Option<tradestream_kafka::Metrics>,
    ) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.readiness = readiness;
                inner.metrics = metrics;
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// The pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.inner.pool
    }

    /// The publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The token verifier.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The per-principal rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The configuration.
    pub fn config(&self) -> &RestConfig {
        &self.inner.config
    }

    /// The readiness probe, when set.
    pub fn readiness(&self) -> Option<&ReadinessCheck> {
        self.inner.readiness.as_ref()
    }

    /// The metrics, when set.
    pub fn metrics(&self) -> Option<&tradestream_kafka::Metrics> {
        self.inner.metrics.as_ref()
    }
}
