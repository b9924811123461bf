//! The sink end to end: the in-process mock Kafka, tradestream's schema registry (persisted in
//! the test database) and real Postgres. Sample records of every topic plus garbage go in; the
//! tables, the dead-letter topics and the stored offsets come out; a restarted sink changes
//! nothing.

mod common;

use common::*;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal_macros::dec;
use std::time::{Duration, Instant};
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::{Kafka, KafkaConfig, committed_offsets, standard_topics};
use tradestream_postgres::testing::TestDatabase;
use tradestream_registry::{RegistryState, serve};
use tradestream_schemas::*;
use tradestream_sink::{SinkConfig, SinkStats, run_sink};

const GROUP: &str = "e2e-sink";

async fn produce(kafka: &Kafka, topic: &str, key: &str, payload: &[u8]) {
    kafka
        .producer()
        .expect("producer")
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// Starts the sink; returns a stop switch and its task.
fn start(
    kafka: &Kafka,
    codec: &Codec,
    pool: &sqlx::PgPool,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<SinkStats, tradestream_sink::SinkError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (kafka, codec, pool) = (kafka.clone(), codec.clone(), pool.clone());
    let config = SinkConfig {
        group_id: GROUP.into(),
        batch_size: 5,
        ..SinkConfig::default()
    };
    let task = tokio::spawn(async move {
        run_sink(
            &kafka,
            &codec,
            pool,
            config,
            &tradestream_kafka::Metrics::new(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    (stop, task)
}

/// Messages on partition 0 of a dead-letter topic.
fn read_dlq(kafka: &Kafka, topic: &str, expected: usize) -> Vec<(Option<DeadLetterInfo>, Vec<u8>)> {
    let consumer: BaseConsumer = kafka.base_consumer("e2e-dlq-reader").expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((
                m.headers().and_then(DeadLetterInfo::from_headers),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Anything beyond what was expected would be a duplicate.
    while let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
        out.push((
            m.headers().and_then(DeadLetterInfo::from_headers),
            m.payload().unwrap_or_default().to_vec(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_consumes_all_topics_dead_letters_garbage_and_restarts_without_changes() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_registry, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, RegistryState::new(pool.clone()), async {
        let _ = registry_stopped.await;
    }));
    let kafka = Kafka::connect(KafkaConfig {
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })
    .expect("kafka");
    kafka
        .provision(&standard_topics(kafka.config()))
        .await
        .expect("topics");
    let codec = Codec::new(&url).expect("codec");
    codec.register_all().await.expect("schemas");
    create(&pool, "demo", dec!(100000)).await;

    let second_bar = bar("^IXIC", 400, dec!(6700));
    let mut ghost_fill = samples::fill();
    ghost_fill.fill_id = "ghost:fill:0".into();
    ghost_fill.account = account("ghost");
    let records: Vec<AnyRecord> = vec![
        samples::market_data().into(),
        samples::features().into(),
        samples::trading_signal().into(),
        samples::anomaly().into(),
        samples::order().into(),
        samples::fill().into(),
        second_bar.into(),
        samples::fill().into(), // the same fill produced twice: stored once
        ghost_fill.into(),      // refused by the database: unknown account
    ];
    for r in &records {
        let bytes = codec.encode_any(r).await.expect("encode");
        produce(&kafka, r.topic().name(), r.key(), &bytes).await;
    }
    let garbage: [(&str, &[u8]); 2] = [
        ("market_data", b"not avro at all"),
        ("fills", &[0, 0, 0, 0x7f, 1, 2]),
    ];
    for (topic, bytes) in garbage {
        produce(&kafka, topic, "x", bytes).await;
    }
    let total_messages = (records.len() + garbage.len()) as i64;

    // Run until every message is accounted for in consumed_offsets, then stop.
    let (stop, task) = start(&kafka, &codec, &pool);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let consumed: Option<i64> = sqlx::query_scalar(
            "SELECT sum(next_offset)::int8 FROM consumed_offsets WHERE consumer_group = $1",
        )
        .bind(GROUP)
        .fetch_one(&pool)
        .await
        .expect("offsets");
        if consumed == Some(total_messages) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sink consumed {consumed:?} of {total_messages}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let stats = task.await.expect("join").expect("sink");
    assert_eq!(stats.records, total_messages as u64, "{stats:?}");
    assert_eq!(stats.dead_letters, 3, "{stats:?}");
    assert_eq!(stats.duplicates, 1, "{stats:?}");
    assert_eq!(stats.written.values().sum::<u64>(), 7, "{stats:?}");

    for (table, n) in [
        ("market_data", 2),
        ("features", 1),
        ("signals", 1),
        ("anomalies", 1),
        ("orders", 1),
        ("order_events", 1),
        ("fills", 1),
        ("positions", 1),
    ] {
        assert_eq!(count(&pool, table).await, n, "{table}");
    }
    let cash: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT cash FROM accounts WHERE account_id = 'demo'")
            .fetch_one(&pool)
            .await
            .expect("cash");
    let f = samples::fill();
    assert_eq!(
        cash,
        dec!(100000) - f.quantity * f.price - f.commission,
        "the fill counted once"
    );

    // Dead letters: original bytes in the envelope, the reason in the headers.
    let md_dlq = read_dlq(&kafka, "market_data.dlq", 1);
    assert_eq!(md_dlq.len(), 1);
    let info = md_dlq[0].0.clone().expect("headers");
    assert_eq!(
        (
            info.topic.as_str(),
            info.processor.as_str(),
            info.error_class.as_str()
        ),
        ("market_data", "sink", "dead_letter")
    );
    assert!(info.message.contains("magic byte"), "{}", info.message);
    let envelope = codec
        .decode_dead_letter(&md_dlq[0].1)
        .await
        .expect("envelope");
    assert_eq!(envelope.payload.as_deref(), Some(&b"not avro at all"[..]));
    assert_eq!(envelope.key.as_deref(), Some(&b"x"[..]));

    let fills_dlq = read_dlq(&kafka, "fills.dlq", 2);
    assert_eq!(fills_dlq.len(), 2);
    let reasons: Vec<String> = fills_dlq
        .iter()
        .map(|(h, _)| h.clone().expect("headers").message)
        .collect();
    assert!(reasons.iter().any(|r| r.contains("ghost")), "{reasons:?}");
    for (_, bytes) in &fills_dlq {
        let env = codec.decode_dead_letter(bytes).await.expect("envelope");
        assert_eq!(env.source_topic, "fills");
        assert_eq!(env.processor, "sink");
    }
    // Kafka offsets were committed too (informational: the database is the source of truth).
    let committed = committed_offsets(&kafka, GROUP, "fills", kafka.config().partitions)
        .await
        .expect("committed");
    assert!(committed.iter().flatten().sum::<i64>() > 0, "{committed:?}");

    // A restarted sink resumes at the stored offsets: nothing changes, nothing is re-sent.
    let before = tables(&pool).await;
    let (stop, task) = start(&kafka, &codec, &pool);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    let stats = task.await.expect("join").expect("sink");
    assert_eq!(
        stats,
        SinkStats::default(),
        "nothing consumed after the restart"
    );
    assert_eq!(tables(&pool).await, before);
    assert_eq!(read_dlq(&kafka, "fills.dlq", 2).len(), 2);
    assert_eq!(read_dlq(&kafka, "market_data.dlq", 1).len(), 1);

    let _ = stop_registry.send(());
    db.cleanup().await;
}

/// A database that times statements out while a table is locked: the sink retries with backoff
/// and, once the lock is gone, stores everything exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_database_failures_are_retried_without_loss_or_duplicates() {
    let db = TestDatabase::new().await.expect("db");
    let admin = db.pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_registry, registry_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, RegistryState::new(admin.clone()), async {
        let _ = registry_stopped.await;
    }));
    let kafka = Kafka::connect(KafkaConfig {
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })
    .expect("kafka");
    kafka
        .provision(&standard_topics(kafka.config()))
        .await
        .expect("topics");
    let codec = Codec::new(&url).expect("codec");
    codec.register_all().await.expect("schemas");

    // The sink's own connections cancel any statement that waits longer than 200 ms
    // (SQLSTATE 57014, retryable).
    sqlx::query(&format!(
        "ALTER DATABASE \"{}\" SET statement_timeout = '200ms'",
        db.name()
    ))
    .execute(&admin)
    .await
    .expect("alter");
    let sink_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .expect("sink pool");

    let mut blocker = admin.begin().await.expect("tx");
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *blocker)
        .await
        .expect("no timeout");
    sqlx::query("LOCK TABLE market_data IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");

    let n = 20i64;
    for day in 0..n {
        let b = bar("RTRY", day, dec!(10) + rust_decimal::Decimal::from(day));
        produce(
            &kafka,
            "market_data",
            "RTRY",
            &codec.encode(&b).await.expect("encode"),
        )
        .await;
    }
    let (stop, task) = start(&kafka, &codec, &sink_pool);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(&admin, "consumed_offsets").await,
        0,
        "nothing committed while locked"
    );
    blocker.rollback().await.expect("unlock");

    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&admin, "market_data").await < n {
        assert!(Instant::now() < deadline, "sink did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let it settle, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    let stats = task.await.expect("join").expect("sink");
    assert!(stats.retries > 0, "{stats:?}");
    assert_eq!(stats.records, n as u64, "{stats:?}");
    assert_eq!(
        stats.written.get(&Topic::MarketData),
        Some(&(n as u64)),
        "{stats:?}"
    );
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    assert_eq!(count(&admin, "market_data").await, n);
    let consumed: Option<i64> = sqlx::query_scalar(
        "SELECT sum(next_offset)::int8 FROM consumed_offsets WHERE topic = 'market_data'",
    )
    .fetch_one(&admin)
    .await
    .expect("offsets");
    assert_eq!(consumed, Some(n));
    sink_pool.close().await;
    let _ = stop_registry.send(());
    db.cleanup().await;
}

/// Throughput of the whole runner (decode + write + offsets) on market data; run with
/// `--ignored --nocapture`. Measured, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn runner_market_data_throughput() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(
        listener,
        RegistryState::new(pool.clone()),
        std::future::pending::<()>(),
    ));
    let kafka = Kafka::connect(KafkaConfig::default()).expect("kafka");
    kafka
        .provision(&standard_topics(kafka.config()))
        .await
        .expect("topics");
    let codec = Codec::new(&url).expect("codec");
    codec.register_all().await.expect("schemas");
    let n = 20_000i64;
    let producer = kafka.producer().expect("producer");
    let mut sends = Vec::new();
    for i in 0..n {
        let sym = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"][(i % 6) as usize];
        let b = bar(sym, i, rust_decimal::Decimal::new(10_000 + i % 977, 2));
        let bytes = codec.encode(&b).await.expect("encode");
        let p = producer.clone();
        sends.push(async move {
            p.send(
                FutureRecord::to("market_data").key(sym).payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
        });
    }
    for r in futures::future::join_all(sends).await {
        r.expect("produce");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (k, c, p) = (kafka.clone(), codec.clone(), pool.clone());
    let started = Instant::now();
    let task = tokio::spawn(async move {
        run_sink(
            &k,
            &c,
            p,
            SinkConfig::default(),
            &tradestream_kafka::Metrics::new(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    while count(&pool, "market_data").await < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let stats = task.await.expect("join").expect("sink");
    println!(
        "runner: {n} market_data records in {secs:.2} s = {:.0} records/s ({} batches)",
        n as f64 / secs,
        stats.batches
    );
    db.cleanup().await;
}
