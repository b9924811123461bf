//! Venue configuration: slippage, the commission schedule (the router's formula, see
//! [`tradestream_router::Commission`]), optional volume participation for partial fills, the
//! session of DAY orders, margin accounts, and how long finished orders are remembered.

use crate::error::ExchangeError;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tradestream_router::Commission;
use tradestream_schemas::AccountId;

fn default_slippage_bps() -> Decimal {
    Decimal::ONE
}
fn default_commission_bps() -> Decimal {
    Decimal::ONE
}
fn default_commission_min() -> Decimal {
    Decimal::ONE
}

/// Which UTC day a DAY order lives for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaySession {
    /// The day of its first eligible bar: an order placed after its day's last bar (a
    /// signal on a daily close) works in the next session, as a broker queues it.
    FirstBar,
    /// Its creation day: it expires at the first bar of a later day, even if that bar is
    /// the first it could have traded on (with daily bars such orders never trade).
    Created,
}

fn default_day_session() -> DaySession {
    DaySession::FirstBar
}
fn default_dedup_orders() -> u32 {
    50_000
}
fn default_dedup_horizon_hours() -> u32 {
    24 * 7
}

/// Paper-venue settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Slippage of market and triggered stop fills, in basis points (buys pay up, sells
    /// receive less).
    #[serde(
        default = "default_slippage_bps",
        deserialize_with = "tradestream_router::amount::de"
    )]
    pub slippage_bps: Decimal,
    /// Commission per unit.
    #[serde(default, deserialize_with = "tradestream_router::amount::de")]
    pub commission_per_share: Decimal,
    /// Commission in basis points of notional.
    #[serde(
        default = "default_commission_bps",
        deserialize_with = "tradestream_router::amount::de"
    )]
    pub commission_bps: Decimal,
    /// Minimum commission per fill.
    #[serde(
        default = "default_commission_min",
        deserialize_with = "tradestream_router::amount::de"
    )]
    pub commission_min: Decimal,
    /// At most this percent of a bar's volume fills per order and bar (the rest waits for
    /// later bars: PARTIALLY_FILLED); absent: full quantity at once.
    #[serde(default, deserialize_with = "tradestream_router::amount::de_opt")]
    pub max_participation_pct: Option<Decimal>,
    /// Session of DAY orders: `first_bar` or `created`.
    #[serde(default = "default_day_session")]
    pub day_session: DaySession,
    /// Margin accounts, which may sell more than they hold. Every other account is a cash
    /// account: the venue executes its sells only up to the position the books say it holds
    /// and cancels the rest with `VENUE_NO_POSITION`.
    /// `tradestream up`/`demo` add the router's `allow_short` accounts.
    #[serde(default)]
    pub short_accounts: BTreeSet<AccountId>,
    /// Finished orders the venue always remembers (the newest ones), to recognise an
    /// accepted order that arrives again (the router republishing after a crash) instead of
    /// filling it twice. An older finished order is forgotten once it also ended
    /// `dedup_horizon_hours` of event time before the newest; an accepted order the venue
    /// does not know, created at or before the last one it forgot, is then dropped as a
    /// redelivery. Bounds the venue's memory and snapshot.
    #[serde(default = "default_dedup_orders")]
    pub dedup_orders: u32,
    /// Event-time hours a finished order is remembered at least (see `dedup_orders`).
    #[serde(default = "default_dedup_horizon_hours")]
    pub dedup_horizon_hours: u32,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            slippage_bps: default_slippage_bps(),
            commission_per_share: Decimal::ZERO,
            commission_bps: default_commission_bps(),
            commission_min: default_commission_min(),
            max_participation_pct: None,
            day_session: default_day_session(),
            short_accounts: BTreeSet::new(),
            dedup_orders: default_dedup_orders(),
            dedup_horizon_hours: default_dedup_horizon_hours(),
        }
    }
}

impl ExchangeConfig {
    /// The venue's commission schedule.
    pub fn commission(&self) -> Commission {
        Commission {
            per_share: self.commission_per_share,
            bps: self.commission_bps,
            min: self.commission_min,
        }
    }

    /// Checks every setting; all problems are reported together.
    pub fn validate(&self) -> Result<(), ExchangeError> {
        let mut p = Vec::new();
        if self.slippage_bps < Decimal::ZERO || self.slippage_bps >= Decimal::from(10_000) {
            p.push(format!(
                "slippage_bps: must be in [0, 10000), got {}",
                self.slippage_bps
            ));
        }
        for (name, v) in [
            ("commission_per_share", self.commission_per_share),
            ("commission_bps", self.commission_bps),
            ("commission_min", self.commission_min),
        ] {
            if v < Decimal::ZERO {
                p.push(format!("{name}: must be >= 0, got {v}"));
            }
        }
        if let Some(v) = self
            .max_participation_pct
            .filter(|v| *v <= Decimal::ZERO || *v > Decimal::ONE_HUNDRED)
        {
            p.push(format!(
                "max_participation_pct: must be in (0, 100], got {v}"
            ));
        }
        if self.dedup_orders == 0 {
            p.push("dedup_orders: must be > 0".to_string());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ExchangeError::Config { problems: p })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() -> Result<(), Box<dyn std::error::Error>> {
        let c: ExchangeConfig = serde_json::from_str("{}")?;
        assert_eq!(c, ExchangeConfig::default());
        c.validate()?;
        let bad: ExchangeConfig = serde_json::from_str(
            r#"{"slippage_bps": "-1", "commission_min": "-2", "dedup_orders": 0}"#,
        )?;
        let Err(ExchangeError::Config { problems }) = bad.validate() else {
            return Err("expected errors".into());
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("dedup_orders")));
        assert!(serde_json::from_str::<ExchangeConfig>(r#"{"typo": 1}"#).is_err());
        Ok(())
    }
}
