//! Builders shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tradestream_postgres::portfolio::{self, Account, NewAccount};
use tradestream_schemas::{
    AccountId, Fill, Liquidity, Order, OrderStatus, OrderType, OriginKind, Side, Symbol,
    TimeInForce,
};

pub fn acct(id: &str) -> AccountId {
    AccountId::new(id).expect("valid account id")
}

pub fn sym(s: &str) -> Symbol {
    Symbol::new(s).expect("valid symbol")
}

/// Midnight UTC of 2020-01-`day` plus `hours`.
pub fn at(day: u32, hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, day, 0, 0, 0)
        .single()
        .expect("valid date")
        + Duration::hours(hours)
}

pub async fn create_account(pool: &PgPool, id: &str, capital: Decimal) -> Account {
    portfolio::create_account(
        pool,
        &NewAccount::new(acct(id), format!("account {id}"), capital),
    )
    .await
    .expect("create account")
}

#[allow(clippy::too_many_arguments)] // mirrors the Fill record
pub fn fill(
    fill_id: &str,
    account: &str,
    symbol: &str,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    commission: Decimal,
    time: DateTime<Utc>,
) -> Fill {
    Fill {
        fill_id: fill_id.to_string(),
        order_id: format!("order-of-{fill_id}"),
        account: acct(account),
        symbol: sym(symbol),
        side,
        quantity,
        price,
        commission,
        liquidity: Liquidity::Taker,
        fill_time: time,
    }
}

/// A NEW day order; adjust fields with struct update syntax.
pub fn order(order_id: &str, account: &str, order_type: OrderType, quantity: Decimal) -> Order {
    Order {
        event_id: format!("{order_id}:0"),
        order_id: order_id.to_string(),
        sequence: 0,
        client_order_id: None,
        account: acct(account),
        symbol: sym("AAPL"),
        side: Side::Buy,
        order_type,
        quantity,
        limit_price: None,
        stop_price: None,
        time_in_force: TimeInForce::Day,
        status: OrderStatus::New,
        filled_quantity: Decimal::ZERO,
        origin_kind: OriginKind::Manual,
        origin_id: "test".to_string(),
        parent_order_id: None,
        reject_reason: None,
        created_time: at(2, 0),
        updated_time: at(2, 0),
    }
}

/// A proptest runner for database property tests: `default_cases` cases unless
/// `PROPTEST_CASES` says otherwise (e.g. 1000 for a deeper run); no failure files.
pub fn database_property_runner(default_cases: u32) -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

/// Empties the books (fills, positions, snapshots, orders, marks, accounts; ids restart) and opens
/// `accounts` again, each with `capital` and allowed to short.
pub async fn reset_books(pool: &PgPool, accounts: &[&str], capital: Decimal) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE fills, positions, portfolio_snapshots, orders, symbol_marks, accounts
         RESTART IDENTITY CASCADE",
    )
    .execute(pool)
    .await?;
    for id in accounts {
        let mut account = NewAccount::new(acct(id), *id, capital);
        account.allow_short = true;
        portfolio::create_account(pool, &account).await?;
    }
    Ok(())
}
