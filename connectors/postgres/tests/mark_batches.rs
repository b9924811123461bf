//! Property test: `mark_to_market_batch` has the effect of one `mark_to_market` per mark.
//! Random fills for two accounts over three symbols, and runs of marks (repeated symbols,
//! equal and backward event times, symbols nobody holds) applied to two databases, one mark
//! at a time in one and as one batch in the other; after every step the positions and the
//! accounts must be equal, and so must the counts; neither writes a portfolio snapshot.

mod common;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::PgPool;
use tradestream_postgres::portfolio::{self, Mark};
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::{Side, Symbol};

const SYMBOLS: [&str; 4] = ["AAA", "BBB", "CCC", "ZZZ"];
const ACCOUNTS: [&str; 2] = ["alpha", "beta"];

#[derive(Debug, Clone)]
enum Step {
    Fill {
        account: usize,
        symbol: usize,
        side: Side,
        quantity: Decimal,
        price: Decimal,
    },
    /// (symbol, price, hour offset from the step's time: may repeat or go backwards).
    Marks(Vec<(usize, Decimal, i64)>),
}

/// A decimal in `(0, max]` with 0 to 10 decimal places (marks with more than 8 exercise the
/// rounding of the stored price).
fn amount(max: i64, max_scale: u32) -> impl Strategy<Value = Decimal> {
    (0u32..=max_scale).prop_flat_map(move |scale| {
        let top = max * 10i64.pow(scale);
        (1i64..=top).prop_map(move |m| Decimal::new(m, scale))
    })
}

fn step() -> impl Strategy<Value = Step> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    prop_oneof![
        2 => (0..ACCOUNTS.len(), 0..SYMBOLS.len() - 1, side, amount(500, 4), amount(1000, 8))
            .prop_map(|(account, symbol, side, quantity, price)| Step::Fill {
                account, symbol, side, quantity, price,
            }),
        3 => proptest::collection::vec((0..SYMBOLS.len(), amount(1000, 10), -2i64..=3), 1..=12)
            .prop_map(Step::Marks),
    ]
}

type PositionRow = (
    String,
    String,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Option<Decimal>,
    Decimal,
    DateTime<Utc>,
);
/// Everything a mark changes, and the number of portfolio snapshots (none).
async fn state(pool: &PgPool) -> Result<(Vec<PositionRow>, Vec<(String, Decimal, Decimal)>, i64)> {
    let positions = sqlx::query_as(
        "SELECT account_id, symbol, quantity, avg_price, realized_pnl, commission, current_price,
                unrealized_pnl, updated_at
           FROM positions ORDER BY account_id, symbol",
    )
    .fetch_all(pool)
    .await?;
    let accounts =
        sqlx::query_as("SELECT account_id, cash, total_value FROM accounts ORDER BY account_id")
            .fetch_all(pool)
            .await?;
    let snapshots = sqlx::query_scalar("SELECT count(*) FROM portfolio_snapshots")
        .fetch_one(pool)
        .await?;
    Ok((positions, accounts, snapshots))
}

async fn run_case(one_by_one: &PgPool, batched: &PgPool, steps: &[Step]) -> Result<()> {
    reset_books(one_by_one, &ACCOUNTS, dec!(1000000)).await?;
    reset_books(batched, &ACCOUNTS, dec!(1000000)).await?;
    let symbols: Vec<Symbol> = SYMBOLS.iter().map(|s| sym(s)).collect();
    for (i, step) in steps.iter().enumerate() {
        let time = at(1, 0) + chrono::Duration::hours(10 * i as i64);
        match step {
            Step::Fill {
                account,
                symbol,
                side,
                quantity,
                price,
            } => {
                let f = fill(
                    &format!("f{i}"),
                    ACCOUNTS[*account],
                    SYMBOLS[*symbol],
                    *side,
                    *quantity,
                    *price,
                    Decimal::ZERO,
                    time,
                );
                portfolio::insert_fill(one_by_one, &f).await?;
                portfolio::insert_fill(batched, &f).await?;
            }
            Step::Marks(marks) => {
                let marks: Vec<Mark<'_>> = marks
                    .iter()
                    .map(|(s, price, hours)| Mark {
                        symbol: &symbols[*s],
                        price: *price,
                        at: time + chrono::Duration::hours(*hours),
                    })
                    .collect();
                let mut expected = 0u64;
                for m in &marks {
                    expected += u64::from(
                        portfolio::mark_to_market(one_by_one, m.symbol, m.price, m.at).await?,
                    );
                }
                let got = portfolio::mark_to_market_batch(batched, &marks).await?;
                anyhow::ensure!(
                    got == expected,
                    "step {i}: batch marked {got}, one by one {expected}"
                );
            }
        }
        let (want, got) = (state(one_by_one).await?, state(batched).await?);
        anyhow::ensure!(
            got.0 == want.0,
            "step {i}: positions\n batch {:?}\n one by one {:?}",
            got.0,
            want.0
        );
        anyhow::ensure!(
            got.1 == want.1,
            "step {i}: accounts\n batch {:?}\n one by one {:?}",
            got.1,
            want.1
        );
        anyhow::ensure!(
            got.2 == 0 && want.2 == 0,
            "step {i}: snapshots written by marks: batch {}, one by one {}",
            got.2,
            want.2
        );
    }
    Ok(())
}

#[test]
fn a_batch_of_marks_equals_its_marks_one_by_one() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (a, b) =
        rt.block_on(async { tokio::try_join!(TestDatabase::new(), TestDatabase::new()) })?;
    let mut runner = database_property_runner(48);
    let result = runner.run(&proptest::collection::vec(step(), 1..=24), |steps| {
        rt.block_on(run_case(a.pool(), b.pool(), &steps))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    rt.block_on(async {
        a.cleanup().await;
        b.cleanup().await;
    });
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

#[test]
fn a_batch_refuses_a_non_positive_price_of_a_held_symbol_and_changes_nothing() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = TestDatabase::new().await?;
        let pool = db.pool();
        reset_books(pool, &ACCOUNTS, dec!(1000000)).await?;
        let f = fill(
            "f",
            "alpha",
            "AAA",
            Side::Buy,
            dec!(10),
            dec!(100),
            dec!(0),
            at(1, 0),
        );
        portfolio::insert_fill(pool, &f).await?;
        let before = state(pool).await?;
        let (aaa, zzz) = (sym("AAA"), sym("ZZZ"));
        let mark = |symbol, price| Mark {
            symbol,
            price,
            at: at(2, 0),
        };
        // Nobody holds ZZZ: like mark_to_market, nothing to refuse there.
        let n =
            portfolio::mark_to_market_batch(pool, &[mark(&zzz, dec!(0)), mark(&aaa, dec!(101))])
                .await?;
        anyhow::ensure!(n == 1, "one position marked, got {n}");
        let after_good = state(pool).await?;
        let refused =
            portfolio::mark_to_market_batch(pool, &[mark(&aaa, dec!(102)), mark(&aaa, dec!(-1))])
                .await;
        let err = refused
            .err()
            .context("a negative price of a held symbol is refused")?;
        anyhow::ensure!(
            err.to_string().contains("price must be > 0"),
            "the error names the rule: {err}"
        );
        anyhow::ensure!(
            state(pool).await? == after_good,
            "a refused batch changes nothing"
        );
        anyhow::ensure!(before != after_good, "the good batch changed the books");
        db.cleanup().await;
        Ok(())
    })
}
