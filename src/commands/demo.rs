//! `tradestream demo`: the whole embedded stack on the real NASDAQ file.
//!
//! What runs today (the pipeline processors arrive with their issue): market data is replayed
//! from CSV into `market_data` as Confluent-framed Avro through the schema registry, read
//! back by a consumer group that writes it to Postgres with its offsets in the same
//! transaction, and a buy-and-hold account is kept exact by the database's fill and
//! mark-to-market triggers; the summary comes from `get_portfolio_stats`.

use crate::args::DemoArgs;
use anyhow::Context;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rust_decimal::Decimal;
use std::io::{IsTerminal, Write};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradestream_ingest::{CsvFormat, CsvReplay};
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::{Kafka, commit_offsets, standard_topics};
use tradestream_postgres::Database;
use tradestream_schemas::registry::{RegistryState, serve};
use tradestream_schemas::{Codec, MarketData, Record, Symbol, Topic};

/// A one-line progress bar on a terminal; only the final state in logs.
fn progress(label: &str, done: usize, total: usize) {
    let terminal = std::io::stderr().is_terminal();
    if !terminal && done != total {
        return;
    }
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    eprint!(
        "\r  {label:<22} [{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
    if done == total {
        eprintln!();
    }
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let capital = Decimal::from_str(&args.capital)
        .ok()
        .filter(|c| *c > Decimal::ZERO)
        .with_context(|| {
            format!(
                "TRADESTREAM_DEMO_CAPITAL / --capital {:?} must be a positive number",
                args.capital
            )
        })?;
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

    eprintln!("tradestream demo");
    eprintln!("  starting: Kafka, Postgres, schema registry");
    let kafka = Kafka::connect(args.kafka.config()?)?;
    let db = Database::connect(&args.pg.config()?).await?;
    db.migrate().await?;
    let (registry_url, registry_task) = match &args.registry.schema_registry_url {
        Some(url) => (url.clone(), None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let state = RegistryState::new(db.pool().clone());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, state, async {
                let _ = stopped.await;
            }));
            (url, Some((stop, task)))
        }
    };
    eprintln!(
        "  kafka: {} ({})",
        kafka.bootstrap(),
        if kafka.mock().is_some() {
            "embedded mock cluster"
        } else {
            "external"
        }
    );
    eprintln!("  postgres: {}", db.url());
    eprintln!("  schema registry: {registry_url}");
    kafka.provision(&standard_topics(kafka.config())).await?;
    let codec = Codec::new(&registry_url)?;
    let ids = codec.register_all().await?;
    eprintln!("  registered {} schemas", ids.len());

    // 1. CSV → market_data.
    let rows = CsvReplay::new(
        &file_name,
        CsvFormat::Daily {
            symbol: symbol.clone(),
        },
        "1d",
    )
    .read(file, chrono::Utc::now())
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.data.display()))?;
    let total = rows.len();
    let producer = kafka.producer()?;
    let produce_started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let (mut produced, mut dead) = (0usize, 0usize);
    for row in rows {
        let (payload, key, headers, topic) = match row {
            Ok(md) => (
                codec.encode(&md).await?,
                md.symbol.to_string(),
                None,
                Topic::MarketData.name().to_string(),
            ),
            Err(e) => {
                dead += 1;
                let info = DeadLetterInfo {
                    topic: Topic::MarketData.name().into(),
                    partition: -1,
                    offset: i64::try_from(e.line).unwrap_or(-1),
                    error_class: "dead_letter".into(),
                    message: e.to_string(),
                    processor: "ingest".into(),
                };
                (
                    e.raw.into_bytes(),
                    symbol.to_string(),
                    Some(info.headers()),
                    Topic::MarketData.dlq(),
                )
            }
        };
        let producer = producer.clone();
        in_flight.push(async move {
            let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
        });
        if in_flight.len() >= 1000
            && let Some(r) = in_flight.next().await
        {
            r.context("producing market_data")?;
            produced += 1;
            if produced.is_multiple_of(250) {
                progress("market_data produced", produced, total);
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        r.context("producing market_data")?;
        produced += 1;
    }
    progress("market_data produced", produced, total);
    let produce_secs = produce_started.elapsed().as_secs_f64();

    // 2. market_data → Postgres, offsets in the same transaction.
    let group = "tradestream-demo-sink";
    let consumer = Arc::new(kafka.consumer(group)?);
    consumer.subscribe(&[Topic::MarketData.name()])?;
    let expected = total - dead;
    let mut bars: Vec<MarketData> = Vec::with_capacity(expected);
    let mut stream = consumer.stream();
    let consume_started = Instant::now();
    while bars.len() < expected {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .context("no market data arrived for 60 s")?
            .context("consumer stream ended")??;
        let md: MarketData = codec.decode(msg.payload().unwrap_or_default()).await?;
        let mut tx = db.pool().begin().await?;
        insert_bar(&mut tx, &md).await?;
        sqlx::query(
            "INSERT INTO consumed_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        )
        .bind(group)
        .bind(msg.topic())
        .bind(msg.partition())
        .bind(msg.offset() + 1)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        commit_offsets(
            consumer.clone(),
            vec![(msg.topic().to_string(), msg.partition(), msg.offset() + 1)],
        )
        .await?;
        bars.push(md);
        if bars.len().is_multiple_of(250) || bars.len() == expected {
            progress("market_data stored", bars.len(), expected);
        }
    }
    drop(stream);
    let consume_secs = consume_started.elapsed().as_secs_f64();

    // 3. Buy and hold through the database's portfolio logic.
    bars.sort_by_key(|b| b.event_time);
    let account = format!("demo-{}", chrono::Utc::now().timestamp());
    let (first, last) = match (bars.first(), bars.last()) {
        (Some(f), Some(l)) => (f.clone(), l.clone()),
        _ => anyhow::bail!("no valid bars in {}", args.data.display()),
    };
    sqlx::query("INSERT INTO accounts (account_id, name, initial_capital, commission_bps, commission_min) VALUES ($1, 'demo buy-and-hold', $2, 1, 1)")
        .bind(&account)
        .bind(capital)
        .execute(db.pool())
        .await?;
    let quantity = (capital * Decimal::new(95, 2) / first.close).floor();
    let commission = (quantity * first.close * Decimal::new(1, 4))
        .max(Decimal::ONE)
        .round_dp(8);
    sqlx::query("INSERT INTO fills (fill_id, order_id, account_id, symbol, side, quantity, price, commission, liquidity, fill_time) VALUES ($1, $2, $3, $4, 'BUY', $5, $6, $7, 'TAKER', $8)")
        .bind(format!("{account}:fill:0"))
        .bind(format!("{account}:order:0"))
        .bind(&account)
        .bind(symbol.as_str())
        .bind(quantity)
        .bind(first.close)
        .bind(commission)
        .bind(first.event_time)
        .execute(db.pool())
        .await?;
    let mut tx = db.pool().begin().await?;
    for (i, bar) in bars.iter().enumerate().skip(1) {
        sqlx::query("SELECT mark_to_market($1, $2, $3)")
            .bind(bar.symbol.as_str())
            .bind(bar.close)
            .bind(bar.event_time)
            .execute(&mut *tx)
            .await?;
        if i.is_multiple_of(500) || i + 1 == bars.len() {
            progress("positions marked", i + 1, bars.len());
        }
    }
    tx.commit().await?;
    let (value, cash): (Decimal, Decimal) =
        sqlx::query_as("SELECT total_value, cash FROM accounts WHERE account_id = $1")
            .bind(&account)
            .fetch_one(db.pool())
            .await?;
    let stats: (Option<Decimal>, Option<f64>, Option<Decimal>, Option<f64>, i64) = sqlx::query_as(
        "SELECT total_return, sharpe, max_drawdown, volatility, snapshots FROM get_portfolio_stats($1, $2, $3)",
    )
    .bind(first.event_time)
    .bind(last.event_time)
    .bind(&account)
    .fetch_one(db.pool())
    .await?;
    let rows_in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM market_data WHERE source = $1")
        .bind(&first.source)
        .fetch_one(db.pool())
        .await?;

    let pct = |d: Option<Decimal>| {
        d.map(|d| format!("{:.2}%", d * Decimal::ONE_HUNDRED))
            .unwrap_or_else(|| "n/a".into())
    };
    let num = |f: Option<f64>| f.map(|f| format!("{f:.3}")).unwrap_or_else(|| "n/a".into());
    println!();
    println!("== tradestream demo summary ==");
    println!(
        "input            {} ({} rows, {} .. {})",
        args.data.display(),
        total,
        first.event_time.date_naive(),
        last.event_time.date_naive()
    );
    println!(
        "market_data      {} records produced ({:.0}/s), {} dead-lettered to {}",
        produced - dead,
        (produced as f64) / produce_secs.max(1e-9),
        dead,
        Topic::MarketData.dlq()
    );
    println!(
        "postgres         {} bars stored with offsets ({:.0}/s)",
        rows_in_db,
        (bars.len() as f64) / consume_secs.max(1e-9)
    );
    println!(
        "account          {account}: bought {quantity} {symbol} at {} on {}",
        first.close.round_dp(2),
        first.event_time.date_naive()
    );
    println!(
        "portfolio value  {} (cash {}), P&L {}",
        value.round_dp(2),
        cash.round_dp(2),
        (value - capital).round_dp(2)
    );
    println!(
        "stats            total return {}, Sharpe {}, max drawdown {}, volatility {} ({} snapshots)",
        pct(stats.0),
        num(stats.1),
        pct(stats.2),
        num(stats.3),
        stats.4
    );
    println!("elapsed          {:.1} s", started.elapsed().as_secs_f64());
    println!();
    println!("Look at the results:");
    println!("  psql '{}'", db.url());
    println!("  e.g. SELECT * FROM get_portfolio_stats('1999-01-01', '2019-01-01', '{account}');");
    if db.embedded().is_some() {
        println!(
            "  (the private cluster stops with the demo; its data stays in the data directory:"
        );
        println!("   serve it again with `tradestream postgres` and the same --pg-data-dir)");
    }
    if let Some((stop, task)) = registry_task {
        let _ = stop.send(());
        task.await??;
    }
    db.shutdown().await?;
    Ok(())
}

async fn insert_bar(tx: &mut sqlx::PgConnection, md: &MarketData) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO market_data (record_id, kind, symbol, event_time, interval, open, high, low, close, volume, source) \
         VALUES ($1, 'BAR', $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(md.id())
    .bind(md.symbol.as_str())
    .bind(md.event_time)
    .bind(&md.interval)
    .bind(md.open)
    .bind(md.high)
    .bind(md.low)
    .bind(md.close)
    .bind(md.volume)
    .bind(&md.source)
    .execute(tx)
    .await?;
    Ok(())
}
