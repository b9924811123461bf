//! `SinkWriter` against a real, freshly migrated Postgres: idempotency, offsets, the books
//! kept by the fill and mark triggers, order state, dead letters, and (proptest) that cutting a
//! stream into batches and replaying parts of it ends with the same tables as one clean pass.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use tradestream_postgres::portfolio::positions;
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::*;
use tradestream_sink::{BatchItem, SinkWriter};

const GROUP: &str = "sink-test";

fn all_kinds() -> Vec<AnyRecord> {
    vec![
        samples::market_data().into(),
        samples::features().into(),
        samples::trading_signal().into(),
        samples::anomaly().into(),
        order_event("o-1", 0, OrderStatus::New, dec!(0)).into(),
        order_event("o-1", 1, OrderStatus::Accepted, dec!(0)).into(),
        fill(
            "f-1",
            "demo",
            "^IXIC",
            Side::Buy,
            dec!(2),
            dec!(6600),
            dec!(1),
            0,
        )
        .into(),
        bar("^IXIC", 1, dec!(6700)).into(),
    ]
}

#[tokio::test]
async fn replays_by_offset_or_by_id_change_nothing_and_offsets_are_stored_with_rows() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "demo", dec!(100000)).await;
    let writer = SinkWriter::new(pool.clone());
    let batch = items(all_kinds(), 10);

    let first = writer.write_batch(GROUP, &batch).await.expect("write");
    assert!(first.dead_letters.is_empty(), "{:?}", first.dead_letters);
    assert_eq!(first.duplicates, 0);
    assert_eq!(first.total_written(), 8);
    assert_eq!(first.written.get(&Topic::Orders), Some(&2));
    assert_eq!(
        first.marks, 1,
        "the bar after the fill marks the new position"
    );
    let after_first = tables(pool).await;
    for table in [
        "market_data",
        "features",
        "signals",
        "anomalies",
        "orders",
        "order_events",
        "fills",
    ] {
        assert!(count(pool, table).await > 0, "{table} written");
    }
    let stored = writer.stored_offsets(GROUP).await.expect("offsets");
    assert_eq!(stored.get(&(Topic::MarketData, 0)), Some(&12));
    assert_eq!(stored.get(&(Topic::Orders, 0)), Some(&12));
    assert_eq!(stored.get(&(Topic::Fills, 0)), Some(&11));

    // The same batch again (a crash before the Kafka commit): skipped by offset.
    let again = writer.write_batch(GROUP, &batch).await.expect("replay");
    assert_eq!(again.duplicates, 8);
    assert_eq!(again.total_written(), 0);
    assert_eq!(again.marks, 0);
    assert_eq!(tables(pool).await, after_first);

    // The same records at new offsets (re-produced upstream): skipped by id, offsets move on.
    let moved = items(all_kinds(), 100);
    let out = writer
        .write_batch(GROUP, &moved)
        .await
        .expect("new offsets");
    assert_eq!(out.duplicates, 8);
    assert_eq!(out.total_written(), 0);
    assert_eq!(out.marks, 0, "a replayed bar does not mark again");
    let mut now = tables(pool).await;
    let mut before = after_first.clone();
    assert_ne!(
        now.remove("consumed_offsets"),
        before.remove("consumed_offsets")
    );
    assert_eq!(now, before);
    let stored = writer.stored_offsets(GROUP).await.expect("offsets");
    assert_eq!(stored.get(&(Topic::MarketData, 0)), Some(&102));

    // A failed transaction stores neither rows nor offsets.
    let prepared = writer
        .prepare(
            GROUP,
            &items(vec![bar("^IXIC", 9, dec!(1)).into()], 200),
            &[],
        )
        .await
        .expect("prepare");
    prepared.rollback().await.expect("rollback");
    assert_eq!(
        writer
            .stored_offsets(GROUP)
            .await
            .expect("offsets")
            .get(&(Topic::MarketData, 0)),
        Some(&102)
    );
    assert_eq!(count(pool, "market_data").await, 2);

    // Offsets never move backwards.
    let old = writer
        .write_batch(GROUP, &items(vec![bar("^IXIC", 20, dec!(1)).into()], 0))
        .await
        .expect("old");
    assert_eq!(old.duplicates, 1);
    assert_eq!(
        writer
            .stored_offsets(GROUP)
            .await
            .expect("offsets")
            .get(&(Topic::MarketData, 0)),
        Some(&102)
    );
    db.cleanup().await;
}

#[tokio::test]
async fn fills_drive_positions_and_cash_and_bars_mark_them() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "acct-1", dec!(100000)).await;
    let writer = SinkWriter::new(pool.clone());
    let batch = items(
        vec![
            // No position yet: this bar marks nothing.
            bar("AAPL", 0, dec!(90)).into(),
            fill(
                "f1",
                "acct-1",
                "AAPL",
                Side::Buy,
                dec!(10),
                dec!(100),
                dec!(1),
                1,
            )
            .into(),
            fill(
                "f2",
                "acct-1",
                "AAPL",
                Side::Buy,
                dec!(10),
                dec!(110),
                dec!(1),
                2,
            )
            .into(),
            fill(
                "f3",
                "acct-1",
                "AAPL",
                Side::Sell,
                dec!(5),
                dec!(120),
                dec!(1),
                3,
            )
            .into(),
            fill(
                "f3",
                "acct-1",
                "AAPL",
                Side::Sell,
                dec!(5),
                dec!(120),
                dec!(1),
                3,
            )
            .into(),
        ],
        0,
    );
    let out = writer.write_batch(GROUP, &batch).await.expect("write");
    assert_eq!(out.marks, 0);
    assert_eq!(out.written.get(&Topic::Fills), Some(&3));
    assert_eq!(out.duplicates, 1, "the repeated fill id");
    let acct = account("acct-1");
    let pos = positions(pool, &acct).await.expect("positions");
    assert_eq!(pos.len(), 1);
    let p = &pos[0];
    // cash = 100000 − (1000 + 1) − (1100 + 1) + (600 − 1)
    let (cash, total): (Decimal, Decimal) =
        sqlx::query_as("SELECT cash, total_value FROM accounts WHERE account_id = 'acct-1'")
            .fetch_one(pool)
            .await
            .expect("account");
    assert_eq!(cash, dec!(98497));
    assert_eq!(p.quantity, dec!(15));
    assert_eq!(p.avg_price, dec!(105));
    assert_eq!(p.realized_pnl, dec!(75));
    assert_eq!(p.commission, dec!(3));
    assert_eq!(
        p.current_price,
        Some(dec!(100)),
        "first fill price until a mark"
    );
    assert_eq!(total, dec!(98497) + dec!(1500));

    // Two bars in one batch: both mark, in order; the last sets the price. Neither writes a
    // portfolio snapshot: those are the trading core's valuations.
    let out = writer
        .write_batch(
            GROUP,
            &items(
                vec![
                    bar("AAPL", 4, dec!(120)).into(),
                    bar("MSFT", 4, dec!(5)).into(),
                    bar("AAPL", 5, dec!(130)).into(),
                ],
                1,
            ),
        )
        .await
        .expect("marks");
    assert_eq!(out.marks, 2);
    assert_eq!(count(pool, "portfolio_snapshots").await, 0);
    let p = positions(pool, &acct).await.expect("positions").remove(0);
    assert_eq!(p.current_price, Some(dec!(130)));
    assert_eq!(p.unrealized_pnl, dec!(375));
    assert_eq!(p.updated_at, t(5));
    let total: Decimal =
        sqlx::query_scalar("SELECT total_value FROM accounts WHERE account_id = 'acct-1'")
            .fetch_one(pool)
            .await
            .expect("total");
    assert_eq!(total, dec!(98497) + dec!(1950));
    db.cleanup().await;
}

#[tokio::test]
async fn order_events_keep_the_latest_state_and_refused_records_are_dead_lettered() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "demo", dec!(100000)).await;
    let writer = SinkWriter::new(pool.clone());

    let mut no_limit = order_event("o-bad", 0, OrderStatus::Accepted, dec!(0));
    no_limit.limit_price = None; // LIMIT without a price: validate_order refuses it
    let mut stranger = order_event("o-stranger", 0, OrderStatus::Accepted, dec!(0));
    stranger.account = account("nobody");
    let mut rejected = order_event("o-rej", 0, OrderStatus::Rejected, dec!(0));
    rejected.quantity = dec!(-1); // a rejection keeps the refused values
    rejected.reject_reason = Some("RISK_QUANTITY: quantity=-1".into());
    let records: Vec<AnyRecord> = vec![
        order_event("o-1", 0, OrderStatus::New, dec!(0)).into(),
        order_event("o-1", 1, OrderStatus::Accepted, dec!(0)).into(),
        no_limit.into(),
        order_event("o-1", 2, OrderStatus::PartiallyFilled, dec!(0.5)).into(),
        fill(
            "f-stranger",
            "nobody",
            "^IXIC",
            Side::Buy,
            dec!(1),
            dec!(10),
            dec!(0),
            1,
        )
        .into(),
        order_event("o-1", 1, OrderStatus::Accepted, dec!(0)).into(),
        stranger.into(),
        order_event("o-1", 3, OrderStatus::Filled, dec!(1.5)).into(),
        order_event("o-1", 4, OrderStatus::Accepted, dec!(1.5)).into(),
        rejected.into(),
        bar("^IXIC", 3, dec!(6000)).into(),
    ];
    let batch = items(records, 0);
    let out = writer.write_batch(GROUP, &batch).await.expect("write");
    let dead: Vec<(usize, &str)> = out
        .dead_letters
        .iter()
        .map(|d| (d.index, d.reason.as_str()))
        .collect();
    assert_eq!(
        dead.iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 8],
        "{dead:?}"
    );
    assert!(dead[0].1.contains("limit_price"), "{}", dead[0].1);
    assert!(dead[1].1.contains("nobody"), "{}", dead[1].1);
    assert!(dead[2].1.contains("nobody"), "{}", dead[2].1);
    assert!(
        dead[3].1.contains("illegal order transition"),
        "{}",
        dead[3].1
    );
    assert!(
        out.dead_letters
            .iter()
            .all(|d| d.class == ErrorClass::DeadLetter)
    );
    assert_eq!(out.dead_letters[1].topic, Topic::Fills);
    assert_eq!(out.duplicates, 1, "the repeated sequence-1 event");

    let row: (String, i32, Decimal) = sqlx::query_as(
        "SELECT status, sequence, filled_quantity FROM orders WHERE order_id = 'o-1'",
    )
    .fetch_one(pool)
    .await
    .expect("order");
    assert_eq!(row, ("FILLED".to_string(), 3, dec!(1.5)));
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM order_events ORDER BY event_id")
            .fetch_all(pool)
            .await
            .expect("events");
    assert_eq!(events, ["o-1:0", "o-1:1", "o-1:2", "o-1:3", "o-rej:0"]);
    let rejected: (String, Option<String>) =
        sqlx::query_as("SELECT status, reject_reason FROM orders WHERE order_id = 'o-rej'")
            .fetch_one(pool)
            .await
            .expect("rejected");
    assert_eq!(rejected.0, "REJECTED");
    assert_eq!(
        count(pool, "market_data").await,
        1,
        "the rest of the batch is written"
    );
    assert_eq!(count(pool, "fills").await, 0);
    let stored = writer.stored_offsets(GROUP).await.expect("offsets");
    assert_eq!(
        stored.get(&(Topic::Orders, 0)),
        Some(&9),
        "dead letters are consumed too"
    );
    assert_eq!(stored.get(&(Topic::Fills, 0)), Some(&1));

    // An older event arriving late changes nothing; a later legal one applies.
    let out = writer
        .write_batch(
            GROUP,
            &items(
                vec![order_event("o-1", 2, OrderStatus::PartiallyFilled, dec!(0.5)).into()],
                50,
            ),
        )
        .await
        .expect("stale");
    assert!(out.dead_letters.is_empty());
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE order_id = 'o-1'")
        .fetch_one(pool)
        .await
        .expect("order");
    assert_eq!(status, "FILLED");
    db.cleanup().await;
}

/// One step of a generated stream.
#[derive(Debug, Clone)]
enum Op {
    Bar {
        sym: usize,
        price: u32,
    },
    Fill {
        acct: usize,
        sym: usize,
        buy: bool,
        qty: u32,
        price: u32,
    },
    UnknownAccountFill {
        qty: u32,
    },
    OrderStep {
        order: usize,
    },
    Repeat {
        back: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..2, 50u32..150).prop_map(|(sym, price)| Op::Bar { sym, price }),
        3 => (0usize..2, 0usize..2, any::<bool>(), 1u32..20, 50u32..150)
            .prop_map(|(acct, sym, buy, qty, price)| Op::Fill { acct, sym, buy, qty, price }),
        1 => (1u32..5).prop_map(|qty| Op::UnknownAccountFill { qty }),
        2 => (0usize..3).prop_map(|order| Op::OrderStep { order }),
        1 => (1usize..10).prop_map(|back| Op::Repeat { back }),
    ]
}

const SYMBOLS: [&str; 2] = ["AAA", "BBB"];
const ACCOUNTS: [&str; 2] = ["acct-a", "acct-b"];

/// Turns ops into a stream of batch items: bars keyed (partitioned) by symbol, fills by
/// account, offsets counted per partition; `Repeat` re-produces an earlier record at a new
/// offset.
fn stream(ops: &[Op]) -> Vec<BatchItem> {
    use OrderStatus::*;
    let path = [New, Accepted, PartiallyFilled, Filled];
    let mut order_seq = [0usize; 3];
    let mut records: Vec<(i32, AnyRecord)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let day = i as i64;
        let rec = match op {
            Op::Bar { sym, price } => (
                *sym as i32,
                bar(SYMBOLS[*sym], day, Decimal::from(*price)).into(),
            ),
            Op::Fill {
                acct,
                sym,
                buy,
                qty,
                price,
            } => (
                *acct as i32,
                fill(
                    &format!("f{i}"),
                    ACCOUNTS[*acct],
                    SYMBOLS[*sym],
                    if *buy { Side::Buy } else { Side::Sell },
                    Decimal::from(*qty),
                    Decimal::from(*price),
                    Decimal::new(25, 2),
                    day,
                )
                .into(),
            ),
            Op::UnknownAccountFill { qty } => (
                0,
                fill(
                    &format!("f{i}"),
                    "ghost",
                    "AAA",
                    Side::Buy,
                    Decimal::from(*qty),
                    dec!(10),
                    dec!(0),
                    day,
                )
                .into(),
            ),
            Op::OrderStep { order } => {
                let seq = order_seq[*order];
                if seq >= path.len() {
                    continue;
                }
                order_seq[*order] += 1;
                let filled = if path[seq] == Filled {
                    dec!(1.5)
                } else if path[seq] == PartiallyFilled {
                    dec!(0.5)
                } else {
                    dec!(0)
                };
                (
                    0,
                    order_event(&format!("o{order}"), seq as i32, path[seq], filled).into(),
                )
            }
            Op::Repeat { back } => match records.len().checked_sub(*back) {
                Some(j) => records[j].clone(),
                None => continue,
            },
        };
        records.push(rec);
    }
    let mut next: BTreeMap<(Topic, i32), i64> = BTreeMap::new();
    records
        .into_iter()
        .map(|(p, r)| {
            let n = next.entry((r.topic(), p)).or_insert(0);
            let item = (r.topic(), p, *n, r);
            *n += 1;
            item
        })
        .collect()
}

#[test]
fn batching_and_replays_end_with_the_same_tables_as_one_clean_pass() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDatabase::new()).expect("db");
    let pool = db.pool().clone();
    let writer = SinkWriter::new(pool.clone());
    let strategy = (
        proptest::collection::vec(op(), 1..60),
        proptest::collection::vec((1usize..15, 0usize..20), 1..12),
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(ops, cuts)| {
        rt.block_on(async {
            let items = stream(&ops);
            reset(&pool, &ACCOUNTS, dec!(100000)).await;
            let clean = writer
                .write_batch(GROUP, &items)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let dead_clean: Vec<String> = clean
                .dead_letters
                .iter()
                .map(|d| items[d.index].3.id().to_string())
                .collect();
            let expected = tables(&pool).await;

            // Batches of random sizes; after each, a "crash" may re-deliver up to `back`
            // earlier records (same offsets) in the next batch.
            reset(&pool, &ACCOUNTS, dec!(100000)).await;
            let mut dead_cut: Vec<String> = Vec::new();
            let (mut at, mut cut) = (0usize, 0usize);
            while at < items.len() {
                let (size, back) = cuts[cut % cuts.len()];
                cut += 1;
                let from = at.saturating_sub(back);
                let to = (at + size).min(items.len());
                let batch = &items[from..to];
                let out = writer
                    .write_batch(GROUP, batch)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                dead_cut.extend(
                    out.dead_letters
                        .iter()
                        .map(|d| batch[d.index].3.id().to_string()),
                );
                at = to;
            }
            prop_assert_eq!(dead_cut, dead_clean);
            let got = tables(&pool).await;
            for (table, want) in &expected {
                prop_assert_eq!(got.get(table), Some(want), "table {}", table);
            }
            Ok(())
        })
    });
    rt.block_on(db.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Throughput of market data through `write_batch` (run with `--ignored --nocapture`; speed
/// is measured, never asserted, in tests).
#[tokio::test]
#[ignore]
async fn market_data_throughput() {
    let db = TestDatabase::new().await.expect("db");
    let writer = SinkWriter::new(db.pool().clone());
    let n = 40_000i64;
    let records: Vec<AnyRecord> = (0..n)
        .map(|i| {
            bar(
                ["AAA", "BBB", "CCC", "DDD"][(i % 4) as usize],
                i,
                Decimal::new(10_000 + i % 977, 2),
            )
            .into()
        })
        .collect();
    let all = items(records, 0);
    let started = std::time::Instant::now();
    for batch in all.chunks(2000) {
        writer.write_batch(GROUP, batch).await.expect("write");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "market_data: {n} rows in {secs:.2} s = {:.0} rows/s (batches of 2000)",
        n as f64 / secs
    );
    assert_eq!(count(db.pool(), "market_data").await, n);
    db.cleanup().await;
}
