//! Graceful shutdown, process by process: on SIGTERM a process stops taking input, finishes
//! its in-flight work, commits and exits 0 within its grace period.
//!
//! The main test runs `tradestream run features` as its own OS process against a
//! `tradestream broker`, feeds it market data at a steady rate, SIGTERMs it mid-stream and
//! checks that the committed offsets cover exactly the outputs it produced (nothing produced
//! without its input committed, nothing committed without its output), then restarts it and
//! checks that every bar ends up with exactly one features record. The infrastructure
//! processes (`broker`, `registry`, `postgres`) and `ingest` are checked for exit 0 too; for
//! `ingest`, what it reports as published is what the topic holds.

mod common;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tradestream_kafka::{Kafka, KafkaConfig, committed_offsets};
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::{Codec, Record, Topic};

const PARTITIONS: i32 = 3;
const GRACE_SECS: u64 = 20;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tradestream"));
    c.env_remove("KAFKA_BROKERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    c
}

/// Spawns `cmd` and returns it with the first stdout line starting with `prefix` (the rest
/// of that line).
fn spawn_reading(mut cmd: Command, prefix: &str) -> Result<(Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let rest = common::line_after(stdout, prefix)?
        .with_context(|| format!("process exited before printing {prefix:?}"))?;
    Ok((child, rest))
}

fn sigterm(child: &Child) -> Result<()> {
    common::signal(child, "TERM")
}

/// Waits for `child` to exit, at most `limit`.
async fn wait_exit(mut child: Child, limit: Duration) -> Result<(ExitStatus, Duration)> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, started.elapsed()));
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            bail!("process did not exit within {limit:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM, then expect exit 0 within the grace period.
async fn stop(child: Child, what: &str) -> Result<Duration> {
    sigterm(&child)?;
    let (status, took) = wait_exit(child, Duration::from_secs(GRACE_SECS + 10)).await?;
    assert!(
        status.success(),
        "{what} exited with {status} after SIGTERM"
    );
    println!("{what}: exit 0 {:.2} s after SIGTERM", took.as_secs_f64());
    Ok(took)
}

/// Every record of `topic`: (partition, offset, value bytes).
async fn read_all(kafka: &Kafka, topic: &str) -> Result<Vec<(i32, i64, Vec<u8>)>> {
    let reader: BaseConsumer = kafka.client_config().create()?;
    let topic = topic.to_string();
    let group = format!("shutdown-reader-{}", Utc::now().timestamp_micros());
    let consumer: BaseConsumer = kafka.base_consumer(&group)?;
    tokio::task::spawn_blocking(move || {
        let mut expected = 0;
        for p in 0..PARTITIONS {
            expected += reader
                .fetch_watermarks(&topic, p, Duration::from_secs(10))?
                .1;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (out.len() as i64) < expected {
            if Instant::now() > deadline {
                bail!("read {} of {expected} records of {topic}", out.len());
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m?;
                out.push((
                    m.partition(),
                    m.offset(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        Ok(out)
    })
    .await?
}

struct Env {
    db: TestDatabase,
    broker: KillOnDrop,
    bootstrap: String,
    registry: String,
    kafka: Kafka,
    codec: Codec,
    registry_stop: tokio::sync::oneshot::Sender<()>,
}

async fn environment() -> Result<Env> {
    let db = TestDatabase::new().await?;
    let mut cmd = bin();
    cmd.args([
        "broker",
        "--port",
        "0",
        "--partitions",
        &PARTITIONS.to_string(),
    ]);
    let (broker, bootstrap) = spawn_reading(cmd, "bootstrap:")?;
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(bootstrap.clone()),
        session_timeout_ms: 3_000,
        ..KafkaConfig::default()
    })?;
    let (registry, registry_stop) = common::serve_registry(db.pool().clone()).await?;
    let codec = Codec::new(&registry)?;
    codec.register_all().await?;
    Ok(Env {
        db,
        broker: KillOnDrop(Some(broker)),
        bootstrap,
        registry,
        kafka,
        codec,
        registry_stop,
    })
}

fn run_features(env: &Env) -> Result<Child> {
    run_features_with(env, GRACE_SECS, &[], Stdio::inherit())
}

fn run_features_with(env: &Env, grace_secs: u64, extra: &[&str], stderr: Stdio) -> Result<Child> {
    Ok(bin()
        .args([
            "run",
            "features",
            "--metrics-listen",
            "127.0.0.1:0",
            "--kafka-session-timeout-ms",
            "3000",
            "--shutdown-grace-secs",
            &grace_secs.to_string(),
        ])
        .args(["--kafka-brokers", &env.bootstrap])
        .args(["--schema-registry-url", &env.registry])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_commits_exactly_what_was_produced() -> Result<()> {
    let mut env = environment().await?;
    let symbols = ["SDA", "SDB", "SDC"];
    let mut feed = tradestream_ingest::SyntheticFeed::new(tradestream_ingest::SyntheticConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        seed: 5,
        bars_per_symbol: None,
        ..Default::default()
    })?;
    let now = Utc::now();

    // The processor starts first, so a slow start does not pile input up.
    let features = run_features(&env)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A steady feed (~1,000 bars/s) that runs until told to stop, so the processor is
    // mid-stream when it gets SIGTERM however slow the machine is. It is capped so the
    // topics stay well inside the mock broker's per-partition retention (features records
    // are ~700 bytes): beyond it the broker drops the oldest records.
    const MAX_BARS: usize = 12_000;
    let producer = env.kafka.producer()?;
    let codec = env.codec.clone();
    let feeding = Arc::new(AtomicBool::new(true));
    let keep = feeding.clone();
    let feeder = tokio::spawn(async move {
        let mut at: BTreeMap<String, (i32, i64)> = BTreeMap::new();
        while keep.load(Ordering::SeqCst) && at.len() < MAX_BARS {
            let mut sends = Vec::new();
            for _ in 0..100 {
                let bar = feed.next_at(now).context("an unbounded feed")?;
                let bytes = codec.encode(&bar).await?;
                let record = rdkafka::producer::FutureRecord::to(Topic::MarketData.name())
                    .key(bar.key())
                    .payload(bytes.as_slice());
                let d = producer.send_result(record).map_err(|(e, _)| e)?;
                sends.push((bar.record_id.clone(), d));
            }
            for (id, d) in sends {
                let delivered = d.await?.map_err(|(e, _)| e)?;
                at.insert(id, (delivered.partition, delivered.offset));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(at)
    });

    // Stop it once it has produced something, while input is still arriving.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Instant::now() > deadline {
            bail!("features produced nothing within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let produced = read_all(&env.kafka, Topic::Features.name()).await?.len();
        if produced >= 300 {
            break;
        }
    }
    stop(features, "run features (mid-stream)").await?;
    let still_feeding = !feeder.is_finished();
    feeding.store(false, Ordering::SeqCst);

    // Committed offsets vs outputs: exactly the bars below the committed offsets have a
    // features record.
    let committed = committed_offsets(
        &env.kafka,
        "tradestream-features",
        Topic::MarketData.name(),
        PARTITIONS,
    )
    .await?;
    let at = feeder.await??;
    let total = at.len();
    let by_position: BTreeMap<(i32, i64), String> =
        at.iter().map(|(id, pos)| (*pos, id.clone())).collect();
    let covered: BTreeSet<String> = by_position
        .iter()
        .filter(|((p, o), _)| committed[*p as usize].is_some_and(|c| *o < c))
        .map(|(_, id)| id.clone())
        .collect();
    let outputs = features_sources(&env).await?;
    let produced: BTreeSet<String> = outputs.iter().cloned().collect();
    assert_eq!(outputs.len(), produced.len(), "a bar processed twice");
    assert!(
        !covered.is_empty() && covered.len() < total,
        "stopped mid-stream: {} of {total} committed (feed still running: {still_feeding})",
        covered.len()
    );
    assert_eq!(
        produced, covered,
        "outputs produced vs inputs committed at SIGTERM"
    );
    println!(
        "features stopped after {} of {total} bars; committed offsets {committed:?} cover exactly its {} outputs",
        covered.len(),
        produced.len()
    );

    // Restart: it resumes at the commit, so every bar ends up with exactly one output.
    let features = run_features(&env)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if Instant::now() > deadline {
            bail!("the restarted features did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        if read_all(&env.kafka, Topic::Features.name()).await?.len() >= total {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(features, "run features (restarted)").await?;
    let outputs = features_sources(&env).await?;
    let distinct: BTreeSet<String> = outputs.iter().cloned().collect();
    assert_eq!(
        outputs.len(),
        total,
        "one features record per bar, none twice"
    );
    assert_eq!(distinct, at.keys().cloned().collect::<BTreeSet<_>>());

    stop(env.broker.0.take().context("broker")?, "broker").await?;
    let _ = env.registry_stop.send(());
    env.db.cleanup().await;
    Ok(())
}

/// Publishes `bars` and waits until features has turned all of them into outputs.
async fn feed_and_wait(env: &Env, bars: &[tradestream_schemas::MarketData]) -> Result<()> {
    let producer = env.kafka.producer()?;
    for bar in bars {
        let bytes = env.codec.encode(bar).await?;
        let record = rdkafka::producer::FutureRecord::to(Topic::MarketData.name())
            .key(bar.key())
            .payload(bytes.as_slice());
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }
    let wanted: BTreeSet<&str> = bars.iter().map(|b| b.record_id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = features_sources(env).await?;
        if wanted.iter().all(|id| seen.iter().any(|s| s == id)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("features did not process {} bars within 60 s", bars.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When in-flight work cannot finish (here: the broker becomes unreachable before the final
/// snapshot and commit), the process does not hang past its grace period: it exits 1 and
/// says which setting bounded it. Nothing is lost by that: the restarted processor produces
/// a features record for every bar, and repeated ones are byte-identical copies.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_past_the_grace_period_exits_1_naming_the_setting() -> Result<()> {
    const SHORT_GRACE: u64 = 2;
    let mut env = environment().await?;
    let bars = common::synthetic_bars(&["GRA", "GRB", "GRC"], 200, 11)?;
    let (first, second) = bars.split_at(300);
    // Snapshots only at the start (and at the stop), so the second round is not covered by
    // one however long the rounds take.
    let mut features = run_features_with(
        &env,
        SHORT_GRACE,
        &["--snapshot-interval-ms", "600000"],
        Stdio::piped(),
    )?;
    let stderr = features.stderr.take().context("stderr")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    // Two rounds, so its state has changed since its first snapshot: the stop has a final
    // snapshot to write and offsets to commit, which need the broker.
    feed_and_wait(&env, first).await?;
    feed_and_wait(&env, second).await?;
    let broker = env.broker.0.as_ref().context("broker")?;
    common::signal(broker, "USR1")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&features)?;
    let (status, took) = wait_exit(features, Duration::from_secs(SHORT_GRACE + 15)).await?;
    let stderr = errors
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader"))?;
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(
        took >= Duration::from_secs(SHORT_GRACE),
        "exited {took:?} after SIGTERM, before its {SHORT_GRACE} s grace period"
    );
    for needle in [
        "TRADESTREAM_SHUTDOWN_GRACE_SECS",
        "the grace period passed",
        "still running",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    println!(
        "run features: exit 1 {:.2} s after SIGTERM with the broker unreachable (grace {SHORT_GRACE} s)",
        took.as_secs_f64()
    );

    // The broker comes back; a restarted processor leaves every bar with its record.
    let broker = env.broker.0.as_ref().context("broker")?;
    common::signal(broker, "USR2")?;
    let features = run_features(&env)?;
    feed_and_wait(&env, &bars).await?;
    stop(features, "run features (after the forced stop)").await?;
    let mut by_source: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut copies = 0;
    for (_, _, bytes) in read_all(&env.kafka, Topic::Features.name()).await? {
        let f: tradestream_schemas::Features = env.codec.decode(&bytes).await?;
        if let Some(seen) = by_source.insert(f.source_id.clone(), bytes.clone()) {
            copies += 1;
            assert_eq!(
                seen, bytes,
                "two different features records for {}",
                f.source_id
            );
        }
    }
    let ids: BTreeSet<String> = bars.iter().map(|b| b.record_id.clone()).collect();
    assert_eq!(by_source.keys().cloned().collect::<BTreeSet<_>>(), ids);
    println!(
        "after the restart: {} bars, {} features records, {copies} repeated copies",
        ids.len(),
        by_source.len()
    );

    stop(env.broker.0.take().context("broker")?, "broker").await?;
    let _ = env.registry_stop.send(());
    env.db.cleanup().await;
    Ok(())
}

/// Source bar ids of every features record on the topic (with repeats).
async fn features_sources(env: &Env) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (_, _, bytes) in read_all(&env.kafka, Topic::Features.name()).await? {
        let f: tradestream_schemas::Features = env.codec.decode(&bytes).await?;
        out.push(f.source_id.clone());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_and_infrastructure_exit_zero_on_sigterm() -> Result<()> {
    let mut env = environment().await?;

    // ingest: stops publishing, waits for the acknowledgements, reports what is on the topic.
    let mut cmd = bin();
    cmd.args([
        "ingest",
        "synthetic",
        "--symbols",
        "IGA,IGB",
        "--bars",
        "100000",
        "--rate",
        "2000",
    ])
    .args(["--kafka-brokers", &env.bootstrap])
    .args(["--schema-registry-url", &env.registry]);
    let mut ingest = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    wait_publishing(&env, &mut ingest).await?;
    sigterm(&ingest)?;
    let stdout = ingest.stdout.take().context("stdout")?;
    let (status, took) = wait_exit(ingest, Duration::from_secs(GRACE_SECS + 10)).await?;
    assert!(status.success(), "ingest exited with {status}");
    let mut report = String::new();
    BufReader::new(stdout).read_line(&mut report)?;
    let published: usize = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("ingest report: {report:?}"))?;
    let on_topic = read_all(&env.kafka, Topic::MarketData.name()).await?.len();
    assert!(published > 0 && published < 200_000, "{report}");
    assert_eq!(published, on_topic, "ingest's count vs market_data");
    println!(
        "ingest: exit 0 {:.2} s after SIGTERM, {published} records published and on the topic",
        took.as_secs_f64()
    );

    // registry and postgres.
    let mut cmd = bin();
    cmd.args([
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        env.db.url(),
    ]);
    let (registry, _) = spawn_reading(cmd, "schema registry:")?;
    stop(registry, "registry").await?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let mut cmd = bin();
    cmd.arg("postgres")
        .arg("--pg-data-dir")
        .arg(dir.path().join("pg"));
    let (postgres, url) = spawn_reading(cmd, "database_url:")?;
    assert!(url.starts_with("postgres"), "{url}");
    stop(postgres, "postgres").await?;

    stop(env.broker.0.take().context("broker")?, "broker").await?;
    let _ = env.registry_stop.send(());
    env.db.cleanup().await;
    Ok(())
}

/// Waits until `ingest` has put some records on `market_data`, so that a signal reaches it
/// mid-feed: a fixed sleep raced its start-up on a slow machine (signalled before it had
/// installed its handlers, or killed before it had published anything).
async fn wait_publishing(env: &Env, ingest: &mut Child) -> Result<()> {
    let started = Instant::now();
    while common::count(&env.kafka, Topic::MarketData.name(), PARTITIONS).await? < 100 {
        if let Some(status) = ingest.try_wait()? {
            bail!("ingest exited with {status} before publishing");
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("ingest published fewer than 100 records in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Record ids of the `market_data` records of `symbols` (with repeats).
async fn market_data_ids(env: &Env, symbols: &[&str]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for (_, _, bytes) in read_all(&env.kafka, Topic::MarketData.name()).await? {
        let md: tradestream_schemas::MarketData = env.codec.decode(&bytes).await?;
        if symbols.contains(&md.symbol.as_str()) {
            ids.push(md.record_id);
        }
    }
    Ok(ids)
}

/// `ingest` SIGKILLed half-way and started again with the same source publishes only what
/// the topic does not have yet: every bar once, none twice (a second copy would carry a new
/// ingest time under the same id).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_ingest_resumes_without_a_second_copy() -> Result<()> {
    let mut env = environment().await?;
    const SYMBOLS: [&str; 2] = ["IRA", "IRB"];
    const BARS: usize = 3_000;
    let ingest = |rate: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["ingest", "synthetic", "--symbols", &SYMBOLS.join(",")])
            .args(["--bars", &BARS.to_string(), "--seed", "3"])
            .args(["--kafka-brokers", &env.bootstrap])
            .args(["--schema-registry-url", &env.registry]);
        if let Some(rate) = rate {
            cmd.args(["--rate", rate]);
        }
        cmd
    };
    let mut first = ingest(Some("1500"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    wait_publishing(&env, &mut first).await?;
    first.kill()?;
    first.wait()?;
    let before = market_data_ids(&env, &SYMBOLS).await?;
    let total = SYMBOLS.len() * BARS;
    assert!(
        !before.is_empty() && before.len() < total,
        "killed mid-way: {} of {total} on the topic",
        before.len()
    );

    let out = ingest(None).stderr(Stdio::inherit()).output()?;
    assert!(
        out.status.success(),
        "second ingest exited with {}",
        out.status
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        report.contains(&format!("resuming: {} records", before.len())),
        "{report}"
    );
    let after = market_data_ids(&env, &SYMBOLS).await?;
    let distinct: BTreeSet<&String> = after.iter().collect();
    assert_eq!(after.len(), total, "records of the source on the topic");
    assert_eq!(distinct.len(), total, "distinct ids");
    println!(
        "ingest killed after {} of {total} records; the restart published the other {} and skipped those",
        before.len(),
        total - before.len()
    );

    stop(env.broker.0.take().context("broker")?, "broker").await?;
    let _ = env.registry_stop.send(());
    env.db.cleanup().await;
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
