//! Price rules of the paper venue for one order against one bar: whether it trades, at what
//! price (before slippage) and with what liquidity. Kept apart from the bookkeeping so the
//! rules can be read and tested on their own.
//!
//! A bar's path inside [low, high] is unknown, so fills are priced conservatively: a market
//! order trades at the open; a limit at the open if that is better, else at the limit; a
//! stop at the open if the bar gapped through it, else at the stop. Every price before
//! slippage therefore lies within the bar's [low, high].

use rust_decimal::{Decimal, RoundingStrategy};
use tradestream_schemas::{Liquidity, MarketData, MarketDataKind, OrderType, Side};

/// The prices of a bar (a tick is a bar whose four prices are its trade price).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    /// Open.
    pub open: Decimal,
    /// High.
    pub high: Decimal,
    /// Low.
    pub low: Decimal,
}

impl Prices {
    /// Prices of a market-data record.
    pub fn of(m: &MarketData) -> Self {
        match m.kind {
            MarketDataKind::Bar => Self {
                open: m.open,
                high: m.high,
                low: m.low,
            },
            MarketDataKind::Tick => Self {
                open: m.close,
                high: m.close,
                low: m.close,
            },
        }
    }
}

/// What an order's prices are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderPrices {
    /// Side.
    pub side: Side,
    /// Type.
    pub order_type: OrderType,
    /// Limit price (LIMIT, STOP_LIMIT).
    pub limit: Option<Decimal>,
    /// Stop price (STOP, STOP_LIMIT).
    pub stop: Option<Decimal>,
    /// Whether a stop already triggered on an earlier bar.
    pub triggered: bool,
    /// Whether the order rested through at least one eligible bar.
    pub rested: bool,
}

/// Outcome of one order on one bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Trades at this price (before slippage), or not at all.
    pub price: Option<Decimal>,
    /// Whether slippage applies (market-like executions).
    pub slips: bool,
    /// Liquidity flag of the execution.
    pub liquidity: Liquidity,
    /// The stop triggered (now or before).
    pub triggered: bool,
}

fn limit_price(side: Side, bar: Prices, limit: Decimal) -> Option<Decimal> {
    match side {
        Side::Buy => (bar.low <= limit).then(|| bar.open.min(limit)),
        Side::Sell => (bar.high >= limit).then(|| bar.open.max(limit)),
    }
}

fn stop_touched(side: Side, bar: Prices, stop: Decimal) -> bool {
    match side {
        Side::Buy => bar.high >= stop,
        Side::Sell => bar.low <= stop,
    }
}

fn stop_fill(side: Side, bar: Prices, stop: Decimal) -> Decimal {
    match side {
        Side::Buy => bar.open.max(stop),
        Side::Sell => bar.open.min(stop),
    }
}

/// Applies the venue's price rules.
pub fn evaluate(o: &OrderPrices, bar: Prices) -> Match {
    let resting = if o.rested {
        Liquidity::Maker
    } else {
        Liquidity::Taker
    };
    let none = |triggered| Match {
        price: None,
        slips: false,
        liquidity: Liquidity::Taker,
        triggered,
    };
    match (o.order_type, o.limit, o.stop) {
        (OrderType::Market, ..) => Match {
            price: Some(bar.open),
            slips: true,
            liquidity: Liquidity::Taker,
            triggered: false,
        },
        (OrderType::Limit, Some(limit), _) => Match {
            price: limit_price(o.side, bar, limit),
            slips: false,
            liquidity: resting,
            triggered: false,
        },
        (OrderType::Stop, _, Some(_)) if o.triggered => Match {
            price: Some(bar.open),
            slips: true,
            liquidity: Liquidity::Taker,
            triggered: true,
        },
        (OrderType::Stop, _, Some(stop)) => {
            if stop_touched(o.side, bar, stop) {
                Match {
                    price: Some(stop_fill(o.side, bar, stop)),
                    slips: true,
                    liquidity: Liquidity::Taker,
                    triggered: true,
                }
            } else {
                none(false)
            }
        }
        (OrderType::StopLimit, Some(limit), Some(_)) if o.triggered => Match {
            price: limit_price(o.side, bar, limit),
            slips: false,
            liquidity: resting,
            triggered: true,
        },
        (OrderType::StopLimit, Some(limit), Some(stop)) => {
            if !stop_touched(o.side, bar, stop) {
                return none(false);
            }
            // Triggered inside this bar: only prices from the trigger on are reachable.
            let px = stop_fill(o.side, bar, stop);
            let within = match o.side {
                Side::Buy => px <= limit,
                Side::Sell => px >= limit,
            };
            Match {
                price: within.then_some(px),
                slips: false,
                liquidity: Liquidity::Taker,
                triggered: true,
            }
        }
        // Validation guarantees the prices a type needs; without them nothing trades.
        _ => none(o.triggered),
    }
}

/// `price` moved against the order by `bps` basis points, rounded to 8 dp.
pub fn slip(price: Decimal, side: Side, bps: Decimal) -> Decimal {
    let factor = bps / Decimal::from(10_000);
    let p = match side {
        Side::Buy => price + price * factor,
        Side::Sell => price - price * factor,
    };
    p.round_dp_with_strategy(8, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn bar(open: Decimal, high: Decimal, low: Decimal) -> Prices {
        Prices { open, high, low }
    }
    fn order(
        side: Side,
        order_type: OrderType,
        limit: Option<Decimal>,
        stop: Option<Decimal>,
    ) -> OrderPrices {
        OrderPrices {
            side,
            order_type,
            limit,
            stop,
            triggered: false,
            rested: false,
        }
    }

    #[test]
    fn limits_fill_at_the_better_of_open_and_limit() {
        let b = bar(dec!(100), dec!(105), dec!(95));
        assert_eq!(
            evaluate(&order(Side::Buy, OrderType::Limit, Some(dec!(96)), None), b).price,
            Some(dec!(96))
        );
        assert_eq!(
            evaluate(
                &order(Side::Buy, OrderType::Limit, Some(dec!(102)), None),
                b
            )
            .price,
            Some(dec!(100))
        );
        assert_eq!(
            evaluate(
                &order(Side::Buy, OrderType::Limit, Some(dec!(94.99)), None),
                b
            )
            .price,
            None
        );
        assert_eq!(
            evaluate(
                &order(Side::Sell, OrderType::Limit, Some(dec!(104)), None),
                b
            )
            .price,
            Some(dec!(104))
        );
        assert_eq!(
            evaluate(
                &order(Side::Sell, OrderType::Limit, Some(dec!(98)), None),
                b
            )
            .price,
            Some(dec!(100))
        );
        assert_eq!(
            evaluate(
                &order(Side::Sell, OrderType::Limit, Some(dec!(105.01)), None),
                b
            )
            .price,
            None
        );
        let rested = OrderPrices {
            rested: true,
            ..order(Side::Buy, OrderType::Limit, Some(dec!(96)), None)
        };
        assert_eq!(evaluate(&rested, b).liquidity, Liquidity::Maker);
    }

    #[test]
    fn stops_trigger_through_the_bar() {
        let b = bar(dec!(100), dec!(105), dec!(95));
        let m = evaluate(&order(Side::Buy, OrderType::Stop, None, Some(dec!(103))), b);
        assert_eq!(
            (m.price, m.slips, m.triggered),
            (Some(dec!(103)), true, true)
        );
        // Gapped through: the open is the first price available.
        let m = evaluate(&order(Side::Buy, OrderType::Stop, None, Some(dec!(98))), b);
        assert_eq!(m.price, Some(dec!(100)));
        assert_eq!(
            evaluate(
                &order(Side::Buy, OrderType::Stop, None, Some(dec!(105.5))),
                b
            )
            .price,
            None
        );
        assert_eq!(
            evaluate(&order(Side::Sell, OrderType::Stop, None, Some(dec!(96))), b).price,
            Some(dec!(96))
        );
        assert_eq!(
            evaluate(
                &order(Side::Sell, OrderType::Stop, None, Some(dec!(101))),
                b
            )
            .price,
            Some(dec!(100))
        );
        assert_eq!(
            evaluate(&order(Side::Sell, OrderType::Stop, None, Some(dec!(94))), b).price,
            None
        );
    }

    #[test]
    fn stop_limits_trigger_then_respect_the_limit() {
        let b = bar(dec!(100), dec!(105), dec!(95));
        let m = evaluate(
            &order(
                Side::Buy,
                OrderType::StopLimit,
                Some(dec!(104)),
                Some(dec!(103)),
            ),
            b,
        );
        assert_eq!(
            (m.price, m.slips, m.triggered),
            (Some(dec!(103)), false, true)
        );
        // Triggered, but the limit is below the trigger: rests as a limit.
        let m = evaluate(
            &order(
                Side::Buy,
                OrderType::StopLimit,
                Some(dec!(102)),
                Some(dec!(103)),
            ),
            b,
        );
        assert_eq!((m.price, m.triggered), (None, true));
        let later = OrderPrices {
            triggered: true,
            rested: true,
            ..order(
                Side::Buy,
                OrderType::StopLimit,
                Some(dec!(102)),
                Some(dec!(103)),
            )
        };
        let m = evaluate(&later, bar(dec!(103), dec!(104), dec!(101)));
        assert_eq!((m.price, m.liquidity), (Some(dec!(102)), Liquidity::Maker));
    }

    #[test]
    fn slippage_moves_against_the_order() {
        assert_eq!(slip(dec!(100), Side::Buy, dec!(1)), dec!(100.01));
        assert_eq!(slip(dec!(100), Side::Sell, dec!(1)), dec!(99.99));
        assert_eq!(slip(dec!(1.23456789), Side::Buy, dec!(1)), dec!(1.23469135));
        assert_eq!(slip(dec!(100), Side::Buy, dec!(0)), dec!(100));
    }
}
