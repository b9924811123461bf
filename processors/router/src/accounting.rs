//! Account bookkeeping with the database's exact rules, so the router's view of cash and
//! positions never drifts from what Postgres computes from the same fills:
//! `check_available_funds`, the commission estimate, and `apply_fill` (cash, average price
//! rounded to 8 dp half away from zero, realized P&L on reductions). The exchange charges
//! commissions with [`Commission::charge`], so the router's estimate and the venue's charge
//! share one formula.

use crate::error::RouterError;
use rust_decimal::prelude::Signed;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tradestream_schemas::{Side, Symbol};

/// One basis point as a multiplier. SQL multiplies by 0.0001 instead of dividing by 10000
/// (numeric division would round); multiplying keeps the two exactly equal.
const BPS: Decimal = Decimal::from_parts(1, 0, 0, false, 4);

/// Rounds to 8 decimal places, half away from zero (SQL `round(x, 8)` on numeric).
pub fn round8(x: Decimal) -> Decimal {
    x.round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero)
}

/// `a * b`, or an overflow error naming what was computed.
pub fn mul(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, RouterError> {
    a.checked_mul(b).ok_or(RouterError::Overflow { what })
}

fn add(a: Decimal, b: Decimal, what: &'static str) -> Result<Decimal, RouterError> {
    a.checked_add(b).ok_or(RouterError::Overflow { what })
}

/// A commission schedule: per share plus basis points of notional, with a minimum per order
/// (per fill at the venue). The same three numbers as the `accounts` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Commission {
    /// Per unit traded.
    pub per_share: Decimal,
    /// Basis points of notional (quantity × price).
    pub bps: Decimal,
    /// Minimum charged.
    pub min: Decimal,
}

impl Commission {
    /// `greatest(min, q × per_share + q × p × bps × 0.0001)`, unrounded, exactly as
    /// `check_available_funds` estimates it.
    pub fn estimate(&self, quantity: Decimal, price: Decimal) -> Result<Decimal, RouterError> {
        let per_share = mul(quantity, self.per_share, "commission per share")?;
        let notional = mul(quantity, price, "commission notional")?;
        let bps = mul(
            mul(notional, self.bps, "commission bps")?,
            BPS,
            "commission bps",
        )?;
        Ok(self.min.max(add(per_share, bps, "commission")?))
    }

    /// What the venue charges for one fill: [`Commission::estimate`] rounded to 8 dp (the
    /// wire scale), half away from zero.
    pub fn charge(&self, quantity: Decimal, price: Decimal) -> Result<Decimal, RouterError> {
        self.estimate(quantity, price).map(round8)
    }
}

/// Why `check_available_funds` refuses its arguments (SQL raises TS003 for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FundsArgument {
    /// Quantity ≤ 0.
    Quantity,
    /// A BUY without a price > 0.
    Price,
}

/// The SQL function `check_available_funds`, over explicit inputs: a BUY needs
/// `cash ≥ q × p + estimated commission`; a SELL needs `held ≥ q` unless the account may sell
/// short. `price` may be `None` for a SELL, as in SQL.
pub fn check_available_funds(
    cash: Decimal,
    held: Decimal,
    allow_short: bool,
    commission: &Commission,
    side: Side,
    quantity: Decimal,
    price: Option<Decimal>,
) -> Result<bool, FundsArgument> {
    if quantity <= Decimal::ZERO {
        return Err(FundsArgument::Quantity);
    }
    match side {
        Side::Buy => {
            let price = price
                .filter(|p| *p > Decimal::ZERO)
                .ok_or(FundsArgument::Price)?;
            let required =
                required_cash(commission, quantity, price).map_err(|_| FundsArgument::Price)?;
            Ok(cash >= required)
        }
        Side::Sell => Ok(allow_short || held >= quantity),
    }
}

/// Cash a BUY of `quantity` at `price` needs: notional plus the estimated commission.
pub fn required_cash(
    commission: &Commission,
    quantity: Decimal,
    price: Decimal,
) -> Result<Decimal, RouterError> {
    add(
        mul(quantity, price, "order notional")?,
        commission.estimate(quantity, price)?,
        "required cash",
    )
}

/// A position in one symbol, as the `positions` table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// Signed quantity (negative: short).
    pub quantity: Decimal,
    /// Average entry price, 8 dp; 0 when flat.
    pub avg_price: Decimal,
    /// Realized P&L of reductions.
    pub realized_pnl: Decimal,
    /// Commissions paid.
    pub commission: Decimal,
}

/// Cash and positions of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Book {
    /// Cash.
    pub cash: Decimal,
    /// Positions by symbol (flat positions stay, as rows do in SQL).
    pub positions: BTreeMap<Symbol, Position>,
}

impl Book {
    /// A book holding only cash.
    pub fn new(cash: Decimal) -> Self {
        Self {
            cash,
            positions: BTreeMap::new(),
        }
    }

    /// Signed quantity held in `symbol`.
    pub fn quantity(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .get(symbol)
            .map_or(Decimal::ZERO, |p| p.quantity)
    }

    /// Applies one fill exactly as the `apply_fill` trigger does.
    pub fn apply_fill(
        &mut self,
        symbol: &Symbol,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        commission: Decimal,
    ) -> Result<(), RouterError> {
        let q = match side {
            Side::Buy => quantity,
            Side::Sell => -quantity,
        };
        let cash = self
            .cash
            .checked_sub(add(
                mul(q, price, "fill notional")?,
                commission,
                "fill cash",
            )?)
            .ok_or(RouterError::Overflow { what: "cash" })?;
        let Some(pos) = self.positions.get(symbol).copied() else {
            self.cash = cash;
            self.positions.insert(
                symbol.clone(),
                Position {
                    quantity: q,
                    avg_price: round8(price),
                    realized_pnl: Decimal::ZERO,
                    commission,
                },
            );
            return Ok(());
        };
        let mut next = pos;
        next.quantity = add(pos.quantity, q, "position quantity")?;
        next.commission = add(pos.commission, commission, "position commission")?;
        if pos.quantity.is_zero() || pos.quantity.signum() == q.signum() {
            let cost = add(
                mul(pos.quantity.abs(), pos.avg_price, "position cost")?,
                mul(q.abs(), price, "position cost")?,
                "position cost",
            )?;
            let size = add(pos.quantity.abs(), q.abs(), "position size")?;
            next.avg_price = round8(cost.checked_div(size).ok_or(RouterError::Overflow {
                what: "average price",
            })?);
        } else {
            let closed = q.abs().min(pos.quantity.abs());
            let pnl = mul(
                mul(closed, price - pos.avg_price, "realized pnl")?,
                pos.quantity.signum(),
                "realized pnl",
            )?;
            next.realized_pnl = add(pos.realized_pnl, pnl, "realized pnl")?;
            next.avg_price = if next.quantity.is_zero() {
                Decimal::ZERO
            } else if next.quantity.signum() != pos.quantity.signum() {
                round8(price)
            } else {
                pos.avg_price
            };
        }
        self.cash = cash;
        self.positions.insert(symbol.clone(), next);
        Ok(())
    }

    /// Cash plus every position at its mark (`mark(symbol)`, its average price if never
    /// marked), as `update_portfolio_value` values it. Marks are looked up per position held,
    /// so a decision never builds a map of every symbol's price.
    pub fn equity(&self, mark: impl Fn(&Symbol) -> Option<Decimal>) -> Decimal {
        self.positions.iter().fold(self.cash, |acc, (symbol, p)| {
            // A closed position adds nothing whatever its mark: skip the lookup.
            if p.quantity.is_zero() {
                return acc;
            }
            let mark = mark(symbol).unwrap_or(p.avg_price);
            acc.checked_add(p.quantity.checked_mul(mark).unwrap_or(Decimal::MAX))
                .unwrap_or(Decimal::MAX)
        })
    }

    /// Σ |quantity × mark| over positions (marks as in [`Self::equity`]).
    pub fn gross_exposure(&self, mark: impl Fn(&Symbol) -> Option<Decimal>) -> Decimal {
        self.positions
            .iter()
            .fold(Decimal::ZERO, |acc, (symbol, p)| {
                let mark = mark(symbol).unwrap_or(p.avg_price);
                acc.checked_add(p.quantity.checked_mul(mark).unwrap_or(Decimal::MAX).abs())
                    .unwrap_or(Decimal::MAX)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn sym() -> Symbol {
        Symbol::new("AAPL").expect("valid")
    }

    /// (cash, held, allow_short, side, quantity, price, expected)
    type Case = (
        Decimal,
        Decimal,
        bool,
        Side,
        Decimal,
        Option<Decimal>,
        Result<bool, FundsArgument>,
    );

    /// Cases computed by hand from the SQL body of `check_available_funds`.
    #[test]
    fn available_funds_matches_the_sql_rule() {
        let c = Commission {
            per_share: dec!(0.01),
            bps: dec!(1),
            min: dec!(1),
        };
        // (cash, held, allow_short, side, qty, price, expected)
        let cases: &[Case] = &[
            // 100 × 10 = 1000; commission max(1, 1 + 0.1) = 1.1 → needs 1001.1
            (
                dec!(1001.1),
                dec!(0),
                false,
                Side::Buy,
                dec!(100),
                Some(dec!(10)),
                Ok(true),
            ),
            (
                dec!(1001.09999999),
                dec!(0),
                false,
                Side::Buy,
                dec!(100),
                Some(dec!(10)),
                Ok(false),
            ),
            // minimum commission applies: 1 × 10 = 10, commission max(1, 0.011) = 1
            (
                dec!(11),
                dec!(0),
                false,
                Side::Buy,
                dec!(1),
                Some(dec!(10)),
                Ok(true),
            ),
            (
                dec!(10.99),
                dec!(0),
                false,
                Side::Buy,
                dec!(1),
                Some(dec!(10)),
                Ok(false),
            ),
            // fractional: 0.5 × 3 = 1.5, commission max(1, 0.005 + 0.00015) = 1
            (
                dec!(2.5),
                dec!(0),
                false,
                Side::Buy,
                dec!(0.5),
                Some(dec!(3)),
                Ok(true),
            ),
            // sells look at the position only
            (dec!(0), dec!(5), false, Side::Sell, dec!(5), None, Ok(true)),
            (
                dec!(0),
                dec!(5),
                false,
                Side::Sell,
                dec!(5.00000001),
                None,
                Ok(false),
            ),
            (
                dec!(0),
                dec!(0),
                true,
                Side::Sell,
                dec!(1000),
                None,
                Ok(true),
            ),
            (
                dec!(0),
                dec!(-3),
                false,
                Side::Sell,
                dec!(1),
                Some(dec!(10)),
                Ok(false),
            ),
            // argument errors (TS003)
            (
                dec!(100),
                dec!(0),
                false,
                Side::Buy,
                dec!(0),
                Some(dec!(10)),
                Err(FundsArgument::Quantity),
            ),
            (
                dec!(100),
                dec!(0),
                false,
                Side::Sell,
                dec!(-1),
                None,
                Err(FundsArgument::Quantity),
            ),
            (
                dec!(100),
                dec!(0),
                false,
                Side::Buy,
                dec!(1),
                None,
                Err(FundsArgument::Price),
            ),
            (
                dec!(100),
                dec!(0),
                false,
                Side::Buy,
                dec!(1),
                Some(dec!(0)),
                Err(FundsArgument::Price),
            ),
        ];
        for (i, (cash, held, short, side, q, p, want)) in cases.iter().enumerate() {
            assert_eq!(
                check_available_funds(*cash, *held, *short, &c, *side, *q, *p),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn commission_formula() -> Result<(), RouterError> {
        let c = Commission {
            per_share: dec!(0.005),
            bps: dec!(1),
            min: dec!(1),
        };
        assert_eq!(c.estimate(dec!(10), dec!(100))?, dec!(1));
        // 1000 × 0.005 + 1000 × 100 × 1 × 0.0001 = 5 + 10
        assert_eq!(c.estimate(dec!(1000), dec!(100))?, dec!(15));
        let c = Commission {
            per_share: dec!(0),
            bps: dec!(0.3),
            min: dec!(0),
        };
        // 3 × 1.23456789 × 0.3 × 0.0001 = 0.000111111110100 → 8 dp
        assert_eq!(
            c.estimate(dec!(3), dec!(1.23456789))?,
            dec!(0.0001111111101)
        );
        assert_eq!(c.charge(dec!(3), dec!(1.23456789))?, dec!(0.00011111));
        Ok(())
    }

    #[test]
    fn fills_follow_the_trigger() -> Result<(), RouterError> {
        let s = sym();
        let mut b = Book::new(dec!(10000));
        b.apply_fill(&s, Side::Buy, dec!(10), dec!(100), dec!(1))?;
        assert_eq!(b.cash, dec!(8999));
        b.apply_fill(&s, Side::Buy, dec!(20), dec!(101), dec!(1))?;
        // (10 × 100 + 20 × 101) / 30 = 100.666666666… → 100.66666667
        assert_eq!(b.positions[&s].avg_price, dec!(100.66666667));
        b.apply_fill(&s, Side::Sell, dec!(40), dec!(110), dec!(1))?;
        let p = b.positions[&s];
        assert_eq!(p.quantity, dec!(-10));
        assert_eq!(p.avg_price, dec!(110));
        assert_eq!(p.realized_pnl, dec!(30) * (dec!(110) - dec!(100.66666667)));
        assert_eq!(
            b.cash,
            dec!(10000) - dec!(1000) - dec!(2020) + dec!(4400) - dec!(3)
        );
        b.apply_fill(&s, Side::Buy, dec!(10), dec!(105), dec!(0))?;
        assert_eq!(b.positions[&s].quantity, dec!(0));
        assert_eq!(b.positions[&s].avg_price, dec!(0));
        assert_eq!(b.equity(|_| None), b.cash);
        b.apply_fill(&s, Side::Buy, dec!(2), dec!(100), dec!(0))?;
        assert_eq!(b.equity(|_| Some(dec!(110))), b.cash + dec!(220));
        assert_eq!(
            b.equity(|_| None),
            b.cash + dec!(200),
            "unmarked: at the average price"
        );
        assert_eq!(b.gross_exposure(|_| Some(dec!(110))), dec!(220));
        Ok(())
    }
}
