//! `PostgresError::from_sqlx` against errors raised by a real server: each domain variant and
//! its class (retryable / dead-letter / fatal).

mod common;

use anyhow::Result;
use common::*;
use rust_decimal_macros::dec;
use sqlx::Connection as _;
use tradestream_postgres::testing::TestDatabase;
use tradestream_postgres::{PostgresError, portfolio};
use tradestream_schemas::{ErrorClass, Side};

async fn exec(pool: &sqlx::PgPool, sql: &str) -> Result<(), PostgresError> {
    sqlx::query(sql)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(PostgresError::from)
}

#[tokio::test]
async fn integrity_errors_are_dead_letters_naming_the_field() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(1000)).await;

    // unique violation on the primary key
    match portfolio::create_account(
        pool,
        &portfolio::NewAccount::new(acct("acc"), "again", dec!(1)),
    )
    .await
    {
        Err(e @ PostgresError::Duplicate { .. }) => {
            assert_eq!(e.class(), ErrorClass::DeadLetter);
            let PostgresError::Duplicate {
                constraint,
                message,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(constraint, "accounts_pkey");
            assert!(message.contains("(account_id)=(acc)"), "{message}");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // check violation outside orders: invalid data with table, field and constraint
    match exec(
        pool,
        "INSERT INTO accounts (account_id, name, initial_capital) VALUES ('z', 'z', 0)",
    )
    .await
    {
        Err(PostgresError::InvalidData {
            table,
            field,
            constraint,
            ..
        }) => {
            assert_eq!(table.as_deref(), Some("accounts"));
            assert_eq!(field.as_deref(), Some("initial_capital"));
            assert_eq!(
                constraint.as_deref(),
                Some("accounts_initial_capital_positive")
            );
        }
        other => panic!("expected InvalidData, got {other:?}"),
    }
    // not-null violation names the column
    match exec(pool, "INSERT INTO market_data (record_id, symbol, event_time, interval, open, high, low, close, source)
                      VALUES ('r', 'X', now(), '1d', 1, 1, 1, 1, 's')").await
    {
        Err(e @ PostgresError::InvalidData { .. }) => {
            assert_eq!(e.class(), ErrorClass::DeadLetter);
            let PostgresError::InvalidData { field, .. } = &e else { unreachable!() };
            assert_eq!(field.as_deref(), Some("volume"));
        }
        other => panic!("expected InvalidData, got {other:?}"),
    }
    // market data rules: high below close
    match exec(pool, "INSERT INTO market_data (record_id, symbol, event_time, interval, open, high, low, close, volume, source)
                      VALUES ('r', 'X', now(), '1d', 1, 1, 1, 2, 0, 's')").await
    {
        Err(PostgresError::InvalidData { constraint, .. }) => {
            assert_eq!(constraint.as_deref(), Some("market_data_high_range"))
        }
        other => panic!("expected InvalidData, got {other:?}"),
    }
    // a tick stores price as open = high = low = close and needs no interval
    exec(pool, "INSERT INTO market_data (record_id, kind, symbol, event_time, open, high, low, close, volume, source)
                VALUES ('t', 'TICK', 'X', now(), 5, 5, 5, 5, 100, 's')").await?;
    // data exception: numeric overflow of NUMERIC(28,8)
    match exec(
        pool,
        "UPDATE accounts SET commission_min = 1e30 WHERE account_id = 'acc'",
    )
    .await
    {
        Err(e @ PostgresError::InvalidData { .. }) => assert_eq!(e.class(), ErrorClass::DeadLetter),
        other => panic!("expected InvalidData, got {other:?}"),
    }
    // foreign key to a missing account from a plain table
    match exec(
        pool,
        "INSERT INTO positions (account_id, symbol, updated_at) VALUES ('nobody', 'X', now())",
    )
    .await
    {
        Err(PostgresError::UnknownAccount { account }) => assert_eq!(account, "nobody"),
        other => panic!("expected UnknownAccount, got {other:?}"),
    }
    // a foreign key the other way (deleting a referenced account) is not an unknown account
    portfolio::insert_fill(
        pool,
        &fill(
            "f",
            "acc",
            "X",
            Side::Buy,
            dec!(1),
            dec!(1),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    match exec(pool, "DELETE FROM accounts WHERE account_id = 'acc'").await {
        Err(PostgresError::InvalidData { constraint, .. }) => {
            assert!(constraint.is_some_and(|c| c.ends_with("_account_id_fkey")))
        }
        other => panic!("expected InvalidData, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn serialization_failures_and_deadlocks_are_retryable() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "a", dec!(1000)).await;
    create_account(pool, "b", dec!(1000)).await;

    // 40001: a repeatable-read transaction updates a row changed after its snapshot
    let mut c1 = sqlx::PgConnection::connect(db.url()).await?;
    let mut c2 = sqlx::PgConnection::connect(db.url()).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut c1)
        .await?;
    sqlx::query("SELECT cash FROM accounts WHERE account_id = 'a'")
        .execute(&mut c1)
        .await?;
    sqlx::query("UPDATE accounts SET name = 'changed' WHERE account_id = 'a'")
        .execute(&mut c2)
        .await?;
    let r = sqlx::query("UPDATE accounts SET name = 'mine' WHERE account_id = 'a'")
        .execute(&mut c1)
        .await;
    match r.map_err(PostgresError::from) {
        Err(e @ PostgresError::Conflict { .. }) => {
            assert_eq!(e.sqlstate(), Some("40001"));
            assert_eq!(e.class(), ErrorClass::Retryable);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    sqlx::query("ROLLBACK").execute(&mut c1).await?;

    // 40P01: two transactions lock a and b in opposite orders
    sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut c1)
        .await?;
    sqlx::query("SET deadlock_timeout = '100ms'")
        .execute(&mut c2)
        .await?;
    sqlx::query("BEGIN").execute(&mut c1).await?;
    sqlx::query("BEGIN").execute(&mut c2).await?;
    sqlx::query("UPDATE accounts SET name = 'x' WHERE account_id = 'a'")
        .execute(&mut c1)
        .await?;
    sqlx::query("UPDATE accounts SET name = 'y' WHERE account_id = 'b'")
        .execute(&mut c2)
        .await?;
    let (r1, r2) = tokio::join!(
        sqlx::query("UPDATE accounts SET name = 'x' WHERE account_id = 'b'").execute(&mut c1),
        sqlx::query("UPDATE accounts SET name = 'y' WHERE account_id = 'a'").execute(&mut c2),
    );
    let errors: Vec<PostgresError> = [r1.err(), r2.err()]
        .into_iter()
        .flatten()
        .map(PostgresError::from)
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one side is the deadlock victim: {errors:?}"
    );
    assert_eq!(errors[0].sqlstate(), Some("40P01"), "{:?}", errors[0]);
    assert_eq!(errors[0].class(), ErrorClass::Retryable);
    sqlx::query("ROLLBACK").execute(&mut c1).await?;
    sqlx::query("ROLLBACK").execute(&mut c2).await?;
    c1.close().await?;
    c2.close().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn schema_and_migration_errors_are_fatal() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    match exec(pool, "SELECT * FROM no_such_table").await {
        Err(e @ PostgresError::Database { .. }) => {
            assert_eq!(e.sqlstate(), Some("42P01"));
            assert_eq!(e.class(), ErrorClass::Fatal);
        }
        other => panic!("expected Database, got {other:?}"),
    }
    // a broken migration
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("0001_broken.sql"), "CREATE TABLEE nope ();")?;
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await?;
    let r = migrator.run(pool).await.map_err(PostgresError::from);
    match r {
        Err(e @ PostgresError::Migration(_)) => assert_eq!(e.class(), ErrorClass::Fatal),
        other => panic!("expected Migration, got {other:?}"),
    }
    // decoding a value into the wrong Rust type is a client-side bug
    let r: Result<i64, _> = sqlx::query_scalar("SELECT 'text'::text")
        .fetch_one(pool)
        .await;
    match r.map_err(PostgresError::from) {
        Err(e @ PostgresError::Client(_)) => assert_eq!(e.class(), ErrorClass::Fatal),
        other => panic!("expected Client, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_closed_pool_is_retryable() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool().clone();
    pool.close().await;
    let r = exec(&pool, "SELECT 1").await;
    match r {
        Err(e @ PostgresError::Connection(_)) => assert_eq!(e.class(), ErrorClass::Retryable),
        other => panic!("expected Connection, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}
