//! Outages, end to end: the platform waits out an unavailable dependency and resumes with
//! nothing lost.
//!
//! * Postgres stopped mid-run and started again: the sink retries its batch with capped
//!   exponential backoff and resumes; every record ends up in the database exactly once.
//! * The broker unreachable mid-run (`tradestream broker` drilled with SIGUSR1 / SIGUSR2):
//!   the ingest producer and a processor (features under the generic runner) retry and resume;
//!   every bar ends up with its features record.
//!
//! The outage lasts `TRADESTREAM_TEST_OUTAGE_SECS` seconds (default 5, so `make test` stays
//! quick; `TRADESTREAM_TEST_OUTAGE_SECS=20` runs the full drill).

mod common;

use anyhow::{Context, Result, bail};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradestream_kafka::{Kafka, KafkaConfig, Metrics, MockKafka, RunnerConfig, run_processor};
use tradestream_postgres::testing::TestDatabase;
use tradestream_postgres::{EmbeddedPostgres, PostgresConfig};
use tradestream_schemas::{Codec, Record, Topic};

const PARTITIONS: i32 = 3;

fn outage() -> Duration {
    let secs = std::env::var("TRADESTREAM_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_waits_out_a_postgres_outage() -> Result<()> {
    let outage = outage();
    // The registry lives in another cluster, so only the sink's database goes away.
    let registry_db = TestDatabase::new().await?;
    let (registry_url, registry_stop) = common::serve_registry(registry_db.pool().clone()).await?;
    let codec = Codec::new(&registry_url)?;
    codec.register_all().await?;

    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let pg_config = PostgresConfig {
        data_dir: Some(dir.path().join("pg")),
        port: Some(free_port()?),
        ..PostgresConfig::default()
    };
    let cfg = pg_config.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&cfg)).await??;
    // A short acquire timeout, so that the outage surfaces as errors the sink must retry
    // (with the default 30 s the pool itself would wait most outages out).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&pg.url())
        .await?;
    sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql"
    )))
    .await?
    .run(&pool)
    .await?;

    let mock = Arc::new(MockKafka::start(1)?);
    let kafka = Kafka::with_mock(
        KafkaConfig {
            session_timeout_ms: 3_000,
            partitions: PARTITIONS,
            ..KafkaConfig::default()
        },
        mock,
    );
    kafka
        .provision(&tradestream_kafka::standard_topics(kafka.config()))
        .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sink = {
        let (kafka, codec, pool) = (kafka.clone(), codec.clone(), pool.clone());
        let config = tradestream_sink::SinkConfig {
            group_id: "outage-sink".into(),
            batch_size: 200,
            retry_max_backoff_ms: 1_000,
            ..Default::default()
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            tradestream_sink::run_sink(
                &kafka,
                &codec,
                pool,
                config,
                &tradestream_kafka::Metrics::new(),
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )
            .await
        })
    };

    // A steady feed before, during and after the outage.
    let all = common::synthetic_bars(&["PGA", "PGB"], 1_500, 3)?;
    let total = all.len() as i64;
    let producer = kafka.producer()?;
    let feed_codec = codec.clone();
    let feeder = tokio::spawn(async move {
        for chunk in all.chunks(100) {
            for bar in chunk {
                let bytes = feed_codec.encode(bar).await?;
                let record = rdkafka::producer::FutureRecord::to(Topic::MarketData.name())
                    .key(bar.key())
                    .payload(&bytes);
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map_err(|(e, _)| e)?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    });

    let rows = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM market_data")
            .fetch_one(&pool)
            .await
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(pool.clone()).await? < 300 {
        if Instant::now() > deadline {
            bail!("the sink wrote nothing within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rows(pool.clone()).await?;
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    let down_at = Instant::now();
    println!("postgres stopped with {before} of {total} rows written; down for {outage:?}");
    tokio::time::sleep(outage).await;
    assert!(!sink.is_finished(), "the sink gave up during the outage");
    let cfg = pg_config.clone();
    let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&cfg)).await??;
    let restarted = Instant::now();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if sink.is_finished() {
            let result = (&mut sink).await?;
            bail!("the sink stopped: {result:?}");
        }
        if Instant::now() > deadline {
            bail!("the sink did not catch up within 120 s of the restart");
        }
        if let Ok(n) = rows(pool.clone()).await
            && n >= total
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caught_up = restarted.elapsed();
    feeder.await??;
    stop.send(true)?;
    let stats = sink.await??;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT record_id) FROM market_data")
        .fetch_one(&pool)
        .await?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumed_offsets WHERE consumer_group = 'outage-sink' AND topic = 'market_data'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(rows(pool.clone()).await?, total, "every bar stored once");
    assert_eq!(distinct, total);
    assert_eq!(stored, total, "stored offsets cover every record");
    assert!(stats.retries > 0, "the sink never retried: {stats:?}");
    println!(
        "postgres outage of {:.1} s: sink retried {} times, caught up {:.1} s after the restart; {total} rows, none lost or doubled",
        (restarted - down_at).as_secs_f64(),
        stats.retries,
        caught_up.as_secs_f64()
    );
    pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop()).await??;
    let _ = registry_stop.send(());
    registry_db.cleanup().await;
    Ok(())
}

/// Every features record's source bar id (with repeats), read from the beginning.
async fn features_sources(kafka: &Kafka, codec: &Codec) -> Result<Vec<String>> {
    let reader: BaseConsumer = kafka.client_config().create()?;
    let consumer: BaseConsumer = kafka.base_consumer("outage-reader")?;
    let payloads = tokio::task::spawn_blocking(move || {
        let topic = Topic::Features.name();
        let mut expected = 0;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            expected += reader
                .fetch_watermarks(topic, p, Duration::from_secs(10))?
                .1;
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < expected {
            if Instant::now() > deadline {
                bail!("read {} of {expected} features", out.len());
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                out.push(m?.payload().unwrap_or_default().to_vec());
            }
        }
        anyhow::Ok(out)
    })
    .await??;
    let mut ids = Vec::new();
    for bytes in payloads {
        let f: tradestream_schemas::Features = codec.decode(&bytes).await?;
        ids.push(f.source_id);
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn producers_and_consumers_wait_out_a_broker_outage() -> Result<()> {
    let outage = outage();
    let db = TestDatabase::new().await?;
    let (registry_url, registry_stop) = common::serve_registry(db.pool().clone()).await?;
    let codec = Codec::new(&registry_url)?;
    codec.register_all().await?;
    let mut guard = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_tradestream"))
            .args([
                "broker",
                "--port",
                "0",
                "--partitions",
                &PARTITIONS.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    ));
    let broker = guard.0.as_mut().context("broker")?;
    let mut line = String::new();
    BufReader::new(broker.stdout.take().context("stdout")?).read_line(&mut line)?;
    let bootstrap = line
        .trim()
        .strip_prefix("bootstrap:")
        .context("broker's bootstrap line")?
        .trim()
        .to_string();
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(bootstrap),
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })?;

    // features under the generic runner, in this process.
    let metrics = Metrics::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = {
        let (kafka, codec, metrics) = (kafka.clone(), codec.clone(), metrics.clone());
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut core = tradestream_features::FeaturesProcessor::new(
                tradestream_features::FeaturesConfig::default(),
            )?;
            let mut config = RunnerConfig::for_processor("features");
            config.group_id = "outage-features".into();
            let stats = run_processor(&kafka, &codec, &mut core, &config, &metrics, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await?;
            anyhow::Ok(stats)
        })
    };

    // ingest's publisher, paced so the outage falls in the middle of the feed.
    let all = common::synthetic_bars(&["BKA", "BKB"], 2_000, 9)?;
    let ids: BTreeSet<String> = all.iter().map(|b| b.record_id.clone()).collect();
    let total = all.len();
    let publisher = common::spawn_publisher(&kafka, &codec, &metrics, all, 800.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    common::signal(broker, "USR1")?;
    let down_at = Instant::now();
    println!("broker unreachable for {outage:?}");
    let probe = kafka.health(Duration::from_secs(2)).await;
    assert!(
        probe.is_err(),
        "the broker still answers during the drill: {probe:?}"
    );
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    assert!(
        !runner.is_finished(),
        "the processor gave up during the outage"
    );
    assert!(
        !publisher.is_finished(),
        "the publisher gave up during the outage"
    );
    common::signal(broker, "USR2")?;
    let up_at = Instant::now();

    let stats = tokio::time::timeout(Duration::from_secs(180), publisher)
        .await
        .context("publishing did not finish within 180 s of the broker's return")???;
    assert_eq!(stats.published as usize, total, "{stats:?}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let sources = loop {
        if runner.is_finished() {
            bail!("the processor stopped: {:?}", runner.await?);
        }
        if Instant::now() > deadline {
            bail!("features did not catch up within 180 s of the broker's return");
        }
        let sources = features_sources(&kafka, &codec).await?;
        if sources.iter().collect::<BTreeSet<_>>().len() >= total {
            break sources;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let caught_up = up_at.elapsed();
    stop.send(true)?;
    let run = runner.await??;
    let distinct: BTreeSet<String> = sources.iter().cloned().collect();
    assert_eq!(distinct, ids, "a features record for every bar");
    println!(
        "broker outage of {:.1} s: {total} bars published, {} features records ({} distinct) — caught up {:.1} s after the broker returned; runner {run:?}",
        (up_at - down_at).as_secs_f64(),
        sources.len(),
        distinct.len(),
        caught_up.as_secs_f64()
    );
    common::signal(broker, "TERM")?;
    let status = broker.wait()?;
    assert!(status.success(), "broker exited with {status}");
    let _ = registry_stop.send(());
    db.cleanup().await;
    Ok(())
}

/// Kills a child process left running when a test fails half-way.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
