//! The stored procedures and triggers of `sql/0002_books.sql` against a real PostgreSQL,
//! with every expected figure worked out by hand in the comments.

mod common;

use anyhow::Result;
use common::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tradestream_postgres::portfolio::{self, NewAccount};
use tradestream_postgres::testing::TestDatabase;
use tradestream_postgres::{PostgresError, offsets};
use tradestream_schemas::{ErrorClass, OrderStatus, OrderType, Side};

// ---------------------------------------------------------------------------------------------
// validate_order

#[tokio::test]
async fn validate_order_enforces_each_rule_with_a_mapped_error() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(1000)).await;

    let invalid_field = |r: Result<bool, PostgresError>| match r {
        Err(PostgresError::InvalidOrder { field, reason }) => {
            assert!(!reason.is_empty());
            field
        }
        other => panic!("expected InvalidOrder, got {other:?}"),
    };

    // quantity must be > 0
    for q in [dec!(0), dec!(-1)] {
        let r = portfolio::insert_order(pool, &order("q", "acc", OrderType::Market, q)).await;
        let err_text = format!("{r:?}");
        assert_eq!(invalid_field(r).as_deref(), Some("quantity"), "{err_text}");
    }
    // LIMIT and STOP_LIMIT need a limit price
    for t in [OrderType::Limit, OrderType::StopLimit] {
        let o = common::order("l", "acc", t, dec!(1));
        let o = tradestream_schemas::Order {
            stop_price: Some(dec!(5)),
            ..o
        };
        assert_eq!(
            invalid_field(portfolio::insert_order(pool, &o).await).as_deref(),
            Some("limit_price")
        );
    }
    // STOP and STOP_LIMIT need a stop price
    for t in [OrderType::Stop, OrderType::StopLimit] {
        let o = common::order("s", "acc", t, dec!(1));
        let o = tradestream_schemas::Order {
            limit_price: Some(dec!(5)),
            ..o
        };
        assert_eq!(
            invalid_field(portfolio::insert_order(pool, &o).await).as_deref(),
            Some("stop_price")
        );
    }
    // prices, when present, must be > 0
    let o = tradestream_schemas::Order {
        limit_price: Some(dec!(0)),
        ..order("lp", "acc", OrderType::Limit, dec!(1))
    };
    assert_eq!(
        invalid_field(portfolio::insert_order(pool, &o).await).as_deref(),
        Some("limit_price")
    );
    let o = tradestream_schemas::Order {
        stop_price: Some(dec!(-2)),
        ..order("sp", "acc", OrderType::Stop, dec!(1))
    };
    assert_eq!(
        invalid_field(portfolio::insert_order(pool, &o).await).as_deref(),
        Some("stop_price")
    );

    // the account must exist
    match portfolio::insert_order(pool, &order("u", "ghost", OrderType::Market, dec!(1))).await {
        Err(e @ PostgresError::UnknownAccount { .. }) => {
            assert_eq!(e.class(), ErrorClass::DeadLetter);
            assert!(
                matches!(&e, PostgresError::UnknownAccount { account } if account == "ghost"),
                "{e:?}"
            );
        }
        other => panic!("expected UnknownAccount, got {other:?}"),
    }
    // a REJECTED order keeps the bad values that caused the rejection ...
    let rejected = tradestream_schemas::Order {
        status: OrderStatus::Rejected,
        reject_reason: Some("quantity must be > 0".into()),
        ..order("rej", "acc", OrderType::Limit, dec!(0))
    };
    assert!(portfolio::insert_order(pool, &rejected).await?);
    // ... but still needs a real account
    let rejected_ghost = tradestream_schemas::Order {
        order_id: "rej2".into(),
        ..rejected.clone()
    };
    let rejected_ghost = tradestream_schemas::Order {
        account: acct("ghost"),
        ..rejected_ghost
    };
    assert!(matches!(
        portfolio::insert_order(pool, &rejected_ghost).await,
        Err(PostgresError::UnknownAccount { .. })
    ));

    // valid orders of every type are stored
    let valid = [
        order("m", "acc", OrderType::Market, dec!(1.5)),
        tradestream_schemas::Order {
            limit_price: Some(dec!(10)),
            ..order("l1", "acc", OrderType::Limit, dec!(2))
        },
        tradestream_schemas::Order {
            stop_price: Some(dec!(9)),
            ..order("s1", "acc", OrderType::Stop, dec!(3))
        },
        tradestream_schemas::Order {
            limit_price: Some(dec!(10)),
            stop_price: Some(dec!(9)),
            ..order("sl1", "acc", OrderType::StopLimit, dec!(4))
        },
    ];
    for o in &valid {
        assert!(portfolio::insert_order(pool, o).await?, "{o:?}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await?;
    assert_eq!(n, 5, "4 valid + 1 rejected");

    // the CHECK constraints keep updates honest too
    let r = sqlx::query("UPDATE orders SET quantity = 0 WHERE order_id = 'm'")
        .execute(pool)
        .await;
    match r.map_err(PostgresError::from) {
        Err(PostgresError::InvalidOrder { field, .. }) => {
            assert_eq!(field.as_deref(), Some("quantity"))
        }
        other => panic!("expected InvalidOrder, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn order_events_advance_by_sequence_and_client_ids_are_unique_per_account() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "a", dec!(1000)).await;
    create_account(pool, "b", dec!(1000)).await;

    let new = tradestream_schemas::Order {
        client_order_id: Some("client-1".into()),
        ..order("o1", "a", OrderType::Market, dec!(10))
    };
    assert!(portfolio::insert_order(pool, &new).await?);
    let filled = tradestream_schemas::Order {
        sequence: 2,
        status: OrderStatus::Filled,
        filled_quantity: dec!(10),
        updated_time: at(2, 1),
        ..new.clone()
    };
    assert!(portfolio::insert_order(pool, &filled).await?);
    // a replayed older event changes nothing
    let accepted = tradestream_schemas::Order {
        sequence: 1,
        status: OrderStatus::Accepted,
        ..new.clone()
    };
    assert!(!portfolio::insert_order(pool, &accepted).await?);
    assert!(!portfolio::insert_order(pool, &filled).await?);
    let (status, filled_qty, seq): (String, Decimal, i32) = sqlx::query_as(
        "SELECT status, filled_quantity, sequence FROM orders WHERE order_id = 'o1'",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!((status.as_str(), filled_qty, seq), ("FILLED", dec!(10), 2));

    // another order of the same account reusing the client id is a duplicate ...
    let dup = tradestream_schemas::Order {
        order_id: "o2".into(),
        ..new.clone()
    };
    match portfolio::insert_order(pool, &dup).await {
        Err(e @ PostgresError::Duplicate { .. }) => {
            assert!(
                matches!(&e, PostgresError::Duplicate { constraint, .. }
                if constraint == "orders_account_id_client_order_id_key"),
                "{e:?}"
            );
            assert_eq!(e.class(), ErrorClass::DeadLetter);
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // ... but another account may use it, and orders without client ids never collide
    let other_account = tradestream_schemas::Order {
        order_id: "o3".into(),
        account: acct("b"),
        ..new.clone()
    };
    assert!(portfolio::insert_order(pool, &other_account).await?);
    for id in ["o4", "o5"] {
        assert!(portfolio::insert_order(pool, &order(id, "a", OrderType::Market, dec!(1))).await?);
    }
    db.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// check_available_funds / require_available_funds

#[tokio::test]
async fn check_available_funds_counts_commission_positions_and_shorting() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    let mut with_fees = NewAccount::new(acct("fees"), "fees", dec!(10000));
    with_fees.commission_per_share = dec!(0.01);
    with_fees.commission_bps = dec!(5);
    with_fees.commission_min = dec!(1);
    portfolio::create_account(pool, &with_fees).await?;
    let mut min_only = NewAccount::new(acct("minfee"), "min", dec!(10000));
    min_only.commission_min = dec!(5);
    portfolio::create_account(pool, &min_only).await?;
    let mut shorty = NewAccount::new(acct("shorty"), "short", dec!(10000));
    shorty.allow_short = true;
    portfolio::create_account(pool, &shorty).await?;

    let check = |account: &'static str, side: Side, q: Decimal, p: Option<Decimal>| async move {
        portfolio::check_available_funds(pool, &acct(account), &sym("AAPL"), side, q, p).await
    };

    // 99 @ 100 = 9900; commission max(1, 0.99 + 9900 * 5/10000 = 4.95) = 5.94; 9905.94 <= 10000
    assert!(check("fees", Side::Buy, dec!(99), Some(dec!(100))).await?);
    // 100 @ 100 = 10000 is affordable only without the 1 + 5 = 6 commission
    assert!(!check("fees", Side::Buy, dec!(100), Some(dec!(100))).await?);
    // minimum commission: 9995 + 5 = 10000 exactly fits; one hundred-millionth more does not
    assert!(check("minfee", Side::Buy, dec!(1), Some(dec!(9995))).await?);
    assert!(!check("minfee", Side::Buy, dec!(1), Some(dec!(9995.00000001))).await?);

    // selling needs a position unless shorting is allowed
    assert!(!check("fees", Side::Sell, dec!(1), None).await?);
    portfolio::insert_fill(
        pool,
        &fill(
            "f1",
            "fees",
            "AAPL",
            Side::Buy,
            dec!(10),
            dec!(100),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    assert!(check("fees", Side::Sell, dec!(10), None).await?);
    assert!(!check("fees", Side::Sell, dec!(10.00000001), Some(dec!(100))).await?);
    assert!(check("shorty", Side::Sell, dec!(1000000), None).await?);
    // a short seller's BUY still needs cash
    assert!(!check("shorty", Side::Buy, dec!(1000), Some(dec!(100))).await?);

    // bad arguments and unknown accounts are refused with mapped errors
    match check("ghost", Side::Buy, dec!(1), Some(dec!(1))).await {
        Err(PostgresError::UnknownAccount { account }) => assert_eq!(account, "ghost"),
        other => panic!("expected UnknownAccount, got {other:?}"),
    }
    match check("fees", Side::Buy, dec!(0), Some(dec!(1))).await {
        Err(PostgresError::InvalidArgument { argument, .. }) => {
            assert_eq!(argument.as_deref(), Some("p_quantity"))
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match check("fees", Side::Buy, dec!(1), None).await {
        Err(PostgresError::InvalidArgument { argument, .. }) => {
            assert_eq!(argument.as_deref(), Some("p_price"))
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let bad_side: Result<bool, _> =
        sqlx::query_scalar("SELECT check_available_funds('fees', 'AAPL', 'HOLD', 1, 1)")
            .fetch_one(pool)
            .await;
    assert!(matches!(
        bad_side.map_err(PostgresError::from),
        Err(PostgresError::InvalidArgument { .. })
    ));

    // require_available_funds raises instead of answering false
    portfolio::require_available_funds(
        pool,
        &acct("fees"),
        &sym("AAPL"),
        Side::Buy,
        dec!(1),
        Some(dec!(1)),
    )
    .await?;
    match portfolio::require_available_funds(
        pool,
        &acct("fees"),
        &sym("AAPL"),
        Side::Buy,
        dec!(1000),
        Some(dec!(100)),
    )
    .await
    {
        Err(e @ PostgresError::InsufficientFunds { .. }) => {
            assert!(
                matches!(&e, PostgresError::InsufficientFunds { account, .. } if account == "fees")
            );
            assert!(e.to_string().contains("insufficient funds"), "{e}");
            assert_eq!(e.class(), ErrorClass::DeadLetter);
        }
        other => panic!("expected InsufficientFunds, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// apply_fill, mark_to_market, calculate_position_pnl, update_portfolio_value

struct Expect {
    quantity: Decimal,
    avg: Decimal,
    realized: Decimal,
    commission: Decimal,
    current: Decimal,
    unrealized: Decimal,
}

async fn assert_position(
    pool: &sqlx::PgPool,
    account: &str,
    symbol: &str,
    e: Expect,
) -> Result<()> {
    let positions = portfolio::positions(pool, &acct(account)).await?;
    let p = positions
        .iter()
        .find(|p| p.symbol.as_str() == symbol)
        .expect("position exists");
    assert_eq!(p.quantity, e.quantity, "quantity of {symbol}");
    assert_eq!(p.avg_price, e.avg, "avg_price of {symbol}");
    assert_eq!(p.realized_pnl, e.realized, "realized_pnl of {symbol}");
    assert_eq!(p.commission, e.commission, "commission of {symbol}");
    assert_eq!(
        p.current_price,
        Some(e.current),
        "current_price of {symbol}"
    );
    assert_eq!(p.unrealized_pnl, e.unrealized, "unrealized_pnl of {symbol}");
    Ok(())
}

async fn assert_cash_and_value(
    pool: &sqlx::PgPool,
    account: &str,
    cash: Decimal,
    total: Decimal,
) -> Result<()> {
    let a = portfolio::account(pool, &acct(account))
        .await?
        .expect("account exists");
    assert_eq!(a.cash, cash, "cash");
    assert_eq!(a.total_value, total, "total_value");
    Ok(())
}

#[tokio::test]
async fn apply_fill_buy_add_partial_sell_and_close() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(100000)).await;
    let ins = |f| async move { portfolio::insert_fill(pool, &f).await };

    // buy 10 @ 100, commission 1: cash 100000 - 1000 - 1 = 98999, value 98999 + 10*100
    assert!(
        ins(fill(
            "f1",
            "acc",
            "AAPL",
            Side::Buy,
            dec!(10),
            dec!(100),
            dec!(1),
            at(1, 0)
        ))
        .await?
    );
    assert_position(
        pool,
        "acc",
        "AAPL",
        Expect {
            quantity: dec!(10),
            avg: dec!(100),
            realized: dec!(0),
            commission: dec!(1),
            current: dec!(100),
            unrealized: dec!(0),
        },
    )
    .await?;
    assert_cash_and_value(pool, "acc", dec!(98999), dec!(99999)).await?;

    // the same fill again is ignored (idempotent sink)
    assert!(
        !ins(fill(
            "f1",
            "acc",
            "AAPL",
            Side::Buy,
            dec!(10),
            dec!(100),
            dec!(1),
            at(1, 0)
        ))
        .await?
    );
    assert_cash_and_value(pool, "acc", dec!(98999), dec!(99999)).await?;

    // add 5 @ 106, commission 1.5: avg (10*100 + 5*106)/15 = 102; the mark stays at 100 so
    // unrealized = 15 * (100 - 102) = -30; cash 98999 - 530 - 1.5 = 98467.5; value + 15*100
    assert!(
        ins(fill(
            "f2",
            "acc",
            "AAPL",
            Side::Buy,
            dec!(5),
            dec!(106),
            dec!(1.5),
            at(1, 1)
        ))
        .await?
    );
    assert_position(
        pool,
        "acc",
        "AAPL",
        Expect {
            quantity: dec!(15),
            avg: dec!(102),
            realized: dec!(0),
            commission: dec!(2.5),
            current: dec!(100),
            unrealized: dec!(-30),
        },
    )
    .await?;
    assert_cash_and_value(pool, "acc", dec!(98467.5), dec!(99967.5)).await?;

    // partial sell 5 @ 110, commission 1: realized 5 * (110 - 102) = 40, avg unchanged,
    // unrealized 10 * (100 - 102) = -20, cash 98467.5 + 550 - 1 = 99016.5
    assert!(
        ins(fill(
            "f3",
            "acc",
            "AAPL",
            Side::Sell,
            dec!(5),
            dec!(110),
            dec!(1),
            at(1, 2)
        ))
        .await?
    );
    assert_position(
        pool,
        "acc",
        "AAPL",
        Expect {
            quantity: dec!(10),
            avg: dec!(102),
            realized: dec!(40),
            commission: dec!(3.5),
            current: dec!(100),
            unrealized: dec!(-20),
        },
    )
    .await?;
    assert_cash_and_value(pool, "acc", dec!(99016.5), dec!(100016.5)).await?;

    // close 10 @ 99, commission 1: realized 40 + 10 * (99 - 102) = 10, flat: avg 0,
    // unrealized 0, cash 99016.5 + 990 - 1 = 100005.5 = 100000 + realized 10 - commission 4.5
    assert!(
        ins(fill(
            "f4",
            "acc",
            "AAPL",
            Side::Sell,
            dec!(10),
            dec!(99),
            dec!(1),
            at(1, 3)
        ))
        .await?
    );
    assert_position(
        pool,
        "acc",
        "AAPL",
        Expect {
            quantity: dec!(0),
            avg: dec!(0),
            realized: dec!(10),
            commission: dec!(4.5),
            current: dec!(100),
            unrealized: dec!(0),
        },
    )
    .await?;
    assert_cash_and_value(pool, "acc", dec!(100005.5), dec!(100005.5)).await?;

    // fills write no portfolio snapshot: the trading core's valuations are the snapshots
    let snaps = portfolio::snapshots(pool, &acct("acc"), at(1, 0), at(2, 0)).await?;
    assert!(snaps.is_empty(), "{snaps:?}");
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn apply_fill_flips_long_to_short_and_back() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(10000)).await;
    let ins = |f| async move { portfolio::insert_fill(pool, &f).await };

    // long 4 @ 50 (cash -200)
    ins(fill(
        "f1",
        "acc",
        "FLIP",
        Side::Buy,
        dec!(4),
        dec!(50),
        dec!(0),
        at(1, 0),
    ))
    .await?;
    // sell 10 @ 55: closes 4 (realized 4 * 5 = 20), the other 6 open short at 55;
    // mark still 50: unrealized -6 * (50 - 55) = 30; cash -200 + 550 = +350
    ins(fill(
        "f2",
        "acc",
        "FLIP",
        Side::Sell,
        dec!(10),
        dec!(55),
        dec!(0.5),
        at(1, 1),
    ))
    .await?;
    assert_position(
        pool,
        "acc",
        "FLIP",
        Expect {
            quantity: dec!(-6),
            avg: dec!(55),
            realized: dec!(20),
            commission: dec!(0.5),
            current: dec!(50),
            unrealized: dec!(30),
        },
    )
    .await?;
    // cash 10000 - 200 + 550 - 0.5 = 10349.5; value 10349.5 - 6 * 50 = 10049.5
    assert_cash_and_value(pool, "acc", dec!(10349.5), dec!(10049.5)).await?;

    // adding to the short: sell 2 @ 59 -> avg (6*55 + 2*59)/8 = 448/8 = 56
    ins(fill(
        "f3",
        "acc",
        "FLIP",
        Side::Sell,
        dec!(2),
        dec!(59),
        dec!(0),
        at(1, 2),
    ))
    .await?;
    assert_position(
        pool,
        "acc",
        "FLIP",
        Expect {
            quantity: dec!(-8),
            avg: dec!(56),
            realized: dec!(20),
            commission: dec!(0.5),
            current: dec!(50),
            unrealized: dec!(48),
        },
    )
    .await?;

    // buy 10 @ 52: covers 8 (realized += 8 * (52 - 56) * -1 = 32 -> 52), 2 open long at 52
    ins(fill(
        "f4",
        "acc",
        "FLIP",
        Side::Buy,
        dec!(10),
        dec!(52),
        dec!(0),
        at(1, 3),
    ))
    .await?;
    assert_position(
        pool,
        "acc",
        "FLIP",
        Expect {
            quantity: dec!(2),
            avg: dec!(52),
            realized: dec!(52),
            commission: dec!(0.5),
            current: dec!(50),
            unrealized: dec!(-4),
        },
    )
    .await?;
    // cash 10349.5 + 118 - 520 = 9947.5; value 9947.5 + 2 * 50 = 10047.5
    assert_cash_and_value(pool, "acc", dec!(9947.5), dec!(10047.5)).await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn apply_fill_rounds_the_average_half_away_from_zero() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(10000)).await;
    // (3 * 10 + 3 * 10.00000001) / 6 = 10.000000005 exactly: a midpoint, rounds up
    portfolio::insert_fill(
        pool,
        &fill(
            "a1",
            "acc",
            "MID",
            Side::Buy,
            dec!(3),
            dec!(10),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "a2",
            "acc",
            "MID",
            Side::Buy,
            dec!(3),
            dec!(10.00000001),
            dec!(0),
            at(1, 1),
        ),
    )
    .await?;
    // (1 * 1 + 2 * 2) / 3 = 1.6666...: rounds to 1.66666667
    portfolio::insert_fill(
        pool,
        &fill(
            "b1",
            "acc",
            "THIRD",
            Side::Buy,
            dec!(1),
            dec!(1),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "b2",
            "acc",
            "THIRD",
            Side::Buy,
            dec!(2),
            dec!(2),
            dec!(0),
            at(1, 1),
        ),
    )
    .await?;
    // short side: (1 * 1 + 1 * 1.00000001) / 2 = 1.000000005 -> 1.00000001 (away from zero
    // in magnitude; prices are positive, so the same direction)
    portfolio::insert_fill(
        pool,
        &fill(
            "c1",
            "acc",
            "SHRT",
            Side::Sell,
            dec!(1),
            dec!(1),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "c2",
            "acc",
            "SHRT",
            Side::Sell,
            dec!(1),
            dec!(1.00000001),
            dec!(0),
            at(1, 1),
        ),
    )
    .await?;
    let positions = portfolio::positions(pool, &acct("acc")).await?;
    let avg = |s: &str| {
        positions
            .iter()
            .find(|p| p.symbol.as_str() == s)
            .map(|p| p.avg_price)
    };
    assert_eq!(avg("MID"), Some(dec!(10.00000001)));
    assert_eq!(avg("THIRD"), Some(dec!(1.66666667)));
    assert_eq!(avg("SHRT"), Some(dec!(1.00000001)));
    // unrealized uses the rounded average at the first fill's price: 3 * (1 - 1.66666667)
    let third = positions
        .iter()
        .find(|p| p.symbol.as_str() == "THIRD")
        .expect("THIRD");
    assert_eq!(third.unrealized_pnl, dec!(-2.00000001));
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn fills_for_unknown_accounts_or_with_bad_numbers_are_refused() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(1000)).await;
    match portfolio::insert_fill(
        pool,
        &fill(
            "g",
            "ghost",
            "AAPL",
            Side::Buy,
            dec!(1),
            dec!(1),
            dec!(0),
            at(1, 0),
        ),
    )
    .await
    {
        Err(PostgresError::UnknownAccount { account }) => assert_eq!(account, "ghost"),
        other => panic!("expected UnknownAccount, got {other:?}"),
    }
    for (f, column) in [
        (
            fill(
                "q0",
                "acc",
                "AAPL",
                Side::Buy,
                dec!(0),
                dec!(1),
                dec!(0),
                at(1, 0),
            ),
            "quantity",
        ),
        (
            fill(
                "qn",
                "acc",
                "AAPL",
                Side::Sell,
                dec!(-1),
                dec!(1),
                dec!(0),
                at(1, 0),
            ),
            "quantity",
        ),
        (
            fill(
                "p0",
                "acc",
                "AAPL",
                Side::Buy,
                dec!(1),
                dec!(0),
                dec!(0),
                at(1, 0),
            ),
            "price",
        ),
        (
            fill(
                "cn",
                "acc",
                "AAPL",
                Side::Buy,
                dec!(1),
                dec!(1),
                dec!(-0.01),
                at(1, 0),
            ),
            "commission",
        ),
    ] {
        match portfolio::insert_fill(pool, &f).await {
            Err(e @ PostgresError::InvalidData { .. }) => {
                assert_eq!(e.class(), ErrorClass::DeadLetter);
                let PostgresError::InvalidData { table, field, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(
                    (table.as_deref(), field.as_deref()),
                    (Some("fills"), Some(column)),
                    "{e}"
                );
            }
            other => panic!("expected InvalidData for {column}, got {other:?}"),
        }
    }
    // nothing moved
    assert_cash_and_value(pool, "acc", dec!(1000), dec!(1000)).await?;
    assert!(portfolio::positions(pool, &acct("acc")).await?.is_empty());
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn mark_to_market_and_calculate_position_pnl() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "long", dec!(10000)).await;
    let mut s = NewAccount::new(acct("short"), "short", dec!(10000));
    s.allow_short = true;
    portfolio::create_account(pool, &s).await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "f1",
            "long",
            "AAPL",
            Side::Buy,
            dec!(10),
            dec!(100),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "f2",
            "short",
            "AAPL",
            Side::Sell,
            dec!(4),
            dec!(101),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    portfolio::insert_fill(
        pool,
        &fill(
            "f3",
            "long",
            "MSFT",
            Side::Buy,
            dec!(1),
            dec!(300),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;

    let n = portfolio::mark_to_market(pool, &sym("AAPL"), dec!(103.5), at(2, 0)).await?;
    assert_eq!(n, 2, "both AAPL positions, not MSFT");
    assert_eq!(
        portfolio::mark_to_market(pool, &sym("NONE"), dec!(1), at(2, 0)).await?,
        0
    );

    let pnl = portfolio::calculate_position_pnl(pool, &sym("AAPL")).await?;
    let rows: Vec<_> = pnl
        .iter()
        .map(|r| {
            (
                r.account_id.as_str(),
                r.quantity,
                r.avg_price,
                r.current_price,
                r.unrealized_pnl,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            // 10 * (103.5 - 100) = 35
            (
                "long",
                dec!(10),
                dec!(100),
                Some(dec!(103.5)),
                Some(dec!(35))
            ),
            // -4 * (103.5 - 101) = -10
            (
                "short",
                dec!(-4),
                dec!(101),
                Some(dec!(103.5)),
                Some(dec!(-10))
            ),
        ]
    );
    // the stored unrealized P&L agrees
    assert_position(
        pool,
        "long",
        "AAPL",
        Expect {
            quantity: dec!(10),
            avg: dec!(100),
            realized: dec!(0),
            commission: dec!(0),
            current: dec!(103.5),
            unrealized: dec!(35),
        },
    )
    .await?;
    // MSFT untouched
    assert_position(
        pool,
        "long",
        "MSFT",
        Expect {
            quantity: dec!(1),
            avg: dec!(300),
            realized: dec!(0),
            commission: dec!(0),
            current: dec!(300),
            unrealized: dec!(0),
        },
    )
    .await?;

    // the marks moved the accounts' values and wrote no snapshot:
    // long: cash 10000 - 1000 - 300 = 8700; positions 10*103.5 + 300 = 1335; total 10035
    let a = portfolio::account(pool, &acct("long"))
        .await?
        .expect("account");
    assert_eq!((a.cash, a.total_value), (dec!(8700), dec!(10035)));
    for account in ["long", "short"] {
        let snaps = portfolio::snapshots(pool, &acct(account), at(1, 0), at(9, 0)).await?;
        assert!(snaps.is_empty(), "{account}: {snaps:?}");
    }
    // short: cash 10000 + 404 = 10404; positions -4 * 103.5 = -414; total 9990
    let a = portfolio::account(pool, &acct("short"))
        .await?
        .expect("account");
    assert_eq!(a.total_value, dec!(9990));

    // a position deleted by hand still updates the account
    sqlx::query("DELETE FROM positions WHERE account_id = 'long' AND symbol = 'MSFT'")
        .execute(pool)
        .await?;
    let a = portfolio::account(pool, &acct("long"))
        .await?
        .expect("account");
    assert_eq!(a.total_value, dec!(9735)); // 8700 + 1035

    match portfolio::mark_to_market(pool, &sym("AAPL"), dec!(0), at(3, 0)).await {
        Err(PostgresError::InvalidArgument { argument, .. }) => {
            assert_eq!(argument.as_deref(), Some("p_price"))
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// get_portfolio_stats

async fn snapshot(
    pool: &sqlx::PgPool,
    account: &str,
    time: chrono::DateTime<chrono::Utc>,
    value: Decimal,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO portfolio_snapshots (account_id, snapshot_time, total_value, cash, positions_value, total_pnl, total_return)
         VALUES ($1, $2, $3, $3, 0, 0, 0)",
    )
    .bind(account)
    .bind(time)
    .bind(value)
    .execute(pool)
    .await?;
    Ok(())
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[tokio::test]
async fn portfolio_stats_on_a_hand_computed_series() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "s", dec!(100)).await;
    create_account(pool, "t", dec!(50)).await;
    // Account s, daily closes 100, 110, 99, 108.9 (days 1-4). Day 1 has an earlier intraday
    // snapshot (90) that is not the day's last; day 0 and day 5 fall outside the window.
    snapshot(pool, "s", at(1, -12), dec!(500)).await?;
    snapshot(pool, "s", at(1, 10), dec!(90)).await?;
    snapshot(pool, "s", at(1, 15), dec!(100)).await?;
    snapshot(pool, "s", at(2, 15), dec!(110)).await?;
    snapshot(pool, "s", at(3, 15), dec!(99)).await?;
    snapshot(pool, "s", at(4, 15), dec!(108.9)).await?;
    snapshot(pool, "s", at(5, 15), dec!(1)).await?;

    let stats = portfolio::get_portfolio_stats(pool, at(1, 0), at(4, 23), Some(&acct("s"))).await?;
    // returns +0.1, -0.1, +0.1: mean 0.1/3; sample deviation sqrt(((0.2/3)^2 * 2 + (0.4/3)^2) / 2)
    // = 0.2/sqrt(3); sharpe = (0.1/3) / (0.2/sqrt(3)) * sqrt(252) = sqrt(21);
    // volatility = 0.2/sqrt(3) * sqrt(252) = 0.2 * sqrt(84)
    assert_eq!(stats.snapshots, 5);
    assert_eq!(stats.start_value, Some(dec!(100)));
    assert_eq!(stats.end_value, Some(dec!(108.9)));
    assert_eq!(stats.total_return, Some(dec!(0.089)));
    assert_eq!(stats.max_drawdown, Some(dec!(0.1))); // 110 -> 99
    assert!(close(stats.sharpe, 21f64.sqrt()), "{:?}", stats.sharpe);
    assert!(
        close(stats.volatility, 0.2 * 84f64.sqrt()),
        "{:?}",
        stats.volatility
    );

    // Account t trades only on days 1 (50) and 3 (60); summed with s, carried forward over
    // day 2: 150, 160, 159, 168.9.
    snapshot(pool, "t", at(1, 12), dec!(50)).await?;
    snapshot(pool, "t", at(3, 12), dec!(60)).await?;
    let all = portfolio::get_portfolio_stats(pool, at(1, 0), at(4, 23), None).await?;
    assert_eq!(all.snapshots, 7);
    assert_eq!(
        (all.start_value, all.end_value),
        (Some(dec!(150)), Some(dec!(168.9)))
    );
    assert_eq!(all.total_return, Some(dec!(0.126))); // 18.9 / 150
    assert_eq!(all.max_drawdown, Some(dec!(0.00625))); // (160 - 159) / 160
    let r = [
        160.0 / 150.0 - 1.0,
        159.0 / 160.0 - 1.0,
        168.9 / 159.0 - 1.0,
    ];
    let mean = r.iter().sum::<f64>() / 3.0;
    let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    assert!(
        close(all.volatility, sd * 252f64.sqrt()),
        "{:?}",
        all.volatility
    );
    assert!(
        close(all.sharpe, mean / sd * 252f64.sqrt()),
        "{:?}",
        all.sharpe
    );

    // one day: no returns, no drawdown
    let one = portfolio::get_portfolio_stats(pool, at(2, 0), at(2, 23), Some(&acct("s"))).await?;
    assert_eq!(
        (one.snapshots, one.total_return, one.max_drawdown),
        (1, Some(dec!(0)), Some(dec!(0)))
    );
    assert_eq!((one.sharpe, one.volatility), (None, None));
    // two days: one return, volatility undefined
    let two = portfolio::get_portfolio_stats(pool, at(2, 0), at(3, 23), Some(&acct("s"))).await?;
    assert_eq!(two.total_return, Some(dec!(-0.1)));
    assert_eq!((two.sharpe, two.volatility), (None, None));
    // empty window
    let none = portfolio::get_portfolio_stats(pool, at(20, 0), at(21, 0), None).await?;
    assert_eq!(none.snapshots, 0);
    assert_eq!(
        (
            none.total_return,
            none.start_value,
            none.max_drawdown,
            none.sharpe
        ),
        (None, None, None, None)
    );
    db.cleanup().await;
    Ok(())
}

/// The trading core's valuations as snapshots: P&L and return from the account's capital,
/// the last of several at one time wins, one read again changes nothing, an unknown account
/// is refused; the statistics read them.
#[tokio::test]
async fn portfolio_stats_from_valuations() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(1000)).await;
    // all in: 10 @ 100, then closes 110, 99, 108.9 -> values 1000, 1100, 990, 1089
    let value = |day, positions: Decimal| {
        tradestream_schemas::Valuation::new(
            acct("acc"),
            (i64::from(day), at(day, 16), None),
            dec!(0),
            positions,
        )
    };
    let early = value(2, dec!(1050));
    let days = [
        value(1, dec!(1000)),
        value(2, dec!(1100)),
        value(3, dec!(990)),
        value(4, dec!(1089)),
    ];
    let mut batch: Vec<&tradestream_schemas::Valuation> = vec![&days[0], &early];
    batch.extend(&days[1..]);
    assert_eq!(portfolio::write_valuations(pool, &batch).await?, 4);
    assert_eq!(portfolio::write_valuations(pool, &batch).await?, 0, "again");
    let snaps = portfolio::snapshots(pool, &acct("acc"), at(2, 0), at(3, 0)).await?;
    assert_eq!(
        snaps
            .iter()
            .map(|s| (s.total_value, s.total_pnl, s.total_return))
            .collect::<Vec<_>>(),
        vec![(dec!(1100), dec!(100), dec!(0.1))],
        "the last of day 2's wins"
    );
    let ghost =
        tradestream_schemas::Valuation::new(acct("ghost"), (1, at(1, 16), None), dec!(1), dec!(0));
    let err = portfolio::write_valuations(pool, &[&ghost])
        .await
        .expect_err("unknown account");
    assert_eq!(
        err.class(),
        tradestream_schemas::ErrorClass::DeadLetter,
        "{err}"
    );
    let stats =
        portfolio::get_portfolio_stats(pool, at(1, 0), at(5, 0), Some(&acct("acc"))).await?;
    assert_eq!(stats.snapshots, 4);
    assert_eq!(
        (stats.start_value, stats.end_value),
        (Some(dec!(1000)), Some(dec!(1089)))
    );
    assert_eq!(stats.total_return, Some(dec!(0.089)));
    assert_eq!(stats.max_drawdown, Some(dec!(0.1)));
    assert!(close(stats.sharpe, 21f64.sqrt()), "{:?}", stats.sharpe);
    assert!(
        close(stats.volatility, 0.2 * 84f64.sqrt()),
        "{:?}",
        stats.volatility
    );
    db.cleanup().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// consumed_offsets

#[tokio::test]
async fn consumed_offsets_upsert_never_rewinds_and_commits_with_the_data() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool();
    create_account(pool, "acc", dec!(1000)).await;

    offsets::store_offset(pool, "sink", "fills", 0, 10).await?;
    offsets::store_offset(pool, "sink", "fills", 2, 7).await?;
    offsets::store_offset(pool, "sink", "orders", 0, 99).await?;
    offsets::store_offset(pool, "other", "fills", 0, 1).await?;
    offsets::store_offset(pool, "sink", "fills", 0, 15).await?; // advances
    offsets::store_offset(pool, "sink", "fills", 2, 3).await?; // replayed batch: ignored
    let got = offsets::load_offsets(pool, "sink", "fills").await?;
    assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![(0, 15), (2, 7)]);

    // rows and offsets commit or roll back together
    let mut tx = pool.begin().await?;
    portfolio::insert_fill(
        &mut *tx,
        &fill(
            "f1",
            "acc",
            "AAPL",
            Side::Buy,
            dec!(1),
            dec!(10),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    offsets::store_offset(&mut *tx, "sink", "fills", 0, 16).await?;
    tx.rollback().await?;
    assert_eq!(
        offsets::load_offsets(pool, "sink", "fills").await?.get(&0),
        Some(&15)
    );
    assert!(portfolio::positions(pool, &acct("acc")).await?.is_empty());
    let mut tx = pool.begin().await?;
    portfolio::insert_fill(
        &mut *tx,
        &fill(
            "f1",
            "acc",
            "AAPL",
            Side::Buy,
            dec!(1),
            dec!(10),
            dec!(0),
            at(1, 0),
        ),
    )
    .await?;
    offsets::store_offset(&mut *tx, "sink", "fills", 0, 16).await?;
    tx.commit().await?;
    assert_eq!(
        offsets::load_offsets(pool, "sink", "fills").await?.get(&0),
        Some(&16)
    );
    assert_eq!(portfolio::positions(pool, &acct("acc")).await?.len(), 1);

    assert_eq!(offsets::reset_offsets(pool, "sink", "fills").await?, 2);
    assert!(
        offsets::load_offsets(pool, "sink", "fills")
            .await?
            .is_empty()
    );
    assert_eq!(
        offsets::load_offsets(pool, "sink", "orders").await?.get(&0),
        Some(&99)
    );

    match offsets::store_offset(pool, "sink", "fills", -1, 0).await {
        Err(PostgresError::InvalidData { field, .. }) => {
            assert_eq!(field.as_deref(), Some("partition"))
        }
        other => panic!("expected InvalidData, got {other:?}"),
    }
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn test_databases_are_isolated_and_dropped() -> Result<()> {
    let a = TestDatabase::new().await?;
    let b = TestDatabase::new().await?;
    assert_ne!(a.name(), b.name());
    create_account(a.pool(), "only-in-a", dec!(1)).await;
    assert!(
        portfolio::account(b.pool(), &acct("only-in-a"))
            .await?
            .is_none()
    );
    let name = a.name().to_string();
    a.cleanup().await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(b.pool())
            .await?;
    assert!(!exists, "cleanup drops the database");
    b.cleanup().await;
    Ok(())
}
