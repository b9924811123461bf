//! `run`, `up`, `ingest` and `train`.

use super::pipeline::{
    PipelineConfig, Stack, Stage, join_all, serve_metrics, shutdown_channel, spawn_stage,
};
use super::shutdown_signal;
use crate::args::{IngestArgs, IngestSource, ProcessArgs, RunArgs, TrainArgs, UpArgs};
use anyhow::Context;
use std::time::Duration;
use tokio::task::JoinSet;
use tradestream_ingest::{CsvFormat, CsvReplay, Pace, SyntheticConfig, SyntheticFeed, publish};
use tradestream_kafka::Metrics;
use tradestream_schemas::Symbol;

async fn run_stages(
    process: ProcessArgs,
    stages: &[Stage],
    standalone: bool,
) -> anyhow::Result<()> {
    let kafka = process.kafka.config()?;
    let pg = process.pg.config()?;
    if standalone && kafka.brokers.is_none() {
        anyhow::bail!(
            "KAFKA_BROKERS / --kafka-brokers is required for `run`: processes share a broker \
             (start one with `tradestream broker`, or use `tradestream up` for an embedded one)"
        );
    }
    let config = PipelineConfig::load(process.config.as_deref())?;
    let need_db = stages.contains(&Stage::Sink);
    let stack = Stack::start(
        kafka,
        pg,
        process.registry.schema_registry_url.clone(),
        need_db,
    )
    .await?;
    if let Some(pool) = stack.pool() {
        super::pipeline::ensure_accounts(&pool, &config.router).await?;
    }
    let metrics = Metrics::new();
    let (stop, stopped) = shutdown_channel();
    let (address, metrics_task) =
        serve_metrics(
            &metrics,
            stack.readiness(),
            process.metrics_listen,
            stopped.clone(),
        ).await?;
    let ctx = super::pipeline::StageContext {
        kafka: stack.kafka.clone(),
        codec: stack.codec.clone(),
        metrics,
        pool: stack.pool(),
        config,
        group_prefix: process
            .kafka
            .kafka_group_id
            .clone()
            .unwrap_or_else(|| "tradestream".into()),
    };
    let mut tasks = JoinSet::new();
    for stage in stages {
        spawn_stage(&mut tasks, &ctx, *stage, stopped.clone())?;
    }
    eprintln!(
        "running {} (kafka {}, registry {}, metrics http://{address}/metrics); Ctrl-C or SIGTERM stops",
        stages
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        stack.kafka.bootstrap(),
        stack.registry_url,
    );
    let grace = Duration::from_secs(process.shutdown_grace_secs);
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested: finishing in-flight batches");
        let _ = stop_on_signal.send(true);
    });
    let result = tokio::select! {
        r = join_all(tasks, &stop) => r,
        _ = async {
            let mut rx = stopped.clone();
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => Err(anyhow::anyhow!("stages did not stop within TRADESTREAM_SHUTDOWN_GRACE_SECS={}", grace.as_secs())),
    };
    let _ = stop.send(true);
    let _ = metrics_task.await;
    stack.stop().await?;
    result
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    run_stages(args.process, &[args.stage], true).await
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    run_stages(args.process, &Stage::ALL, false).await
}

pub(crate) async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let kafka_cfg = args.kafka.config()?;
    if kafka_cfg.brokers.is_none() {
        anyhow::bail!(
            "KAFKA_BROKERS / --kafka-brokers is required for `ingest` (start `tradestream broker`)"
        );
    }
    let registry = args
        .registry
        .schema_registry_url
        .clone()
        .context("SCHEMA_REGISTRY_URL / --schema-registry-url is required for `ingest` (start `tradestream registry`)")?;
    let kafka = tradestream_kafka::Kafka::connect(kafka_cfg)?;
    let codec = tradestream_schemas::Codec::new(&registry)?;
    let now = chrono::Utc::now();
    let items: Vec<tradestream_ingest::SourceItem> = match args.source {
        IngestSource::Csv => {
            let path = args
                .file
                .clone()
                .context("TRADESTREAM_INGEST_FILE / --file is required for the csv source")?;
            let file =
                std::fs::File::open(&path).with_context(|| format!("--file {}", path.display()))?;
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let format = match &args.symbol {
                Some(s) => CsvFormat::Daily {
                    symbol: Symbol::canonical(s).context("--symbol")?,
                },
                None => CsvFormat::Generic,
            };
            CsvReplay::new(&name, format, &args.interval)
                .read(file, now)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        IngestSource::Synthetic => {
            let cfg = SyntheticConfig {
                symbols: args.symbols.clone(),
                seed: args.seed,
                interval_secs: args.interval_secs,
                bars_per_symbol: Some(args.bars),
                ..SyntheticConfig::default()
            };
            let mut feed = SyntheticFeed::new(cfg)?;
            std::iter::from_fn(|| feed.next_at(now)).map(Ok).collect()
        }
    };
    let pace = match (args.rate, args.speedup) {
        (Some(rate), _) => Pace::RecordsPerSecond(rate),
        (None, s) if s > 0.0 => Pace::Speedup(s),
        _ => Pace::AsFastAsPossible,
    };
    let stats = publish(
        &kafka,
        &codec,
        &Metrics::new(),
        items,
        pace,
        shutdown_signal(),
        |_| {},
    )
    .await?;
    println!(
        "published {} records to market_data, {} to market_data.dlq",
        stats.published, stats.dead_lettered
    );
    Ok(())
}

pub(crate) async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let report = tokio::task::spawn_blocking(move || {
        tradestream_scorer::train_from_csv(
            &args.data,
            &args.symbol,
            &args.out,
            &tradestream_scorer::TrainConfig::default(),
        )
        .with_context(|| format!("training on {}", args.data.display()))
    })
    .await??;
    println!("{report}");
    Ok(())
}
