//! The runner's producer against the embedded broker: a batch settles only once every
//! record is acknowledged, and records the broker refused (it was down longer than
//! `message.timeout.ms`) are sent again until they land, each exactly once.

use anyhow::{Context, Result};
use futures::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use std::collections::BTreeMap;
use std::time::Duration;
use tradestream_kafka::acked::{AckBatch, AckedProducer, acked_producer};
use tradestream_kafka::{Kafka, KafkaConfig, TopicSpec};

async fn kafka_with_topic(topic: &str) -> Result<Kafka> {
    let kafka = Kafka::connect(KafkaConfig {
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })?;
    kafka
        .provision(&[TopicSpec {
            name: topic.into(),
            partitions: 3,
            retention_ms: -1,
        }])
        .await?;
    Ok(kafka)
}

/// Every record on `topic`, as key → payloads, read until `n` arrived (and a moment more, so
/// a duplicate would show).
async fn read_all(kafka: &Kafka, topic: &str, n: usize) -> Result<BTreeMap<String, Vec<String>>> {
    let consumer = kafka.consumer("acked-reader")?;
    consumer.subscribe(&[topic])?;
    let mut stream = consumer.stream();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    loop {
        let wait = if seen < n {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        };
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(msg)) => {
                let msg = msg?;
                let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(msg.payload().unwrap_or_default());
                out.entry(key).or_default().push(value.into_owned());
                seen += 1;
            }
            Ok(None) => break,
            Err(_) if seen >= n => break,
            Err(_) => anyhow::bail!("only {seen} of {n} records arrived"),
        }
    }
    Ok(out)
}

fn expected(n: usize) -> BTreeMap<String, Vec<String>> {
    (0..n)
        .map(|i| (format!("k{i}"), vec![format!("v{i}")]))
        .collect()
}

/// One batch of records `k{i}` → `v{i}` for each `i` of `range`, handed to the producer.
async fn send_numbered(
    producer: &AckedProducer,
    topic: &str,
    range: std::ops::Range<usize>,
) -> Result<AckBatch> {
    let mut batch = AckBatch::new();
    for i in range {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        batch
            .send(
                producer,
                topic,
                None,
                key.as_bytes(),
                value.as_bytes(),
                None,
            )
            .await?;
    }
    Ok(batch)
}

#[tokio::test]
async fn a_batch_settles_when_every_record_is_acknowledged() -> Result<()> {
    let kafka = kafka_with_topic("acked").await?;
    let producer = acked_producer(&kafka.producer_config(), "producer")?;
    let mut batch = send_numbered(&producer, "acked", 0..2_000).await?;
    tokio::time::timeout(Duration::from_secs(30), batch.settle(&producer))
        .await
        .context("the batch never settled")??;
    assert_eq!(read_all(&kafka, "acked", 2_000).await?, expected(2_000));
    // An empty batch settles at once.
    AckBatch::new().settle(&producer).await?;
    Ok(())
}

#[tokio::test]
async fn refused_records_are_sent_again_until_they_land() -> Result<()> {
    let kafka = kafka_with_topic("refused").await?;
    let mock = kafka
        .mock()
        .context("the test runs on the embedded broker")?
        .clone();
    let mut config = kafka.producer_config();
    // Records give up quickly, so the outage below makes the broker refuse them.
    config.set("message.timeout.ms", "500");
    let producer = acked_producer(&config, "producer")?;
    // Connected first, so the outage is of a known broker, not of the bootstrap.
    let mut warm = AckBatch::new();
    warm.send(&producer, "refused", None, b"k0", b"v0", None)
        .await?;
    warm.settle(&producer).await?;

    for b in 1..=mock.brokers() {
        mock.broker_down(b)?;
    }
    let mut batch = send_numbered(&producer, "refused", 1..200).await?;
    let settling = tokio::spawn(async move {
        let result = batch.settle(&producer).await;
        (result, producer)
    });
    // Several timeouts and resends pass while the broker is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!settling.is_finished(), "settled while the broker was down");
    for b in 1..=mock.brokers() {
        mock.broker_up(b)?;
    }
    let (result, _producer) = tokio::time::timeout(Duration::from_secs(60), settling)
        .await
        .context("never settled after the broker came back")??;
    result?;
    assert_eq!(read_all(&kafka, "refused", 200).await?, expected(200));
    Ok(())
}
