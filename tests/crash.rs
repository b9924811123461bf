//! Crash harness (issue 4): the whole pipeline as separate OS processes — `tradestream broker`,
//! one shared `tradestream registry`, `tradestream run features|scorer|trading|sink`
//! and `tradestream ingest` publishing a seed-fixed synthetic feed — SIGKILLed at random
//! moments and restarted (ingest too, while it publishes: it resumes from what the topic
//! holds), then compared with clean runs over the same input.
//!
//! The harness runs the clean pipeline twice first (a second clean run shows the result does
//! not depend on timing), then the crash run. The trading core takes one market instant at a
//! time behind its barrier (see `tradestream_trading`), so every topic is a function of the
//! input. What it
//! asserts:
//!  (a) every topic — `market_data`, `features`, `trading_signals`, `anomalies`, `orders`,
//!      `fills` and `valuations` — holds the same set of (id → record)
//!      in every run;
//!  (b) on every topic no id carries two different records; every bar has exactly one
//!      features record; every signal and anomaly comes from a features record; every order
//!      traces to a signal (or its bracket parent), every fill to an order; every DLQ is empty;
//!      `market_data` holds no record twice (a restarted ingest skips what it published); the
//!      trading core valued the accounts up to the last instant; the run traded;
//!  (c) Postgres stores every record of every topic exactly once, and its positions, cash and
//!      portfolio value equal an independent recomputation from the fills topic and last closes,
//!      as does every portfolio snapshot (one per account and market instant, valued from the
//!      fills and closes up to it);
//!  (d) positions, cash, portfolio value and the portfolio snapshots are the same in every run,
//!      and so are the rows of `orders` (current state), `positions` and `accounts` (all but
//!      their wall-clock and last-change times).
//! It prints its figures (records per topic, kills per processor, restarts, times) and, for
//! anything that differs, the counts of missing / extra / conflicting ids and a few examples.
//!
//! Sizes (defaults keep `make test` to a couple of minutes; `scripts/crash.sh` runs the full
//! drill): TRADESTREAM_CRASH_RECORDS (5000 market-data records), TRADESTREAM_CRASH_KILLS (7),
//! TRADESTREAM_CRASH_SYMBOLS (5), TRADESTREAM_CRASH_PARTITIONS (3), TRADESTREAM_CRASH_RATE
//! (records/s published; 0 = as fast as possible; default 400), TRADESTREAM_CRASH_SEED (kill
//! schedule, default 1), TRADESTREAM_CRASH_CLEAN_RUNS (1 or 2, default 2),
//! TRADESTREAM_CRASH_DRAIN_SECS (how long the pipeline may take to drain after publishing,
//! default 300), TRADESTREAM_CRASH_KEEP_LOGS (keep each process's log directory).

mod common;

use anyhow::{Context, Result};
use common::{
    Book, Broker, Proc, Rec, Rng, Snapshot, books, check_books, check_snapshots, count,
    derived_tables, distinct, portfolio_snapshots, read_topic, run_ingest, run_stage, short,
    start_broker, start_registry, wait_drained,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::topics::STAGE_INPUTS;
use tradestream_schemas::{AnyRecord, Codec, OriginKind, Topic};

const STAGES: [&str; 4] = ["features", "scorer", "trading", "sink"];
const GROUP_PREFIX: &str = "tradestream";
/// Examples printed per kind of difference.
const EXAMPLES: usize = 3;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Settings {
    records: u64,
    kills: usize,
    symbols: Vec<String>,
    partitions: i32,
    rate: f64,
    seed: u64,
    clean_runs: usize,
}

impl Settings {
    fn from_env() -> Self {
        let n_symbols: usize = env_or("TRADESTREAM_CRASH_SYMBOLS", 5usize).clamp(1, 26);
        Self {
            records: env_or("TRADESTREAM_CRASH_RECORDS", 5_000),
            kills: env_or("TRADESTREAM_CRASH_KILLS", 7),
            symbols: (0..n_symbols)
                .map(|i| format!("CR{}", char::from(b'A' + i as u8)))
                .collect(),
            partitions: env_or("TRADESTREAM_CRASH_PARTITIONS", 3),
            rate: env_or("TRADESTREAM_CRASH_RATE", 400.0),
            seed: env_or("TRADESTREAM_CRASH_SEED", 1),
            clean_runs: env_or("TRADESTREAM_CRASH_CLEAN_RUNS", 2usize).clamp(1, 2),
        }
    }

    fn bars_per_symbol(&self) -> u64 {
        self.records.div_ceil(self.symbols.len() as u64)
    }
}

/// What one run left behind.
struct Outcome {
    label: String,
    topics: BTreeMap<Topic, Vec<Rec>>,
    dlq: BTreeMap<String, i64>,
    books: BTreeMap<String, Book>,
    /// Every portfolio snapshot, by account and time.
    snapshots: Vec<Snapshot>,
    /// Orders' current state, positions and accounts, row by row (see `derived_tables`).
    derived: BTreeMap<&'static str, Vec<String>>,
    /// Violations of (b) and (c) within the run.
    problems: Vec<String>,
    kills: BTreeMap<&'static str, usize>,
    secs: f64,
    ingest_secs: f64,
}

impl Outcome {
    fn recs(&self, topic: Topic) -> &[Rec] {
        self.topics
            .get(&topic)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "-- {}: {:.1} s (ingest {:.1} s); kills {} {:?}, restarts {}",
            self.label,
            self.secs,
            self.ingest_secs,
            self.kills.values().sum::<usize>(),
            self.kills,
            self.kills.values().sum::<usize>()
        );
        for topic in Topic::ALL {
            let recs = self.recs(topic);
            let d = distinct(recs);
            println!(
                "   {:<16} {:>7} records, {:>7} distinct, {:>5} repeated copies, {:>3} conflicting ids, dlq {}",
                topic.name(),
                recs.len(),
                d.by_id.len(),
                d.copies,
                d.conflicts.len(),
                self.dlq.get(&topic.dlq()).copied().unwrap_or(0)
            );
        }
        // What the router decided, so runs that differ can be told apart at a glance.
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for r in self.recs(Topic::Orders) {
            if let AnyRecord::Order(o) = &r.record {
                let key = match &o.reject_reason {
                    Some(reason) => format!(
                        "{:?} {}",
                        o.status,
                        reason.split(':').next().unwrap_or(reason)
                    ),
                    None => format!("{:?}", o.status),
                };
                *statuses.entry(key).or_default() += 1;
            }
        }
        println!("   order events by status: {statuses:?}");
        for (account, book) in &self.books {
            println!(
                "   account {account}: cash {}, total value {}, {} open positions",
                book.cash,
                book.total_value,
                book.positions.len()
            );
        }
        if self.problems.is_empty() {
            println!("   lineage, DLQs, Postgres storage and books: all consistent");
        }
        for p in &self.problems {
            println!("   PROBLEM {p}");
        }
    }
}

/// Differences between two runs' topic: ids only in `a`, only in `b`, and in both with
/// different records.
struct Diff {
    missing: Vec<String>,
    extra: Vec<String>,
    differing: Vec<(String, String, String)>,
}

impl Diff {
    fn of(a: &[Rec], b: &[Rec]) -> Self {
        let (a, b) = (distinct(a).by_id, distinct(b).by_id);
        let mut d = Diff {
            missing: Vec::new(),
            extra: Vec::new(),
            differing: Vec::new(),
        };
        for (id, ra) in &a {
            match b.get(id) {
                None => d.missing.push(id.to_string()),
                Some(rb) if rb.content != ra.content => {
                    d.differing
                        .push((id.to_string(), ra.content.clone(), rb.content.clone()))
                }
                Some(_) => {}
            }
        }
        d.extra = b
            .keys()
            .filter(|id| !a.contains_key(*id))
            .map(|id| id.to_string())
            .collect();
        d
    }

    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.differing.is_empty()
    }

    /// One summary line plus examples; `a_name` / `b_name` label the sides.
    fn describe(&self, topic: &str, a_name: &str, b_name: &str) -> String {
        let mut s = format!(
            "{topic}: {} ids missing from {b_name}, {} extra in {b_name}, {} with different records",
            self.missing.len(),
            self.extra.len(),
            self.differing.len()
        );
        for id in self.missing.iter().take(EXAMPLES) {
            s.push_str(&format!("\n      missing {id}"));
        }
        for id in self.extra.iter().take(EXAMPLES) {
            s.push_str(&format!("\n      extra   {id}"));
        }
        for (id, a, b) in self.differing.iter().take(EXAMPLES) {
            s.push_str(&format!(
                "\n      differs {id}\n        {a_name}: {}\n        {b_name}: {}",
                short(a),
                short(b)
            ));
        }
        s
    }
}

/// (b): within one run, conflicting ids, lineage and the DLQs.
fn lineage_problems(run: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    // The trading core processed every instant of the market data: it valued the accounts
    // it holds positions for up to the last one.
    let steps = run
        .recs(Topic::MarketData)
        .iter()
        .filter_map(|r| match &r.record {
            AnyRecord::MarketData(m) => Some(m.step),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let valued: BTreeSet<i64> = run
        .recs(Topic::Valuations)
        .iter()
        .filter_map(|r| match &r.record {
            AnyRecord::Valuation(v) => Some(v.step),
            _ => None,
        })
        .collect();
    if valued.last().copied() != Some(steps) || valued.first().is_some_and(|s| *s < 1) {
        problems.push(format!(
            "valuations: the trading core valued {} instants, the last {:?} of {steps}",
            valued.len(),
            valued.last()
        ));
    }
    if run.recs(Topic::Orders).is_empty() || run.recs(Topic::Fills).is_empty() {
        problems.push("the run traded nothing: no orders or no fills".into());
    }
    for topic in Topic::ALL {
        let d = distinct(run.recs(topic));
        if !d.conflicts.is_empty() {
            let mut p = format!(
                "{}: {} ids published with two different records",
                topic.name(),
                d.conflicts.len()
            );
            for (a, b) in d.conflicts.iter().take(EXAMPLES) {
                p.push_str(&format!(
                    "\n      {} at [{}]@{}: {}\n      and at [{}]@{}: {}",
                    a.id(),
                    a.partition,
                    a.offset,
                    short(&a.content),
                    b.partition,
                    b.offset,
                    short(&b.content)
                ));
            }
            problems.push(p);
        }
        // Only ingest writes market data, and a restarted ingest skips what is on the topic:
        // a second copy would be a different record (its ingest time) under the same id.
        if topic == Topic::MarketData && d.copies > 0 {
            problems.push(format!(
                "market_data: {} records published twice by ingest",
                d.copies
            ));
        }
        let dead = run.dlq.get(&topic.dlq()).copied().unwrap_or(0);
        if dead > 0 {
            problems.push(format!("{}: {dead} records dead-lettered", topic.dlq()));
        }
    }
    let ids = |t: Topic| -> BTreeSet<String> {
        distinct(run.recs(t))
            .by_id
            .keys()
            .map(|s| s.to_string())
            .collect()
    };
    let bars = ids(Topic::MarketData);
    let features = ids(Topic::Features);
    let signals = ids(Topic::TradingSignals);
    let orders: BTreeSet<String> = run
        .recs(Topic::Orders)
        .iter()
        .filter_map(|r| match &r.record {
            AnyRecord::Order(o) => Some(o.order_id.clone()),
            _ => None,
        })
        .collect();

    let mut per_bar: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut orphans: Vec<String> = Vec::new();
    for r in distinct(run.recs(Topic::Features)).by_id.values() {
        if let AnyRecord::Features(f) = &r.record {
            if !bars.contains(&f.source_id) {
                orphans.push(format!(
                    "features {} from unknown bar {}",
                    f.record_id, f.source_id
                ));
            }
            per_bar
                .entry(f.source_id.clone())
                .or_default()
                .insert(f.record_id.clone());
        }
    }
    let without: Vec<&String> = bars.iter().filter(|b| !per_bar.contains_key(*b)).collect();
    let twice: Vec<(&String, &BTreeSet<String>)> =
        per_bar.iter().filter(|(_, f)| f.len() > 1).collect();
    if !without.is_empty() {
        problems.push(format!(
            "features: {} of {} bars have no features record, e.g. {:?}",
            without.len(),
            bars.len(),
            &without[..without.len().min(EXAMPLES)]
        ));
    }
    if !twice.is_empty() {
        problems.push(format!(
            "features: {} bars have more than one features record, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(EXAMPLES)]
        ));
    }
    for topic in [Topic::TradingSignals, Topic::Anomalies] {
        for r in distinct(run.recs(topic)).by_id.values() {
            let source = match &r.record {
                AnyRecord::Signal(s) => &s.source_id,
                AnyRecord::Anomaly(a) => &a.source_id,
                _ => continue,
            };
            if !features.contains(source) {
                orphans.push(format!(
                    "{} {} from unknown features {source}",
                    topic.name(),
                    r.id()
                ));
            }
        }
    }
    for r in distinct(run.recs(Topic::Orders)).by_id.values() {
        if let AnyRecord::Order(o) = &r.record {
            let ok = match o.origin_kind {
                OriginKind::Signal => signals.contains(&o.origin_id),
                OriginKind::Bracket => o
                    .parent_order_id
                    .as_ref()
                    .is_some_and(|p| orders.contains(p)),
                OriginKind::Manual => true,
            };
            if !ok {
                orphans.push(format!(
                    "order event {} without its cause ({:?} {} parent {:?})",
                    o.event_id, o.origin_kind, o.origin_id, o.parent_order_id
                ));
            }
        }
    }
    for r in distinct(run.recs(Topic::Fills)).by_id.values() {
        if let AnyRecord::Fill(f) = &r.record
            && !orders.contains(&f.order_id)
        {
            orphans.push(format!(
                "fill {} of unknown order {}",
                f.fill_id, f.order_id
            ));
        }
    }
    if !orphans.is_empty() {
        problems.push(format!(
            "lineage: {} records without their cause, e.g. {:?}",
            orphans.len(),
            &orphans[..orphans.len().min(EXAMPLES)]
        ));
    }
    problems
}

/// (c): every distinct record of every topic stored exactly once in Postgres.
async fn storage_problems(pool: &sqlx::PgPool, run: &Outcome) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (topic, table, column) in [
        (Topic::MarketData, "market_data", "record_id"),
        (Topic::Features, "features", "record_id"),
        (Topic::TradingSignals, "signals", "signal_id"),
        (Topic::Anomalies, "anomalies", "anomaly_id"),
        (Topic::Orders, "order_events", "event_id"),
        (Topic::Fills, "fills", "fill_id"),
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {column} FROM {table}"))
            .fetch_all(pool)
            .await?;
        let stored: BTreeSet<&str> = rows.iter().map(String::as_str).collect();
        let on_topic: BTreeSet<&str> = distinct(run.recs(topic)).by_id.keys().copied().collect();
        let doubled = rows.len() - stored.len();
        let lost: Vec<&&str> = on_topic.difference(&stored).collect();
        let unknown: Vec<&&str> = stored.difference(&on_topic).collect();
        if doubled > 0 || !lost.is_empty() || !unknown.is_empty() {
            problems.push(format!(
                "postgres {table}: {} rows for {} distinct records on {}: {doubled} stored twice, {} not stored (e.g. {:?}), {} not on the topic (e.g. {:?})",
                rows.len(),
                on_topic.len(),
                topic.name(),
                lost.len(),
                &lost[..lost.len().min(EXAMPLES)],
                unknown.len(),
                &unknown[..unknown.len().min(EXAMPLES)]
            ));
        }
    }
    let order_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await?;
    let order_ids: BTreeSet<&str> = run
        .recs(Topic::Orders)
        .iter()
        .filter_map(|r| match &r.record {
            AnyRecord::Order(o) => Some(o.order_id.as_str()),
            _ => None,
        })
        .collect();
    if order_rows != order_ids.len() as i64 {
        problems.push(format!(
            "postgres orders: {order_rows} rows for {} orders on the topic",
            order_ids.len()
        ));
    }
    problems.extend(
        check_books(pool, run.recs(Topic::Fills), run.recs(Topic::MarketData))
            .await?
            .into_iter()
            .map(|p| format!("books: {p}")),
    );
    problems.extend(
        check_snapshots(
            pool,
            &run.snapshots,
            run.recs(Topic::Fills),
            run.recs(Topic::MarketData),
        )
        .await?
        .into_iter()
        .map(|p| format!("snapshots: {p}")),
    );
    Ok(problems)
}

fn spawn_stage(
    stage: &str,
    broker: &Broker,
    registry: &str,
    db: &TestDatabase,
    dir: &Path,
) -> Result<Proc> {
    let url = (stage == "sink").then(|| db.url());
    run_stage(stage, "", broker, registry, url, GROUP_PREFIX, dir)
}

/// One run of the whole pipeline on a fresh broker and database, with `kills` SIGKILLs.
async fn run_once(
    label: &str,
    s: &Settings,
    registry: &str,
    kills: usize,
    dir: &Path,
) -> Result<Outcome> {
    let dir = dir.join(label);
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();
    let db = TestDatabase::new().await?;
    let mut broker = start_broker(s.partitions, GROUP_PREFIX, &dir)?;
    let mut procs = STAGES
        .iter()
        .map(|stage| spawn_stage(stage, &broker, registry, &db, &dir))
        .collect::<Result<Vec<_>>>()?;
    let start_ingest = |broker: &common::Broker| {
        run_ingest(
            broker,
            registry,
            &s.symbols,
            s.bars_per_symbol(),
            42,
            s.rate,
            &dir,
        )
    };
    let mut ingest = start_ingest(&broker)?;

    // Kills spread over the publishing time (at least 1.5 s apart on average), at random
    // moments, of random processors, each restarted after a random pause.
    let mut rng = Rng::new(s.seed ^ label.len() as u64);
    let publish_secs = if s.rate > 0.0 {
        s.records as f64 / s.rate
    } else {
        5.0
    };
    let gap_ms = ((publish_secs.max(kills as f64 * 1.5) * 1000.0) / (kills as f64 + 1.0)) as u64;
    let mut kill_counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut ingest_secs = None;
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(gap_ms / 2, gap_ms * 3 / 2)).await;
        for p in procs.iter_mut() {
            if let Some(status) = p.exited()? {
                anyhow::bail!(
                    "{label}: {} exited by itself with {status}:\n{}",
                    p.name,
                    p.log_tail(30)
                );
            }
        }
        if ingest_secs.is_none() && ingest.exited()?.is_some() {
            ingest_secs = Some(started.elapsed().as_secs_f64());
        }
        // ingest is a candidate while it still publishes: a restarted ingest resumes from
        // what the topic holds.
        let candidates = STAGES.len() + usize::from(ingest_secs.is_none());
        let i = rng.below(candidates as u64) as usize;
        if i == STAGES.len() {
            ingest.kill9()?;
            *kill_counts.entry("ingest").or_default() += 1;
            tokio::time::sleep(rng.millis(0, 1_000)).await;
            ingest = start_ingest(&broker)?;
            continue;
        }
        procs[i].kill9()?;
        *kill_counts.entry(STAGES[i]).or_default() += 1;
        tokio::time::sleep(rng.millis(0, 1_000)).await;
        procs[i] = spawn_stage(STAGES[i], &broker, registry, &db, &dir)?;
    }
    let status = ingest.wait(Duration::from_secs(900)).await?;
    anyhow::ensure!(
        status.success(),
        "{label}: ingest exited with {status}:\n{}",
        ingest.log_tail(20)
    );
    let ingest_secs = ingest_secs.unwrap_or_else(|| started.elapsed().as_secs_f64());
    wait_drained(
        &broker.kafka,
        GROUP_PREFIX,
        &STAGE_INPUTS,
        s.partitions,
        &mut procs,
        Duration::from_secs(env_or("TRADESTREAM_CRASH_DRAIN_SECS", 300)),
    )
    .await
    .with_context(|| format!("{label}: waiting for the pipeline to drain"))?;
    let mut problems = Vec::new();
    for p in procs.iter_mut() {
        let status = p.terminate(Duration::from_secs(40)).await?;
        if !status.success() {
            problems.push(format!("{} exited with {status} on SIGTERM", p.name));
        }
    }
    let secs = started.elapsed().as_secs_f64();

    let codec = Codec::new(registry)?;
    let mut topics = BTreeMap::new();
    let mut dlq = BTreeMap::new();
    for topic in Topic::ALL {
        topics.insert(
            topic,
            read_topic(&broker.kafka, &codec, topic, s.partitions).await?,
        );
        dlq.insert(topic.dlq(), count(&broker.kafka, &topic.dlq(), 1).await?);
    }
    let mut outcome = Outcome {
        label: label.to_string(),
        topics,
        dlq,
        books: books(db.pool()).await?,
        snapshots: portfolio_snapshots(db.pool()).await?,
        derived: derived_tables(db.pool()).await?,
        problems,
        kills: kill_counts,
        secs,
        ingest_secs,
    };
    let mut found = lineage_problems(&outcome);
    found.extend(storage_problems(db.pool(), &outcome).await?);
    outcome.problems.extend(found);
    let _ = broker.proc.terminate(Duration::from_secs(30)).await;
    db.cleanup().await;
    Ok(outcome)
}

/// The run's directory (a plain path, so it can outlive a kept temporary directory).
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_processors_lose_and_duplicate_nothing() -> Result<()> {
    let s = Settings::from_env();
    let work = tempfile::Builder::new()
        .prefix("tradestream-crash-")
        .tempdir()?;
    // Kept (even when the test fails) when asked for, to read every process's log.
    let keep = std::env::var_os("TRADESTREAM_CRASH_KEEP_LOGS").is_some();
    println!(
        "crash harness: {} market-data records ({} symbols × {} bars), {} partitions, publishing at {}, {} kills (seed {}), {} clean run(s); logs in {}",
        s.bars_per_symbol() * s.symbols.len() as u64,
        s.symbols.len(),
        s.bars_per_symbol(),
        s.partitions,
        if s.rate > 0.0 {
            format!("{} records/s", s.rate)
        } else {
            "full speed".into()
        },
        s.kills,
        s.seed,
        s.clean_runs,
        work.path().display()
    );
    let work_dir = work.path().to_path_buf();
    let _work = if keep {
        let _ = work.keep();
        None
    } else {
        Some(work)
    };
    let work = WorkDir(work_dir);
    let registry_db = TestDatabase::new().await?;
    let (mut registry_proc, registry) = start_registry(registry_db.url(), work.path())?;

    let mut runs = Vec::new();
    for i in 1..=s.clean_runs {
        let run = run_once(&format!("clean-{i}"), &s, &registry, 0, work.path()).await?;
        run.print();
        runs.push(run);
    }
    let crash = run_once("crash", &s, &registry, s.kills, work.path()).await?;
    crash.print();
    let clean = &runs[0];

    let mut failures: Vec<String> = Vec::new();
    for run in runs.iter().chain(std::iter::once(&crash)) {
        for p in &run.problems {
            failures.push(format!("{}: {p}", run.label));
        }
    }

    // The trading core makes every topic, valuations included, and the books a function of the input:
    // a second clean run and the crash run must match the first exactly.
    for other in runs.iter().skip(1).chain(std::iter::once(&crash)) {
        println!("== {} vs {}", other.label, clean.label);
        for topic in Topic::ALL {
            let d = Diff::of(clean.recs(topic), other.recs(topic));
            if d.is_empty() {
                println!("   {}: identical", topic.name());
            } else {
                let text = d.describe(topic.name(), &clean.label, &other.label);
                println!("   {text}");
                failures.push(format!("{} vs {}: {text}", other.label, clean.label));
            }
        }
        let books_same = clean.books == other.books;
        println!(
            "   books (positions, cash, portfolio value): {}",
            if books_same { "identical" } else { "DIFFERENT" }
        );
        if !books_same {
            failures.push(format!(
                "(d) books of {} differ from {}: {:?} against {:?}",
                other.label, clean.label, other.books, clean.books
            ));
        }
        let first_difference = clean
            .snapshots
            .iter()
            .zip(&other.snapshots)
            .find(|(a, b)| a != b);
        let snapshots_same =
            clean.snapshots.len() == other.snapshots.len() && first_difference.is_none();
        println!(
            "   portfolio snapshots ({}): {}",
            clean.snapshots.len(),
            if snapshots_same {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
        for (table, rows) in &clean.derived {
            let theirs = other
                .derived
                .get(table)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let first = rows.iter().zip(theirs).find(|(a, b)| a != b);
            let same = rows.len() == theirs.len() && first.is_none();
            println!(
                "   postgres {table} ({} rows): {}",
                rows.len(),
                if same { "identical" } else { "DIFFERENT" }
            );
            if !same {
                failures.push(format!(
                    "(d) postgres {table} of {} differs from {}: {} against {} rows, first difference {:?}",
                    other.label,
                    clean.label,
                    theirs.len(),
                    rows.len(),
                    first
                ));
            }
        }
        if !snapshots_same {
            failures.push(format!(
                "(d) portfolio snapshots of {} differ from {}: {} against {} rows, first difference {:?}",
                other.label,
                clean.label,
                other.snapshots.len(),
                clean.snapshots.len(),
                first_difference
            ));
        }
    }
    println!(
        "== {} kills {:?} over {:.1} s; {} failure(s)",
        crash.kills.values().sum::<usize>(),
        crash.kills,
        crash.secs,
        failures.len()
    );

    let _ = registry_proc.terminate(Duration::from_secs(30)).await;
    registry_db.cleanup().await;

    common::fail_on(&failures)
}
