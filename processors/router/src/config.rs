//! Router configuration: sizing of signal orders, the order shape signals produce, and per
//! account the capital, commission schedule and risk limits. Serde with
//! `deny_unknown_fields` and named defaults; [`RouterConfig::validate`] reports every problem
//! at once, each naming its setting (dotted path, e.g. `accounts.demo.limits.price_band_pct`).

use crate::accounting::Commission;
use crate::error::RouterError;
use chrono::NaiveTime;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tradestream_schemas::{AccountId, TimeInForce};

fn default_account() -> AccountId {
    AccountId::new("demo").unwrap_or_else(|_| unreachable!("valid literal"))
}
fn default_accounts() -> BTreeMap<AccountId, AccountConfig> {
    BTreeMap::from([(default_account(), AccountConfig::default())])
}
fn default_risk_per_trade_pct() -> Decimal {
    Decimal::ONE
}
fn default_min_confidence() -> f64 {
    0.55
}
fn default_fallback_stop_pct() -> Decimal {
    Decimal::TWO
}
fn default_lot_size() -> Decimal {
    Decimal::ONE
}
fn default_signal_order_type() -> SignalOrderType {
    SignalOrderType::Market
}
fn default_signal_tif() -> TimeInForce {
    TimeInForce::Day
}
fn default_bracket_tif() -> TimeInForce {
    TimeInForce::Gtc
}
fn default_true() -> bool {
    true
}
fn default_initial_capital() -> Decimal {
    Decimal::from(1_000_000)
}
fn default_commission_bps() -> Decimal {
    Decimal::ONE
}
fn default_commission_min() -> Decimal {
    Decimal::ONE
}
fn default_max_open_orders() -> Option<u32> {
    Some(200)
}
fn default_max_orders_per_second() -> Option<u32> {
    Some(20)
}
fn default_price_band_pct() -> Option<Decimal> {
    Some(Decimal::TEN)
}
fn default_dedup_orders() -> u32 {
    50_000
}
fn default_dedup_horizon_hours() -> u32 {
    24 * 7
}

/// Order type of signal orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignalOrderType {
    /// MARKET: fills at the next bar's open.
    Market,
    /// LIMIT at the signal's reference price.
    Limit,
}

/// Everything the router needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Accounts the router manages (orders for other accounts are rejected).
    #[serde(default = "default_accounts")]
    pub accounts: BTreeMap<AccountId, AccountConfig>,
    /// Account that signal orders are placed for.
    #[serde(default = "default_account")]
    pub default_account: AccountId,
    /// Percent of equity put at risk down to the stop per signal order (1 = 1 %).
    #[serde(
        default = "default_risk_per_trade_pct",
        deserialize_with = "crate::amount::de"
    )]
    pub risk_per_trade_pct: Decimal,
    /// Signals below this confidence make no order; at it the size is 0, at 1.0 full size.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f64,
    /// Stop distance in percent of price when a signal has no usable stop-loss.
    #[serde(
        default = "default_fallback_stop_pct",
        deserialize_with = "crate::amount::de"
    )]
    pub fallback_stop_pct: Decimal,
    /// Quantities are whole multiples of this (1 = whole units; 0.001 allows fractions).
    #[serde(default = "default_lot_size", deserialize_with = "crate::amount::de")]
    pub lot_size: Decimal,
    /// Order type of signal orders.
    #[serde(default = "default_signal_order_type")]
    pub signal_order_type: SignalOrderType,
    /// Time in force of signal orders.
    #[serde(default = "default_signal_tif")]
    pub signal_time_in_force: TimeInForce,
    /// Emit stop-loss / take-profit bracket children for signal entries that carry them.
    #[serde(default = "default_true")]
    pub brackets: bool,
    /// Time in force of bracket children.
    #[serde(default = "default_bracket_tif")]
    pub bracket_time_in_force: TimeInForce,
    /// Start with the kill switch on (reason `config`); the API can switch it off.
    #[serde(default)]
    pub kill_switch: bool,
    /// Finished orders the router always remembers (the newest ones), to recognise inputs
    /// about them that arrive again (an upstream processor republishing after a crash). An
    /// older finished order is forgotten once it is also `dedup_horizon_hours` older than
    /// the newest; an input about an unknown order from before the forgotten ones is then
    /// dropped as a redelivery. Bounds the router's memory and snapshot.
    #[serde(default = "default_dedup_orders")]
    pub dedup_orders: u32,
    /// Event-time hours a finished order is remembered at least (see `dedup_orders`).
    #[serde(default = "default_dedup_horizon_hours")]
    pub dedup_horizon_hours: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            accounts: default_accounts(),
            default_account: default_account(),
            risk_per_trade_pct: default_risk_per_trade_pct(),
            min_confidence: default_min_confidence(),
            fallback_stop_pct: default_fallback_stop_pct(),
            lot_size: default_lot_size(),
            signal_order_type: default_signal_order_type(),
            signal_time_in_force: default_signal_tif(),
            brackets: true,
            bracket_time_in_force: default_bracket_tif(),
            kill_switch: false,
            dedup_orders: default_dedup_orders(),
            dedup_horizon_hours: default_dedup_horizon_hours(),
        }
    }
}

/// One account: capital, shorting, commissions (the `accounts` table's columns) and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Starting cash; must equal the database account's `initial_capital`.
    #[serde(
        default = "default_initial_capital",
        deserialize_with = "crate::amount::de"
    )]
    pub initial_capital: Decimal,
    /// Whether the account may sell what it does not hold.
    #[serde(default)]
    pub allow_short: bool,
    /// Commission per unit.
    #[serde(default, deserialize_with = "crate::amount::de")]
    pub commission_per_share: Decimal,
    /// Commission in basis points of notional.
    #[serde(
        default = "default_commission_bps",
        deserialize_with = "crate::amount::de"
    )]
    pub commission_bps: Decimal,
    /// Minimum commission per order.
    #[serde(
        default = "default_commission_min",
        deserialize_with = "crate::amount::de"
    )]
    pub commission_min: Decimal,
    /// Pre-trade risk limits.
    #[serde(default)]
    pub limits: RiskLimits,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self {
            initial_capital: default_initial_capital(),
            allow_short: false,
            commission_per_share: Decimal::ZERO,
            commission_bps: default_commission_bps(),
            commission_min: default_commission_min(),
            limits: RiskLimits::default(),
        }
    }
}

impl AccountConfig {
    /// The account's commission schedule.
    pub fn commission(&self) -> Commission {
        Commission {
            per_share: self.commission_per_share,
            bps: self.commission_bps,
            min: self.commission_min,
        }
    }
}

/// Pre-trade limits of one account; `None` disables a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Max |position| per symbol, in units.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub max_position_qty: Option<Decimal>,
    /// Max |position| × price per symbol.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub max_position_notional: Option<Decimal>,
    /// Max quantity × price of one order.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub max_order_notional: Option<Decimal>,
    /// Max Σ |position × last price| across symbols.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub max_gross_exposure: Option<Decimal>,
    /// Max open (accepted, not finished) orders, bracket children included.
    #[serde(default = "default_max_open_orders")]
    pub max_open_orders: Option<u32>,
    /// Max accepted orders within any one second of event time.
    #[serde(default = "default_max_orders_per_second")]
    pub max_orders_per_second: Option<u32>,
    /// Reject prices more than this percent away from the last market-data close.
    #[serde(
        default = "default_price_band_pct",
        deserialize_with = "crate::amount::de_opt"
    )]
    pub price_band_pct: Option<Decimal>,
    /// Session-day loss (realized + unrealized, positive amount) that halts new risk until
    /// the next UTC day.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub daily_loss_limit: Option<Decimal>,
    /// Drawdown from the equity peak in percent that halts all orders until reset.
    #[serde(default, deserialize_with = "crate::amount::de_opt")]
    pub max_drawdown_pct: Option<Decimal>,
    /// UTC time window orders may be placed in; absent: all day.
    #[serde(default)]
    pub trading_hours: Option<TradingHours>,
}

impl Default for RiskLimits {
    fn default() -> Self {
        Self {
            max_position_qty: None,
            max_position_notional: None,
            max_order_notional: None,
            max_gross_exposure: None,
            max_open_orders: default_max_open_orders(),
            max_orders_per_second: default_max_orders_per_second(),
            price_band_pct: default_price_band_pct(),
            daily_loss_limit: None,
            max_drawdown_pct: None,
            trading_hours: None,
        }
    }
}

/// A UTC time-of-day window `[start, end)`; `start > end` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradingHours {
    /// First allowed time (inclusive), `HH:MM:SS`.
    pub start: NaiveTime,
    /// End of the window (exclusive), `HH:MM:SS`.
    pub end: NaiveTime,
}

impl TradingHours {
    /// Whether `t` is inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl RouterConfig {
    /// Checks every setting; all problems are reported together.
    pub fn validate(&self) -> Result<(), RouterError> {
        let mut p = Vec::new();
        let hundred = Decimal::ONE_HUNDRED;
        if !self.accounts.contains_key(&self.default_account) {
            p.push(format!(
                "default_account: {} is not in accounts",
                self.default_account
            ));
        }
        if self.risk_per_trade_pct <= Decimal::ZERO || self.risk_per_trade_pct > hundred {
            p.push(format!(
                "risk_per_trade_pct: must be in (0, 100], got {}",
                self.risk_per_trade_pct
            ));
        }
        if !(0.0..1.0).contains(&self.min_confidence) {
            p.push(format!(
                "min_confidence: must be in [0, 1), got {}",
                self.min_confidence
            ));
        }
        if self.fallback_stop_pct <= Decimal::ZERO || self.fallback_stop_pct >= hundred {
            p.push(format!(
                "fallback_stop_pct: must be in (0, 100), got {}",
                self.fallback_stop_pct
            ));
        }
        if self.lot_size <= Decimal::ZERO || self.lot_size.normalize().scale() > 8 {
            p.push(format!(
                "lot_size: must be > 0 with at most 8 decimals, got {}",
                self.lot_size
            ));
        }
        if self.dedup_orders == 0 {
            p.push("dedup_orders: must be > 0".to_string());
        }
        for (id, a) in &self.accounts {
            let k = |field: &str| format!("accounts.{id}.{field}");
            if a.initial_capital <= Decimal::ZERO {
                p.push(format!(
                    "{}: must be > 0, got {}",
                    k("initial_capital"),
                    a.initial_capital
                ));
            }
            for (name, v) in [
                ("commission_per_share", a.commission_per_share),
                ("commission_bps", a.commission_bps),
                ("commission_min", a.commission_min),
            ] {
                if v < Decimal::ZERO {
                    p.push(format!("{}: must be >= 0, got {v}", k(name)));
                }
            }
            let l = &a.limits;
            for (name, v) in [
                ("limits.max_position_qty", l.max_position_qty),
                ("limits.max_position_notional", l.max_position_notional),
                ("limits.max_order_notional", l.max_order_notional),
                ("limits.max_gross_exposure", l.max_gross_exposure),
                ("limits.price_band_pct", l.price_band_pct),
                ("limits.daily_loss_limit", l.daily_loss_limit),
            ] {
                if let Some(v) = v.filter(|v| *v <= Decimal::ZERO) {
                    p.push(format!("{}: must be > 0, got {v}", k(name)));
                }
            }
            if let Some(v) = l
                .max_drawdown_pct
                .filter(|v| *v <= Decimal::ZERO || *v >= hundred)
            {
                p.push(format!(
                    "{}: must be in (0, 100), got {v}",
                    k("limits.max_drawdown_pct")
                ));
            }
            if l.max_open_orders == Some(0) {
                p.push(format!("{}: must be > 0", k("limits.max_open_orders")));
            }
            if l.max_orders_per_second == Some(0) {
                p.push(format!(
                    "{}: must be > 0",
                    k("limits.max_orders_per_second")
                ));
            }
            if let Some(h) = l.trading_hours.filter(|h| h.start == h.end) {
                p.push(format!(
                    "{}: start and end are both {} (empty window)",
                    k("limits.trading_hours"),
                    h.start
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(RouterError::Config { problems: p })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_empty() -> Result<(), Box<dyn std::error::Error>> {
        RouterConfig::default().validate()?;
        let parsed: RouterConfig = serde_json::from_str("{}")?;
        assert_eq!(parsed, RouterConfig::default());
        // Amounts may be numbers or strings.
        let c: RouterConfig = serde_json::from_str(
            r#"{"lot_size": 0.001, "accounts": {"demo": {"initial_capital": 50000,
                "limits": {"max_position_qty": "100", "trading_hours": {"start": "13:30:00", "end": "20:00:00"}}}}}"#,
        )?;
        c.validate()?;
        assert_eq!(c.lot_size, Decimal::new(1, 3));
        assert_eq!(
            c.accounts[&default_account()].limits.max_position_qty,
            Some(Decimal::ONE_HUNDRED)
        );
        Ok(())
    }

    #[test]
    fn all_problems_reported_at_once() -> Result<(), Box<dyn std::error::Error>> {
        let c: RouterConfig = serde_json::from_str(
            r#"{"default_account": "other", "lot_size": "0",
                "accounts": {"demo": {"initial_capital": "-1",
                  "limits": {"price_band_pct": "0", "trading_hours": {"start": "10:00:00", "end": "10:00:00"}}}}}"#,
        )?;
        let Err(RouterError::Config { problems }) = c.validate() else {
            return Err("expected a config error".into());
        };
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("accounts.demo.limits.price_band_pct"))
        );
        assert!(serde_json::from_str::<RouterConfig>(r#"{"nope": 1}"#).is_err());
        Ok(())
    }

    #[test]
    fn windows_wrap_midnight() {
        let t = |s: &str| NaiveTime::parse_from_str(s, "%H:%M:%S").unwrap_or_default();
        let day = TradingHours {
            start: t("13:30:00"),
            end: t("20:00:00"),
        };
        assert!(
            day.contains(t("13:30:00"))
                && !day.contains(t("20:00:00"))
                && !day.contains(t("23:10:00"))
        );
        let night = TradingHours {
            start: t("22:00:00"),
            end: t("02:00:00"),
        };
        assert!(
            night.contains(t("23:10:00"))
                && night.contains(t("01:00:00"))
                && !night.contains(t("12:00:00"))
        );
    }
}
