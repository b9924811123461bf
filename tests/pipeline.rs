//! End to end: the whole pipeline (`tradestream demo`: ingest → features → scorer → trading
//! core → sink) on real NASDAQ data plus a synthetic symbol, checked against Postgres:
//! lineage of every order and fill, the portfolio recomputed independently from the fills and
//! last prices, risk rules held, and record counts per topic adding up. Then parity: the same
//! market through the in-process driver (no Kafka, Postgres or registry) with the same
//! configuration gives exactly the orders, fills and final books the Kafka run stored.

use anyhow::{Context, Result};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::process::Command;
use tradestream_postgres::testing::TestDatabase;

#[tokio::test(flavor = "multi_thread")]
async fn pipeline_on_real_data_keeps_exact_books() -> Result<()> {
    let db = TestDatabase::new().await?;
    let data = std::env::temp_dir().join(format!("nasdaq-head-{}.csv", std::process::id()));
    let full = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/nasdaq-daily.csv"
    ))
    .context("shared/data/nasdaq-daily.csv")?;
    std::fs::write(&data, full.lines().take(701).collect::<Vec<_>>().join("\n"))?;
    let out = Command::new(env!("CARGO_BIN_EXE_tradestream"))
        .args([
            "demo",
            "--json",
            "--synthetic",
            "SYNX",
            "--seed",
            "3",
            "--log-level",
            "warn",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--database-url")
        .arg(db.url())
        .env_remove("KAFKA_BROKERS")
        .env_remove("SCHEMA_REGISTRY_URL")
        .output()?;
    let parity_data = data.clone();
    assert!(
        out.status.success(),
        "demo failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let pool = db.pool();

    // Record counts: every record on a topic is a row, once.
    let topic = |t: &str| summary["topics"][t].as_i64().unwrap_or(-1);
    let rows = |t: &str| summary["postgres_rows"][t].as_i64().unwrap_or(-2);
    assert_eq!(
        topic("market_data"),
        1400,
        "700 NASDAQ bars + 700 synthetic"
    );
    for t in [
        "market_data",
        "features",
        "trading_signals",
        "anomalies",
        "orders",
        "fills",
    ] {
        assert_eq!(topic(t), rows(t), "{t}: Kafka vs Postgres");
    }
    assert_eq!(
        topic("features"),
        topic("market_data"),
        "one features record per bar"
    );
    assert!(
        topic("trading_signals") > 0 && topic("orders") > 0 && topic("fills") > 0,
        "{summary}"
    );
    for t in [
        "market_data",
        "features",
        "trading_signals",
        "anomalies",
        "orders",
        "fills",
    ] {
        assert_eq!(
            topic(&format!("{t}.dlq")),
            0,
            "nothing dead-lettered on {t}"
        );
    }

    // Lineage: every order traces to a signal, a manual request or a parent order; every fill
    // to an order.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o WHERE \
           (o.origin = 'SIGNAL' AND NOT EXISTS (SELECT 1 FROM signals s WHERE s.signal_id = o.origin_id)) \
        OR (o.origin = 'BRACKET' AND NOT EXISTS (SELECT 1 FROM orders p WHERE p.order_id = o.parent_order_id)) \
        OR (o.origin NOT IN ('SIGNAL', 'BRACKET', 'MANUAL'))",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(orphans, 0, "orders without a cause");
    let fill_orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM fills f WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = f.order_id)",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(fill_orphans, 0, "fills without an order");
    let overfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o WHERE o.quantity < (SELECT coalesce(sum(quantity), 0) FROM fills f WHERE f.order_id = o.order_id)",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(overfilled, 0, "no order filled beyond its quantity");

    // The books, recomputed independently from the fills and the last prices.
    let fills: Vec<(String, String, String, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT account_id, symbol, side, quantity, price, commission FROM fills ORDER BY fill_time, fill_id",
    )
    .fetch_all(pool)
    .await?;
    let last_close: BTreeMap<String, Decimal> = sqlx::query_as::<_, (String, Decimal)>(
        "SELECT DISTINCT ON (symbol) symbol, close FROM market_data ORDER BY symbol, event_time DESC",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let accounts: Vec<(String, Decimal, Decimal, Decimal)> =
        sqlx::query_as("SELECT account_id, initial_capital, cash, total_value FROM accounts")
            .fetch_all(pool)
            .await?;
    for (account, capital, cash, value) in accounts {
        let mut my_cash = capital;
        let mut qty: BTreeMap<String, Decimal> = BTreeMap::new();
        for (a, symbol, side, q, p, c) in fills.iter().filter(|f| f.0 == account) {
            let signed = if side == "BUY" { *q } else { -*q };
            my_cash -= signed * p + c;
            *qty.entry(symbol.clone()).or_default() += signed;
            assert!(
                qty[symbol] >= Decimal::ZERO,
                "{a}: short {symbol} without allow_short"
            );
        }
        let my_value = my_cash
            + qty
                .iter()
                .map(|(s, q)| *q * last_close.get(s).copied().unwrap_or_default())
                .sum::<Decimal>();
        assert_eq!(cash, my_cash, "{account}: cash");
        assert_eq!(
            value, my_value,
            "{account}: total value = cash + Σ quantity × last close"
        );
        let positions: Vec<(String, Decimal)> =
            sqlx::query_as("SELECT symbol, quantity FROM positions WHERE account_id = $1")
                .bind(&account)
                .fetch_all(pool)
                .await?;
        for (symbol, q) in positions {
            assert_eq!(
                q,
                qty.get(&symbol).copied().unwrap_or_default(),
                "{account} {symbol}: position"
            );
        }
        // Buying power held at every step.
        let negative_cash: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM portfolio_snapshots WHERE account_id = $1 AND cash < 0",
        )
        .bind(&account)
        .fetch_one(pool)
        .await?;
        assert_eq!(negative_cash, 0, "{account}: cash went negative");
    }
    let parity = parity_with_the_driver(pool, &parity_data).await;
    let _ = std::fs::remove_file(&parity_data);
    parity?;
    db.cleanup().await;
    Ok(())
}

/// The demo's market (the file's bars and the synthetic symbol, merged and numbered as the
/// demo publishes them) through the in-process driver, compared with what the Kafka run
/// stored: every order event, every fill, and the final cash and positions.
async fn parity_with_the_driver(pool: &sqlx::PgPool, data: &std::path::Path) -> Result<()> {
    use tradestream_ingest::{CsvFormat, CsvReplay};
    let file_name = data
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let csv = CsvReplay::new(
        &file_name,
        CsvFormat::Daily {
            symbol: tradestream_schemas::Symbol::canonical("^IXIC")?,
        },
        "1d",
    )
    .read(std::fs::File::open(data)?, now)?;
    let items = tradestream_ingest::with_synthetic(csv, &["SYNX".to_string()], 3, now)?;
    let models = tradestream_scorer::ModelHandle::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models"
    )))?;
    let mut driver = tradestream_driver::Driver::new(
        tradestream_features::FeaturesProcessor::new(Default::default())?,
        tradestream_scorer::Scorer::new(models, &Default::default())?,
        tradestream_trading::TradingCore::new(Default::default())?,
    );
    let run = driver.run(items.into_iter().filter_map(Result::ok))?;
    assert!(run.dead_letters.is_empty(), "{:?}", run.dead_letters);
    assert!(!run.fills.is_empty(), "the driver traded");

    let stored_fills: Vec<(String, String, Decimal, Decimal, Decimal, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "SELECT fill_id, order_id, quantity, price, commission, fill_time FROM fills ORDER BY fill_id",
        )
        .fetch_all(pool)
        .await?;
    let mut driven_fills: Vec<_> = run
        .fills
        .iter()
        .map(|f| {
            (
                f.fill_id.clone(),
                f.order_id.clone(),
                f.quantity,
                f.price,
                f.commission,
                f.fill_time,
            )
        })
        .collect();
    driven_fills.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        driven_fills, stored_fills,
        "fills: driver vs Kafka pipeline"
    );

    let stored_events: Vec<(String, String, Decimal, Decimal, Option<String>)> = sqlx::query_as(
        "SELECT event_id, status, quantity, filled_quantity, reject_reason FROM order_events ORDER BY event_id",
    )
    .fetch_all(pool)
    .await?;
    let mut driven_events: Vec<_> = run
        .orders
        .iter()
        .map(|o| {
            (
                o.event_id.clone(),
                tradestream_router::error::status_name(o.status).to_string(),
                o.quantity,
                o.filled_quantity,
                o.reject_reason.clone(),
            )
        })
        .collect();
    driven_events.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(driven_events.len(), stored_events.len(), "order events");
    assert_eq!(
        driven_events, stored_events,
        "order events: driver vs Kafka pipeline"
    );

    let account = tradestream_schemas::AccountId::new("demo")?;
    let books = driver
        .trading()
        .account(&account)
        .context("the demo account")?
        .book;
    let cash: Decimal = sqlx::query_scalar("SELECT cash FROM accounts WHERE account_id = 'demo'")
        .fetch_one(pool)
        .await?;
    assert_eq!(books.cash, cash, "final cash: driver vs Postgres");
    let positions: BTreeMap<String, Decimal> = sqlx::query_as::<_, (String, Decimal)>(
        "SELECT symbol, quantity FROM positions WHERE account_id = 'demo'",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let driven: BTreeMap<String, Decimal> = books
        .positions
        .iter()
        .map(|(s, p)| (s.to_string(), p.quantity))
        .collect();
    assert_eq!(driven, positions, "final positions: driver vs Postgres");
    println!(
        "parity: {} order events, {} fills, cash {cash}, positions {positions:?}",
        stored_events.len(),
        stored_fills.len()
    );
    Ok(())
}
