//! Scale-out (issue 4): two `tradestream run features` and two `tradestream run scorer`
//! processes share one consumer group each (same `--kafka-group-id`) on a 4-partition broker
//! while `tradestream ingest` publishes a paced, seed-fixed feed; mid-run one instance of each
//! is SIGKILLed and its partitions move to the survivor after the session timeout. Each
//! survivor runs two consumer tasks in its one process (`--stream-tasks 2`), so the group has
//! three members per stage until the kill and two after it: partitions move between
//! processes and between the tasks of one process alike.
//!
//! Checked at the end:
//! * nothing lost: every bar has a features record, and the committed offsets of both groups
//!   reach the end of every partition (which, with one member dead, only the survivor could
//!   do: the partitions moved);
//! * nothing duplicated: no id on `features`, `trading_signals`, `anomalies` carries two
//!   different records, and each topic's set of distinct records equals the one computed
//!   in-process by the same cores over the same bars (so a partition that moved did not restart
//!   its indicators' warm-up or lose their state);
//! * per-symbol order: for each symbol, the sequence of distinct records (first appearance by
//!   offset) in its partition of `features` and of `trading_signals` is in event-time order.
//!
//! Sizes: TRADESTREAM_SCALE_OUT_RECORDS (3000), TRADESTREAM_SCALE_OUT_RATE (records/s, 300).

mod common;

use anyhow::{Context, Result};
use common::{
    Rec, distinct, lag, order_violations, read_topic, run_ingest, run_stage, run_stage_with, short,
    start_broker, start_registry, wait_drained,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::topics::STAGE_INPUTS;
use tradestream_schemas::{AnyRecord, Codec, Processor, Topic};

const PARTITIONS: i32 = 4;
const GROUP_PREFIX: &str = "scaleout";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The records the features and scorer cores produce over `bars`, fed per symbol in event
/// time order (their state is per symbol, so this is what any partitioning must give).
async fn expected(
    codec: &Codec,
    bars: &[Rec],
) -> Result<BTreeMap<Topic, BTreeMap<String, String>>> {
    let mut ordered: Vec<&tradestream_schemas::MarketData> = distinct(bars)
        .by_id
        .values()
        .filter_map(|r| match &r.record {
            AnyRecord::MarketData(m) => Some(m),
            _ => None,
        })
        .collect();
    ordered.sort_by(|a, b| (&a.symbol, a.event_time).cmp(&(&b.symbol, b.event_time)));
    let mut features = tradestream_features::FeaturesProcessor::new(
        tradestream_features::FeaturesConfig::default(),
    )?;
    let config = tradestream_scorer::ScorerConfig::default();
    let models = tradestream_scorer::ModelHandle::load(std::path::Path::new(&config.model_dir))?;
    let mut scorer = tradestream_scorer::Scorer::new(models, &config)?;
    let now = chrono::Utc::now();
    let mut produced: Vec<AnyRecord> = Vec::new();
    for bar in ordered {
        let mut input = bar.clone();
        input.ingest_time = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        for f in features
            .process(&AnyRecord::MarketData(input), now)
            .map_err(|e| anyhow::anyhow!("features core: {e}"))?
        {
            produced.extend(
                scorer
                    .process(&f, now)
                    .map_err(|e| anyhow::anyhow!("scorer core: {e}"))?,
            );
            produced.push(f);
        }
    }
    // Through the wire format and back, as the topics' records were (decimals come back
    // normalized).
    let mut out: BTreeMap<Topic, BTreeMap<String, String>> = BTreeMap::new();
    for record in produced {
        let bytes = match &record {
            AnyRecord::Features(r) => codec.encode(r).await?,
            AnyRecord::Signal(r) => codec.encode(r).await?,
            AnyRecord::Anomaly(r) => codec.encode(r).await?,
            other => anyhow::bail!("unexpected output of the cores: {other:?}"),
        };
        let decoded = codec.decode_any(record.topic(), &bytes).await?;
        out.entry(decoded.topic())
            .or_default()
            .insert(decoded.id().to_string(), format!("{decoded:?}"));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_per_stage_survive_losing_one() -> Result<()> {
    let records: u64 = env_or("TRADESTREAM_SCALE_OUT_RECORDS", 3_000);
    let rate: f64 = env_or("TRADESTREAM_SCALE_OUT_RATE", 300.0);
    let symbols: Vec<String> = (0..6)
        .map(|i| format!("SO{}", char::from(b'A' + i)))
        .collect();
    let bars = records.div_ceil(symbols.len() as u64);
    let work = tempfile::Builder::new()
        .prefix("tradestream-scale-out-")
        .tempdir()?;
    let dir = work.path();
    let started = Instant::now();
    let db = TestDatabase::new().await?;
    let (mut registry_proc, registry) = start_registry(db.url(), dir)?;
    let mut broker = start_broker(PARTITIONS, GROUP_PREFIX, dir)?;
    let readers = [STAGE_INPUTS[0], STAGE_INPUTS[1]];

    let mut survivors = Vec::new();
    let mut doomed = Vec::new();
    for stage in ["features", "scorer"] {
        survivors.push(run_stage_with(
            stage,
            "-a",
            &broker,
            &registry,
            None,
            GROUP_PREFIX,
            dir,
            &["--stream-tasks", "2"],
        )?);
        doomed.push(run_stage(
            stage,
            "-b",
            &broker,
            &registry,
            None,
            GROUP_PREFIX,
            dir,
        )?);
    }
    let mut ingest = run_ingest(&broker, &registry, &symbols, bars, 11, rate, dir)?;

    // Kill one instance of each once about a third of the feed is through both stages (both
    // members have joined and own partitions by then).
    let third = (bars * symbols.len() as u64 / 3) as i64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "no progress within 180 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
        for p in survivors.iter_mut().chain(doomed.iter_mut()) {
            if let Some(status) = p.exited()? {
                anyhow::bail!("{} exited with {status}:\n{}", p.name, p.log_tail(20));
            }
        }
        let signals =
            common::count(&broker.kafka, Topic::TradingSignals.name(), PARTITIONS).await?;
        let features = common::count(&broker.kafka, Topic::Features.name(), PARTITIONS).await?;
        if features >= third && signals > 0 {
            break;
        }
    }
    let before = lag(&broker.kafka, GROUP_PREFIX, &readers, PARTITIONS).await?;
    let mut at_kill = Vec::new();
    for (stage, topic) in [("features", Topic::MarketData), ("scorer", Topic::Features)] {
        at_kill.push(
            tradestream_kafka::committed_offsets(
                &broker.kafka,
                &format!("{GROUP_PREFIX}-{stage}"),
                topic.name(),
                PARTITIONS,
            )
            .await?,
        );
    }
    for p in doomed.iter_mut() {
        p.kill9()?;
    }
    let killed_at = started.elapsed().as_secs_f64();
    println!(
        "killed features-b and scorer-b at {killed_at:.1} s; committed then: features {:?}, scorer {:?} ({})",
        at_kill[0],
        at_kill[1],
        before.unwrap_or_else(|| "caught up".into())
    );
    anyhow::ensure!(
        ingest.exited()?.is_none(),
        "ingest finished before the kill: raise TRADESTREAM_SCALE_OUT_RECORDS or lower the rate"
    );
    let status = ingest.wait(Duration::from_secs(600)).await?;
    anyhow::ensure!(status.success(), "ingest exited with {status}");
    wait_drained(
        &broker.kafka,
        GROUP_PREFIX,
        &readers,
        PARTITIONS,
        &mut survivors,
        Duration::from_secs(300),
    )
    .await
    .context("waiting for the survivors to drain the inputs")?;
    let drained_secs = started.elapsed().as_secs_f64();
    for p in survivors.iter_mut() {
        let status = p.terminate(Duration::from_secs(40)).await?;
        anyhow::ensure!(status.success(), "{} exited with {status}", p.name);
    }

    let codec = Codec::new(&registry)?;
    let mut topics = BTreeMap::new();
    for topic in [
        Topic::MarketData,
        Topic::Features,
        Topic::TradingSignals,
        Topic::Anomalies,
    ] {
        topics.insert(
            topic,
            read_topic(&broker.kafka, &codec, topic, PARTITIONS).await?,
        );
    }
    let want = expected(&codec, &topics[&Topic::MarketData]).await?;
    let mut failures = Vec::new();
    println!(
        "{} bars over {PARTITIONS} partitions, 2 × features + 2 × scorer (survivors with 2 tasks each), drained {drained_secs:.1} s after start",
        distinct(&topics[&Topic::MarketData]).by_id.len()
    );
    for topic in [Topic::Features, Topic::TradingSignals, Topic::Anomalies] {
        let recs = &topics[&topic];
        let d = distinct(recs);
        let empty = BTreeMap::new();
        let expected = want.get(&topic).unwrap_or(&empty);
        let missing: Vec<&String> = expected
            .keys()
            .filter(|id| !d.by_id.contains_key(id.as_str()))
            .collect();
        let extra: Vec<&&str> = d
            .by_id
            .keys()
            .filter(|id| !expected.contains_key(**id))
            .collect();
        let differing: Vec<(&&str, &&Rec)> = d
            .by_id
            .iter()
            .filter(|(id, r)| expected.get(**id).is_some_and(|e| *e != r.content))
            .collect();
        let (misordered, examples) = order_violations(recs, 3);
        println!(
            "   {:<16} {:>6} records, {:>6} distinct ({} expected), {} repeated copies, {} conflicting ids, {} missing, {} extra, {} differing from the cores' output, {} out of event-time order",
            topic.name(),
            recs.len(),
            d.by_id.len(),
            expected.len(),
            d.copies,
            d.conflicts.len(),
            missing.len(),
            extra.len(),
            differing.len(),
            misordered
        );
        if !d.conflicts.is_empty() {
            let (a, b) = d.conflicts[0];
            failures.push(format!(
                "{}: {} ids with two different records, e.g. {}\n      {}\n      {}",
                topic.name(),
                d.conflicts.len(),
                a.id(),
                short(&a.content),
                short(&b.content)
            ));
        }
        if !missing.is_empty() || !extra.is_empty() {
            failures.push(format!(
                "{}: {} missing (e.g. {:?}), {} extra (e.g. {:?})",
                topic.name(),
                missing.len(),
                &missing[..missing.len().min(3)],
                extra.len(),
                &extra[..extra.len().min(3)]
            ));
        }
        if let Some((id, r)) = differing.first() {
            failures.push(format!(
                "{}: {} records differ from the cores' output, e.g. {id}\n      expected {}\n      got      {}",
                topic.name(),
                differing.len(),
                short(&expected[**id]),
                short(&r.content)
            ));
        }
        if misordered > 0 && topic != Topic::Anomalies {
            failures.push(format!(
                "{}: {misordered} records out of per-symbol event-time order: {examples:?}",
                topic.name()
            ));
        }
    }
    // Every partition advanced after the kill, and only the survivor was left to advance it.
    let after = [
        tradestream_kafka::committed_offsets(
            &broker.kafka,
            &format!("{GROUP_PREFIX}-features"),
            Topic::MarketData.name(),
            PARTITIONS,
        )
        .await?,
        tradestream_kafka::committed_offsets(
            &broker.kafka,
            &format!("{GROUP_PREFIX}-scorer"),
            Topic::Features.name(),
            PARTITIONS,
        )
        .await?,
    ];
    for (i, stage) in ["features", "scorer"].iter().enumerate() {
        let moved = (0..PARTITIONS as usize)
            .filter(|p| after[i][*p].unwrap_or(0) > at_kill[i][*p].unwrap_or(0))
            .count();
        println!(
            "   {stage}: committed {:?} at the kill → {:?} at the end: {moved} of {PARTITIONS} partitions advanced by the survivor alone",
            at_kill[i], after[i]
        );
        if moved < PARTITIONS as usize {
            failures.push(format!(
                "{stage}: only {moved} of {PARTITIONS} partitions advanced after the kill"
            ));
        }
    }

    let _ = broker.proc.terminate(Duration::from_secs(30)).await;
    let _ = registry_proc.terminate(Duration::from_secs(30)).await;
    db.cleanup().await;
    common::fail_on(&failures)
}
