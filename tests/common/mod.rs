//! Helpers shared by the multi-process delivery tests (`crash.rs`, `scale_out.rs`): start the
//! infrastructure (`tradestream broker`, `tradestream registry`) and the processors
//! (`tradestream run <stage>`, `tradestream ingest`) as real OS processes, SIGKILL and restart
//! them, wait until every consumer group has drained its inputs, read every topic back in
//! full and decode it, and check the Postgres books against an independent recomputation.
//!
//! Every process logs to its own file under the run's directory, so a failure can show the
//! last lines of the process that misbehaved instead of interleaving five processes' stderr.
//! Also the in-process pieces other end-to-end tests share: a seeded synthetic feed and a
//! schema registry served from the test's database.

#![allow(dead_code, unreachable_pub)] // each test binary uses a subset

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tradestream_kafka::{Kafka, KafkaConfig};
use tradestream_schemas::topics::STAGE_INPUTS;
use tradestream_schemas::{AnyRecord, Codec, Topic};

/// Session timeout of every consumer: a SIGKILLed member's partitions move (and its restart
/// rejoins) after this long.
pub const SESSION_TIMEOUT_MS: u64 = 3_000;

/// The binary under test; its processes log at `TRADESTREAM_TEST_LOG` (default `warn`) to
/// their own files.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tradestream"));
    c.env_remove("KAFKA_BROKERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_GROUP_ID")
        .env(
            "RUST_LOG",
            std::env::var("TRADESTREAM_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    c
}

/// A seeded SplitMix64: the kill schedule is reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[lo, hi)`.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }
}

/// One OS process of the test, killed when dropped; its stderr goes to `log`.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout discarded and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    /// Spawns `cmd` and returns it with the rest of the first stdout line starting with
    /// `prefix` (stdout is drained afterwards so the child never blocks on a full pipe).
    pub fn spawn_reading(
        name: &str,
        mut cmd: Command,
        dir: &Path,
        prefix: &str,
    ) -> Result<(Self, String)> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut proc = Self {
            name: name.to_string(),
            child: Some(child),
            log,
        };
        match line_after(stdout, prefix)? {
            Some(rest) => Ok((proc, rest)),
            None => {
                let tail = proc.log_tail(20);
                proc.kill9()?;
                bail!("{name} exited before printing {prefix:?}:\n{tail}");
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// SIGTERM, then wait at most `limit` for the exit.
    pub async fn terminate(&mut self, limit: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{}: not running", self.name);
        };
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -TERM {} failed", self.name);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not exit within {limit:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits at most `limit` for the process to exit by itself.
    pub async fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited()? {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > limit {
                bail!("{} still running after {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A standalone broker process plus a client for the test's own reads.
pub struct Broker {
    pub proc: Proc,
    pub bootstrap: String,
    pub kafka: Kafka,
    pub partitions: i32,
}

pub fn start_broker(partitions: i32, group_prefix: &str, dir: &Path) -> Result<Broker> {
    let mut cmd = bin();
    cmd.args([
        "broker",
        "--port",
        "0",
        "--partitions",
        &partitions.to_string(),
    ]);
    // The stateful runner's changelog topics (`<group>.changelog`, one partition): the mock
    // broker has no CreateTopics API, so they are created with the broker.
    for (stage, _) in STAGE_INPUTS.iter().filter(|(s, _)| *s != "sink") {
        cmd.args(["--topic", &format!("{group_prefix}-{stage}.changelog:1")]);
    }
    let (proc, bootstrap) = Proc::spawn_reading("broker", cmd, dir, "bootstrap:")?;
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(bootstrap.clone()),
        session_timeout_ms: SESSION_TIMEOUT_MS as u32,
        partitions,
        ..KafkaConfig::default()
    })?;
    Ok(Broker {
        proc,
        bootstrap,
        kafka,
        partitions,
    })
}

/// `tradestream registry` on a free port, persisted in `database_url`.
pub fn start_registry(database_url: &str, dir: &Path) -> Result<(Proc, String)> {
    let mut cmd = bin();
    cmd.args([
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ]);
    Proc::spawn_reading("registry", cmd, dir, "schema registry:")
}

/// `tradestream run <stage>` against the shared broker and registry, in consumer group
/// `<group_prefix>-<stage>`.
pub fn run_stage(
    stage: &str,
    instance: &str,
    broker: &Broker,
    registry: &str,
    database_url: Option<&str>,
    group_prefix: &str,
    dir: &Path,
) -> Result<Proc> {
    run_stage_with(
        stage,
        instance,
        broker,
        registry,
        database_url,
        group_prefix,
        dir,
        &[],
    )
}

/// [`run_stage`] with extra command-line arguments.
#[allow(clippy::too_many_arguments)]
pub fn run_stage_with(
    stage: &str,
    instance: &str,
    broker: &Broker,
    registry: &str,
    database_url: Option<&str>,
    group_prefix: &str,
    dir: &Path,
    extra: &[&str],
) -> Result<Proc> {
    let mut cmd = bin();
    cmd.args(["run", stage, "--metrics-listen", "127.0.0.1:0"])
        .args([
            "--kafka-session-timeout-ms",
            &SESSION_TIMEOUT_MS.to_string(),
        ])
        .args(["--kafka-partitions", &broker.partitions.to_string()])
        .args(["--kafka-group-id", group_prefix])
        .args(["--kafka-brokers", &broker.bootstrap])
        .args(["--schema-registry-url", registry])
        .args(["--shutdown-grace-secs", "20"]);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.args(extra);
    Proc::spawn(&format!("{stage}{instance}"), cmd, dir)
}

/// `tradestream ingest synthetic`: `bars` bars for each of `symbols`, seed-fixed, at `rate`
/// records per second (0: as fast as possible).
pub fn run_ingest(
    broker: &Broker,
    registry: &str,
    symbols: &[String],
    bars: u64,
    seed: u64,
    rate: f64,
    dir: &Path,
) -> Result<Proc> {
    let mut cmd = bin();
    cmd.args(["ingest", "synthetic", "--symbols", &symbols.join(",")])
        .args(["--bars", &bars.to_string(), "--seed", &seed.to_string()])
        .args(["--kafka-brokers", &broker.bootstrap])
        .args(["--kafka-partitions", &broker.partitions.to_string()])
        .args(["--schema-registry-url", registry]);
    if rate > 0.0 {
        cmd.args(["--rate", &rate.to_string()]);
    }
    Proc::spawn("ingest", cmd, dir)
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub record: AnyRecord,
    /// The decoded record as text, wall-clock stamps (market data's `ingest_time`) cleared:
    /// two records with the same id must have the same content.
    pub content: String,
}

impl Rec {
    pub fn id(&self) -> &str {
        self.record.id()
    }
}

/// High watermark of every partition of `topic`.
pub fn ends(consumer: &BaseConsumer, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>> {
    (0..partitions)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?))
        .collect()
}

/// Number of records on a topic (all partitions).
pub async fn count(kafka: &Kafka, topic: &str, partitions: i32) -> Result<i64> {
    let consumer: BaseConsumer = kafka.client_config().create()?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        Ok(ends(&consumer, &topic, partitions)?
            .iter()
            .map(|(_, h)| h)
            .sum())
    })
    .await?
}

/// Every record of `topic`, read from the beginning and decoded. Fails when the mock broker
/// has already dropped the head of a partition (its per-partition size limit): the
/// comparison would be meaningless.
pub async fn read_topic(
    kafka: &Kafka,
    codec: &Codec,
    topic: Topic,
    partitions: i32,
) -> Result<Vec<Rec>> {
    let reader: BaseConsumer = kafka.client_config().create()?;
    let consumer: BaseConsumer = kafka.base_consumer(&format!(
        "test-reader-{}-{}",
        topic.name(),
        Utc::now().timestamp_micros()
    ))?;
    let name = topic.name();
    let raw = tokio::task::spawn_blocking(move || {
        let marks = ends(&reader, name, partitions)?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut expected = 0;
        for (p, (low, high)) in marks.iter().enumerate() {
            if *low > 0 {
                bail!("{name}[{p}]: the broker dropped offsets 0..{low} (mock size limit): use more partitions or fewer records");
            }
            expected += high;
            tpl.add_partition_offset(name, p as i32, rdkafka::Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::with_capacity(expected as usize);
        let deadline = Instant::now() + Duration::from_secs(120);
        while (out.len() as i64) < expected {
            if Instant::now() > deadline {
                bail!("read {} of {expected} records of {name}", out.len());
            }
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m?;
                out.push((m.partition(), m.offset(), m.payload().map(<[u8]>::to_vec)));
            }
        }
        Ok(out)
    })
    .await??;
    let mut out = Vec::with_capacity(raw.len());
    for (partition, offset, payload) in raw {
        let bytes =
            payload.with_context(|| format!("{name}[{partition}]@{offset}: a tombstone"))?;
        let mut record = codec
            .decode_any(topic, &bytes)
            .await
            .with_context(|| format!("{name}[{partition}]@{offset}"))?;
        if let AnyRecord::MarketData(m) = &mut record {
            m.ingest_time = DateTime::<Utc>::UNIX_EPOCH;
        }
        let content = format!("{record:?}");
        out.push(Rec {
            partition,
            offset,
            record,
            content,
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// Whether every group `<prefix>-<stage>` in `readers` has committed up to the end of every
/// partition of every topic it reads; the first lagging group/topic otherwise.
pub async fn lag(
    kafka: &Kafka,
    prefix: &str,
    readers: &[(&'static str, &'static [Topic])],
    partitions: i32,
) -> Result<Option<String>> {
    let mut consumers = Vec::new();
    for (stage, topics) in readers {
        consumers.push((
            *stage,
            *topics,
            kafka.base_consumer(&format!("{prefix}-{stage}"))?,
        ));
    }
    let marks: BaseConsumer = kafka.client_config().create()?;
    tokio::task::spawn_blocking(move || {
        for (stage, topics, consumer) in &consumers {
            for topic in topics.iter() {
                let ends = ends(&marks, topic.name(), partitions)?;
                let mut tpl = rdkafka::TopicPartitionList::new();
                for p in 0..partitions {
                    tpl.add_partition(topic.name(), p);
                }
                let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
                for (p, (_, end)) in ends.iter().enumerate() {
                    let done = match committed
                        .find_partition(topic.name(), p as i32)
                        .map(|e| e.offset())
                    {
                        Some(rdkafka::Offset::Offset(o)) => o,
                        _ => 0,
                    };
                    if done < *end {
                        return Ok(Some(format!(
                            "{stage} at {done} of {end} on {}[{p}]",
                            topic.name()
                        )));
                    }
                }
            }
        }
        Ok(None)
    })
    .await?
}

/// Waits until every group has drained its inputs (seen twice, 1 s apart: one stage's output
/// is the next one's input), failing early when one of `procs` exits.
pub async fn wait_drained(
    kafka: &Kafka,
    prefix: &str,
    readers: &[(&'static str, &'static [Topic])],
    partitions: i32,
    procs: &mut [Proc],
    limit: Duration,
) -> Result<()> {
    let waited = Instant::now();
    let deadline = waited + limit;
    let mut stable = 0;
    let mut last = String::new();
    while stable < 2 {
        for p in procs.iter_mut() {
            if let Some(status) = p.exited()? {
                bail!("{} exited with {status}:\n{}", p.name, p.log_tail(30));
            }
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {} ({}):\n{}", p.name, p.log.display(), p.log_tail(5)))
                .collect();
            bail!(
                "the pipeline did not drain within {limit:?}: {last}\n{}",
                tails.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        match lag(kafka, prefix, readers, partitions).await? {
            None => stable += 1,
            Some(behind) => {
                stable = 0;
                if waited.elapsed() > Duration::from_secs(30)
                    && (behind != last || waited.elapsed().as_secs().is_multiple_of(30))
                {
                    println!(
                        "   still draining after {:.0} s: {behind}",
                        waited.elapsed().as_secs_f64()
                    );
                }
                last = behind;
            }
        }
    }
    Ok(())
}

/// An account's books as Postgres keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub cash: Decimal,
    pub total_value: Decimal,
    pub positions: BTreeMap<String, Decimal>,
}

/// Every account's books (zero positions left out).
pub async fn books(pool: &sqlx::PgPool) -> Result<BTreeMap<String, Book>> {
    let accounts: Vec<(String, Decimal, Decimal)> =
        sqlx::query_as("SELECT account_id, cash, total_value FROM accounts ORDER BY account_id")
            .fetch_all(pool)
            .await?;
    let mut out = BTreeMap::new();
    for (account, cash, total_value) in accounts {
        let positions: Vec<(String, Decimal)> = sqlx::query_as(
            "SELECT symbol, quantity FROM positions WHERE account_id = $1 AND quantity <> 0 ORDER BY symbol",
        )
        .bind(&account)
        .fetch_all(pool)
        .await?;
        out.insert(
            account,
            Book {
                cash: cash.normalize(),
                total_value: total_value.normalize(),
                positions: positions
                    .into_iter()
                    .map(|(s, q)| (s, q.normalize()))
                    .collect(),
            },
        );
    }
    Ok(out)
}

/// The books recomputed independently from the fills topic and the last close of every
/// symbol on the market-data topic (as tests/pipeline.rs does from the tables), compared
/// with what Postgres holds. Returns the problems found.
pub async fn check_books(
    pool: &sqlx::PgPool,
    fills: &[Rec],
    market_data: &[Rec],
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut last_close: BTreeMap<String, (DateTime<Utc>, Decimal)> = BTreeMap::new();
    for r in market_data {
        if let AnyRecord::MarketData(m) = &r.record {
            let e = last_close
                .entry(m.symbol.as_str().to_string())
                .or_insert((m.event_time, m.close));
            if m.event_time >= e.0 {
                *e = (m.event_time, m.close);
            }
        }
    }
    let mut distinct: BTreeMap<&str, &tradestream_schemas::Fill> = BTreeMap::new();
    for r in fills {
        if let AnyRecord::Fill(f) = &r.record {
            distinct.entry(f.fill_id.as_str()).or_insert(f);
        }
    }
    let mut ordered: Vec<&tradestream_schemas::Fill> = distinct.values().copied().collect();
    ordered.sort_by(|a, b| (a.fill_time, &a.fill_id).cmp(&(b.fill_time, &b.fill_id)));
    let accounts: Vec<(String, Decimal)> =
        sqlx::query_as("SELECT account_id, initial_capital FROM accounts")
            .fetch_all(pool)
            .await?;
    let stored = books(pool).await?;
    for (account, capital) in accounts {
        let mut cash = capital;
        let mut qty: BTreeMap<String, Decimal> = BTreeMap::new();
        for f in ordered.iter().filter(|f| f.account.as_str() == account) {
            let signed = if matches!(f.side, tradestream_schemas::Side::Buy) {
                f.quantity
            } else {
                -f.quantity
            };
            cash -= signed * f.price + f.commission;
            *qty.entry(f.symbol.as_str().to_string()).or_default() += signed;
        }
        let value = cash
            + qty
                .iter()
                .map(|(s, q)| *q * last_close.get(s).map(|c| c.1).unwrap_or_default())
                .sum::<Decimal>();
        let Some(book) = stored.get(&account) else {
            problems.push(format!("{account}: no books in Postgres"));
            continue;
        };
        if book.cash != cash.normalize() {
            problems.push(format!(
                "{account}: cash {} in Postgres, {} from the fills",
                book.cash, cash
            ));
        }
        if book.total_value != value.normalize() {
            problems.push(format!(
                "{account}: total value {} in Postgres, {} = cash + Σ quantity × last close",
                book.total_value, value
            ));
        }
        let mine: BTreeMap<String, Decimal> = qty
            .into_iter()
            .filter(|(_, q)| !q.is_zero())
            .map(|(s, q)| (s, q.normalize()))
            .collect();
        if book.positions != mine {
            problems.push(format!(
                "{account}: positions {:?} in Postgres, {mine:?} from the fills",
                book.positions
            ));
        }
    }
    Ok(problems)
}

/// A portfolio snapshot as compared between runs: account, time, total value, cash and
/// positions value (normalized).
pub type Snapshot = (String, DateTime<Utc>, Decimal, Decimal, Decimal);

/// Every portfolio snapshot Postgres holds, by account and time.
pub async fn portfolio_snapshots(pool: &sqlx::PgPool) -> Result<Vec<Snapshot>> {
    let rows: Vec<Snapshot> = sqlx::query_as(
        "SELECT account_id, snapshot_time, total_value, cash, positions_value
           FROM portfolio_snapshots ORDER BY account_id, snapshot_time, snapshot_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(a, at, v, c, p)| (a, at, v.normalize(), c.normalize(), p.normalize()))
        .collect())
}

/// The portfolio snapshots (the trading core's valuations) recomputed from the fills and
/// market data alone and compared with
/// `stored`: at every market instant, for each account that holds a position then or traded
/// then, cash from the fills up to it and each held symbol's last close up to it. Returns the
/// problems found (the first few differences).
pub async fn check_snapshots(
    pool: &sqlx::PgPool,
    stored: &[Snapshot],
    fills: &[Rec],
    market_data: &[Rec],
) -> Result<Vec<String>> {
    let capital: BTreeMap<String, Decimal> =
        sqlx::query_as("SELECT account_id, initial_capital FROM accounts")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut bars: BTreeMap<DateTime<Utc>, BTreeMap<String, Decimal>> = BTreeMap::new();
    for r in market_data {
        if let AnyRecord::MarketData(m) = &r.record
            && m.step > 0
        {
            bars.entry(m.event_time)
                .or_default()
                .insert(m.symbol.as_str().to_string(), m.close);
        }
    }
    let mut by_time: BTreeMap<DateTime<Utc>, BTreeMap<&str, &tradestream_schemas::Fill>> =
        BTreeMap::new();
    for r in fills {
        if let AnyRecord::Fill(f) = &r.record {
            by_time
                .entry(f.fill_time)
                .or_default()
                .insert(f.fill_id.as_str(), f);
        }
    }
    let mut cash: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut held: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    let mut last_price: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut want: Vec<Snapshot> = Vec::new();
    let mut applied = by_time.iter().peekable();
    for (at, closes) in &bars {
        let mut traded: std::collections::BTreeSet<String> = Default::default();
        while let Some((t, day)) = applied.peek() {
            if *t > at {
                break;
            }
            for f in day.values() {
                let account = f.account.as_str().to_string();
                let Some(initial) = capital.get(&account) else {
                    continue;
                };
                let q = if matches!(f.side, tradestream_schemas::Side::Buy) {
                    f.quantity
                } else {
                    -f.quantity
                };
                *cash.entry(account.clone()).or_insert(*initial) -= q * f.price + f.commission;
                *held
                    .entry((account.clone(), f.symbol.as_str().to_string()))
                    .or_default() += q;
                last_price
                    .entry(f.symbol.as_str().to_string())
                    .or_insert(f.price);
                if *t == at {
                    traded.insert(account);
                }
            }
            applied.next();
        }
        for (symbol, close) in closes {
            last_price.insert(symbol.clone(), *close);
        }
        for (account, initial) in &capital {
            let value: Vec<Decimal> = held
                .iter()
                .filter(|((a, _), q)| a == account && !q.is_zero())
                .map(|((_, s), q)| *q * last_price.get(s).copied().unwrap_or_default())
                .collect();
            if value.is_empty() && !traded.contains(account) {
                continue;
            }
            let c = cash.get(account).copied().unwrap_or(*initial);
            let v: Decimal = value.iter().sum();
            want.push((
                account.clone(),
                *at,
                (c + v).normalize(),
                c.normalize(),
                v.normalize(),
            ));
        }
    }
    want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut problems = Vec::new();
    if want.len() != stored.len() {
        problems.push(format!(
            "{} portfolio snapshots in Postgres, {} from the topics",
            stored.len(),
            want.len()
        ));
    }
    for (got, w) in stored.iter().zip(&want).filter(|(g, w)| g != w).take(3) {
        problems.push(format!(
            "snapshot {got:?} in Postgres, {w:?} from the topics"
        ));
    }
    Ok(problems)
}

/// The tables whose rows the sink derives rather than copies (orders' current state,
/// positions, accounts), one JSON text per row in key order, without the columns that hold
/// wall-clock times or the time of the last change (a fill and a mark may come in either
/// order).
pub async fn derived_tables(pool: &sqlx::PgPool) -> Result<BTreeMap<&'static str, Vec<String>>> {
    let specs: [(&'static str, &str, &str); 3] = [
        ("orders", "order_id", "'{}'"),
        ("positions", "account_id, symbol", "'{updated_at}'"),
        ("accounts", "account_id", "'{created_at,updated_at}'"),
    ];
    let mut out = BTreeMap::new();
    for (table, order, drop) in specs {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT (to_jsonb(t) - {drop}::text[])::text FROM {table} t ORDER BY {order}"
        ))
        .fetch_all(pool)
        .await?;
        out.insert(table, rows);
    }
    Ok(out)
}

/// Distinct ids of `recs` mapped to their content, plus the ids seen with two different
/// contents and the number of repeated copies (same id, same content).
pub struct Distinct<'a> {
    pub by_id: BTreeMap<&'a str, &'a Rec>,
    pub conflicts: Vec<(&'a Rec, &'a Rec)>,
    pub copies: usize,
}

pub fn distinct(recs: &[Rec]) -> Distinct<'_> {
    let mut by_id: BTreeMap<&str, &Rec> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut copies = 0;
    for r in recs {
        match by_id.get(r.id()) {
            None => {
                by_id.insert(r.id(), r);
            }
            Some(first) if first.content == r.content => copies += 1,
            Some(first) => conflicts.push((*first, r)),
        }
    }
    Distinct {
        by_id,
        conflicts,
        copies,
    }
}

/// Shortens a record's text for a report line.
pub fn short(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Per symbol and partition, the sequence of distinct records (first appearance by offset)
/// must be in event-time order. Returns the violations (at most `limit`) and how many there
/// were.
pub fn order_violations(recs: &[Rec], limit: usize) -> (usize, Vec<String>) {
    let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let mut last: BTreeMap<(&str, i32), (DateTime<Utc>, &str, i64)> = BTreeMap::new();
    let mut n = 0;
    let mut examples = Vec::new();
    for r in recs {
        if !seen.insert(r.id()) {
            continue;
        }
        let key = (r.record.key(), r.partition);
        let t = r.record.event_time();
        if let Some((prev, prev_id, prev_offset)) = last.get(&key)
            && t < *prev
        {
            n += 1;
            if examples.len() < limit {
                examples.push(format!(
                    "{}[{}]: {} ({t}) at offset {} after {prev_id} ({prev}) at offset {prev_offset}",
                    r.record.topic().name(),
                    r.partition,
                    r.id(),
                    r.offset
                ));
            }
        }
        last.insert(key, (t, r.id(), r.offset));
    }
    (n, examples)
}

/// `per_symbol` seeded synthetic bars of each of `symbols`, in feed order.
pub fn synthetic_bars(
    symbols: &[&str],
    per_symbol: u64,
    seed: u64,
) -> Result<Vec<tradestream_schemas::MarketData>> {
    let mut feed = tradestream_ingest::SyntheticFeed::new(tradestream_ingest::SyntheticConfig {
        symbols: symbols.iter().map(|s| s.to_string()).collect(),
        seed,
        bars_per_symbol: Some(per_symbol),
        ..Default::default()
    })?;
    let now = Utc::now();
    Ok(std::iter::from_fn(|| feed.next_at(now)).collect())
}

/// The rest of the first line of `stdout` starting with `prefix`, or `None` when the process
/// closed it first. The rest of `stdout` is drained on a thread, so the child never blocks on
/// a full pipe.
pub fn line_after(stdout: std::process::ChildStdout, prefix: &str) -> Result<Option<String>> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let rest = rest.trim().to_string();
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            return Ok(Some(rest));
        }
    }
}

/// Publishes `bars` through ingest's publisher at `per_second` records/s on a task of its own.
pub fn spawn_publisher(
    kafka: &Kafka,
    codec: &Codec,
    metrics: &tradestream_kafka::Metrics,
    bars: Vec<tradestream_schemas::MarketData>,
    per_second: f64,
) -> tokio::task::JoinHandle<
    Result<tradestream_ingest::PublishStats, tradestream_ingest::IngestError>,
> {
    let (kafka, codec, metrics) = (kafka.clone(), codec.clone(), metrics.clone());
    tokio::spawn(async move {
        tradestream_ingest::publish(
            &kafka,
            &codec,
            &metrics,
            bars.into_iter().map(Ok),
            tradestream_ingest::Pace::RecordsPerSecond(per_second),
            std::future::pending::<()>(),
            |_| {},
        )
        .await
    })
}

/// Sends signal `name` (`TERM`, `USR1`, ...) to `child`.
pub fn signal(child: &std::process::Child, name: &str) -> Result<()> {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()?
        .success();
    anyhow::ensure!(ok, "kill -{name} failed");
    Ok(())
}

/// Fails the test with every collected failure, one per line.
pub fn fail_on(failures: &[String]) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    bail!(
        "{} failure(s):\n - {}",
        failures.len(),
        failures.join("\n - ")
    )
}

/// A schema registry backed by `pool`, served in-process until the sender is fired or
/// dropped; returns its URL.
pub async fn serve_registry(
    pool: sqlx::PgPool,
) -> Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tradestream_registry::serve(
        listener,
        tradestream_registry::RegistryState::new(pool),
        async {
            let _ = stopped.await;
        },
    ));
    Ok((url, stop))
}
