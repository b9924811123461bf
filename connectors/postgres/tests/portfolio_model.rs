//! Property test: random sequences of fills (buys, partial sells, closes, flips) and price marks
//! over three symbols, checked after every step against an independent Rust model of the
//! accounting rules, with exact `Decimal` equality; and against the trading core's own books
//! (`tradestream_router::Book`, what its risk checks decide on), so the books in Rust and the
//! books the SQL triggers keep cannot drift apart. Fills and marks write no portfolio
//! snapshots; the trading core's valuation of each step, stored through `write_valuations`
//! as the sink stores it, is the step's snapshot and holds the model's values.

mod common;

use anyhow::{Context as _, Result};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::{Decimal, RoundingStrategy};
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use tradestream_postgres::portfolio;
use tradestream_postgres::testing::TestDatabase;
use tradestream_schemas::Side;

const SYMBOLS: [&str; 3] = ["AAA", "BBB", "CCC"];
const ACCOUNT: &str = "model";
const INITIAL_CAPITAL: Decimal = dec!(1000000);

/// How much a fill trades, resolved against the model's position when the step runs, so
/// closes and flips happen often instead of by chance.
#[derive(Debug, Clone)]
enum Size {
    /// A fixed quantity.
    Fixed(Decimal),
    /// `tenths`/10 of the open quantity (a partial reduce when trading against it).
    Fraction(u8),
    /// Exactly the open quantity, against it: closes the position.
    Close,
    /// The open quantity plus `extra`, against it: flips the position.
    Flip(Decimal),
    /// The open quantity again, with it: doubles the position. With a price a few
    /// hundred-millionths from the average, the new average lands on a rounding midpoint.
    Double,
}

/// The price of a fill.
#[derive(Debug, Clone)]
enum Price {
    /// A fixed price.
    Fixed(Decimal),
    /// The position's average price plus `ticks` × 0.00000001 (`Fixed(1)` when flat).
    NearAverage(i64),
}

#[derive(Debug, Clone)]
enum Step {
    Fill {
        symbol: usize,
        side: Side,
        size: Size,
        price: Price,
        commission: Decimal,
    },
    Mark {
        symbol: usize,
        price: Decimal,
    },
}

/// A decimal in `(0, max]` with 0 to 8 decimal places.
fn amount(max: i64) -> impl Strategy<Value = Decimal> {
    (0u32..=8).prop_flat_map(move |scale| {
        let top = max * 10i64.pow(scale);
        (1i64..=top).prop_map(move |m| Decimal::new(m, scale))
    })
}

fn commission() -> impl Strategy<Value = Decimal> {
    prop_oneof![Just(Decimal::ZERO), amount(10)]
}

fn size() -> impl Strategy<Value = Size> {
    prop_oneof![
        3 => amount(1000).prop_map(Size::Fixed),
        2 => (1u8..=9).prop_map(Size::Fraction),
        1 => Just(Size::Close),
        2 => amount(500).prop_map(Size::Flip),
        1 => Just(Size::Double),
    ]
}

fn price() -> impl Strategy<Value = Price> {
    prop_oneof![
        4 => amount(10000).prop_map(Price::Fixed),
        1 => prop_oneof![-3i64..=-1, 1i64..=3].prop_map(Price::NearAverage),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..SYMBOLS.len(), prop_oneof![Just(Side::Buy), Just(Side::Sell)], size(), price(), commission())
            .prop_map(|(symbol, side, size, price, commission)| Step::Fill { symbol, side, size, price, commission }),
        1 => (0..SYMBOLS.len(), amount(10000)).prop_map(|(symbol, price)| Step::Mark { symbol, price }),
    ]
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ModelPosition {
    quantity: Decimal,
    avg_price: Decimal,
    realized_pnl: Decimal,
    commission: Decimal,
    current_price: Option<Decimal>,
    unrealized_pnl: Decimal,
}

/// The accounting rules, written from the specification independently of the SQL.
#[derive(Debug, Clone)]
struct Model {
    cash: Decimal,
    positions: BTreeMap<&'static str, ModelPosition>,
}

impl Model {
    fn new() -> Self {
        Self {
            cash: INITIAL_CAPITAL,
            positions: BTreeMap::new(),
        }
    }

    fn round8(x: Decimal) -> Decimal {
        x.round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero)
    }

    /// The fill quantity a `Size` means for `symbol` now; `None` if it would be zero.
    fn resolve(&self, symbol: &str, side: Side, size: &Size) -> Option<(Side, Decimal)> {
        let open = self
            .positions
            .get(symbol)
            .map(|p| p.quantity)
            .unwrap_or_default();
        // Trading against the open position, or `side` when flat.
        let against = if open > Decimal::ZERO {
            Side::Sell
        } else if open < Decimal::ZERO {
            Side::Buy
        } else {
            side
        };
        let with = match against {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let (side, q) = match size {
            Size::Fixed(q) => (side, *q),
            Size::Fraction(tenths) => (
                against,
                (open.abs() * Decimal::from(*tenths) / dec!(10)).round_dp(8),
            ),
            Size::Close => (against, open.abs()),
            Size::Flip(extra) => (against, open.abs() + extra),
            Size::Double => (if open.is_zero() { side } else { with }, open.abs()),
        };
        (q > Decimal::ZERO).then_some((side, q))
    }

    fn price(&self, symbol: &str, price: &Price) -> Decimal {
        match price {
            Price::Fixed(p) => *p,
            Price::NearAverage(ticks) => {
                let avg = self
                    .positions
                    .get(symbol)
                    .map(|p| p.avg_price)
                    .unwrap_or_default();
                let p = avg + Decimal::new(*ticks, 8);
                if p > Decimal::ZERO { p } else { Decimal::ONE }
            }
        }
    }

    fn fill(
        &mut self,
        symbol: &'static str,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        commission: Decimal,
    ) {
        let q = if side == Side::Buy {
            quantity
        } else {
            -quantity
        };
        self.cash -= q * price + commission;
        let pos = self.positions.entry(symbol).or_default();
        let old_q = pos.quantity;
        if old_q.is_zero() || old_q.is_sign_negative() == q.is_sign_negative() {
            pos.avg_price = Self::round8(
                (old_q.abs() * pos.avg_price + q.abs() * price) / (old_q.abs() + q.abs()),
            );
            pos.quantity = old_q + q;
        } else {
            let closed = q.abs().min(old_q.abs());
            pos.realized_pnl += closed
                * (price - pos.avg_price)
                * if old_q.is_sign_negative() {
                    Decimal::NEGATIVE_ONE
                } else {
                    Decimal::ONE
                };
            pos.quantity = old_q + q;
            if pos.quantity.is_zero() {
                pos.avg_price = Decimal::ZERO;
            } else if pos.quantity.is_sign_negative() != old_q.is_sign_negative() {
                pos.avg_price = price;
            }
        }
        pos.commission += commission;
        let mark = *pos.current_price.get_or_insert(price);
        pos.unrealized_pnl = pos.quantity * (mark - pos.avg_price);
    }

    fn mark(&mut self, symbol: &str, price: Decimal) -> u32 {
        match self.positions.get_mut(symbol) {
            Some(pos) => {
                pos.current_price = Some(price);
                pos.unrealized_pnl = pos.quantity * (price - pos.avg_price);
                1
            }
            None => 0,
        }
    }

    fn positions_value(&self) -> Decimal {
        self.positions
            .values()
            .map(|p| p.quantity * p.current_price.unwrap_or(p.avg_price))
            .sum()
    }

    fn total_value(&self) -> Decimal {
        self.cash + self.positions_value()
    }
}

async fn compare(
    pool: &sqlx::PgPool,
    model: &Model,
    book: &tradestream_router::Book,
    step: usize,
) -> Result<()> {
    let account = portfolio::account(pool, &acct(ACCOUNT))
        .await?
        .context("account")?;
    anyhow::ensure!(
        account.cash == book.cash,
        "step {step}: cash db {} trading core's books {}",
        account.cash,
        book.cash
    );
    anyhow::ensure!(
        account.cash == model.cash,
        "step {step}: cash db {} model {}",
        account.cash,
        model.cash
    );
    let total = model.total_value();
    anyhow::ensure!(
        account.total_value == total,
        "step {step}: total_value db {} model {total}",
        account.total_value
    );

    let positions = portfolio::positions(pool, &acct(ACCOUNT)).await?;
    anyhow::ensure!(
        positions.len() == model.positions.len(),
        "step {step}: position count"
    );
    for p in &positions {
        let m = model
            .positions
            .get(p.symbol.as_str())
            .context("position in model")?;
        let db = ModelPosition {
            quantity: p.quantity,
            avg_price: p.avg_price,
            realized_pnl: p.realized_pnl,
            commission: p.commission,
            current_price: p.current_price,
            unrealized_pnl: p.unrealized_pnl,
        };
        anyhow::ensure!(&db == m, "step {step}: {}: db {db:?} model {m:?}", p.symbol);
        let core = book.positions.get(&p.symbol).copied().unwrap_or_default();
        let stored = tradestream_router::Position {
            quantity: p.quantity,
            avg_price: p.avg_price,
            realized_pnl: p.realized_pnl,
            commission: p.commission,
        };
        anyhow::ensure!(
            core == stored,
            "step {step}: {}: db {stored:?} trading core's books {core:?}",
            p.symbol
        );
    }
    let marks: BTreeMap<String, Decimal> = positions
        .iter()
        .filter_map(|p| p.current_price.map(|c| (p.symbol.to_string(), c)))
        .collect();
    let equity = book.equity(|s| marks.get(s.as_str()).copied());
    anyhow::ensure!(
        account.total_value == equity,
        "step {step}: total_value db {} trading core's equity {equity}",
        account.total_value
    );

    // Fills and marks (at their times, from `at(1, 0)` on) wrote no snapshot; the trading
    // core's valuation of the step (dated before them) is one.
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM portfolio_snapshots WHERE snapshot_time >= $1")
            .bind(at(1, 0))
            .fetch_one(pool)
            .await?;
    anyhow::ensure!(
        count == 0,
        "step {step}: {count} snapshots from fills or marks"
    );
    let at = chrono::DateTime::from_timestamp(1_262_304_000 + step as i64, 0).context("time")?;
    let written: i64 = sqlx::query_scalar("SELECT write_valuations($1, $2, $3, $4, $5)")
        .bind(vec![ACCOUNT])
        .bind(vec![at])
        .bind(vec![book.cash])
        .bind(vec![equity - book.cash])
        .bind(vec![equity])
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        written == 1,
        "step {step}: write_valuations wrote {written}"
    );
    let got: (Decimal, Decimal, Decimal, Decimal, Decimal) = sqlx::query_as(
        "SELECT total_value, cash, positions_value, total_pnl, total_return
           FROM portfolio_snapshots WHERE snapshot_time = $1",
    )
    .bind(at)
    .fetch_one(pool)
    .await?;
    let pnl = total - INITIAL_CAPITAL;
    let expected = (
        total,
        model.cash,
        model.positions_value(),
        pnl,
        Model::round8(pnl / INITIAL_CAPITAL),
    );
    anyhow::ensure!(
        got == expected,
        "step {step}: the valuation's snapshot {got:?}, model {expected:?}"
    );
    Ok(())
}

async fn run_case(pool: &sqlx::PgPool, steps: &[Step]) -> Result<()> {
    reset_books(pool, &[ACCOUNT], INITIAL_CAPITAL).await?;
    let mut model = Model::new();
    let mut book = tradestream_router::Book::new(INITIAL_CAPITAL);
    compare(pool, &model, &book, 0).await?;
    for (i, step) in steps.iter().enumerate() {
        let time = at(1, 0) + chrono::Duration::hours(i as i64);
        match step {
            Step::Fill {
                symbol,
                side,
                size,
                price,
                commission,
            } => {
                let symbol = SYMBOLS[*symbol];
                let Some((side, quantity)) = model.resolve(symbol, *side, size) else {
                    continue;
                };
                let price = model.price(symbol, price);
                let f = fill(
                    &format!("f{i}"),
                    ACCOUNT,
                    symbol,
                    side,
                    quantity,
                    price,
                    *commission,
                    time,
                );
                anyhow::ensure!(portfolio::insert_fill(pool, &f).await?, "fill {i} stored");
                model.fill(symbol, side, quantity, price, *commission);
                book.apply_fill(&sym(symbol), side, quantity, price, *commission)?;
            }
            Step::Mark { symbol, price } => {
                let symbol = SYMBOLS[*symbol];
                let n = portfolio::mark_to_market(pool, &sym(symbol), *price, time).await?;
                let expected = model.mark(symbol, *price);
                anyhow::ensure!(
                    n == expected,
                    "step {i}: mark updated {n}, model {expected}"
                );
            }
        }
        compare(pool, &model, &book, i + 1)
            .await
            .with_context(|| format!("after {step:?}"))?;
    }
    Ok(())
}

#[test]
fn database_accounting_matches_the_model() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let db = rt.block_on(TestDatabase::new())?;
    let mut runner = database_property_runner(64);
    let result = runner.run(&proptest::collection::vec(step(), 1..=40), |steps| {
        rt.block_on(run_case(db.pool(), &steps))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    rt.block_on(db.cleanup());
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

#[test]
fn the_model_itself_follows_the_worked_example() {
    // Same figures as tests/procedures.rs, so a wrong model cannot agree with a wrong trigger.
    let mut m = Model::new();
    m.fill("AAA", Side::Buy, dec!(10), dec!(100), dec!(1));
    m.fill("AAA", Side::Buy, dec!(5), dec!(106), dec!(1.5));
    let p = &m.positions["AAA"];
    assert_eq!(
        (p.quantity, p.avg_price, p.unrealized_pnl),
        (dec!(15), dec!(102), dec!(-30))
    );
    m.fill("AAA", Side::Sell, dec!(20), dec!(110), dec!(0));
    let p = &m.positions["AAA"];
    assert_eq!(
        (p.quantity, p.avg_price, p.realized_pnl),
        (dec!(-5), dec!(110), dec!(120))
    );
    assert_eq!(
        m.cash,
        INITIAL_CAPITAL - dec!(1000) - dec!(1) - dec!(530) - dec!(1.5) + dec!(2200)
    );
    assert_eq!(m.mark("AAA", dec!(100)), 1);
    assert_eq!(m.positions["AAA"].unrealized_pnl, dec!(50));
    assert_eq!(m.mark("BBB", dec!(1)), 0);
}
