//! The connector against a real (mock) broker: provisioning, produce/consume, manual offsets
//! and resuming from them, the shared-broker forwarder, and the health check.

use anyhow::{Context, Result};
use futures::StreamExt;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::time::Duration;
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::{
    Kafka, KafkaConfig, MockKafka, Provisioned, TopicSpec, commit_offsets, committed_offsets,
    standard_topics,
};

fn config() -> KafkaConfig {
    KafkaConfig {
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    }
}

/// An embedded broker with one topic `name` of a single partition, kept whole.
async fn broker_with_topic(name: &str) -> Result<Kafka> {
    let kafka = Kafka::connect(config())?;
    kafka
        .provision(&[TopicSpec {
            name: name.into(),
            partitions: 1,
            retention_ms: -1,
        }])
        .await?;
    Ok(kafka)
}

/// Assigns partition 0 of `topic` to `consumer`, reading from `offset`.
fn assign_from<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    offset: rdkafka::Offset,
) -> Result<()> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, offset)?;
    consumer.assign(&tpl)?;
    Ok(())
}

async fn produce(kafka: &Kafka, topic: &str, n: usize) -> Result<()> {
    let producer = kafka.producer()?;
    for i in 0..n {
        let key = format!("k{}", i % 3);
        let value = format!("v{i}");
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("produce")?;
    }
    Ok(())
}

/// Reads `n` messages (value strings) with one consumer of `group`, committing after each.
async fn consume_and_commit(
    kafka: &Kafka,
    topic: &str,
    group: &str,
    n: usize,
) -> Result<Vec<String>> {
    let consumer = Arc::new(kafka.consumer(group)?);
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("timed out waiting for a message")?
            .context("stream ended")??;
        out.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
        let offsets = vec![(msg.topic().to_string(), msg.partition(), msg.offset() + 1)];
        commit_offsets(consumer.clone(), offsets).await?;
    }
    drop(stream);
    consumer.unsubscribe();
    Ok(out)
}

#[tokio::test]
async fn provisions_topics_once_with_partition_counts() -> Result<()> {
    let kafka = Kafka::connect(config())?;
    let specs = standard_topics(kafka.config());
    let first = kafka.provision(&specs).await?;
    assert!(
        first.iter().all(|(_, p)| *p == Provisioned::Created),
        "{first:?}"
    );
    let again = kafka.provision(&specs).await?;
    assert!(
        again.iter().all(|(_, p)| *p == Provisioned::Existed),
        "{again:?}"
    );
    let health = kafka.health(Duration::from_secs(10)).await?;
    assert_eq!(health.brokers, 1);
    let md = |name: &str| {
        health
            .topics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    };
    assert_eq!(md("market_data"), Some(6));
    assert_eq!(md("fills"), Some(6));
    assert_eq!(md("market_data.dlq"), Some(1));
    Ok(())
}

#[tokio::test]
async fn consumer_resumes_from_committed_offsets() -> Result<()> {
    let kafka = broker_with_topic("t").await?;
    produce(&kafka, "t", 10).await?;
    let first = consume_and_commit(&kafka, "t", "g1", 4).await?;
    assert_eq!(first, ["v0", "v1", "v2", "v3"]);
    assert_eq!(
        committed_offsets(&kafka, "g1", "t", 1).await?,
        vec![Some(4)]
    );
    // A new member of the same group continues where the first stopped: nothing re-read.
    let rest = consume_and_commit(&kafka, "t", "g1", 6).await?;
    assert_eq!(rest, ["v4", "v5", "v6", "v7", "v8", "v9"]);
    // Another group starts from the beginning.
    let other = consume_and_commit(&kafka, "t", "g2", 1).await?;
    assert_eq!(other, ["v0"]);
    Ok(())
}

/// The embedded mock keeps `mock_partition_max_mb` (64 MiB by default) of each partition's
/// log, where upstream librdkafka keeps 5 MiB (vendor/README.md): the first of 12 MiB of
/// records is still there to read.
#[tokio::test]
async fn the_embedded_broker_keeps_more_than_five_mib_of_a_partition() -> Result<()> {
    let kafka = broker_with_topic("big").await?;
    assert_eq!(kafka.config().mock_partition_max_mb, 64);
    let producer = kafka.producer()?;
    let payload = vec![b'x'; 120 * 1024];
    for i in 0..100_u32 {
        let mut value = i.to_be_bytes().to_vec();
        value.extend_from_slice(&payload);
        producer
            .send(
                FutureRecord::to("big").key("k").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let consumer = kafka.consumer("big-reader")?;
    assign_from(&consumer, "big", rdkafka::Offset::Beginning)?;
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .context("nothing read from the beginning")??;
    assert_eq!(msg.offset(), 0, "the oldest records were dropped");
    assert_eq!(
        msg.payload().map(|p| &p[..4]),
        Some(&0_u32.to_be_bytes()[..])
    );
    Ok(())
}

/// The embedded mock carries a patch (vendor/README.md): it looks a fetch offset up from
/// whichever end of the partition's log is nearer. Every offset of a log of single-record
/// batches, read from either half and at both ends, must still give exactly that record.
#[tokio::test]
async fn fetches_from_any_offset_of_a_long_log_find_that_record() -> Result<()> {
    let kafka = broker_with_topic("long").await?;
    // Awaited one by one: each record is its own batch (message set) in the log.
    produce(&kafka, "long", 300).await?;
    for offset in [0_i64, 1, 99, 149, 150, 151, 220, 298, 299] {
        let consumer = kafka.consumer(&format!("seek-{offset}"))?;
        assign_from(&consumer, "long", rdkafka::Offset::Offset(offset))?;
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .with_context(|| format!("nothing read from offset {offset}"))??;
        assert_eq!(msg.offset(), offset);
        assert_eq!(msg.payload(), Some(format!("v{offset}").as_bytes()));
    }
    Ok(())
}

/// Counts the fetch requests a consumer sent, from librdkafka's statistics.
#[derive(Default)]
struct FetchCount(std::sync::atomic::AtomicI64);

impl rdkafka::ClientContext for FetchCount {
    fn stats(&self, stats: rdkafka::Statistics) {
        let fetches: i64 = stats
            .brokers
            .values()
            .filter_map(|b| b.req.get("Fetch"))
            .sum();
        self.0
            .fetch_max(fetches, std::sync::atomic::Ordering::Relaxed);
    }
}

impl rdkafka::consumer::ConsumerContext for FetchCount {}

/// The embedded mock carries a patch (vendor/README.md): a fetch returns every batch from the
/// fetch offset on that fits the request's limits, as a broker does. Upstream returned one
/// batch per fetch, so reading 400 single-record batches took at least 400 fetches.
#[tokio::test]
async fn a_fetch_returns_every_batch_that_fits() -> Result<()> {
    let kafka = broker_with_topic("batches").await?;
    // Awaited one by one: each record is its own batch (message set) in the log.
    produce(&kafka, "batches", 400).await?;
    let consumer: rdkafka::consumer::BaseConsumer<FetchCount> = kafka
        .client_config()
        .set("group.id", "batches-reader")
        .set("statistics.interval.ms", "100")
        .create_with_context(FetchCount::default())?;
    assign_from(&consumer, "batches", rdkafka::Offset::Beginning)?;
    let fetches = tokio::task::spawn_blocking(move || -> Result<i64> {
        let mut next = 0_i64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while next < 400 {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "read {next} of 400 records"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                assert_eq!(m.offset(), next, "records in order, none skipped");
                next += 1;
            }
        }
        // Let a statistics report cover the reads.
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        Ok(consumer
            .context()
            .0
            .load(std::sync::atomic::Ordering::Relaxed))
    })
    .await??;
    assert!(fetches > 0, "no statistics reported");
    assert!(
        fetches < 40,
        "{fetches} fetch requests for 400 batches: one batch per fetch?"
    );
    Ok(())
}

/// The embedded mock carries a patch (vendor/README.md): a fetch that found nothing is
/// answered as soon as one of its partitions gets data, as a broker's long poll is, instead
/// of after the consumer's whole `fetch.wait.max.ms`. Here that wait is 30 s: upstream, a
/// record produced while the first fetch waits arrived about 28 s later.
#[tokio::test]
async fn new_data_ends_a_waiting_fetch_at_once() -> Result<()> {
    let kafka = broker_with_topic("idle").await?;
    let consumer: rdkafka::consumer::StreamConsumer = kafka
        .client_config()
        .set("group.id", "idle-reader")
        .set("fetch.wait.max.ms", "30000")
        .create()?;
    assign_from(&consumer, "idle", rdkafka::Offset::Beginning)?;
    // Long enough for the consumer to have sent its first fetch, which now waits.
    let nothing = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await;
    assert!(nothing.is_err(), "read from an empty partition");
    let sent = std::time::Instant::now();
    produce(&kafka, "idle", 1).await?;
    let msg = tokio::time::timeout(Duration::from_secs(15), consumer.recv())
        .await
        .context("the record did not arrive while the fetch waited out its 30 s")??;
    assert_eq!(msg.payload(), Some(&b"v0"[..]));
    println!("arrived {:?} after it was produced", sent.elapsed());
    Ok(())
}

#[tokio::test]
async fn shared_broker_is_reachable_through_its_fixed_port() -> Result<()> {
    let mock = Arc::new(MockKafka::start(1)?);
    mock.create_topic("shared", 2)?;
    let listener = tradestream_kafka::mock::bind_broker(0).await?;
    let port = listener.local_addr()?.port();
    let target = tradestream_kafka::mock::first_bootstrap(mock.bootstrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tradestream_kafka::mock::forward(listener, target, async {
        let _ = stop_rx.await;
    }));
    // A client that only knows the fixed port, like a separate process would.
    let client = Kafka::connect(KafkaConfig {
        brokers: Some(format!("127.0.0.1:{port}")),
        ..config()
    })?;
    let health = client.health(Duration::from_secs(10)).await?;
    assert!(
        health.topics.iter().any(|(n, p)| n == "shared" && *p == 2),
        "{health:?}"
    );
    produce(&client, "shared", 3).await?;
    let got = consume_and_commit(&client, "shared", "g", 3).await?;
    assert_eq!(got.len(), 3);
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

#[tokio::test]
async fn dead_letter_headers_survive_the_broker() -> Result<()> {
    let kafka = broker_with_topic("x.dlq").await?;
    let info = DeadLetterInfo {
        topic: "x".into(),
        partition: 0,
        offset: 9,
        error_class: "dead_letter".into(),
        message: "not Confluent-framed Avro".into(),
        processor: "test".into(),
    };
    kafka
        .producer()?
        .send(
            FutureRecord::to("x.dlq")
                .key("k")
                .payload(&b"\x07junk"[..])
                .headers(info.headers()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let consumer = kafka.consumer("dlq-reader")?;
    consumer.subscribe(&["x.dlq"])?;
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    let headers = msg.headers().context("headers")?;
    assert_eq!(DeadLetterInfo::from_headers(headers), Some(info));
    Ok(())
}

#[tokio::test]
async fn health_check_fails_clearly_when_nothing_listens() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(format!("127.0.0.1:{port}")),
        ..config()
    })?;
    let err = kafka
        .health(Duration::from_secs(2))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.class(), tradestream_schemas::ErrorClass::Retryable);
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    Ok(())
}

#[test]
fn invalid_config_names_settings() {
    let err = Kafka::connect(KafkaConfig {
        brokers: Some("nope".into()),
        ..config()
    })
    .expect_err("invalid");
    assert!(err.to_string().contains("KAFKA_BROKERS"), "{err}");
}
