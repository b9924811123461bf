//! Wiring of the stream processors: builds each core from the pipeline config and runs it
//! under the generic Kafka runner (the sink under its own Postgres runner), as separate
//! tasks of one process (`up`, `demo`) or one per process (`run <processor>`).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tradestream_exchange::ExchangeConfig;
use tradestream_features::{FeaturesConfig, FeaturesProcessor};
use tradestream_kafka::{Kafka, Metrics, RunnerConfig, run_processor};
use tradestream_router::RouterConfig;
use tradestream_schemas::Codec;
use tradestream_schemas::TaskScope;
use tradestream_scorer::{ModelHandle, Scorer, ScorerConfig};
use tradestream_sink::{SinkConfig, run_sink};
use tradestream_trading::{TradingConfig, TradingCore};

/// Settings of every processor, read from `--config FILE` (TOML); every section optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PipelineConfig {
    /// `[features]`.
    #[serde(default)]
    pub(crate) features: FeaturesConfig,
    /// `[scorer]`.
    #[serde(default)]
    pub(crate) scorer: ScorerConfig,
    /// `[router]`: the trading core's accounts, risk limits and sizing.
    #[serde(default)]
    pub(crate) router: RouterConfig,
    /// `[exchange]`: the trading core's paper venue.
    #[serde(default)]
    pub(crate) exchange: ExchangeConfig,
    /// `[sink]`.
    #[serde(default)]
    pub(crate) sink: SinkConfig,
}

impl PipelineConfig {
    /// The effective settings: defaults < the file (when given) < `TRADESTREAM__*`
    /// environment variables < `--set` flags (see docs/configuration.md), validated.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_with(path, &super::config::process_overrides()?)
    }

    /// [`load`](Self::load) with explicit overrides; errors name the setting and its source.
    pub(crate) fn load_with(
        path: Option<&Path>,
        overrides: &[super::config::Override],
    ) -> anyhow::Result<Self> {
        super::config::effective(path, overrides, Self::linked)
    }

    /// The trading core's settings (`[router]` and `[exchange]`).
    pub(crate) fn trading(&self) -> TradingConfig {
        TradingConfig {
            router: self.router.clone(),
            exchange: self.exchange.clone(),
        }
    }

    /// One source of truth for shorting: the router's `allow_short` accounts are margin
    /// accounts at the venue too.
    fn linked(mut self) -> Self {
        let margin = self
            .router
            .accounts
            .iter()
            .filter(|(_, a)| a.allow_short)
            .map(|(id, _)| id.clone());
        self.exchange.short_accounts.extend(margin);
        self
    }
}

/// The processors that run under the generic runner, plus the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Stage {
    /// market_data → features.
    Features,
    /// features → trading_signals + anomalies.
    Scorer,
    /// market_data + signals + manual orders + controls → orders + fills (risk checks,
    /// order state and the paper venue, one instant at a time).
    Trading,
    /// all topics → Postgres.
    Sink,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub(crate) const ALL: [Stage; 4] =
        [Stage::Features, Stage::Scorer, Stage::Trading, Stage::Sink];

    /// Name used for groups and metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Features => "features",
            Stage::Scorer => "scorer",
            Stage::Trading => "trading",
            Stage::Sink => "sink",
        }
    }
}

/// What every stage needs.
#[derive(Debug, Clone)]
pub(crate) struct StageContext {
    pub(crate) kafka: Kafka,
    pub(crate) codec: Codec,
    pub(crate) metrics: Metrics,
    pub(crate) pool: Option<sqlx::PgPool>,
    pub(crate) config: PipelineConfig,
    /// Consumer group prefix (`tradestream` → `tradestream-features`, ...).
    pub(crate) group_prefix: String,
}

/// A shutdown signal shared by every stage.
pub(crate) fn shutdown_channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Creates the router's accounts in Postgres (fills reference them), leaving existing ones.
pub(crate) async fn ensure_accounts(
    pool: &sqlx::PgPool,
    router: &RouterConfig,
) -> anyhow::Result<()> {
    for (id, account) in &router.accounts {
        if tradestream_postgres::portfolio::account(pool, id)
            .await?
            .is_some()
        {
            continue;
        }
        tradestream_postgres::portfolio::create_account(
            pool,
            &tradestream_postgres::portfolio::NewAccount {
                account_id: id.clone(),
                name: id.to_string(),
                initial_capital: account.initial_capital,
                allow_short: account.allow_short,
                commission_per_share: account.commission_per_share,
                commission_bps: account.commission_bps,
                commission_min: account.commission_min,
            },
        )
        .await?;
    }
    Ok(())
}

/// Starts `stage` as a task of `tasks`; it stops when `shutdown` turns true.
pub(crate) fn spawn_stage(
    tasks: &mut JoinSet<anyhow::Result<(Stage, String)>>,
    ctx: &StageContext,
    stage: Stage,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ctx = ctx.clone();
    let mut runner = RunnerConfig::for_processor_with(stage.name(), ctx.kafka.config());
    runner.group_id = format!("{}-{}", ctx.group_prefix, stage.name());
    match stage {
        Stage::Features => {
            let core = FeaturesProcessor::new(ctx.config.features.clone())?;
            spawn_runners(tasks, ctx, core, runner, stage, shutdown);
        }
        Stage::Scorer => {
            let cfg = ctx.config.scorer.clone();
            let dir = PathBuf::from(&cfg.model_dir);
            let models = ModelHandle::load(&dir)
                .with_context(|| format!("loading models from {}", dir.display()))?;
            let core = Scorer::new(models.clone(), &cfg)?;
            if cfg.reload_interval_secs > 0 {
                let mut stop = shutdown.clone();
                let interval = Duration::from_secs(cfg.reload_interval_secs);
                tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => {}
                            _ = stop.wait_for(|s| *s) => return Ok((stage, "model reloader stopped".into())),
                        }
                        let (handle, dir) = (models.clone(), dir.clone());
                        match tokio::task::spawn_blocking(move || handle.reload_if_changed(&dir)).await {
                            Ok(Ok(Some(versions))) => tracing::info!(%versions, "scorer models reloaded"),
                            Ok(Ok(None)) => {}
                            Ok(Err(e)) => tracing::warn!(error = %e, "model reload failed; keeping the current models"),
                            Err(e) => tracing::warn!(error = %e, "model reload task failed"),
                        }
                    }
                });
            }
            spawn_runners(tasks, ctx, core, runner, stage, shutdown);
        }
        Stage::Trading => {
            let core = TradingCore::new(ctx.config.trading())?;
            spawn_runners(tasks, ctx, core, runner, stage, shutdown);
        }
        Stage::Sink => {
            let pool = ctx
                .pool
                .clone()
                .context("the sink needs Postgres (DATABASE_URL or the private cluster)")?;
            let mut sink = ctx.config.sink.clone();
            sink.group_id = format!("{}-sink", ctx.group_prefix);
            tasks.spawn(async move {
                let stats = run_sink(
                    &ctx.kafka,
                    &ctx.codec,
                    pool,
                    sink,
                    &ctx.metrics,
                    wait(shutdown),
                )
                .await?;
                Ok((stage, format!("{stats:?}")))
            });
        }
    }
    Ok(())
}

/// Spawns the stage's runners: `stream_tasks` members of its consumer group for a
/// per-partition core (each restores and processes only the partitions it is assigned, so
/// one process uses several cores), one for a core that keeps a single global state.
fn spawn_runners<P: tradestream_schemas::Processor + Clone + Sync + 'static>(
    tasks: &mut JoinSet<anyhow::Result<(Stage, String)>>,
    ctx: StageContext,
    core: P,
    runner: RunnerConfig,
    stage: Stage,
    shutdown: watch::Receiver<bool>,
) {
    let count = match core.scope() {
        TaskScope::PerPartition => ctx.kafka.config().stream_tasks.max(1),
        TaskScope::Single => 1,
    };
    for index in 0..count {
        let (ctx, mut core) = (ctx.clone(), core.clone());
        let (runner, shutdown) = (runner.for_task(index, count), shutdown.clone());
        tasks.spawn(async move {
            let stats = run_processor(
                &ctx.kafka,
                &ctx.codec,
                &mut core,
                &runner,
                &ctx.metrics,
                wait(shutdown),
            )
            .await?;
            Ok((stage, format!("{stats:?}")))
        });
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` (see [`Stack::readiness`]) on `listen` until
/// `shutdown`.
pub(crate) async fn serve_metrics(
    metrics: &Metrics,
    readiness: tradestream_kafka::ReadinessCheck,
    listen: std::net::SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("TRADESTREAM_METRICS_LISTEN / --metrics-listen {listen}"))?;
    let address = listener.local_addr()?;
    let app = metrics.router_with_readiness(readiness);
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(wait(shutdown))
            .await;
    });
    Ok((address, handle))
}

/// The shared infrastructure of a process: Kafka, optional Postgres, the schema registry
/// (tradestream's own, in-process, when no URL is configured) and the codec.
/// The in-process registry: its stop signal and its task.
type RegistryTask = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tradestream_registry::RegistryError>>,
);

#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) kafka: Kafka,
    pub(crate) db: Option<tradestream_postgres::Database>,
    pub(crate) registry_url: String,
    pub(crate) codec: Codec,
    registry: Option<RegistryTask>,
}

impl Stack {
    /// Connects everything; `need_db` starts/connects Postgres even when the registry is
    /// external (the sink and the demo need it).
    pub(crate) async fn start(
        kafka: tradestream_kafka::KafkaConfig,
        pg: tradestream_postgres::PostgresConfig,
        registry_url: Option<String>,
        need_db: bool,
    ) -> anyhow::Result<Self> {
        let kafka = Kafka::connect(kafka)?;
        let db = if need_db || registry_url.is_none() {
            let db = tradestream_postgres::Database::connect(&pg).await?;
            db.migrate().await?;
            Some(db)
        } else {
            None
        };
        let (registry_url, registry) = match (registry_url, &db) {
            (Some(url), _) => (url, None),
            (None, Some(db)) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                let state = tradestream_registry::RegistryState::new(db.pool().clone());
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(tradestream_registry::serve(listener, state, async {
                    let _ = stopped.await;
                }));
                (url, Some((stop, task)))
            }
            (None, None) => unreachable!("a database is connected when no registry URL is set"),
        };
        kafka
            .provision(&tradestream_kafka::standard_topics(kafka.config()))
            .await?;
        let codec = Codec::new(&registry_url)?;
        codec
            .register_all()
            .await
            .context("registering the topic schemas")?;
        Ok(Self {
            kafka,
            db,
            registry_url,
            codec,
            registry,
        })
    }

    /// The `/readyz` check: Kafka metadata, `SELECT 1` on Postgres (when this process uses
    /// it) and the schema registry's `/subjects`, each within two seconds.
    pub(crate) fn readiness(&self) -> tradestream_kafka::ReadinessCheck {
        let kafka = self.kafka.clone();
        let pool = self.pool();
        let registry = format!("{}/subjects", self.registry_url.trim_end_matches('/'));
        let http = reqwest::Client::new();
        std::sync::Arc::new(move || {
            let (kafka, pool, registry, http) =
                (kafka.clone(), pool.clone(), registry.clone(), http.clone());
            Box::pin(async move {
                let limit = std::time::Duration::from_secs(2);
                let mut failures = Vec::new();
                if let Err(e) = kafka.health(limit).await {
                    failures.push(format!("kafka: {e}"));
                }
                if let Some(pool) = pool {
                    let ping = sqlx::query("SELECT 1").execute(&pool);
                    match tokio::time::timeout(limit, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => failures.push(format!("postgres: {e}")),
                        Err(_) => failures.push("postgres: no answer within 2 s".to_string()),
                    }
                }
                match http.get(&registry).timeout(limit).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failures.push(format!("schema registry: HTTP {}", r.status())),
                    Err(e) => failures.push(format!("schema registry: {e}")),
                }
                failures
            })
        })
    }

    /// The pool, when Postgres is connected.
    pub(crate) fn pool(&self) -> Option<sqlx::PgPool> {
        self.db.as_ref().map(|d| d.pool().clone())
    }

    /// Stops the in-process registry and Postgres.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.registry {
            let _ = stop.send(());
            task.await??;
        }
        if let Some(db) = self.db {
            db.shutdown().await?;
        }
        Ok(())
    }
}

/// Waits for every task; the first failure is returned after the others were told to stop.
pub(crate) async fn join_all(
    mut tasks: JoinSet<anyhow::Result<(Stage, String)>>,
    stop: &watch::Sender<bool>,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(anyhow::Error::from).and_then(|r| r);
        match result {
            Ok((stage, stats)) => tracing::info!(stage = stage.name(), %stats, "stage finished"),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "stage failed; stopping the others");
                let _ = stop.send(true);
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
