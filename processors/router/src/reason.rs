//! Why the router refused an order. Every rejection is published with `reject_reason`
//! `CATEGORY_CONDITION: key=value[, key=value]`; the enum keeps the category separate so
//! metrics can count rejections by [`RejectReason::category_condition`] (low cardinality)
//! while the text carries the numbers an operator needs.

use chrono::NaiveTime;
use rust_decimal::Decimal;
use std::fmt;
use tradestream_schemas::{AccountId, Side, Symbol};

/// A refused order and the numbers that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// Quantity is zero, negative or not a whole number of lots.
    ValidationQuantity {
        /// Requested (or sized) quantity.
        quantity: Decimal,
        /// Configured lot size.
        lot_size: Decimal,
    },
    /// A field of a manual order breaks a record rule (missing limit price, ...).
    ValidationOrder {
        /// Field name.
        field: &'static str,
        /// Rule broken.
        reason: String,
    },
    /// The account is not configured in the router.
    ValidationAccount {
        /// Account requested.
        account: AccountId,
    },
    /// No price to check a MARKET order against (no market data seen for the symbol).
    ValidationPrice {
        /// Symbol.
        symbol: Symbol,
    },
    /// The manual or configured kill switch is on.
    KillSwitch {
        /// Why it was switched on.
        reason: String,
    },
    /// Equity fell below peak × (1 − max drawdown); halted until reset.
    MaxDrawdown {
        /// Equity when halted.
        equity: Decimal,
        /// Equity peak.
        peak: Decimal,
        /// Configured limit in percent.
        limit_pct: Decimal,
    },
    /// The order's event time is outside the account's trading window.
    TradingHours {
        /// Time of day (UTC) of the order.
        time: NaiveTime,
        /// Window start.
        start: NaiveTime,
        /// Window end.
        end: NaiveTime,
    },
    /// Too many orders within one second of event time.
    RateLimit {
        /// Orders allowed per second.
        limit: u32,
        /// Orders already accepted in the window.
        count: usize,
    },
    /// Today's loss exceeds the daily limit; only reducing orders pass.
    DailyLoss {
        /// Session P&L.
        pnl: Decimal,
        /// Configured limit (positive amount).
        limit: Decimal,
    },
    /// The order's price is too far from the last trade (fat finger).
    PriceBand {
        /// Order or reference price.
        price: Decimal,
        /// Last market-data close.
        last: Decimal,
        /// Configured band in percent.
        band_pct: Decimal,
    },
    /// Order notional above the limit.
    MaxOrderNotional {
        /// quantity × price.
        notional: Decimal,
        /// Limit.
        limit: Decimal,
    },
    /// Resulting position quantity above the limit.
    MaxPositionQty {
        /// Symbol.
        symbol: Symbol,
        /// Limit.
        limit: Decimal,
        /// |position| after this order and pending ones.
        resulting: Decimal,
    },
    /// Resulting position notional above the limit.
    MaxPositionNotional {
        /// Symbol.
        symbol: Symbol,
        /// Limit.
        limit: Decimal,
        /// |position| × price after this order and pending ones.
        resulting: Decimal,
    },
    /// Resulting gross exposure above the limit.
    MaxGrossExposure {
        /// Limit.
        limit: Decimal,
        /// Σ |position × price| after this order and pending ones.
        resulting: Decimal,
    },
    /// Too many open orders.
    MaxOpenOrders {
        /// Limit.
        limit: u32,
        /// Open orders if this one (and its bracket children) were accepted.
        resulting: usize,
    },
    /// A BUY the account's cash cannot pay for (`check_available_funds`).
    BuyingPower {
        /// Notional plus estimated commission.
        required: Decimal,
        /// Cash not reserved by pending buys.
        available: Decimal,
    },
    /// A SELL larger than the position, for an account that may not sell short.
    InsufficientPosition {
        /// Symbol.
        symbol: Symbol,
        /// Side refused.
        side: Side,
        /// Quantity requested.
        quantity: Decimal,
        /// Position not committed to pending sells.
        held: Decimal,
    },
}

impl RejectReason {
    /// The `CATEGORY_CONDITION` part: a fixed, low-cardinality label.
    pub fn category_condition(&self) -> &'static str {
        match self {
            RejectReason::ValidationQuantity { .. } => "VALIDATION_QUANTITY",
            RejectReason::ValidationOrder { .. } => "VALIDATION_ORDER",
            RejectReason::ValidationAccount { .. } => "VALIDATION_ACCOUNT",
            RejectReason::ValidationPrice { .. } => "VALIDATION_PRICE",
            RejectReason::KillSwitch { .. } => "RISK_KILL_SWITCH",
            RejectReason::MaxDrawdown { .. } => "RISK_MAX_DRAWDOWN",
            RejectReason::TradingHours { .. } => "RISK_TRADING_HOURS",
            RejectReason::RateLimit { .. } => "RISK_MAX_ORDERS_PER_SECOND",
            RejectReason::DailyLoss { .. } => "RISK_DAILY_LOSS",
            RejectReason::PriceBand { .. } => "RISK_PRICE_BAND",
            RejectReason::MaxOrderNotional { .. } => "RISK_MAX_ORDER_NOTIONAL",
            RejectReason::MaxPositionQty { .. } => "RISK_MAX_POSITION_QTY",
            RejectReason::MaxPositionNotional { .. } => "RISK_MAX_POSITION_NOTIONAL",
            RejectReason::MaxGrossExposure { .. } => "RISK_MAX_GROSS_EXPOSURE",
            RejectReason::MaxOpenOrders { .. } => "RISK_MAX_OPEN_ORDERS",
            RejectReason::BuyingPower { .. } => "RISK_BUYING_POWER",
            RejectReason::InsufficientPosition { .. } => "RISK_INSUFFICIENT_POSITION",
        }
    }
}

/// Money with two decimals (`10250.00`), as operators read it.
fn money(d: &Decimal) -> String {
    format!("{:.2}", d.round_dp(2))
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.category_condition())?;
        match self {
            RejectReason::ValidationQuantity { quantity, lot_size } => {
                write!(
                    f,
                    "quantity={}, lot_size={}",
                    quantity.normalize(),
                    lot_size.normalize()
                )
            }
            RejectReason::ValidationOrder { field, reason } => {
                write!(f, "field={field}, reason={reason}")
            }
            RejectReason::ValidationAccount { account } => write!(f, "account={account}"),
            RejectReason::ValidationPrice { symbol } => {
                write!(f, "symbol={symbol}, reason=no_market_data")
            }
            RejectReason::KillSwitch { reason } => write!(f, "reason={reason}"),
            RejectReason::MaxDrawdown {
                equity,
                peak,
                limit_pct,
            } => write!(
                f,
                "equity={}, peak={}, limit_pct={}",
                money(equity),
                money(peak),
                limit_pct.normalize()
            ),
            RejectReason::TradingHours { time, start, end } => write!(
                f,
                "time={}, start={}, end={}",
                time.format("%H:%M:%S"),
                start.format("%H:%M:%S"),
                end.format("%H:%M:%S")
            ),
            RejectReason::RateLimit { limit, count } => write!(f, "limit={limit}, count={count}"),
            RejectReason::DailyLoss { pnl, limit } => {
                write!(f, "pnl={}, limit={}", money(pnl), money(limit))
            }
            RejectReason::PriceBand {
                price,
                last,
                band_pct,
            } => write!(
                f,
                "price={}, last={}, band_pct={}",
                price.normalize(),
                last.normalize(),
                band_pct.normalize()
            ),
            RejectReason::MaxOrderNotional { notional, limit } => {
                write!(f, "notional={}, limit={}", money(notional), money(limit))
            }
            RejectReason::MaxPositionQty {
                symbol,
                limit,
                resulting,
            } => write!(
                f,
                "symbol={symbol}, limit={}, resulting={}",
                limit.normalize(),
                resulting.normalize()
            ),
            RejectReason::MaxPositionNotional {
                symbol,
                limit,
                resulting,
            } => {
                write!(
                    f,
                    "symbol={symbol}, limit={}, resulting={}",
                    money(limit),
                    money(resulting)
                )
            }
            RejectReason::MaxGrossExposure { limit, resulting } => {
                write!(f, "limit={}, resulting={}", money(limit), money(resulting))
            }
            RejectReason::MaxOpenOrders { limit, resulting } => {
                write!(f, "limit={limit}, resulting={resulting}")
            }
            RejectReason::BuyingPower {
                required,
                available,
            } => {
                write!(
                    f,
                    "required={}, available={}",
                    money(required),
                    money(available)
                )
            }
            RejectReason::InsufficientPosition {
                symbol,
                side,
                quantity,
                held,
            } => write!(
                f,
                "symbol={symbol}, side={}, quantity={}, held={}",
                side.as_str(),
                quantity.normalize(),
                held.normalize()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn texts_follow_the_contract() {
        let s = Symbol::new("AAPL").expect("valid");
        let r = RejectReason::MaxPositionQty {
            symbol: s,
            limit: dec!(100),
            resulting: dec!(120),
        };
        assert_eq!(
            r.to_string(),
            "RISK_MAX_POSITION_QTY: symbol=AAPL, limit=100, resulting=120"
        );
        let r = RejectReason::BuyingPower {
            required: dec!(10250),
            available: dec!(9000),
        };
        assert_eq!(
            r.to_string(),
            "RISK_BUYING_POWER: required=10250.00, available=9000.00"
        );
        let r = RejectReason::KillSwitch {
            reason: "manual".into(),
        };
        assert_eq!(r.to_string(), "RISK_KILL_SWITCH: reason=manual");
        let r = RejectReason::ValidationQuantity {
            quantity: dec!(0),
            lot_size: dec!(1),
        };
        assert_eq!(r.to_string(), "VALIDATION_QUANTITY: quantity=0, lot_size=1");
        assert_eq!(r.category_condition(), "VALIDATION_QUANTITY");
    }
}
