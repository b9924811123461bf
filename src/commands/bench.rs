//! `tradestream bench`: the speed figures of docs/benchmarks.md, measured on the real code path
//! (mock broker, Confluent-framed Avro through the schema registry, the generic runner, the
//! sink into Postgres) rather than on the cores alone (`cargo bench` covers those).
//!
//! Three scenarios:
//! - `features`: the features processor alone (`--stream-tasks` consumer tasks); market data
//!   is pre-encoded and fed while the runner consumes; throughput = records / (last output
//!   acknowledged − first input read), plus the process's CPU per record over that span (the
//!   steadier figure on a shared machine).
//! - `pipeline`: every stage (features, scorer, trading, sink) in this process; the
//!   clock stops when every stage has consumed everything its inputs received.
//! - `latency`: every stage at a fixed rate (1k records/s by default); for each fill, the time
//!   from producing the bar it traded on to receiving the fill from Kafka.
//!
//! The mock broker keeps only the newest `--mock-partition-max-mb` of each partition, so the
//! feeder never lets any stage fall more than `--window` records behind on any topic it reads
//! (a `window / partitions` share on `orders` and `fills`, which are keyed by account and so
//! sit on one partition), and the pipeline scenario fails if anything was lost anyway:
//! Postgres must hold every record each topic received.

use super::demo::Progress;
use super::pipeline::{
    PipelineConfig, Stack, Stage, StageContext, ensure_accounts, join_all, shutdown_channel,
    spawn_stage,
};
use crate::args::{BenchArgs, BenchScenario};
use anyhow::{Context, bail};
use chrono::{DateTime, TimeZone, Utc};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tradestream_ingest::{SyntheticConfig, SyntheticFeed};
use tradestream_kafka::Metrics;
use tradestream_schemas::topics::STAGE_INPUTS;
use tradestream_schemas::{AnyRecord, Fill, Topic};

/// One pre-encoded market-data record.
struct Encoded {
    record_id: String,
    key: String,
    value: Vec<u8>,
    symbol: String,
    event_time: DateTime<Utc>,
}

/// Runs the scenario and prints its figures (JSON with `--json`).
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; benchmark figures come from `cargo build --release` (make bench)"
        );
    }
    let kafka = args.kafka.config()?;
    let mut pg = args.pg.config()?;
    if pg.database_url.is_none() && pg.data_dir.is_none() {
        // A fresh private database each run: the figures include an empty database's
        // insert speed, and ids from an earlier run cannot collide.
        let dir = std::path::PathBuf::from(".tradestream/bench-postgres");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| {
                format!("removing the previous bench database {}", dir.display())
            })?;
        }
        pg.data_dir = Some(dir);
    }
    let stack = Stack::start(
        kafka,
        pg,
        args.registry.schema_registry_url.clone(),
        args.scenario != BenchScenario::Features,
    )
    .await?;
    let result = match args.scenario {
        BenchScenario::Features => features(&stack, &args).await,
        BenchScenario::Pipeline => pipeline(&stack, &args).await,
        BenchScenario::Latency => latency(&stack, &args).await,
    };
    stack.stop().await?;
    let figures = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        for (k, v) in figures.as_object().into_iter().flatten() {
            println!("{k:<28} {v}");
        }
    }
    Ok(())
}

/// `symbols` synthetic symbols, `records` bars in all (round robin, one-minute bars).
async fn encode_bars(
    stack: &Stack,
    records: u64,
    symbols: usize,
    seed: u64,
) -> anyhow::Result<Vec<Encoded>> {
    // A per-run tag keeps ids unique in a database that holds earlier runs.
    let tag = std::process::id() % 10_000;
    let names: Vec<String> = (0..symbols).map(|i| format!("B{tag}_{i:03}")).collect();
    let per_symbol = records.div_ceil(symbols as u64);
    let start = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .context("start time")?;
    let mut feed = SyntheticFeed::new(SyntheticConfig {
        symbols: names,
        seed,
        start,
        interval_secs: 60,
        bars_per_symbol: Some(per_symbol),
        ..SyntheticConfig::default()
    })?;
    let mut bars = Vec::with_capacity(records as usize);
    while (bars.len() as u64) < records {
        let Some(bar) = feed.next_at(start) else {
            break;
        };
        bars.push(bar);
    }
    tradestream_ingest::number_steps(bars.iter_mut());
    let mut out = Vec::with_capacity(bars.len());
    for bar in bars {
        let value = stack.codec.encode(&bar).await?;
        out.push(Encoded {
            record_id: bar.record_id.clone(),
            key: bar.symbol.as_str().to_string(),
            value,
            symbol: bar.symbol.as_str().to_string(),
            event_time: bar.event_time,
        });
    }
    Ok(out)
}

/// Records each stage has read from `topic`, per the metrics.
fn consumed(metrics: &Metrics, stage: &str, topic: Topic) -> u64 {
    metrics
        .records_in
        .with_label_values(&[stage, topic.name()])
        .get()
}

fn produced(metrics: &Metrics, stage: &str, topic: Topic) -> u64 {
    metrics
        .records_out
        .with_label_values(&[stage, topic.name()])
        .get()
}

/// The feeder's acknowledgements, counted by the producer's delivery callback.
#[derive(Default)]
struct Acks {
    done: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// Delivery callback of the feeder: a count, not a future per record, because the feeder
/// shares the cores with what it measures.
struct FeedContext(Arc<Acks>);

impl ClientContext for FeedContext {}

impl ProducerContext for FeedContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut first) = self.0.first_error.lock()
        {
            first.get_or_insert_with(|| e.to_string());
        }
        self.0.done.fetch_add(1, Ordering::Release);
    }
}

/// The bench's market-data producer (the connector's producer settings).
struct Feeder {
    producer: ThreadedProducer<FeedContext>,
    acks: Arc<Acks>,
}

impl Feeder {
    fn new(stack: &Stack) -> anyhow::Result<Self> {
        let acks = Arc::new(Acks::default());
        let producer = stack
            .kafka
            .producer_config()
            .create_with_context(FeedContext(acks.clone()))
            .context("creating the feeder's producer")?;
        Ok(Self { producer, acks })
    }

    /// Waits until at most `outstanding` records await acknowledgement; fails on the first
    /// delivery error.
    async fn settle(&self, sent: u64, outstanding: u64) -> anyhow::Result<()> {
        loop {
            if let Ok(first) = self.acks.first_error.lock()
                && let Some(e) = first.as_ref()
            {
                bail!("delivering market data: {e}");
            }
            if sent.saturating_sub(self.acks.done.load(Ordering::Acquire)) <= outstanding {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Produces `items` onto `market_data`, pausing while `behind(records fed)` is at least 1
/// (some reader is a full window behind), optionally at a fixed rate. Returns when every
/// record is acknowledged, with the instant each was handed to the producer.
async fn feed(
    feeder: &Feeder,
    items: &[Encoded],
    rate: Option<f64>,
    behind: impl Fn(u64) -> f64,
) -> anyhow::Result<Vec<Instant>> {
    /// Records the feeder lets await acknowledgement.
    const OUTSTANDING: u64 = 8192;
    let topic = Topic::MarketData.name();
    let started = Instant::now();
    let mut sent = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        } else {
            // A reader that makes no progress for this long lost records to the mock
            // broker's retention (its backlog can then never close): fail, do not hang.
            const STALLED: Duration = Duration::from_secs(60);
            let mut last = (f64::NAN, Instant::now());
            loop {
                let windows = behind(i as u64);
                if windows < 1.0 {
                    break;
                }
                if windows != last.0 {
                    last = (windows, Instant::now());
                } else if last.1.elapsed() > STALLED {
                    bail!(
                        "a reader made no progress for {STALLED:?} at {fed} records fed \
                         (records lost to the mock broker's per-partition retention? try a \
                         smaller --window); run with RUST_LOG=tradestream=debug to see which",
                        fed = i
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let mut record = BaseRecord::to(topic).key(&item.key).payload(&item.value);
        loop {
            match feeder.producer.send(record) {
                Ok(()) => break,
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => bail!("producing market data: {e}"),
            }
        }
        sent.push(Instant::now());
        if i as u64 % 1024 == 1023 {
            feeder.settle(i as u64 + 1, OUTSTANDING).await?;
        }
    }
    feeder.settle(items.len() as u64, 0).await?;
    Ok(sent)
}

/// Polls `done` every millisecond until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn context(stack: &Stack, metrics: &Metrics, config: PipelineConfig) -> StageContext {
    StageContext {
        kafka: stack.kafka.clone(),
        codec: stack.codec.clone(),
        metrics: metrics.clone(),
        pool: stack.pool(),
        config,
        group_prefix: format!("bench-{}", std::process::id()),
    }
}

fn dead_lettered(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("tradestream_records_dead_lettered_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn features(stack: &Stack, args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let items = encode_bars(stack, args.records, args.symbols, args.seed).await?;
    let n = items.len() as u64;
    let bytes: usize = items.iter().map(|e| e.value.len()).sum();
    let metrics = Metrics::new();
    let ctx = context(stack, &metrics, PipelineConfig::load(None)?);
    let (stop, stopped) = shutdown_channel();
    let mut tasks = tokio::task::JoinSet::new();
    spawn_stage(&mut tasks, &ctx, Stage::Features, stopped)?;
    let feeder = Feeder::new(stack)?;
    let window = args.window.max(1);
    // Looked up once: the feeder asks before every record.
    let read = metrics
        .records_in
        .with_label_values(&["features", Topic::MarketData.name()]);
    let feeding = feed(&feeder, &items, None, move |fed| {
        fed.saturating_sub(read.get()) as f64 / window as f64
    });
    let m = metrics.clone();
    let clock = async move {
        let first = wait_until(Duration::from_secs(120), || {
            consumed(&m, "features", Topic::MarketData) > 0
        })
        .await?;
        let cpu_first = process_cpu_seconds();
        let last = wait_until(Duration::from_secs(600), || {
            produced(&m, "features", Topic::Features) >= n
        })
        .await?;
        let cpu = process_cpu_seconds().zip(cpu_first).map(|(b, a)| b - a);
        anyhow::Ok((last - first, cpu))
    };
    let (sent, (elapsed, cpu)) = tokio::try_join!(feeding, clock)?;
    let _ = stop.send(true);
    join_all(tasks, &stop).await?;
    let secs = elapsed.as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "features",
        "records": n,
        "symbols": args.symbols,
        "partitions": stack.kafka.config().partitions,
        "avg_input_bytes": bytes as u64 / n.max(1),
        "produced": sent.len(),
        "features_out": produced(&metrics, "features", Topic::Features),
        "dead_lettered": dead_lettered(&metrics),
        "seconds": round(secs),
        "records_per_second": (n as f64 / secs).round(),
        // CPU of the whole process (feeder, broker, processor) over the measured phase:
        // steadier than the rate on a shared machine.
        "cpu_seconds": cpu.map(round),
        "cpu_microseconds_per_record": cpu.map(|c| round(c * 1e6 / n.max(1) as f64)),
    }))
}

/// User + system CPU seconds of this process so far (every thread), from `/proc/self/stat`;
/// `None` where that is not available.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // The kernel reports clock ticks; USER_HZ is 100 on every Linux platform we build for.
    Some((utime + stime) / 100.0)
}

/// Records produced onto `topic` by this process (the feeder's market data excluded).
fn produced_onto(metrics: &Metrics, topic: Topic) -> u64 {
    Stage::ALL
        .iter()
        .map(|s| produced(metrics, s.name(), topic))
        .sum()
}

/// How far the furthest-behind reader is, in windows, as a function of the records fed: for
/// each stage and topic it reads, records on the topic it has not consumed yet over the
/// topic's allowance (`window`, or `window / partitions` for the account-keyed topics whose
/// records share one partition). The feeder asks before every record, so the counters are
/// looked up once here rather than by label on every call.
fn backlog_meter(metrics: &Metrics, window: u64, partitions: i32) -> impl Fn(u64) -> f64 + use<> {
    let per_partition = window / u64::try_from(partitions.max(1)).unwrap_or(1);
    let readers: Vec<_> = STAGE_INPUTS
        .iter()
        .flat_map(|(stage, topics)| topics.iter().map(move |topic| (*stage, *topic)))
        .map(|(stage, topic)| {
            let consumed = metrics.records_in.with_label_values(&[stage, topic.name()]);
            // Market data comes from the feeder itself; the rest from the stages.
            let producers: Vec<_> = if topic == Topic::MarketData {
                Vec::new()
            } else {
                Stage::ALL
                    .iter()
                    .map(|s| {
                        metrics
                            .records_out
                            .with_label_values(&[s.name(), topic.name()])
                    })
                    .collect()
            };
            let allowance = match topic.key_field() {
                tradestream_schemas::KeyField::Account => per_partition,
                _ => window,
            };
            (stage, topic, consumed, producers, allowance.max(1))
        })
        .collect();
    move |fed| {
        let mut worst: f64 = 0.0;
        for (stage, topic, consumed, producers, allowance) in &readers {
            let on_topic = if *topic == Topic::MarketData {
                fed
            } else {
                producers.iter().map(|c| c.get()).sum()
            };
            let backlog = on_topic.saturating_sub(consumed.get());
            let windows = backlog as f64 / *allowance as f64;
            if windows >= 1.0 {
                tracing::debug!(stage, %topic, backlog, allowance, "reader a window behind");
            }
            worst = worst.max(windows);
        }
        worst
    }
}

/// Fails when Postgres holds fewer records of a topic than the topic received: the mock
/// broker dropped some before a reader got to them (or a stage lost them).
async fn check_nothing_lost(
    pool: &sqlx::PgPool,
    metrics: &Metrics,
    market_data: u64,
) -> anyhow::Result<()> {
    let expected = [
        ("market_data", market_data),
        ("features", produced_onto(metrics, Topic::Features)),
        ("signals", produced_onto(metrics, Topic::TradingSignals)),
        ("anomalies", produced_onto(metrics, Topic::Anomalies)),
        ("order_events", produced_onto(metrics, Topic::Orders)),
        ("fills", produced_onto(metrics, Topic::Fills)),
    ];
    let mut lost = Vec::new();
    for (table, want) in expected {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await?;
        if u64::try_from(rows).unwrap_or(0) != want {
            lost.push(format!("{table}: {rows} rows for {want} records"));
        }
    }
    if !lost.is_empty() {
        bail!(
            "records were lost (a reader fell behind the mock broker's per-partition \
             retention? try a smaller --window): {}",
            lost.join("; ")
        );
    }
    Ok(())
}

/// Waits until every stage's group has committed up to the end of every topic it reads
/// (checked every 20 ms: committed offsets, not metrics, so the sink counts too).
async fn drained(progress: &Progress, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if progress.caught_up(&[])? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the stages did not drain within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Started = (
    tokio::task::JoinSet<anyhow::Result<(Stage, String)>>,
    tokio::sync::watch::Sender<bool>,
    Progress,
);

async fn start_all(stack: &Stack, metrics: &Metrics) -> anyhow::Result<Started> {
    let config = PipelineConfig::load(None)?;
    let pool = stack.pool().context("the pipeline bench needs Postgres")?;
    ensure_accounts(&pool, &config.router).await?;
    let ctx = context(stack, metrics, config);
    let (stop, stopped) = shutdown_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for stage in Stage::ALL {
        spawn_stage(&mut tasks, &ctx, stage, stopped.clone())?;
    }
    let progress = Progress::new(&stack.kafka, &ctx.group_prefix)?;
    Ok((tasks, stop, progress))
}

fn topic_counts(metrics: &Metrics, n: u64) -> serde_json::Value {
    let mut counts = BTreeMap::new();
    counts.insert(Topic::MarketData.name(), n);
    for t in [
        Topic::Features,
        Topic::TradingSignals,
        Topic::Anomalies,
        Topic::Orders,
        Topic::Fills,
    ] {
        counts.insert(t.name(), produced_onto(metrics, t));
    }
    serde_json::json!(counts)
}

async fn pipeline(stack: &Stack, args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let items = encode_bars(stack, args.records, args.symbols, args.seed).await?;
    let n = items.len() as u64;
    let metrics = Metrics::new();
    let (tasks, stop, progress) = start_all(stack, &metrics).await?;
    let feeder = Feeder::new(stack)?;
    let feeding = feed(
        &feeder,
        &items,
        None,
        backlog_meter(&metrics, args.window, stack.kafka.config().partitions),
    );
    let m = metrics.clone();
    let clock = async move {
        let first = wait_until(Duration::from_secs(120), || {
            consumed(&m, "features", Topic::MarketData) > 0
        })
        .await?;
        anyhow::Ok(first)
    };
    let (_sent, first) = tokio::try_join!(feeding, clock)?;
    let last = drained(&progress, Duration::from_secs(1800)).await?;
    let elapsed = last - first;
    let _ = stop.send(true);
    join_all(tasks, &stop).await?;
    let pool = stack.pool().context("Postgres")?;
    check_nothing_lost(&pool, &metrics, n).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM market_data")
        .fetch_one(&pool)
        .await?;
    let secs = elapsed.as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "pipeline",
        "records": n,
        "symbols": args.symbols,
        "partitions": stack.kafka.config().partitions,
        "topics": topic_counts(&metrics, n),
        "market_data_rows": rows,
        "dead_lettered": dead_lettered(&metrics),
        "seconds": round(secs),
        "records_per_second": (n as f64 / secs).round(),
    }))
}

async fn latency(stack: &Stack, args: &BenchArgs) -> anyhow::Result<serde_json::Value> {
    let items = encode_bars(stack, args.records, args.symbols, args.seed).await?;
    let n = items.len() as u64;
    let metrics = Metrics::new();
    let (tasks, stop, progress) = start_all(stack, &metrics).await?;
    // Fills are read as they come, by a consumer of our own, timed on arrival.
    let fills: StreamConsumer = stack
        .kafka
        .consumer(&format!("bench-latency-{}", std::process::id()))?;
    fills.subscribe(&[Topic::Fills.name()])?;
    let arrivals: Arc<Mutex<Vec<(Fill, Instant, i64)>>> = Arc::default();
    let sink = arrivals.clone();
    let codec = stack.codec.clone();
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let reader = tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = done_rx.wait_for(|d| *d) => return anyhow::Ok(()),
                msg = fills.recv() => msg?,
            };
            let at = Instant::now();
            let wall = Utc::now().timestamp_millis();
            if let Some(bytes) = msg.payload()
                && let Ok(AnyRecord::Fill(f)) = codec.decode_any(Topic::Fills, bytes).await
            {
                sink.lock().await.push((f, at, wall));
            }
        }
    });
    // Let every consumer group join and get its partitions before the clock matters.
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let feeder = Feeder::new(stack)?;
    let sent = feed(&feeder, &items, Some(args.rate), |_| 0.0).await?;
    drained(&progress, Duration::from_secs(300)).await?;
    // The fills of the last bars need the consumer to see them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = done_tx.send(true);
    reader.await??;
    let _ = stop.send(true);
    join_all(tasks, &stop).await?;
    // Two clocks per fill: from the bar whose signal made the order (the whole chain:
    // features → scorer → trading core, waiting for the symbol's next bar) and from the
    // bar the fill traded on (the venue's reaction).
    let by_id: HashMap<&str, Instant> = items
        .iter()
        .zip(&sent)
        .map(|(e, t)| (e.record_id.as_str(), *t))
        .collect();
    let by_bar: HashMap<(&str, DateTime<Utc>), Instant> = items
        .iter()
        .zip(&sent)
        .map(|(e, t)| ((e.symbol.as_str(), e.event_time), *t))
        .collect();
    let arrivals = arrivals.lock().await;
    let mut chain: Vec<u128> = Vec::new();
    let mut slowest: Vec<(u128, &str, &Fill, i64)> = Vec::new();
    let mut venue: Vec<u128> = Vec::new();
    for (f, at, wall) in arrivals.iter() {
        if let Some(bar) = by_bar.get(&(f.symbol.as_str(), f.fill_time)) {
            venue.push(at.saturating_duration_since(*bar).as_micros());
        }
        // order:signal:features:<market_data record id>[:sl|:tp]
        let cause = f
            .order_id
            .strip_prefix("order:signal:features:")
            .map(|r| r.trim_end_matches(":sl").trim_end_matches(":tp"));
        if let Some((cause, bar)) = cause.and_then(|r| Some((r, by_id.get(r)?)))
            && !f.order_id.ends_with(":sl")
            && !f.order_id.ends_with(":tp")
        {
            let micros = at.saturating_duration_since(*bar).as_micros();
            chain.push(micros);
            slowest.push((micros, cause, f, *wall));
        }
    }
    slowest.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    slowest.truncate(SLOWEST);
    let hops = hop_breakdown(stack, &slowest).await?;
    chain.sort_unstable();
    venue.sort_unstable();
    let pct = |v: &[u128], p: f64| -> serde_json::Value {
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map_or(serde_json::Value::Null, |u| {
            round(*u as f64 / 1000.0).into()
        })
    };
    Ok(serde_json::json!({
        "scenario": "latency",
        "records": n,
        "symbols": args.symbols,
        "rate_per_second": args.rate,
        "topics": topic_counts(&metrics, n),
        "linger_ms": stack.kafka.config().linger_ms,
        "entry_fills_timed": chain.len(),
        "signal_bar_to_fill_p50_ms": pct(&chain, 0.50),
        "signal_bar_to_fill_p95_ms": pct(&chain, 0.95),
        "signal_bar_to_fill_p99_ms": pct(&chain, 0.99),
        "signal_bar_to_fill_max_ms": pct(&chain, 1.0),
        "fills_timed": venue.len(),
        "traded_bar_to_fill_p50_ms": pct(&venue, 0.50),
        "traded_bar_to_fill_p99_ms": pct(&venue, 0.99),
        "slowest_fills_by_hop_ms": hops,
    }))
}

/// Slowest entry fills whose hops the latency scenario breaks down.
const SLOWEST: usize = 5;

/// Where the slowest fills spent their time, hop by hop, from the Kafka timestamps (the
/// producer's clock, in milliseconds) of the records on their way: the bar, its `features`
/// record, the signal, the order's acceptance, the fill, and the fill's arrival here. The
/// order → fill hop includes the wait for the symbol's next bar, which the fill trades on.
async fn hop_breakdown(
    stack: &Stack,
    slowest: &[(u128, &str, &Fill, i64)],
) -> anyhow::Result<serde_json::Value> {
    if slowest.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    let kafka = &stack.kafka;
    let mut at: HashMap<String, i64> = HashMap::new();
    for topic in [
        Topic::MarketData,
        Topic::Features,
        Topic::TradingSignals,
        Topic::Orders,
        Topic::Fills,
    ] {
        for msg in tradestream_kafka::changelog::read_topic(kafka, topic.name()).await? {
            let (Some(bytes), Some(ms)) = (msg.payload(), msg.timestamp().to_millis()) else {
                continue;
            };
            // Keyed by what the next hop names as its cause.
            let key = match stack.codec.decode_any(topic, bytes).await {
                Ok(AnyRecord::MarketData(m)) => format!("bar {}", m.record_id),
                Ok(AnyRecord::Features(f)) => format!("features {}", f.source_id),
                Ok(AnyRecord::Signal(s)) => format!("signal {}", s.source_id),
                Ok(AnyRecord::Order(o))
                    if o.status == tradestream_schemas::OrderStatus::Accepted =>
                {
                    format!("order {}", o.order_id)
                }
                Ok(AnyRecord::Fill(f)) => format!("fill {}", f.fill_id),
                _ => continue,
            };
            at.entry(key).or_insert(ms);
        }
    }
    let mut out = Vec::new();
    for (micros, cause, fill, arrived) in slowest {
        let features_id = format!("features:{cause}");
        let stamps = [
            at.get(&format!("bar {cause}")),
            at.get(&format!("features {cause}")),
            at.get(&format!("signal {features_id}")),
            at.get(&format!("order {}", fill.order_id)),
            at.get(&format!("fill {}", fill.fill_id)),
            Some(arrived),
        ];
        let hop = |i: usize| -> serde_json::Value {
            match (stamps[i], stamps[i + 1]) {
                (Some(a), Some(b)) => (b - a).into(),
                _ => serde_json::Value::Null,
            }
        };
        out.push(serde_json::json!({
            "fill": fill.fill_id,
            "total_ms": round(*micros as f64 / 1000.0),
            "bar_to_features": hop(0),
            "features_to_signal": hop(1),
            "signal_to_order": hop(2),
            "order_to_fill": hop(3),
            "fill_to_read": hop(4),
        }));
    }
    Ok(serde_json::Value::Array(out))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
