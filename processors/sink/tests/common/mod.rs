//! Builders and table snapshots shared by the sink's database tests.
#![allow(dead_code, unreachable_pub)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use std::collections::BTreeMap;
use tradestream_postgres::portfolio::{NewAccount, create_account};
use tradestream_schemas::*;
use tradestream_sink::BatchItem;

pub fn t(day: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 14, 30, 0)
        .single()
        .expect("valid time")
        + Duration::days(day)
}

pub fn symbol(s: &str) -> Symbol {
    Symbol::new(s).expect("valid symbol")
}

pub fn account(a: &str) -> AccountId {
    AccountId::new(a).expect("valid account")
}

pub fn bar(sym: &str, day: i64, close: Decimal) -> MarketData {
    MarketData {
        record_id: format!("test:{sym}:{day}"),
        symbol: symbol(sym),
        event_time: t(day),
        kind: MarketDataKind::Bar,
        interval: Some("1d".into()),
        open: close,
        high: close,
        low: close,
        close,
        volume: Decimal::from(1000),
        source: "test".into(),
        ingest_time: t(day),
        step: 0,
        step_bars: 0,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn fill(
    id: &str,
    acct: &str,
    sym: &str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    commission: Decimal,
    day: i64,
) -> Fill {
    Fill {
        fill_id: id.into(),
        order_id: format!("order-of-{id}"),
        account: account(acct),
        symbol: symbol(sym),
        side,
        quantity,
        price,
        commission,
        liquidity: Liquidity::Taker,
        fill_time: t(day),
    }
}

pub fn order_event(order_id: &str, sequence: i32, status: OrderStatus, filled: Decimal) -> Order {
    Order {
        event_id: format!("{order_id}:{sequence}"),
        order_id: order_id.into(),
        sequence,
        client_order_id: None,
        status,
        filled_quantity: filled,
        updated_time: t(i64::from(sequence)),
        ..samples::order()
    }
}

/// Gives each record partition 0 of its topic and the next offset after `base`.
pub fn items(records: Vec<AnyRecord>, base: i64) -> Vec<BatchItem> {
    let mut next: BTreeMap<Topic, i64> = BTreeMap::new();
    records
        .into_iter()
        .map(|r| {
            let n = next.entry(r.topic()).or_insert(base);
            let item = (r.topic(), 0, *n, r);
            *n += 1;
            item
        })
        .collect()
}

pub async fn create(pool: &PgPool, acct: &str, capital: Decimal) {
    create_account(pool, &NewAccount::new(account(acct), acct, capital))
        .await
        .expect("account");
}

/// Empties every table the sink writes (or its triggers and settlement do; ids restart) and
/// opens `accounts` again with `capital` each. One list, so a table the sink starts writing
/// cannot be left out of one test's reset and leak rows into its next case.
pub async fn reset(pool: &PgPool, accounts: &[&str], capital: Decimal) {
    sqlx::query(
        "TRUNCATE market_data, features, signals, anomalies, orders, order_events, fills,
                  positions, portfolio_snapshots, consumed_offsets, symbol_marks, accounts
                  RESTART IDENTITY CASCADE",
    )
    .execute(pool)
    .await
    .expect("truncate");
    for a in accounts {
        create(pool, a, capital).await;
    }
}

/// Every table the sink writes (or its triggers do), as JSON, without the columns that hold
/// wall-clock times or sequence numbers.
pub async fn tables(pool: &PgPool) -> BTreeMap<&'static str, String> {
    let specs: [(&str, &str, &str); 12] = [
        ("market_data", "record_id", "'{}'"),
        ("features", "record_id", "'{ingested_at}'"),
        ("signals", "signal_id", "'{ingested_at}'"),
        ("anomalies", "anomaly_id", "'{ingested_at}'"),
        ("orders", "order_id", "'{}'"),
        ("order_events", "event_id", "'{ingested_at}'"),
        ("fills", "fill_id", "'{ingested_at}'"),
        ("positions", "account_id, symbol", "'{}'"),
        ("symbol_marks", "symbol", "'{}'"),
        ("accounts", "account_id", "'{created_at,updated_at}'"),
        // Each account's series in its order. Across accounts the order of rows at one
        // instant is not part of the result: one mark updates the positions of several
        // accounts in whatever order the table's heap holds them, and that order depends on
        // earlier updates (a proptest case found replayed batches interleaving two accounts'
        // snapshots of the same bar the other way round).
        (
            "portfolio_snapshots",
            "account_id, snapshot_id",
            "'{snapshot_id,created_at}'",
        ),
        (
            "consumed_offsets",
            "consumer_group, topic, partition",
            "'{updated_at}'",
        ),
    ];
    let mut out = BTreeMap::new();
    for (table, order, drop) in specs {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) - {drop}::text[] ORDER BY {order}), '[]')::text
               FROM (SELECT * FROM {table} ORDER BY {order}) t"
        );
        let json: String = sqlx::query_scalar(&sql).fetch_one(pool).await.expect(table);
        out.insert(table, json);
    }
    out
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count")
}
