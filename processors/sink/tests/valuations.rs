//! Portfolio snapshots from the trading core's valuations (`write_valuations`) against a real
//! Postgres: whatever order the sink receives a sequenced run's bars, fills and valuations in
//! (each partition in its own order, merged at random, cut into random batches, fills and
//! valuations re-delivered), it writes each account's snapshot of each instant once, as the
//! valuation says, with P&L and return from the account's capital; the valuations here carry
//! the books recomputed from the input (per instant, the fills up to it and each held
//! symbol's last close), and the books the fills move in Postgres end equal to them.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::*;
use tradestream_sink::{BatchItem, SinkWriter};

const GROUP: &str = "valuations-test";
const ACCOUNTS: [&str; 2] = ["acct-a", "acct-b"];
const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];
const CAPITAL: Decimal = dec!(100000);

/// One market instant (step): which symbols have a bar (and its close), and the fills it caused.
#[derive(Debug, Clone)]
struct Step {
    closes: Vec<(usize, Decimal)>,
    fills: Vec<(usize, usize, bool, Decimal, Decimal)>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        proptest::sample::subsequence(vec![0usize, 1, 2], 1..=3),
        proptest::collection::vec(1u32..400, 3),
        proptest::collection::vec(
            (0usize..2, 0usize..3, any::<bool>(), 1u32..20, 0u32..50),
            0..4,
        ),
    )
        .prop_map(|(symbols, closes, raw_fills)| {
            let closes: Vec<(usize, Decimal)> = symbols
                .iter()
                .map(|s| (*s, Decimal::from(closes[*s]) + dec!(0.25)))
                .collect();
            // The exchange fills only on a bar of the step, near its price.
            let fills = raw_fills
                .into_iter()
                .map(|(a, s, buy, q, off)| {
                    let (sym, close) = closes[s % closes.len()];
                    (
                        a,
                        sym,
                        buy,
                        Decimal::from(q),
                        close + Decimal::new(i64::from(off), 2),
                    )
                })
                .collect();
            Step { closes, fills }
        })
}

/// A bar of step `s` (dated day `s`), one of the `step_bars` bars of its step.
fn sequenced(sym: &str, s: i64, step_bars: i32, close: Decimal) -> MarketData {
    let mut b = bar(sym, s, close);
    b.step = s;
    b.step_bars = step_bars;
    b
}

/// An account's value at step `s`, as the trading core publishes it.
fn value(account: &str, s: i64, cash: Decimal, positions: Decimal) -> Valuation {
    Valuation::new(
        AccountId::new(account).expect("account"),
        (s, t(s), None),
        cash,
        positions,
    )
}

/// Each partition's records in order: market data on two partitions (by symbol), fills and
/// valuations on two each (by account).
fn partitions(steps: &[Step]) -> Vec<Vec<(Topic, i32, AnyRecord)>> {
    let values = expected(steps);
    let mut parts: Vec<Vec<(Topic, i32, AnyRecord)>> = vec![Vec::new(); 6];
    for (i, st) in steps.iter().enumerate() {
        let s = i as i64 + 1;
        for (sym, close) in &st.closes {
            let b = sequenced(SYMBOLS[*sym], s, st.closes.len() as i32, *close);
            let p = (*sym % 2) as i32;
            parts[p as usize].push((Topic::MarketData, p, b.into()));
        }
        for (k, (a, sym, buy, q, price)) in st.fills.iter().enumerate() {
            let side = if *buy { Side::Buy } else { Side::Sell };
            let f = fill(
                &format!("f-{s}-{k}"),
                ACCOUNTS[*a],
                SYMBOLS[*sym],
                side,
                *q,
                *price,
                dec!(1),
                s,
            );
            parts[2 + *a].push((Topic::Fills, *a as i32, f.into()));
        }
        for (a, _, _, cash, positions) in values.iter().filter(|v| v.1 == s) {
            let k = ACCOUNTS.iter().position(|n| n == a).expect("account");
            let v = value(a, s, *cash, *positions);
            parts[4 + k].push((Topic::Valuations, k as i32, v.into()));
        }
    }
    parts
}

/// Merges the partitions in the order `picks` says (each stays in order), gives each record
/// the next offset of its partition, and re-delivers the first fill and the first valuation at
/// a later offset (a producer that republished after a crash).
fn arrival(
    parts: &[Vec<(Topic, i32, AnyRecord)>],
    picks: &[usize],
    again: &[usize],
) -> Vec<BatchItem> {
    let mut at = vec![0usize; parts.len()];
    let mut next: BTreeMap<(Topic, i32), i64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut pick = picks.iter().cycle();
    let mut emitted_fills: Vec<(i32, AnyRecord)> = Vec::new();
    let mut first_value: Option<(i32, AnyRecord)> = None;
    let mut n = 0usize;
    while at.iter().zip(parts).any(|(i, p)| *i < p.len()) {
        let want = pick.next().copied().unwrap_or(0);
        let Some(p) = (0..parts.len())
            .map(|k| (want + k) % parts.len())
            .find(|p| at[*p] < parts[*p].len())
        else {
            break;
        };
        let (topic, partition, record) = parts[p][at[p]].clone();
        at[p] += 1;
        if topic == Topic::Fills {
            emitted_fills.push((partition, record.clone()));
        }
        if topic == Topic::Valuations && first_value.is_none() {
            first_value = Some((partition, record.clone()));
        }
        let o = next.entry((topic, partition)).or_insert(0);
        out.push((topic, partition, *o, record));
        *o += 1;
        n += 1;
        if again.contains(&n)
            && let Some((partition, record)) = emitted_fills.first().cloned()
        {
            let o = next.entry((Topic::Fills, partition)).or_insert(0);
            out.push((Topic::Fills, partition, *o, record));
            *o += 1;
            if let Some((partition, value)) = first_value.clone() {
                let o = next.entry((Topic::Valuations, partition)).or_insert(0);
                out.push((Topic::Valuations, partition, *o, value));
                *o += 1;
            }
        }
    }
    out
}

/// The snapshots the input implies (account, time, total value, cash, positions value).
fn expected(steps: &[Step]) -> Vec<(String, i64, Decimal, Decimal, Decimal)> {
    let mut cash: BTreeMap<usize, Decimal> = BTreeMap::new();
    let mut held: BTreeMap<(usize, usize), Decimal> = BTreeMap::new();
    let mut last_close: BTreeMap<usize, Decimal> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, st) in steps.iter().enumerate() {
        let s = i as i64 + 1;
        let mut traded = [false; 2];
        for (a, sym, buy, q, price) in &st.fills {
            let signed = if *buy { *q } else { -*q };
            *cash.entry(*a).or_insert(CAPITAL) -= signed * price + dec!(1);
            *held.entry((*a, *sym)).or_default() += signed;
            traded[*a] = true;
        }
        for (sym, close) in &st.closes {
            last_close.insert(*sym, *close);
        }
        for (a, name) in ACCOUNTS.iter().enumerate() {
            let positions: Vec<Decimal> = held
                .iter()
                .filter(|((acct, _), q)| *acct == a && !q.is_zero())
                .map(|((_, sym), q)| *q * last_close[sym])
                .collect();
            if positions.is_empty() && !traded[a] {
                continue;
            }
            let c = cash.get(&a).copied().unwrap_or(CAPITAL);
            let v: Decimal = positions.iter().sum();
            out.push((
                name.to_string(),
                s,
                (c + v).normalize(),
                c.normalize(),
                v.normalize(),
            ));
        }
    }
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

type Row = (
    String,
    chrono::DateTime<chrono::Utc>,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
);

async fn snapshots(pool: &sqlx::PgPool) -> Vec<Row> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT account_id, snapshot_time, total_value, cash, positions_value, total_pnl,
                total_return
           FROM portfolio_snapshots ORDER BY account_id, snapshot_time, snapshot_id",
    )
    .fetch_all(pool)
    .await
    .expect("snapshots");
    rows.into_iter()
        .map(|(a, at, v, c, p, pnl, r)| {
            (
                a,
                at,
                v.normalize(),
                c.normalize(),
                p.normalize(),
                pnl.normalize(),
                r.normalize(),
            )
        })
        .collect()
}

/// Writes `items` in batches of the sizes `cuts` cycles through.
async fn write(
    writer: &SinkWriter,
    items: &[BatchItem],
    cuts: &[usize],
) -> Result<u64, TestCaseError> {
    let mut snapshots = 0;
    let (mut at, mut cut) = (0usize, 0usize);
    while at < items.len() {
        let to = (at + cuts[cut % cuts.len()]).min(items.len());
        cut += 1;
        let out = writer
            .write_batch(GROUP, &items[at..to])
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        snapshots += out.written.get(&Topic::Valuations).copied().unwrap_or(0);
        at = to;
    }
    Ok(snapshots)
}

#[test]
fn snapshots_from_valuations_do_not_depend_on_arrival_order() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDatabase::new()).expect("db");
    let pool = db.pool().clone();
    let writer = SinkWriter::new(pool.clone());
    let strategy = (
        proptest::collection::vec(step(), 1..14),
        proptest::collection::vec(0usize..6, 1..40),
        proptest::collection::vec(1usize..12, 1..8),
        proptest::collection::vec(1usize..60, 0..4),
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(steps, picks, cuts, again)| {
        rt.block_on(async {
            let parts = partitions(&steps);
            let want = expected(&steps);

            // In step order: every partition's step s before any of step s + 1.
            reset(&pool, &ACCOUNTS, CAPITAL).await;
            let ordered = arrival(&parts, &[0, 1, 2, 3, 4, 5], &[]);
            let mut by_step = ordered.clone();
            by_step.sort_by_key(|(_, _, _, r)| match r {
                AnyRecord::MarketData(m) => (m.step, 0),
                AnyRecord::Fill(f) => (f.fill_time.timestamp() / 86_400, 1),
                AnyRecord::Valuation(v) => (v.step, 2),
                _ => (0, 3),
            });
            let written = write(&writer, &by_step, &[by_step.len()]).await?;
            let clean = snapshots(&pool).await;
            prop_assert_eq!(written as usize, clean.len());
            let got: Vec<(String, i64, Decimal, Decimal, Decimal)> = clean
                .iter()
                .map(|(a, at, v, c, p, _, _)| (a.clone(), (*at - t(0)).num_days(), *v, *c, *p))
                .collect();
            prop_assert_eq!(&got, &want, "snapshots against the valuations");
            for (a, at, v, _, _, pnl, _) in &clean {
                prop_assert_eq!(*pnl, (*v - CAPITAL).normalize(), "{} at {}: P&L", a, at);
            }
            let books = books(&pool).await;

            // Any other arrival order and batching.
            reset(&pool, &ACCOUNTS, CAPITAL).await;
            let mixed = arrival(&parts, &picks, &again);
            write(&writer, &mixed, &cuts).await?;
            prop_assert_eq!(
                snapshots(&pool).await,
                clean.clone(),
                "snapshots after a mixed arrival"
            );
            prop_assert_eq!(self::books(&pool).await, books, "the books fills moved");
            Ok(())
        })
    });
    rt.block_on(db.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Cash and quantities per account and symbol, as the fills left them.
async fn books(pool: &sqlx::PgPool) -> Vec<(String, Decimal, String, Decimal)> {
    sqlx::query_as(
        "SELECT a.account_id, a.cash, p.symbol, p.quantity FROM accounts a
           JOIN positions p ON p.account_id = a.account_id ORDER BY 1, 3",
    )
    .fetch_all(pool)
    .await
    .expect("books")
    .into_iter()
    .map(|(a, c, s, q): (String, Decimal, String, Decimal)| (a, c.normalize(), s, q.normalize()))
    .collect()
}

/// A valuation writes its snapshot as soon as it is stored, whatever bars and fills are (its
/// values come from the trading core, not from what the sink has stored); read again, it
/// changes nothing; one for an account the database does not have is dead-lettered.
#[tokio::test]
async fn a_valuation_writes_its_snapshot_once_when_it_arrives() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "acct-a", CAPITAL).await;
    let writer = SinkWriter::new(pool.clone());
    let f = fill(
        "f-1",
        "acct-a",
        "AAA",
        Side::Buy,
        dec!(10),
        dec!(100),
        dec!(1),
        1,
    );
    // 100000 − (10 × 100 + 1) in cash; 10 AAA at 101, then at 99.
    let first = value("acct-a", 1, dec!(98999), dec!(1010));
    let second = value("acct-a", 2, dec!(98999), dec!(990));
    let batches: Vec<Vec<(Topic, i32, i64, AnyRecord)>> = vec![
        vec![(Topic::Valuations, 0, 0, first.clone().into())],
        vec![(
            Topic::MarketData,
            0,
            0,
            sequenced("AAA", 1, 2, dec!(101)).into(),
        )],
        vec![(Topic::Fills, 0, 0, f.clone().into())],
        vec![(Topic::Valuations, 0, 1, second.into())],
        vec![(
            Topic::MarketData,
            1,
            0,
            sequenced("BBB", 1, 2, dec!(7)).into(),
        )],
        vec![(Topic::Valuations, 0, 2, first.into())],
    ];
    let mut written = Vec::new();
    for batch in &batches {
        let out = writer.write_batch(GROUP, batch).await.expect("write");
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        written.push(out.written.get(&Topic::Valuations).copied().unwrap_or(0));
    }
    assert_eq!(
        written,
        vec![1, 0, 0, 1, 0, 0],
        "each valuation's snapshot when it is stored, once"
    );
    let nobody = value("nobody", 1, dec!(5), dec!(0));
    let out = writer
        .write_batch(GROUP, &[(Topic::Valuations, 1, 0, nobody.into())])
        .await
        .expect("write");
    assert_eq!(out.dead_letters.len(), 1, "unknown account: {out:?}");
    assert!(
        out.dead_letters[0].reason.contains("nobody"),
        "{:?}",
        out.dead_letters[0]
    );
    let rows = snapshots(pool).await;
    let rows: Vec<_> = rows.iter().map(|r| (r.1, r.2, r.3, r.4, r.6)).collect();
    assert_eq!(
        rows,
        vec![
            (t(1), dec!(100009), dec!(98999), dec!(1010), dec!(0.00009)),
            (t(2), dec!(99989), dec!(98999), dec!(990), dec!(-0.00011)),
        ]
    );
    db.cleanup().await;
}
