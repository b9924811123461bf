//! `run`, `up`, `ingest` and `train`.

use super::pipeline::{PipelineConfig, Stack, Stage, serve_metrics, shutdown_channel, spawn_stage};
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
    api: Option<&super::api::ApiArgs>,
) -> anyhow::Result<()> {
    // First, so that a SIGTERM during start-up is a clean stop, not a kill.
    let shutdown = super::Shutdown::listen();
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
    let (address, metrics_task) = serve_metrics(
        &metrics,
        stack.readiness(),
        process.metrics_listen,
        stopped.clone(),
    )
    .await?;
    // --- REST API (issue 5): `up` serves it next to the stages; stops with them. ---
    if let Some(api) = api {
        let handle = super::api::spawn(
            api,
            super::api::default_listen(),
            &stack,
            Some(metrics.clone()),
            stopped.clone(),
            true,
        )
        .await?;
        eprintln!(
            "REST API http://{0}/ (docs http://{0}/docs, OpenAPI http://{0}/openapi.json)",
            handle.address
        );
        if let Some(token) = &handle.admin_token {
            eprintln!(
                "no TRADESTREAM_JWT_SECRET / TRADESTREAM_JWKS_URL set: this run's admin token (12 h):\n{token}"
            );
        }
    }
    // --- end REST API ---
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
    let requested = shutdown.requested();
    tokio::spawn(async move {
        requested.await;
        let _ = stop_on_signal.send(true);
    });
    // What is still running, for the message when the grace period runs out.
    let running = std::sync::Arc::new(std::sync::Mutex::new(
        stages
            .iter()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>(),
    ));
    let report = running.clone();
    let still_running = move || {
        report
            .lock()
            .map(|r| r.join(", "))
            .unwrap_or_else(|_| "unknown".into())
    };
    let work = async move {
        let result = join_stages(tasks, &stop, &running).await;
        let _ = stop.send(true);
        if let Ok(mut r) = running.lock() {
            *r = vec!["the metrics server, the schema registry and the Postgres pool".into()];
        }
        let _ = metrics_task.await;
        stack.stop().await?;
        result
    };
    shutdown
        .run_with_grace("tradestream", grace, still_running, work)
        .await
}

/// Waits for every stage (the first failure stops the others and is returned), keeping
/// `running` up to date with the stages not yet finished.
async fn join_stages(
    mut tasks: JoinSet<anyhow::Result<(Stage, String)>>,
    stop: &tokio::sync::watch::Sender<bool>,
    running: &std::sync::Mutex<Vec<String>>,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((stage, stats)) => {
                tracing::info!(stage = stage.name(), %stats, "stage finished");
                if let Ok(mut r) = running.lock()
                    && let Some(i) = r.iter().position(|s| s == stage.name())
                {
                    r.remove(i);
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "stage failed; stopping the others");
                let _ = stop.send(true);
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    run_stages(args.process, &[args.stage], true, None).await
}

pub(crate) async fn up(args: UpArgs) -> anyhow::Result<()> {
    run_stages(args.process, &Stage::ALL, false, Some(&args.api)).await
}

pub(crate) async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    // First, so that a SIGTERM while the source is read or the topic is checked for what is
    // already published stops cleanly (nothing published) instead of killing the process.
    let shutdown = super::Shutdown::listen();
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
    let mut items = items;
    tradestream_ingest::number_item_steps(&mut items);
    let items = if args.republish {
        items
    } else {
        let published = tradestream_ingest::AlreadyPublished::read(&kafka, &codec, &items).await?;
        let (rest, skipped) = published.remaining(items);
        if skipped > 0 {
            println!(
                "resuming: {skipped} records of this source are already on market_data or its \
                 dead-letter topic and are skipped (--republish publishes them again)"
            );
        }
        rest
    };
    let pace = match (args.rate, args.speedup) {
        (Some(rate), _) => Pace::RecordsPerSecond(rate),
        (None, s) if s > 0.0 => Pace::Speedup(s),
        _ => Pace::AsFastAsPossible,
    };
    let grace = Duration::from_secs(args.grace.shutdown_grace_secs);
    let stats = shutdown
        .run_with_grace(
            "ingest",
            grace,
            || "waiting for the broker to acknowledge published records".into(),
            async {
                Ok(publish(
                    &kafka,
                    &codec,
                    &Metrics::new(),
                    items,
                    pace,
                    shutdown.requested(),
                    |_| {},
                )
                .await?)
            },
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
