//! `tradestream demo`: the whole pipeline on the real NASDAQ file plus synthetic symbols.
//!
//! Everything embedded unless configured (mock Kafka, tradestream's registry, a private
//! Postgres in `.tradestream/demo-postgres`, recreated each run). Market data is published,
//! the processors run as tasks of this process, and the demo waits until every consumer group
//! has caught up with every topic before it stops them and prints the summary from Postgres.

use super::pipeline::{
    PipelineConfig, Stack, Stage, ensure_accounts, join_all, serve_metrics, shutdown_channel,
    spawn_stage,
};
use crate::args::DemoArgs;
use anyhow::Context;
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tradestream_ingest::{CsvFormat, CsvReplay, Pace, publish};
use tradestream_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use tradestream_kafka::rdkafka::{Offset, TopicPartitionList};
use tradestream_kafka::{Kafka, Metrics};
use tradestream_schemas::topics::STAGE_INPUTS;
use tradestream_schemas::{Symbol, Topic};

/// A progress bar on the terminal (hidden when stderr is not one).
fn progress_bar(total: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "  {bar:30.cyan/blue} {pos:>7}/{len:7} {msg} ({elapsed})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// Long-lived clients for watching the pipeline's progress: one for watermarks and one per
/// consumer group for its committed offsets (creating clients per check would dominate).
pub(crate) struct Progress {
    watermarks: BaseConsumer,
    groups: Vec<(&'static str, &'static [Topic], BaseConsumer)>,
    partitions: BTreeMap<String, i32>,
}

impl Progress {
    pub(crate) fn new(kafka: &Kafka, prefix: &str) -> anyhow::Result<Self> {
        let watermarks = kafka.base_consumer(&format!("{prefix}-progress"))?;
        let mut groups = Vec::new();
        for (group, topics) in STAGE_INPUTS {
            groups.push((
                group,
                topics,
                kafka.base_consumer(&format!("{prefix}-{group}"))?,
            ));
        }
        let mut partitions = BTreeMap::new();
        for topic in Topic::ALL {
            for name in [topic.name().to_string(), topic.dlq()] {
                let md = watermarks.fetch_metadata(Some(&name), Duration::from_secs(10))?;
                let n = md
                    .topics()
                    .first()
                    .map(|t| t.partitions().len())
                    .unwrap_or(0) as i32;
                partitions.insert(name, n);
            }
        }
        Ok(Self {
            watermarks,
            groups,
            partitions,
        })
    }

    fn ends(&self, topic: &str) -> anyhow::Result<Vec<i64>> {
        let n = self.partitions.get(topic).copied().unwrap_or(0);
        (0..n)
            .map(|p| {
                Ok(self
                    .watermarks
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1)
            })
            .collect()
    }

    fn totals(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        tokio::task::block_in_place(|| {
            self.partitions
                .keys()
                .map(|t| Ok((t.clone(), self.ends(t)?.iter().sum())))
                .collect()
        })
    }

    /// How many records of `topic` `group` has committed, over every partition.
    pub(crate) fn consumed(&self, group: &str, topic: Topic) -> anyhow::Result<u64> {
        let Some((_, _, consumer)) = self.groups.iter().find(|(g, _, _)| *g == group) else {
            return Ok(0);
        };
        let n = self.partitions.get(topic.name()).copied().unwrap_or(0);
        tokio::task::block_in_place(|| {
            Ok(committed(consumer, topic, n)?
                .into_iter()
                .map(|o| u64::try_from(o).unwrap_or(0))
                .sum())
        })
    }

    /// Whether each of `groups` (all when empty) has committed up to the end of every topic
    /// it reads.
    pub(crate) fn caught_up(&self, only: &[&str]) -> anyhow::Result<bool> {
        tokio::task::block_in_place(|| {
            for (group, topics, consumer) in &self.groups {
                if !only.is_empty() && !only.contains(group) {
                    continue;
                }
                for topic in topics.iter() {
                    let ends = self.ends(topic.name())?;
                    let done = committed(consumer, *topic, ends.len() as i32)?;
                    for (p, (done, end)) in done.into_iter().zip(&ends).enumerate() {
                        if done < *end {
                            tracing::debug!(
                                group,
                                topic = topic.name(),
                                partition = p,
                                done,
                                end,
                                "behind"
                            );
                            return Ok(false);
                        }
                    }
                }
            }
            Ok(true)
        })
    }
}

/// The offsets `consumer`'s group has committed on partitions `0..partitions` of `topic`, in
/// partition order (0 where it has none).
fn committed(consumer: &BaseConsumer, topic: Topic, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic.name(), p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..partitions)
        .map(|p| {
            match committed
                .find_partition(topic.name(), p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            }
        })
        .collect())
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let symbol = Symbol::canonical(&args.symbol).context("TRADESTREAM_DEMO_SYMBOL / --symbol")?;
    let file = std::fs::File::open(&args.data).with_context(|| {
        format!(
            "TRADESTREAM_DEMO_DATA / --data {}: cannot open (run from the repository root)",
            args.data.display()
        )
    })?;
    let file_name = args
        .data
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = PipelineConfig::load(args.config.as_deref())?;
    let mut pg = args.pg.config()?;
    if pg.database_url.is_none() && pg.data_dir.is_none() {
        // A fresh private database each run, kept afterwards for inspection.
        let dir = PathBuf::from(".tradestream/demo-postgres");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| {
                format!("removing the previous demo database {}", dir.display())
            })?;
        }
        pg.data_dir = Some(dir);
    }

    eprintln!("tradestream demo");
    eprintln!("  starting Kafka, Postgres and the schema registry ...");
    let stack = Stack::start(
        args.kafka.config()?,
        pg,
        args.registry.schema_registry_url.clone(),
        true,
    )
    .await?;
    let pool = stack.pool().context("the demo needs Postgres")?;
    ensure_accounts(&pool, &config.router).await?;
    let metrics = Metrics::new();
    let (stop, stopped) = shutdown_channel();
    let (metrics_address, metrics_task) = serve_metrics(
        &metrics,
        stack.readiness(),
        "127.0.0.1:0".parse()?,
        stopped.clone(),
    )
    .await?;
    let embedded_kafka = stack.kafka.mock().is_some();
    eprintln!(
        "  kafka            {} ({})",
        stack.kafka.bootstrap(),
        if embedded_kafka {
            "embedded mock cluster"
        } else {
            "external"
        }
    );
    eprintln!(
        "  postgres         {}",
        stack
            .db
            .as_ref()
            .map(|d| tradestream_postgres::redact_url(d.url()))
            .unwrap_or_default()
    );
    eprintln!("  schema registry  {}", stack.registry_url);
    eprintln!("  metrics          http://{metrics_address}/metrics");
    if let Some(file) = crate::logging::file() {
        eprintln!("  logs             {}", file.display());
    }
    // --- REST API (issue 5): served while the demo runs; stops with the stages. ---
    let api = super::api::spawn(
        &args.api,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &stack,
        Some(metrics.clone()),
        stopped.clone(),
        true,
    )
    .await?;
    eprintln!(
        "  REST API         http://{0}/  (docs http://{0}/docs)",
        api.address
    );
    if let Some(token) = &api.admin_token {
        eprintln!("  admin token      {token}");
    }
    // --- end REST API ---

    let prefix = format!("tradestream-demo-{}", chrono::Utc::now().timestamp());
    let ctx = super::pipeline::StageContext {
        kafka: stack.kafka.clone(),
        codec: stack.codec.clone(),
        metrics: metrics.clone(),
        pool: Some(pool.clone()),
        config: config.clone(),
        group_prefix: prefix.clone(),
    };
    let mut tasks = JoinSet::new();
    for stage in Stage::ALL {
        spawn_stage(&mut tasks, &ctx, stage, stopped.clone())?;
    }

    // Market data: the real file plus synthetic symbols over the same dates.
    let now = chrono::Utc::now();
    let csv = CsvReplay::new(
        &file_name,
        CsvFormat::Daily {
            symbol: symbol.clone(),
        },
        "1d",
    )
    .read(file, now)
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
    let synthetic: Vec<String> = args
        .synthetic
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let items = tradestream_ingest::with_synthetic(csv, &synthetic, args.seed, now)?;
    let total = items.len() as u64;
    eprintln!(
        "  replaying {total} bars: {} ({symbol}) + {} synthetic symbols",
        args.data.display(),
        synthetic.len()
    );
    let progress = Progress::new(&stack.kafka, &prefix)?;
    let pipeline_started = Instant::now();
    // The whole history at once: the trading core holds each instant until its bars and
    // signals are all in, however far market data runs ahead of the signals. (Publishing 250
    // instants at a time and draining every stage in between took twice as long: the sink's
    // per-instant settlement is the demo's bottleneck, docs/benchmarks.md.)
    let bar = progress_bar(total, "published");
    let published = publish(
        &stack.kafka,
        &stack.codec,
        &metrics,
        items,
        Pace::AsFastAsPossible,
        std::future::pending(),
        |s| bar.set_position(s.published + s.dead_lettered),
    )
    .await?;
    bar.finish_and_clear();
    let publish_secs = pipeline_started.elapsed().as_secs_f64();
    tracing::info!(
        published = published.published,
        publish_secs,
        "market data published"
    );

    // Wait until every group has consumed everything (twice in a row: outputs of one stage
    // are inputs of the next); the bar follows the bars the sink has stored.
    let bar = progress_bar(published.published, "bars through the pipeline");
    let mut stable = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while stable < 2 {
        if tasks.len() < Stage::ALL.len() + 1 {
            // A stage ended early: that is a failure; collect it.
            bar.abandon();
            let _ = stop.send(true);
            join_all(tasks, &stop).await?;
            anyhow::bail!("a pipeline stage stopped before the demo finished");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(progress.consumed("sink", Topic::MarketData)?);
        stable = if progress.caught_up(&[])? {
            stable + 1
        } else {
            0
        };
        if Instant::now() > deadline {
            anyhow::bail!("the pipeline did not drain within 10 minutes");
        }
    }
    bar.finish_and_clear();
    let pipeline_secs = pipeline_started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    join_all(tasks, &stop).await?;
    let _ = metrics_task.await;

    let totals = progress.totals()?;
    let summary = summarize(&pool, &config, totals, published.published, pipeline_secs).await?;
    let url = stack
        .db
        .as_ref()
        .map(|d| d.url().to_string())
        .unwrap_or_default();
    let data_dir = stack
        .db
        .as_ref()
        .and_then(|d| d.embedded())
        .map(|e| e.data_dir().display().to_string());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, started.elapsed().as_secs_f64());
        println!();
        println!("Look at the results:");
        match &data_dir {
            Some(dir) => {
                println!(
                    "  the private Postgres stops with the demo; its data stays in {dir}. Serve it again with"
                );
                println!("    target/release/tradestream postgres --pg-data-dir {dir}");
                println!("  and connect with the printed URL: psql '<database_url>'");
            }
            None => println!("  psql '{url}'"),
        }
        println!("  e.g. SELECT status, count(*) FROM orders GROUP BY status;");
        println!("       SELECT * FROM get_portfolio_stats('1999-01-01', '2019-01-01');");
        println!(
            "  or through the REST API (it stopped with the demo): with the database served again,"
        );
        println!("    target/release/tradestream broker &   # manual orders need a broker");
        println!(
            "    DATABASE_URL='<database_url>' KAFKA_BROKERS=127.0.0.1:9092 TRADESTREAM_JWT_SECRET=<secret> target/release/tradestream api"
        );
        println!(
            "    curl -H \"Authorization: Bearer $(TRADESTREAM_JWT_SECRET=<secret> target/release/tradestream token --scope admin)\" \\"
        );
        println!("         'http://127.0.0.1:8080/v1/portfolio?account=demo'   # docs at /docs");
    }
    stack.stop().await?;
    Ok(())
}

async fn summarize(
    pool: &sqlx::PgPool,
    config: &PipelineConfig,
    totals: BTreeMap<String, i64>,
    market_data: u64,
    pipeline_secs: f64,
) -> anyhow::Result<serde_json::Value> {
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await?;
    let rejections: Vec<(String, i64)> = sqlx::query_as(
        "SELECT split_part(reject_reason, ':', 1), count(*) FROM orders WHERE status = 'REJECTED' GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let fills: i64 = sqlx::query_scalar("SELECT count(*) FROM fills")
        .fetch_one(pool)
        .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT 'market_data', count(*) FROM market_data UNION ALL SELECT 'features', count(*) FROM features \
         UNION ALL SELECT 'trading_signals', count(*) FROM signals UNION ALL SELECT 'anomalies', count(*) FROM anomalies \
         UNION ALL SELECT 'orders', count(*) FROM order_events UNION ALL SELECT 'fills', count(*) FROM fills",
    )
    .fetch_all(pool)
    .await?;
    let (first, last): (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as("SELECT min(event_time), max(event_time) FROM market_data")
        .fetch_one(pool)
        .await?;
    let mut accounts = Vec::new();
    for id in config.router.accounts.keys() {
        let (capital, cash, value): (Decimal, Decimal, Decimal) = sqlx::query_as(
            "SELECT initial_capital, cash, total_value FROM accounts WHERE account_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(pool)
        .await?;
        let stats: (Option<Decimal>, Option<f64>, Option<Decimal>, Option<f64>, i64) = sqlx::query_as(
            "SELECT total_return, sharpe, max_drawdown, volatility, snapshots FROM get_portfolio_stats($1, $2, $3)",
        )
        .bind(first.unwrap_or_default())
        .bind(last.unwrap_or_default())
        .bind(id.as_str())
        .fetch_one(pool)
        .await?;
        let positions: Vec<(String, Decimal)> =
            sqlx::query_as("SELECT symbol, quantity FROM positions WHERE account_id = $1 AND quantity <> 0 ORDER BY symbol")
                .bind(id.as_str())
                .fetch_all(pool)
                .await?;
        accounts.push(json!({
            "account": id.as_str(),
            "initial_capital": capital.to_string(),
            "cash": cash.round_dp(2).to_string(),
            "total_value": value.round_dp(2).to_string(),
            "pnl": (value - capital).round_dp(2).to_string(),
            "total_return": stats.0.map(|d| d.to_string()),
            "sharpe": stats.1,
            "max_drawdown": stats.2.map(|d| d.to_string()),
            "volatility": stats.3,
            "snapshots": stats.4,
            "open_positions": positions.iter().map(|(s, q)| json!({"symbol": s, "quantity": q.to_string()})).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "topics": totals,
        "postgres_rows": rows.into_iter().collect::<BTreeMap<_, _>>(),
        "orders_by_status": statuses.into_iter().collect::<BTreeMap<_, _>>(),
        "rejections_by_reason": rejections.into_iter().collect::<BTreeMap<_, _>>(),
        "fills": fills,
        "accounts": accounts,
        "market_data_records": market_data,
        "pipeline_seconds": pipeline_secs,
        "throughput_records_per_second": market_data as f64 / pipeline_secs.max(1e-9),
        "first_event": first,
        "last_event": last,
    }))
}

fn print_summary(s: &serde_json::Value, elapsed: f64) {
    println!();
    println!("== tradestream demo summary ==");
    println!("records per topic (Kafka):");
    if let Some(topics) = s["topics"].as_object() {
        for (topic, n) in topics {
            println!("  {topic:<22} {n}");
        }
    }
    println!("rows in Postgres:      {}", s["postgres_rows"]);
    println!("orders by status:      {}", s["orders_by_status"]);
    println!("rejections by reason:  {}", s["rejections_by_reason"]);
    println!("fills:                 {}", s["fills"]);
    for a in s["accounts"].as_array().into_iter().flatten() {
        println!(
            "account {}: value {} (cash {}), P&L {}, total return {}, Sharpe {}, max drawdown {}, volatility {}",
            a["account"].as_str().unwrap_or_default(),
            a["total_value"].as_str().unwrap_or_default(),
            a["cash"].as_str().unwrap_or_default(),
            a["pnl"].as_str().unwrap_or_default(),
            a["total_return"].as_str().unwrap_or("n/a"),
            a["sharpe"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "n/a".into()),
            a["max_drawdown"].as_str().unwrap_or("n/a"),
            a["volatility"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "n/a".into()),
        );
        println!("  open positions: {}", a["open_positions"]);
    }
    println!(
        "throughput:            {} market-data records end to end in {:.1} s ({:.0}/s)",
        s["market_data_records"],
        s["pipeline_seconds"].as_f64().unwrap_or_default(),
        s["throughput_records_per_second"]
            .as_f64()
            .unwrap_or_default()
    );
    println!("elapsed:               {elapsed:.1} s");
}
