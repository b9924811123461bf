//! HTTP market-data providers: daily OHLCV bars from Yahoo's chart API and Alpha Vantage,
//! turned into validated `market_data` records.
//!
//! Every provider goes through one HTTP loop (timeouts, retries with exponential backoff and
//! jitter on 429/5xx/timeouts honouring `Retry-After`, and a client-side token bucket), and
//! every provider hands back both the good bars and the rejected ones with reasons, so the
//! ingest runner can publish the first and dead-letter the second: nothing is dropped
//! silently. Record ids are `<provider>:<symbol>:<event_time micros>`, so fetching the same
//! range again reproduces the same ids and downstream deduplication works.

pub mod alphavantage;
pub mod config;
pub mod error;
mod http;
pub mod rate_limit;
pub mod yahoo;

pub use alphavantage::AlphaVantage;
pub use config::ProviderConfig;
pub use error::ProviderError;
pub use rate_limit::RateLimiter;
pub use yahoo::Yahoo;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use tradestream_schemas::{MarketData, MarketDataKind, Record, Symbol};

/// A source of historical daily bars over HTTP.
#[async_trait]
pub trait MarketDataProvider: Send + Sync + fmt::Debug {
    /// Stable provider name: the `source` of its records and the prefix of their ids.
    fn name(&self) -> &'static str;

    /// Daily bars of `symbol` for the session dates `from..=to`, oldest first, plus the
    /// rows the provider sent that could not become valid records.
    async fn daily_bars(
        &self,
        symbol: &Symbol,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DailyBars, ProviderError>;
}

/// What one request produced: valid bars (ascending event time, one per date) and rejects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DailyBars {
    /// Valid records, each passing `MarketData::validate()`.
    pub bars: Vec<MarketData>,
    /// Rows that could not become valid records, with the reason.
    pub rejects: Vec<RejectedBar>,
}

/// A provider row that was not turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {symbol} {}: {reason}", .date.map_or_else(|| "?".to_string(), |d| d.to_string()))]
pub struct RejectedBar {
    /// Provider name.
    pub provider: &'static str,
    /// Symbol requested.
    pub symbol: Symbol,
    /// Session date of the row, when it could be read.
    pub date: Option<NaiveDate>,
    /// Why it was rejected (null field, unparseable number, failed validation, duplicate).
    pub reason: String,
    /// The row as the provider sent it (JSON), for the dead-letter record.
    pub raw: String,
}

/// The providers this crate implements, by name (`yahoo`, `alphavantage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Yahoo Finance chart API; no key.
    Yahoo,
    /// Alpha Vantage `TIME_SERIES_DAILY`; key from `ALPHAVANTAGE_API_KEY`.
    AlphaVantage,
}

impl FromStr for ProviderKind {
    type Err = ProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "yahoo" => Ok(Self::Yahoo),
            "alphavantage" => Ok(Self::AlphaVantage),
            _ => Err(ProviderError::Config(vec![format!(
                "provider: unknown provider {s:?}; expected one of: yahoo, alphavantage"
            )])),
        }
    }
}

impl ProviderKind {
    /// Builds the provider from `cfg`, reading API keys from the environment.
    pub fn build(self, cfg: &ProviderConfig) -> Result<Box<dyn MarketDataProvider>, ProviderError> {
        Ok(match self {
            Self::Yahoo => Box::new(Yahoo::new(cfg)?),
            Self::AlphaVantage => Box::new(AlphaVantage::from_env(cfg)?),
        })
    }
}

/// One provider row before validation: the raw OHLCV values, any of them possibly missing.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub(crate) date: NaiveDate,
    pub(crate) open: Option<Decimal>,
    pub(crate) high: Option<Decimal>,
    pub(crate) low: Option<Decimal>,
    pub(crate) close: Option<Decimal>,
    pub(crate) volume: Option<Decimal>,
    /// The row as sent, for rejects.
    pub(crate) raw: String,
    /// A problem found while reading the row (e.g. an unparseable number).
    pub(crate) problem: Option<String>,
}

/// Session date `d` as an event time: 00:00 UTC, the same convention as the CSV replay, so
/// daily bars line up whatever their source.
pub(crate) fn session_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// A decimal from a provider's number text, at our 8-decimal scale.
pub(crate) fn parse_decimal(raw: &str) -> Option<Decimal> {
    let raw = raw.trim();
    Decimal::from_str(raw)
        .or_else(|_| Decimal::from_scientific(raw))
        .ok()
        .map(|d| d.round_dp(8).normalize())
}

/// Turns raw rows into records and rejects: rows outside `from..=to` are not part of the
/// answer (providers pad ranges); in range, a row with a missing or bad value, a failed
/// validation or a repeated date becomes a reject.
pub(crate) fn assemble(
    provider: &'static str,
    symbol: &Symbol,
    from: NaiveDate,
    to: NaiveDate,
    rows: Vec<RawRow>,
    ingest_time: DateTime<Utc>,
) -> DailyBars {
    let mut by_date: BTreeMap<NaiveDate, MarketData> = BTreeMap::new();
    let mut rejects = Vec::new();
    for row in rows {
        if row.date < from || row.date > to {
            continue;
        }
        let reject = |reason: String| RejectedBar {
            provider,
            symbol: symbol.clone(),
            date: Some(row.date),
            reason,
            raw: row.raw.clone(),
        };
        if let Some(problem) = &row.problem {
            rejects.push(reject(problem.clone()));
            continue;
        }
        let missing: Vec<&str> = [
            ("open", row.open.is_none()),
            ("high", row.high.is_none()),
            ("low", row.low.is_none()),
            ("close", row.close.is_none()),
            ("volume", row.volume.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(n, _)| *n)
        .collect();
        let (Some(open), Some(high), Some(low), Some(close), Some(volume)) =
            (row.open, row.high, row.low, row.close, row.volume)
        else {
            rejects.push(reject(format!("missing (null) {}", missing.join(", "))));
            continue;
        };
        let event_time = session_start(row.date);
        let md = MarketData {
            record_id: format!("{provider}:{symbol}:{}", event_time.timestamp_micros()),
            symbol: symbol.clone(),
            event_time,
            kind: MarketDataKind::Bar,
            interval: Some("1d".into()),
            open,
            high,
            low,
            close,
            volume,
            source: provider.to_string(),
            ingest_time,
            step: 0,
            step_bars: 0,
        };
        if let Err(e) = md.validate() {
            rejects.push(reject(e.to_string()));
            continue;
        }
        if by_date.contains_key(&row.date) {
            rejects.push(reject(format!(
                "duplicate bar for {}; the first one was kept",
                row.date
            )));
            continue;
        }
        by_date.insert(row.date, md);
    }
    DailyBars {
        bars: by_date.into_values().collect(),
        rejects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date literal")
    }

    fn row(date: &str, o: &str, h: &str, l: &str, c: &str, v: &str) -> RawRow {
        RawRow {
            date: d(date),
            open: parse_decimal(o),
            high: parse_decimal(h),
            low: parse_decimal(l),
            close: parse_decimal(c),
            volume: parse_decimal(v),
            raw: format!("{date},{o},{h},{l},{c},{v}"),
            problem: None,
        }
    }

    #[test]
    fn assemble_sorts_filters_and_rejects_with_reasons() {
        let sym = Symbol::new("AAPL").expect("sym");
        let rows = vec![
            row("2024-01-03", "2", "3", "1", "2", "10"),
            row("2024-01-02", "1", "2", "0.5", "1.5", "10"),
            row("2024-01-04", "", "3", "1", "2", "10"),
            row("2024-01-05", "2", "1", "3", "2", "10"),
            row("2024-01-03", "2", "3", "1", "2", "11"),
            row("2023-12-29", "2", "3", "1", "2", "10"),
        ];
        let now = session_start(d("2024-02-01"));
        let out = assemble("p", &sym, d("2024-01-01"), d("2024-01-31"), rows, now);
        let dates: Vec<_> = out.bars.iter().map(|m| m.event_time.date_naive()).collect();
        assert_eq!(dates, vec![d("2024-01-02"), d("2024-01-03")]);
        assert_eq!(out.bars[0].record_id, "p:AAPL:1704153600000000");
        assert_eq!(out.bars[0].source, "p");
        assert_eq!(out.rejects.len(), 3, "{:?}", out.rejects);
        assert!(
            out.rejects[0].reason.contains("missing (null) open"),
            "{:?}",
            out.rejects
        );
        assert!(out.rejects[1].reason.contains("high"), "{:?}", out.rejects);
        assert!(
            out.rejects[2].reason.contains("duplicate"),
            "{:?}",
            out.rejects
        );
        assert_eq!(
            out.rejects[0].to_string(),
            "p AAPL 2024-01-04: missing (null) open"
        );
    }

    #[test]
    fn decimals_are_rounded_to_eight_places() {
        assert_eq!(
            parse_decimal("185.63999938964844"),
            Decimal::from_str("185.63999939").ok()
        );
        assert_eq!(parse_decimal("1e3"), Some(Decimal::from(1000)));
        assert_eq!(parse_decimal("x"), None);
    }

    fn arb_row() -> impl proptest::strategy::Strategy<Value = RawRow> {
        use proptest::prelude::*;
        let price = prop::option::weighted(0.95, (-5i64..100_000).prop_map(|c| Decimal::new(c, 2)));
        (
            0u64..40,
            price.clone(),
            price.clone(),
            price.clone(),
            price,
            prop::option::weighted(0.95, -5i64..1_000_000),
        )
            .prop_map(|(day, open, high, low, close, volume)| RawRow {
                date: d("2024-01-01") + chrono::Days::new(day),
                open,
                high,
                low,
                close,
                volume: volume.map(Decimal::from),
                raw: String::new(),
                problem: None,
            })
    }

    proptest::proptest! {
        /// Nothing is dropped silently: every in-range row is a bar or a reject, bars are
        /// valid and strictly ascending, and ids follow the contract.
        #[test]
        fn every_in_range_row_is_accounted_for(rows in proptest::collection::vec(arb_row(), 0..60)) {
            let sym = Symbol::new("X").map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let (from, to) = (d("2024-01-05"), d("2024-01-30"));
            let in_range = rows.iter().filter(|r| r.date >= from && r.date <= to).count();
            let out = assemble("p", &sym, from, to, rows, session_start(d("2024-03-01")));
            proptest::prop_assert_eq!(out.bars.len() + out.rejects.len(), in_range);
            for w in out.bars.windows(2) {
                proptest::prop_assert!(w[0].event_time < w[1].event_time);
            }
            for b in &out.bars {
                proptest::prop_assert!(b.validate().is_ok());
                proptest::prop_assert_eq!(&b.record_id, &format!("p:X:{}", b.event_time.timestamp_micros()));
            }
        }
    }

    #[test]
    fn provider_kinds() {
        assert_eq!(
            "Yahoo".parse::<ProviderKind>().ok(),
            Some(ProviderKind::Yahoo)
        );
        assert_eq!(
            "alpha_vantage".parse::<ProviderKind>().ok(),
            Some(ProviderKind::AlphaVantage)
        );
        assert!("bloomberg".parse::<ProviderKind>().is_err());
    }
}
