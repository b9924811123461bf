//! Yahoo Finance chart API (`GET /v8/finance/chart/{symbol}?period1=&period2=&interval=1d`).
//!
//! The answer holds parallel arrays: `timestamp[]` and `indicators.quote[0].open/high/low/
//! close/volume[]`, with `null` where Yahoo has no value (halted days, index volume gaps).
//! Timestamps are the session's opening instant; we map each to its exchange-local date
//! (using `meta.gmtoffset`) and stamp the bar at 00:00 UTC of that date, like every other
//! daily source. No API key is needed, but Yahoo throttles clients without a browser-like
//! `User-Agent` and answers unknown symbols with 404 and a `chart.error` body.

use crate::config::ProviderConfig;
use crate::error::snippet;
use crate::http::{HttpClient, HttpResponse};
use crate::{DailyBars, MarketDataProvider, ProviderError, RawRow, assemble, parse_decimal};
use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::Deserialize;
use tradestream_schemas::Symbol;

const NAME: &str = "yahoo";
/// Public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://query1.finance.yahoo.com";
/// Default client-side budget: Yahoo publishes no limit; one a second stays clear of its
/// throttling in practice.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 60;

/// Yahoo Finance daily bars.
#[derive(Debug)]
pub struct Yahoo {
    http: HttpClient,
    base_url: reqwest::Url,
}

impl Yahoo {
    /// A client with `cfg`'s endpoint, timeouts, retries and rate.
    pub fn new(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let http = HttpClient::new(NAME, cfg, DEFAULT_REQUESTS_PER_MINUTE)?;
        let raw = cfg.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base_url = reqwest::Url::parse(raw).map_err(|e| {
            ProviderError::Config(vec![format!("base_url: {raw:?} is not a URL: {e}")])
        })?;
        Ok(Self { http, base_url })
    }

    fn url(
        &self,
        symbol: &Symbol,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<reqwest::Url, ProviderError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                ProviderError::Config(vec![format!(
                    "base_url: {} cannot take a path",
                    self.base_url
                )])
            })?
            .pop_if_empty()
            .extend(["v8", "finance", "chart", symbol.as_str()]);
        // period2 is exclusive: the day after `to`, padded a day each side so exchanges west
        // or east of UTC keep their first and last sessions; `assemble` trims to the range.
        let start = crate::session_start(from.checked_sub_days(Days::new(1)).unwrap_or(from));
        let end = crate::session_start(to.checked_add_days(Days::new(2)).unwrap_or(to));
        url.query_pairs_mut()
            .append_pair("period1", &start.timestamp().to_string())
            .append_pair("period2", &end.timestamp().to_string())
            .append_pair("interval", "1d")
            .append_pair("events", "history")
            .append_pair("includePrePost", "false");
        Ok(url)
    }
}

#[async_trait]
impl MarketDataProvider for Yahoo {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn daily_bars(
        &self,
        symbol: &Symbol,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DailyBars, ProviderError> {
        let url = self.url(symbol, from, to)?;
        let rows = self
            .http
            .get(url, |resp| inspect(symbol, resp))
            .await
            .map_err(|e| refine(symbol, e))?;
        Ok(assemble(NAME, symbol, from, to, rows, Utc::now()))
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    chart: Chart,
}

#[derive(Debug, Deserialize)]
struct Chart {
    result: Option<Vec<ChartResult>>,
    error: Option<YahooError>,
}

#[derive(Debug, Deserialize)]
struct YahooError {
    code: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChartResult {
    #[serde(default)]
    meta: Meta,
    #[serde(default)]
    timestamp: Vec<i64>,
    indicators: Option<Indicators>,
}

#[derive(Debug, Default, Deserialize)]
struct Meta {
    #[serde(default)]
    gmtoffset: i64,
}

#[derive(Debug, Deserialize)]
struct Indicators {
    #[serde(default)]
    quote: Vec<Quote>,
}

#[derive(Debug, Default, Deserialize)]
struct Quote {
    #[serde(default)]
    open: Vec<Option<serde_json::Number>>,
    #[serde(default)]
    high: Vec<Option<serde_json::Number>>,
    #[serde(default)]
    low: Vec<Option<serde_json::Number>>,
    #[serde(default)]
    close: Vec<Option<serde_json::Number>>,
    #[serde(default)]
    volume: Vec<Option<serde_json::Number>>,
}

/// Yahoo's own error envelope, sent with 4xx statuses (and sometimes 200).
fn chart_error(symbol: &Symbol, status: u16, body: &str) -> Option<ProviderError> {
    let env: Envelope = serde_json::from_str(body).ok()?;
    let e = env.chart.error?;
    let code = e.code.unwrap_or_default();
    let message = format!("{code}: {}", e.description.unwrap_or_default());
    Some(match code.as_str() {
        "Not Found" => ProviderError::InvalidSymbol {
            provider: NAME,
            symbol: symbol.to_string(),
            message,
        },
        "Unauthorized" | "Forbidden" => ProviderError::Unauthorized {
            provider: NAME,
            message,
        },
        "Too Many Requests" => ProviderError::RateLimited {
            provider: NAME,
            message,
            retry_after: None,
        },
        _ => ProviderError::Refused {
            provider: NAME,
            status,
            message,
        },
    })
}

/// Parses a 2xx answer into raw rows (or Yahoo's error, if the body carries one).
fn inspect(symbol: &Symbol, resp: HttpResponse) -> Result<Vec<RawRow>, ProviderError> {
    if let Some(e) = chart_error(symbol, resp.status.as_u16(), &resp.body) {
        return Err(e);
    }
    parse_chart(&resp.body)
}

/// Maps a non-2xx Yahoo error body to a precise error (404 → unknown symbol).
pub(crate) fn refine(symbol: &Symbol, err: ProviderError) -> ProviderError {
    match &err {
        ProviderError::Refused {
            status, message, ..
        } => match chart_error(symbol, *status, message) {
            Some(ProviderError::Refused { .. }) | None if *status == 404 => {
                ProviderError::InvalidSymbol {
                    provider: NAME,
                    symbol: symbol.to_string(),
                    message: message.clone(),
                }
            }
            Some(refined) => refined,
            None => err,
        },
        _ => err,
    }
}

fn parse_chart(body: &str) -> Result<Vec<RawRow>, ProviderError> {
    let parse_err = |message: String| ProviderError::Parse {
        provider: NAME,
        message,
        body: snippet(body, 2048),
    };
    let env: Envelope =
        serde_json::from_str(body).map_err(|e| parse_err(format!("not a chart response: {e}")))?;
    let result = env
        .chart
        .result
        .and_then(|r| r.into_iter().next())
        .ok_or_else(|| parse_err("chart.result is empty".into()))?;
    if result.timestamp.is_empty() {
        return Ok(Vec::new());
    }
    let quote = result
        .indicators
        .and_then(|i| i.quote.into_iter().next())
        .ok_or_else(|| parse_err("indicators.quote[0] missing".into()))?;
    let n = result.timestamp.len();
    for (name, len) in [
        ("open", quote.open.len()),
        ("high", quote.high.len()),
        ("low", quote.low.len()),
        ("close", quote.close.len()),
        ("volume", quote.volume.len()),
    ] {
        if len != n {
            return Err(parse_err(format!(
                "quote.{name} has {len} values for {n} timestamps"
            )));
        }
    }
    let mut rows = Vec::with_capacity(n);
    for (i, ts) in result.timestamp.iter().enumerate() {
        let local = ts
            .checked_add(result.meta.gmtoffset)
            .and_then(|t| DateTime::from_timestamp(t, 0));
        let Some(local) = local else {
            return Err(parse_err(format!("timestamp[{i}] = {ts} is out of range")));
        };
        let mut problems = Vec::new();
        let mut num = |name: &str, v: &Option<serde_json::Number>| match v {
            None => None,
            Some(n) => {
                let d = parse_decimal(&n.to_string());
                if d.is_none() {
                    problems.push(format!("{name} {n} is not a decimal"));
                }
                d
            }
        };
        let open = num("open", &quote.open[i]);
        let high = num("high", &quote.high[i]);
        let low = num("low", &quote.low[i]);
        let close = num("close", &quote.close[i]);
        let volume = num("volume", &quote.volume[i]);
        let show = |v: &Option<serde_json::Number>| {
            v.as_ref()
                .map_or_else(|| "null".to_string(), |n| n.to_string())
        };
        let raw = format!(
            r#"{{"timestamp":{ts},"open":{},"high":{},"low":{},"close":{},"volume":{}}}"#,
            show(&quote.open[i]),
            show(&quote.high[i]),
            show(&quote.low[i]),
            show(&quote.close[i]),
            show(&quote.volume[i]),
        );
        rows.push(RawRow {
            date: local.date_naive(),
            open,
            high,
            low,
            close,
            volume,
            raw,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    const BODY: &str = r#"{"chart":{"result":[{"meta":{"currency":"USD","symbol":"AAPL","gmtoffset":-18000,"timezone":"EST"},
        "timestamp":[1704205800,1704292200],
        "indicators":{"quote":[{"open":[187.14999389648438,null],"high":[188.44000244140625,null],
        "low":[183.88499450683594,null],"close":[185.63999938964844,null],"volume":[82488700,null]}],
        "adjclose":[{"adjclose":[184.9,null]}]}}],"error":null}}"#;

    #[test]
    fn parses_rows_and_maps_session_dates() {
        let rows = parse_chart(BODY).expect("parses");
        assert_eq!(rows.len(), 2);
        // 1704205800 = 2024-01-02 14:30 UTC = 09:30 New York.
        assert_eq!(rows[0].date.to_string(), "2024-01-02");
        assert_eq!(rows[0].close, Decimal::from_str("185.63999939").ok());
        assert_eq!(rows[0].volume, Some(Decimal::from(82_488_700)));
        assert!(rows[1].open.is_none());
        assert!(rows[1].raw.contains("\"open\":null"), "{}", rows[1].raw);
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        let e = parse_chart("<html>").expect_err("not json");
        assert!(matches!(e, ProviderError::Parse { .. }), "{e}");
        let e = parse_chart(r#"{"chart":{"result":[{"timestamp":[1],"indicators":{"quote":[{"open":[]}]}}],"error":null}}"#)
            .expect_err("ragged");
        assert!(e.to_string().contains("quote.open has 0 values"), "{e}");
        let ok = parse_chart(
            r#"{"chart":{"result":[{"meta":{},"indicators":{"quote":[{}]}}],"error":null}}"#,
        );
        assert!(
            ok.map(|r| r.is_empty()).unwrap_or(false),
            "no timestamps: no bars"
        );
    }

    #[test]
    fn error_envelopes_are_classified() {
        let sym = Symbol::new("NOPE").expect("sym");
        let body = r#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#;
        let e = refine(
            &sym,
            ProviderError::Refused {
                provider: NAME,
                status: 404,
                message: body.into(),
            },
        );
        assert!(matches!(e, ProviderError::InvalidSymbol { .. }), "{e}");
        let e = refine(
            &sym,
            ProviderError::Refused {
                provider: NAME,
                status: 404,
                message: "gone".into(),
            },
        );
        assert!(matches!(e, ProviderError::InvalidSymbol { .. }), "{e}");
        let e = refine(
            &sym,
            ProviderError::Refused {
                provider: NAME,
                status: 400,
                message: "bad".into(),
            },
        );
        assert!(
            matches!(e, ProviderError::Refused { status: 400, .. }),
            "{e}"
        );
    }

    #[test]
    fn url_encodes_the_symbol_and_pads_the_range() -> Result<(), ProviderError> {
        let cfg = ProviderConfig {
            base_url: Some("http://127.0.0.1:9/prefix/".into()),
            ..ProviderConfig::default()
        };
        let y = Yahoo::new(&cfg)?;
        let from =
            NaiveDate::from_ymd_opt(2024, 1, 2).ok_or_else(|| ProviderError::Config(vec![]))?;
        let sym = Symbol::new("^IXIC").map_err(|e| ProviderError::Config(vec![e.to_string()]))?;
        let url = y.url(&sym, from, from)?;
        // `^` is legal in a path (WHATWG URL); characters that are not, like `/`, are escaped.
        assert_eq!(url.path(), "/prefix/v8/finance/chart/^IXIC");
        let slash = Symbol::new("BRK/B").map_err(|e| ProviderError::Config(vec![e.to_string()]))?;
        assert_eq!(
            y.url(&slash, from, from)?.path(),
            "/prefix/v8/finance/chart/BRK%2FB"
        );
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(
            q.contains(&("period1".into(), "1704067200".into())),
            "{q:?}"
        );
        assert!(
            q.contains(&("period2".into(), "1704326400".into())),
            "{q:?}"
        );
        assert!(q.contains(&("interval".into(), "1d".into())));
        Ok(())
    }
}
