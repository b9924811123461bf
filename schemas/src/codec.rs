//! Confluent wire codec: magic byte 0, 4-byte big-endian schema id, Avro body.
//!
//! Encoding and decoding go through `schema_registry_converter`, the same library downstream
//! Rust consumers use, so what we write is exactly what any Confluent-compatible client reads.
//! Producers register their topic's `.avsc` under `<topic>-value` on first use
//! (TopicNameStrategy); the registry's compatibility rules decide whether an evolved schema is
//! accepted. Schemas and ids are cached by the library after the first call.
//!
//! The library builds an `apache_avro` value tree per record, which dominated a processor's
//! cost. Once the codec knows the registry id of a topic's own schema (learned from its
//! first encode, or looked up under the subject on first decode), records framed with that id
//! are written and read directly by [`crate::datum`]: the same bytes, without the tree.
//! Records framed with any other id (another schema version) still go through the library,
//! which resolves the writer's schema against ours.

use crate::error::SchemaError;
use crate::processor::AnyRecord;
use crate::records::{DeadLetter, Record};
use crate::topics::{DEAD_LETTER_SCHEMA, Topic, dlq_topic};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a failed lookup of our own schema's id is remembered before asking again.
const LOOKUP_RETRY: Duration = Duration::from_secs(30);

/// Encoder/decoder for every topic, bound to one schema registry. Cheap to clone.
#[derive(Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

struct Inner {
    registry_url: String,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    strategies: HashMap<Topic, SubjectNameStrategy>,
    /// Registry id of each topic's own schema, once known: the fast path's key.
    own_ids: HashMap<Topic, OnceCell<u32>>,
    /// Topics whose own schema id could not be looked up, and until when not to ask again.
    lookup_failed: Mutex<HashMap<Topic, Instant>>,
    http: reqwest::Client,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("registry_url", &self.inner.registry_url)
            .finish()
    }
}

fn strategy(topic: &str, schema: &str) -> SubjectNameStrategy {
    SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_string(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, schema.to_string()),
    )
}

impl Codec {
    /// A codec talking to the registry at `registry_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(registry_url: &str) -> Result<Self, SchemaError> {
        let settings = SrSettings::new_builder(registry_url.trim_end_matches('/').to_string())
            .no_proxy()
            .set_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                SchemaError::Config(format!("SCHEMA_REGISTRY_URL {registry_url:?}: {e}"))
            })?;
        let strategies = Topic::EVERY
            .into_iter()
            .map(|t| (t, strategy(t.name(), t.schema())))
            .collect();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SchemaError::Config(format!("SCHEMA_REGISTRY_URL: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                registry_url: registry_url.to_string(),
                encoder: AvroEncoder::new(settings.clone()),
                decoder: AvroDecoder::new(settings),
                strategies,
                own_ids: Topic::EVERY
                    .into_iter()
                    .map(|t| (t, OnceCell::new()))
                    .collect(),
                lookup_failed: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The registry this codec talks to.
    pub fn registry_url(&self) -> &str {
        &self.inner.registry_url
    }

    /// Registers every topic's value schema (and the dead-letter envelope for each topic), so
    /// that consumers can decode before the first producer writes. Returns subject → id.
    pub async fn register_all(&self) -> Result<Vec<(String, u32)>, SchemaError> {
        let mut ids = Vec::new();
        for topic in Topic::EVERY {
            let subject = topic.value_subject();
            ids.push((
                subject.clone(),
                self.register(&subject, topic.schema()).await?,
            ));
            let subject = format!("{}-value", dlq_topic(topic.name()));
            ids.push((
                subject.clone(),
                self.register(&subject, DEAD_LETTER_SCHEMA).await?,
            ));
        }
        Ok(ids)
    }

    /// Registers `schema` under `subject` through the registry's REST API (idempotent: an
    /// already-registered schema returns its existing id).
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, SchemaError> {
        let (status, body) = self
            .post_schema(&format!("subjects/{subject}/versions"), schema)
            .await?;
        schema_id(&body).ok_or_else(|| SchemaError::Registry {
            message: format!("registering {subject} failed ({status}): {body}"),
            retryable: status.is_server_error(),
        })
    }

    /// The id `schema` is registered with under `subject` (Confluent's
    /// `POST /subjects/{subject}`), without registering it.
    async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, SchemaError> {
        let (status, body) = self
            .post_schema(&format!("subjects/{subject}"), schema)
            .await?;
        schema_id(&body).ok_or_else(|| SchemaError::Registry {
            message: format!("looking up {subject} ({status}): {body}"),
            retryable: true,
        })
    }

    /// POSTs `{"schema": schema}` to the registry's `path`; an unreachable registry is a
    /// retryable error.
    async fn post_schema(
        &self,
        path: &str,
        schema: &str,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), SchemaError> {
        let url = format!("{}/{path}", self.inner.registry_url.trim_end_matches('/'));
        let unreachable = |e: reqwest::Error| SchemaError::Registry {
            message: format!("{url}: {e}"),
            retryable: true,
        };
        let resp = self
            .inner
            .http
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body = resp.json().await.map_err(unreachable)?;
        Ok((status, body))
    }

    /// Encodes a record for its topic in Confluent framing, after validating it.
    pub async fn encode<R: Record>(&self, record: &R) -> Result<Vec<u8>, SchemaError> {
        record.validate()?;
        let own = &self.inner.own_ids[&R::TOPIC];
        if let Some(id) = own.get() {
            let mut out = Vec::with_capacity(256);
            out.push(0);
            out.extend_from_slice(&id.to_be_bytes());
            crate::datum::write(record, &mut out)
                .map_err(|e| SchemaError::Decode(format!("encoding {}: {e}", R::NAME)))?;
            return Ok(out);
        }
        let strategy = &self.inner.strategies[&R::TOPIC];
        let bytes = self.inner.encoder.encode_struct(record, strategy).await?;
        // The library registered (or found) our schema under the subject: its id is ours.
        let _ = own.set(frame_schema_id(&bytes)?);
        Ok(bytes)
    }

    /// The registry id of `topic`'s own schema, looked up under its subject on first use;
    /// `None` while it is not registered or the registry cannot say (then the generic path
    /// serves, and the lookup is tried again after [`LOOKUP_RETRY`]).
    async fn own_id(&self, topic: Topic) -> Option<u32> {
        let cell = &self.inner.own_ids[&topic];
        if let Some(id) = cell.get() {
            return Some(*id);
        }
        {
            let failed = self
                .inner
                .lookup_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if failed
                .get(&topic)
                .is_some_and(|until| Instant::now() < *until)
            {
                return None;
            }
        }
        let subject = topic.value_subject();
        match cell
            .get_or_try_init(|| self.lookup(&subject, topic.schema()))
            .await
        {
            Ok(id) => Some(*id),
            Err(e) => {
                tracing::debug!(error = %e, %topic, "own schema id unknown; decoding generically");
                self.inner
                    .lookup_failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(topic, Instant::now() + LOOKUP_RETRY);
                None
            }
        }
    }

    /// Encodes a dead-letter envelope for `<source_topic>.dlq`.
    pub async fn encode_dead_letter(&self, dead: &DeadLetter) -> Result<Vec<u8>, SchemaError> {
        let strategy = strategy(&dlq_topic(&dead.source_topic), DEAD_LETTER_SCHEMA);
        Ok(self.inner.encoder.encode_struct(dead, &strategy).await?)
    }

    /// Decodes and validates a Confluent-framed record of type `R`.
    pub async fn decode<R: Record>(&self, bytes: &[u8]) -> Result<R, SchemaError> {
        let id = frame_schema_id(bytes)?;
        if self.own_id(R::TOPIC).await == Some(id) {
            let record: R = crate::datum::read(&bytes[5..]).map_err(|e| {
                SchemaError::Decode(format!("{} does not match {}: {e}", R::TOPIC, R::NAME))
            })?;
            record.validate()?;
            return Ok(record);
        }
        let decoded = self.inner.decoder.decode(Some(bytes)).await?;
        if let Some(name) = &decoded.name
            && name.name() != R::NAME
        {
            return Err(SchemaError::WrongRecord {
                expected: R::NAME,
                found: name.name().to_string(),
            });
        }
        let record: R = apache_avro::from_value(&decoded.value).map_err(|e| {
            SchemaError::Decode(format!("{} does not match {}: {e}", R::TOPIC, R::NAME))
        })?;
        record.validate()?;
        Ok(record)
    }

    /// Encodes any data record for its own topic.
    pub async fn encode_any(&self, record: &AnyRecord) -> Result<Vec<u8>, SchemaError> {
        match record {
            AnyRecord::MarketData(r) => self.encode(r).await,
            AnyRecord::Features(r) => self.encode(r).await,
            AnyRecord::Signal(r) => self.encode(r).await,
            AnyRecord::Anomaly(r) => self.encode(r).await,
            AnyRecord::Order(r) => self.encode(r).await,
            AnyRecord::Fill(r) => self.encode(r).await,
            AnyRecord::Control(r) => self.encode(r).await,
            AnyRecord::Valuation(r) => self.encode(r).await,
        }
    }

    /// Decodes a record read from `topic` into the topic's record type.
    pub async fn decode_any(&self, topic: Topic, bytes: &[u8]) -> Result<AnyRecord, SchemaError> {
        Ok(match topic {
            Topic::MarketData => AnyRecord::MarketData(self.decode(bytes).await?),
            Topic::Features => AnyRecord::Features(self.decode(bytes).await?),
            Topic::TradingSignals => AnyRecord::Signal(self.decode(bytes).await?),
            Topic::Anomalies => AnyRecord::Anomaly(self.decode(bytes).await?),
            Topic::Orders => AnyRecord::Order(self.decode(bytes).await?),
            Topic::Fills => AnyRecord::Fill(self.decode(bytes).await?),
            Topic::Controls => AnyRecord::Control(self.decode(bytes).await?),
            Topic::Valuations => AnyRecord::Valuation(self.decode(bytes).await?),
        })
    }

    /// Decodes a dead-letter envelope.
    pub async fn decode_dead_letter(&self, bytes: &[u8]) -> Result<DeadLetter, SchemaError> {
        frame_schema_id(bytes)?;
        let decoded = self.inner.decoder.decode(Some(bytes)).await?;
        apache_avro::from_value(&decoded.value)
            .map_err(|e| SchemaError::Decode(format!("dead letter: {e}")))
    }
}

/// The `id` of a registry response.
fn schema_id(body: &serde_json::Value) -> Option<u32> {
    body.get("id")
        .and_then(serde_json::Value::as_u64)
        .and_then(|id| u32::try_from(id).ok())
}

/// Schema id of a Confluent-framed message, or why it is not one.
pub fn frame_schema_id(bytes: &[u8]) -> Result<u32, SchemaError> {
    match bytes {
        [0, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [] => Err(SchemaError::Decode("empty message".into())),
        [m, ..] if *m != 0 => Err(SchemaError::Decode(format!(
            "not Confluent-framed Avro: magic byte is {m:#04x}, expected 0x00"
        ))),
        _ => Err(SchemaError::Decode(format!(
            "not Confluent-framed Avro: {} bytes is shorter than the 5-byte header",
            bytes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header() {
        assert_eq!(frame_schema_id(&[0, 0, 0, 1, 2, 9]).ok(), Some(258));
        assert!(frame_schema_id(&[]).is_err());
        assert!(frame_schema_id(&[1, 0, 0, 0, 1]).is_err());
        assert!(frame_schema_id(&[0, 0, 0]).is_err());
    }
}
