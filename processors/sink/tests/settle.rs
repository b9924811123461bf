//! Settled portfolio snapshots (sql/0060) against a real Postgres: whatever order the sink
//! receives a sequenced run's bars, fills and settlement marks in (each partition in its own
//! order, merged at random, cut into random batches, fills re-delivered), it writes the same
//! snapshots, and they equal the books recomputed here from the input alone: per instant, the
//! fills up to it and each held symbol's last close.

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

const GROUP: &str = "settle-test";
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

/// The trading core's settlement mark of step `s`, carrying the fills the step caused.
fn settlement_mark(s: i64, fills: Vec<Fill>) -> Progress {
    Progress::new(Progress::TRADING, s, t(s), Vec::new(), fills)
}

/// Each partition's records in order: market data on two partitions (by symbol), fills on two
/// (by account), progress on one (the trading core's settlement marks).
fn partitions(steps: &[Step]) -> Vec<Vec<(Topic, i32, AnyRecord)>> {
    let mut parts: Vec<Vec<(Topic, i32, AnyRecord)>> = vec![Vec::new(); 5];
    for (i, st) in steps.iter().enumerate() {
        let s = i as i64 + 1;
        for (sym, close) in &st.closes {
            let b = sequenced(SYMBOLS[*sym], s, st.closes.len() as i32, *close);
            let p = (*sym % 2) as i32;
            parts[p as usize].push((Topic::MarketData, p, b.into()));
        }
        let mut fills = Vec::new();
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
            parts[2 + *a].push((Topic::Fills, *a as i32, f.clone().into()));
            fills.push(f);
        }
        fills.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        parts[4].push((Topic::Progress, 0, settlement_mark(s, fills).into()));
    }
    parts
}

/// Merges the partitions in the order `picks` says (each stays in order), gives each record
/// the next offset of its partition, and re-delivers some fills at a later offset (a producer
/// that republished after a crash).
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
        snapshots += out.snapshots;
        at = to;
    }
    Ok(snapshots)
}

#[test]
fn settled_snapshots_do_not_depend_on_arrival_order_and_match_the_input() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let db = rt.block_on(TestDatabase::new()).expect("db");
    let pool = db.pool().clone();
    let writer = SinkWriter::new(pool.clone());
    let strategy = (
        proptest::collection::vec(step(), 1..14),
        proptest::collection::vec(0usize..5, 1..40),
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
            let ordered = arrival(&parts, &[0, 1, 2, 3, 4], &[]);
            let mut by_step = ordered.clone();
            by_step.sort_by_key(|(_, _, _, r)| match r {
                AnyRecord::MarketData(m) => (m.step, 0),
                AnyRecord::Fill(f) => (f.fill_time.timestamp() / 86_400, 1),
                AnyRecord::Progress(p) => (p.step, 2),
                _ => (0, 3),
            });
            let written = write(&writer, &by_step, &[by_step.len()]).await?;
            let clean = snapshots(&pool).await;
            prop_assert_eq!(written as usize, clean.len());
            let got: Vec<(String, i64, Decimal, Decimal, Decimal)> = clean
                .iter()
                .map(|(a, at, v, c, p, _, _)| (a.clone(), (*at - t(0)).num_days(), *v, *c, *p))
                .collect();
            prop_assert_eq!(&got, &want, "snapshots against the input");

            // Any other arrival order and batching.
            reset(&pool, &ACCOUNTS, CAPITAL).await;
            let mixed = arrival(&parts, &picks, &again);
            write(&writer, &mixed, &cuts).await?;
            prop_assert_eq!(
                snapshots(&pool).await,
                clean.clone(),
                "snapshots after a mixed arrival"
            );
            let unsettled: i64 = sqlx::query_scalar("SELECT count(*) FROM lockstep_steps")
                .fetch_one(&pool)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(unsettled, 0, "every step settled");
            Ok(())
        })
    });
    rt.block_on(db.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A step waits for its last bar and for the trading core's settlement mark.
#[tokio::test]
async fn a_step_settles_only_with_all_its_bars_and_the_settlement_mark() {
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
    let batches: Vec<Vec<(Topic, i32, i64, AnyRecord)>> = vec![
        vec![(
            Topic::MarketData,
            0,
            0,
            sequenced("AAA", 1, 2, dec!(101)).into(),
        )],
        vec![(Topic::Fills, 0, 0, f.clone().into())],
        vec![(Topic::Progress, 0, 0, settlement_mark(1, vec![f]).into())],
        vec![(
            Topic::MarketData,
            1,
            0,
            sequenced("BBB", 1, 2, dec!(7)).into(),
        )],
        vec![
            (
                Topic::MarketData,
                0,
                1,
                sequenced("AAA", 2, 2, dec!(99)).into(),
            ),
            (
                Topic::MarketData,
                1,
                1,
                sequenced("BBB", 2, 2, dec!(8)).into(),
            ),
        ],
        vec![(Topic::Progress, 0, 1, settlement_mark(2, Vec::new()).into())],
    ];
    let mut settled = Vec::new();
    for batch in &batches {
        let out = writer.write_batch(GROUP, batch).await.expect("write");
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        settled.push(out.snapshots);
    }
    assert_eq!(
        settled,
        vec![0, 0, 0, 1, 0, 1],
        "step 1 settled with its last bar, step 2 with its settlement mark"
    );
    let rows = snapshots(pool).await;
    let rows: Vec<_> = rows.iter().map(|r| (r.1, r.2, r.3, r.4)).collect();
    // 100000 − (10 × 100 + 1) in cash; 10 AAA at 101, then at 99.
    assert_eq!(
        rows,
        vec![
            (t(1), dec!(100009), dec!(98999), dec!(1010)),
            (t(2), dec!(99989), dec!(98999), dec!(990)),
        ]
    );
    let (step, time): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT settled_step, settled_time FROM portfolio_settlement WHERE consumer_group = $1",
    )
    .bind(GROUP)
    .fetch_one(pool)
    .await
    .expect("settlement");
    assert_eq!((step, time), (2, Some(t(2))));
    db.cleanup().await;
}

/// A sequenced bar that does not say how many bars its step has counts as a step of one, as
/// the trading core counts it, instead of failing a constraint and being
/// dead-lettered.
#[tokio::test]
async fn a_step_without_its_bar_count_is_a_step_of_one() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "acct-a", CAPITAL).await;
    let writer = SinkWriter::new(pool.clone());
    let b = sequenced("AAA", 1, 0, dec!(50));
    let f = fill(
        "f-1",
        "acct-a",
        "AAA",
        Side::Buy,
        dec!(2),
        dec!(49),
        dec!(1),
        1,
    );
    let batch = vec![
        (Topic::Progress, 0, 0, settlement_mark(1, vec![f]).into()),
        (Topic::MarketData, 0, 0, b.into()),
    ];
    let out = writer.write_batch(GROUP, &batch).await.expect("write");
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    assert_eq!(out.snapshots, 1);
    assert_eq!(out.written.get(&Topic::Fills), Some(&1), "the mark's fill");
    let rows = snapshots(pool).await;
    // 100000 − (2 × 49 + 1) in cash, 2 AAA at 50.
    assert_eq!(
        (rows[0].2, rows[0].3, rows[0].4),
        (dec!(100001), dec!(99901), dec!(100))
    );
    db.cleanup().await;
}

/// The operator's way past a step that can never settle (docs/operations.md, item 8): moving
/// `settled_step` onto it lets the next batch settle the steps after it.
#[tokio::test]
async fn moving_settled_step_past_a_lost_mark_resumes_settling() {
    let db = TestDatabase::new().await.expect("db");
    let pool = db.pool();
    create(pool, "acct-a", CAPITAL).await;
    let writer = SinkWriter::new(pool.clone());
    let aaa = |s: i64, close: Decimal| AnyRecord::from(sequenced("AAA", s, 1, close));
    let f = fill(
        "f-1",
        "acct-a",
        "AAA",
        Side::Buy,
        dec!(1),
        dec!(10),
        dec!(0),
        1,
    );
    // Step 2's mark never comes.
    let batch = vec![
        (Topic::MarketData, 0, 0, aaa(1, dec!(10))),
        (Topic::Progress, 0, 0, settlement_mark(1, vec![f]).into()),
        (Topic::MarketData, 0, 1, aaa(2, dec!(20))),
        (Topic::MarketData, 0, 2, aaa(3, dec!(30))),
        (Topic::Progress, 0, 1, settlement_mark(3, Vec::new()).into()),
    ];
    let out = writer.write_batch(GROUP, &batch).await.expect("write");
    assert_eq!(out.snapshots, 1, "step 1 only");
    let stuck: i64 = sqlx::query_scalar("SELECT min(step) FROM lockstep_steps")
        .fetch_one(pool)
        .await
        .expect("stuck");
    assert_eq!(stuck, 2);
    sqlx::query("UPDATE portfolio_settlement SET settled_step = $1 WHERE consumer_group = $2")
        .bind(stuck)
        .bind(GROUP)
        .execute(pool)
        .await
        .expect("skip");
    let out = writer
        .write_batch(GROUP, &[(Topic::MarketData, 0, 3, aaa(4, dec!(40)))])
        .await
        .expect("next batch");
    assert_eq!(
        out.snapshots, 1,
        "step 3 settled, step 4 waits for its mark"
    );
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        snapshots(pool).await.into_iter().map(|r| r.1).collect();
    assert_eq!(times, vec![t(1), t(3)]);
    db.cleanup().await;
}
