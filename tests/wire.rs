//! Wire format end to end: every topic's record goes through tradestream's own schema
//! registry (persisted in Postgres), the Confluent framing and a Kafka broker, and comes back
//! equal; bad bytes are classified for the dead-letter topic.

use anyhow::{Context, Result};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use std::time::Duration;
use tradestream_kafka::{Kafka, KafkaConfig, standard_topics};
use tradestream_postgres::testing::TestDatabase;
use tradestream_registry::{RegistryState, serve};
use tradestream_schemas::{Codec, ErrorClass, Record, Topic, samples};

struct Stack {
    kafka: Kafka,
    codec: Codec,
    _db: TestDatabase,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn stack() -> Result<Stack> {
    let db = TestDatabase::new().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        RegistryState::new(db.pool().clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let kafka = Kafka::connect(KafkaConfig {
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })?;
    kafka.provision(&standard_topics(kafka.config())).await?;
    Ok(Stack {
        kafka,
        codec: Codec::new(&url)?,
        _db: db,
        stop: Some(stop),
    })
}

async fn round_trip<R: Record + PartialEq + std::fmt::Debug>(
    stack: &Stack,
    record: R,
) -> Result<()> {
    let bytes = stack.codec.encode(&record).await?;
    assert_eq!(bytes[0], 0, "magic byte");
    let producer = stack.kafka.producer()?;
    producer
        .send(
            FutureRecord::to(R::TOPIC.name())
                .key(record.key())
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let consumer = stack.kafka.consumer(&format!("wire-{}", R::TOPIC))?;
    consumer.subscribe(&[R::TOPIC.name()])?;
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    assert_eq!(
        msg.key(),
        Some(record.key().as_bytes()),
        "key is the {:?}",
        R::TOPIC.key_field()
    );
    let back: R = stack
        .codec
        .decode(msg.payload().context("payload")?)
        .await?;
    assert_eq!(back, record);
    Ok(())
}

#[tokio::test]
async fn every_topic_round_trips_through_registry_and_broker() -> Result<()> {
    let stack = stack().await?;
    let ids = stack.codec.register_all().await?;
    assert_eq!(
        ids.len(),
        16,
        "seven data topics, `controls` and their dead-letter envelopes: {ids:?}"
    );
    round_trip(&stack, samples::market_data()).await?;
    round_trip(&stack, samples::features()).await?;
    round_trip(&stack, samples::trading_signal()).await?;
    round_trip(&stack, samples::anomaly()).await?;
    round_trip(&stack, samples::order()).await?;
    round_trip(&stack, samples::fill()).await?;
    round_trip(&stack, samples::control()).await?;
    round_trip(&stack, samples::valuation()).await?;
    let dead = samples::dead_letter();
    let bytes = stack.codec.encode_dead_letter(&dead).await?;
    assert_eq!(stack.codec.decode_dead_letter(&bytes).await?, dead);
    Ok(())
}

#[tokio::test]
async fn bad_bytes_are_dead_letter_errors() -> Result<()> {
    let stack = stack().await?;
    stack.codec.register_all().await?;
    // Not Avro at all.
    let err = stack
        .codec
        .decode::<tradestream_schemas::Fill>(b"{\"json\": true}")
        .await
        .expect_err("not avro");
    assert_eq!(err.class(), ErrorClass::DeadLetter, "{err}");
    assert!(err.to_string().contains("magic byte"), "{err}");
    // Framed, but with a schema id the registry never issued.
    let err = stack
        .codec
        .decode::<tradestream_schemas::Fill>(&[0, 0, 0, 0x7f, 0x11, 2, 4])
        .await
        .expect_err("unknown id");
    assert_eq!(err.class(), ErrorClass::DeadLetter, "{err}");
    // A record of another topic's type.
    let bytes = stack.codec.encode(&samples::fill()).await?;
    let err = stack
        .codec
        .decode::<tradestream_schemas::Order>(&bytes)
        .await
        .expect_err("wrong type");
    assert_eq!(err.class(), ErrorClass::DeadLetter, "{err}");
    // Schema-valid but semantically wrong: refused on encode and on decode.
    let mut bad = samples::fill();
    bad.price = rust_decimal::Decimal::ZERO;
    let err = stack.codec.encode(&bad).await.expect_err("zero price");
    assert!(err.to_string().contains("price"), "{err}");
    Ok(())
}

#[tokio::test]
async fn evolved_schema_with_optional_field_is_accepted_and_breaking_one_refused() -> Result<()> {
    let stack = stack().await?;
    stack.codec.register_all().await?;
    let url = stack.codec.registry_url().to_string();
    let mut evolved: serde_json::Value = serde_json::from_str(Topic::Fills.schema())?;
    evolved["fields"]
        .as_array_mut()
        .context("fields")?
        .push(serde_json::json!({
            "name": "venue", "type": ["null", "string"], "default": null, "doc": "added later"
        }));
    let client = reqwest::Client::builder().no_proxy().build()?;
    let post = |schema: String| {
        client
            .post(format!("{url}/subjects/fills-value/versions"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }))
            .send()
    };
    let ok = post(evolved.to_string()).await?;
    assert_eq!(ok.status(), 200, "{}", ok.text().await?);
    // Records written with the old schema stay readable by the codec.
    let bytes = stack.codec.encode(&samples::fill()).await?;
    assert_eq!(
        stack
            .codec
            .decode::<tradestream_schemas::Fill>(&bytes)
            .await?,
        samples::fill()
    );
    let mut breaking = evolved.clone();
    breaking["fields"]
        .as_array_mut()
        .context("fields")?
        .push(serde_json::json!({
            "name": "desk", "type": "string", "doc": "required, no default"
        }));
    let refused = post(breaking.to_string()).await?;
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error_code"], 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("incompatible"),
        "{body}"
    );
    Ok(())
}
