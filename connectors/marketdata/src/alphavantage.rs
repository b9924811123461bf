//! Alpha Vantage `TIME_SERIES_DAILY` (`GET /query?function=TIME_SERIES_DAILY&symbol=&
//! outputsize=&apikey=`).
//!
//! Bars come as a map from session date to `{"1. open": "...", ..., "5. volume": "..."}`
//! with numbers as strings. Alpha Vantage reports most problems inside HTTP 200 answers, so
//! the body is classified before it is parsed:
//! - `{"Note": ...}` (per-minute frequency exceeded) and `{"Information": ...}` asking to
//!   spread requests out: rate limited, retried with backoff;
//! - `{"Information": ...}` about the daily request limit: quota exhausted (fatal for the
//!   run: retrying today cannot succeed);
//! - `{"Information": ...}` about a premium endpoint or parameter (e.g. `outputsize=full` on
//!   a free key): refused, fatal, the message says to use `outputsize=compact`;
//! - `{"Error Message": ...}` naming the API key: unauthorized; any other: unknown symbol
//!   (its documented answer to one is "Invalid API call").

use crate::config::ProviderConfig;
use crate::error::snippet;
use crate::http::{HttpClient, HttpResponse};
use crate::{DailyBars, MarketDataProvider, ProviderError, RawRow, assemble, parse_decimal};
use async_trait::async_trait;
use chrono::{NaiveDate, Utc};
use serde_json::Value;
use std::fmt;
use tradestream_schemas::Symbol;

const NAME: &str = "alphavantage";
/// Public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://www.alphavantage.co";
/// Environment variable holding the API key.
pub const API_KEY_VAR: &str = "ALPHAVANTAGE_API_KEY";
/// Default client-side budget: the free tier's 5 requests per minute.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 5;

/// How much history to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    /// The latest 100 sessions (free tier).
    Compact,
    /// The full history (premium keys only, at the time of writing).
    Full,
}

impl OutputSize {
    fn as_str(self) -> &'static str {
        match self {
            Self::Compact => "compact",
            Self::Full => "full",
        }
    }
}

/// Alpha Vantage daily bars.
pub struct AlphaVantage {
    http: HttpClient,
    base_url: reqwest::Url,
    api_key: String,
    output_size: OutputSize,
}

impl fmt::Debug for AlphaVantage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("AlphaVantage")
            .field("base_url", &self.base_url.as_str())
            .field("output_size", &self.output_size)
            .finish_non_exhaustive()
    }
}

impl AlphaVantage {
    /// A client with the key in [`API_KEY_VAR`]; a clear error naming it when it is unset.
    pub fn from_env(cfg: &ProviderConfig) -> Result<Self, ProviderError> {
        let key = std::env::var(API_KEY_VAR).unwrap_or_default();
        if key.trim().is_empty() {
            return Err(ProviderError::MissingKey {
                provider: NAME,
                var: API_KEY_VAR,
            });
        }
        Self::new(cfg, key.trim())
    }

    /// A client with an explicit key, asking for the full history.
    pub fn new(cfg: &ProviderConfig, api_key: &str) -> Result<Self, ProviderError> {
        if api_key.trim().is_empty() {
            return Err(ProviderError::MissingKey {
                provider: NAME,
                var: API_KEY_VAR,
            });
        }
        let http = HttpClient::new(NAME, cfg, DEFAULT_REQUESTS_PER_MINUTE)?;
        let raw = cfg.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
        let base_url = reqwest::Url::parse(raw).map_err(|e| {
            ProviderError::Config(vec![format!("base_url: {raw:?} is not a URL: {e}")])
        })?;
        if base_url.cannot_be_a_base() {
            return Err(ProviderError::Config(vec![format!(
                "base_url: {raw} cannot take a path"
            )]));
        }
        Ok(Self {
            http,
            base_url,
            api_key: api_key.trim().to_string(),
            output_size: OutputSize::Full,
        })
    }

    /// Asks for `size` history instead of the full one (free keys need `Compact`).
    pub fn with_output_size(mut self, size: OutputSize) -> Self {
        self.output_size = size;
        self
    }

    fn url(&self, symbol: &Symbol) -> reqwest::Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty().push("query");
        }
        url.query_pairs_mut()
            .append_pair("function", "TIME_SERIES_DAILY")
            .append_pair("symbol", symbol.as_str())
            .append_pair("outputsize", self.output_size.as_str())
            .append_pair("datatype", "json")
            .append_pair("apikey", &self.api_key);
        url
    }
}

#[async_trait]
impl MarketDataProvider for AlphaVantage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn daily_bars(
        &self,
        symbol: &Symbol,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DailyBars, ProviderError> {
        let rows = self
            .http
            .get(self.url(symbol), |resp| inspect(symbol, resp))
            .await?;
        Ok(assemble(NAME, symbol, from, to, rows, Utc::now()))
    }
}

fn inspect(symbol: &Symbol, resp: HttpResponse) -> Result<Vec<RawRow>, ProviderError> {
    let body = &resp.body;
    let parse_err = |message: String| ProviderError::Parse {
        provider: NAME,
        message,
        body: snippet(body, 2048),
    };
    let v: Value = serde_json::from_str(body).map_err(|e| parse_err(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| parse_err("not a JSON object".into()))?;
    if let Some(e) = classify_message(symbol, obj) {
        return Err(e);
    }
    let series = obj
        .get("Time Series (Daily)")
        .and_then(Value::as_object)
        .ok_or_else(|| parse_err("no \"Time Series (Daily)\" object".into()))?;
    let mut rows = Vec::with_capacity(series.len());
    for (date, fields) in series {
        let raw = format!("{{{}:{fields}}}", Value::String(date.clone()));
        let Ok(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
            // A key that is not a date cannot be placed in the range; report it whole.
            return Err(parse_err(format!(
                "series key {date:?} is not a YYYY-MM-DD date"
            )));
        };
        let mut problems = Vec::new();
        let mut num = |key: &str| -> Option<rust_decimal::Decimal> {
            match fields.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() || s.trim() == "None" => None,
                Some(Value::String(s)) => {
                    let d = parse_decimal(s);
                    if d.is_none() {
                        problems.push(format!("{key:?} {s:?} is not a number"));
                    }
                    d
                }
                Some(Value::Number(n)) => parse_decimal(&n.to_string()),
                Some(other) => {
                    problems.push(format!("{key:?} {other} is not a number"));
                    None
                }
            }
        };
        let open = num("1. open");
        let high = num("2. high");
        let low = num("3. low");
        let close = num("4. close");
        let volume = num("5. volume");
        rows.push(RawRow {
            date,
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

/// Alpha Vantage's in-band errors and throttling notices.
fn classify_message(
    symbol: &Symbol,
    obj: &serde_json::Map<String, Value>,
) -> Option<ProviderError> {
    let text = |k: &str| {
        obj.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    };
    if let Some(message) = text("Error Message") {
        let lower = message.to_ascii_lowercase();
        return Some(if lower.contains("apikey") || lower.contains("api key") {
            ProviderError::Unauthorized {
                provider: NAME,
                message,
            }
        } else {
            ProviderError::InvalidSymbol {
                provider: NAME,
                symbol: symbol.to_string(),
                message,
            }
        });
    }
    if let Some(message) = text("Note") {
        return Some(ProviderError::RateLimited {
            provider: NAME,
            message,
            retry_after: None,
        });
    }
    if let Some(message) = text("Information") {
        let lower = message.to_ascii_lowercase();
        return Some(if lower.contains("per day") {
            ProviderError::QuotaExhausted {
                provider: NAME,
                message,
            }
        } else if lower.contains("premium") && !lower.contains("rate limit") {
            ProviderError::Refused {
                provider: NAME,
                status: 200,
                message: format!("{message} (with a free key, use outputsize=compact)"),
            }
        } else if lower.contains("spread")
            || lower.contains("per second")
            || lower.contains("per minute")
            || lower.contains("frequency")
            || lower.contains("rate limit")
        {
            ProviderError::RateLimited {
                provider: NAME,
                message,
                retry_after: None,
            }
        } else {
            ProviderError::Refused {
                provider: NAME,
                status: 200,
                message,
            }
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradestream_schemas::ErrorClass;

    fn sym() -> Symbol {
        Symbol::new("IBM").unwrap_or_else(|_| unreachable!())
    }

    fn resp(body: &str) -> HttpResponse {
        HttpResponse {
            status: reqwest::StatusCode::OK,
            body: body.into(),
        }
    }

    #[test]
    fn parses_the_daily_series() {
        let body = r#"{"Meta Data":{"2. Symbol":"IBM"},"Time Series (Daily)":{
            "2024-05-10":{"1. open":"167.1300","2. high":"168.0700","3. low":"166.3200","4. close":"167.1500","5. volume":"3393398"},
            "2024-05-09":{"1. open":"167.5000","2. high":"167.8000","3. low":"x","4. close":"166.2700","5. volume":"4266615"}}}"#;
        let rows = inspect(&sym(), resp(body)).expect("parses");
        assert_eq!(rows.len(), 2);
        let may10 = rows
            .iter()
            .find(|r| r.date.to_string() == "2024-05-10")
            .expect("row");
        assert_eq!(
            may10.close.map(|d| d.to_string()),
            Some("167.15".to_string())
        );
        let may9 = rows
            .iter()
            .find(|r| r.date.to_string() == "2024-05-09")
            .expect("row");
        assert!(
            may9.problem.as_deref().unwrap_or("").contains("3. low"),
            "{may9:?}"
        );
    }

    #[test]
    fn in_band_messages_are_classified() {
        let class = |body: &str| {
            inspect(&sym(), resp(body))
                .map(|_| ())
                .map_err(|e| (e.class(), e.to_string()))
        };
        let note = r#"{"Note":"Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls per day."}"#;
        assert!(matches!(class(note), Err((ErrorClass::Retryable, _))));
        let daily = r#"{"Information":"Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate limits."}"#;
        assert!(matches!(class(daily), Err((ErrorClass::Fatal, m)) if m.contains("quota")));
        let premium = r#"{"Information":"Thank you for using Alpha Vantage! The outputsize=full parameter value is a premium feature for the TIME_SERIES_DAILY endpoint."}"#;
        assert!(
            matches!(class(premium), Err((ErrorClass::Fatal, m)) if m.contains("outputsize=compact"))
        );
        let burst = r#"{"Information":"Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly (1 request per second)."}"#;
        assert!(matches!(class(burst), Err((ErrorClass::Retryable, _))));
        let bad_key = r#"{"Error Message":"the parameter apikey is invalid or missing. Please claim your free API key on (https://www.alphavantage.co/support/#api-key)."}"#;
        assert!(
            matches!(class(bad_key), Err((ErrorClass::Fatal, m)) if m.contains("API key refused"))
        );
        let bad_sym = r#"{"Error Message":"Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."}"#;
        assert!(
            matches!(class(bad_sym), Err((ErrorClass::Fatal, m)) if m.contains("unknown symbol IBM"))
        );
        assert!(matches!(class("{}"), Err((ErrorClass::DeadLetter, _))));
        assert!(matches!(class("oops"), Err((ErrorClass::DeadLetter, _))));
    }

    #[test]
    fn url_carries_the_parameters_and_debug_hides_the_key() -> Result<(), ProviderError> {
        let cfg = ProviderConfig {
            base_url: Some("http://127.0.0.1:9".into()),
            ..ProviderConfig::default()
        };
        let av = AlphaVantage::new(&cfg, "SECRET123")?.with_output_size(OutputSize::Compact);
        let url = av.url(&sym());
        assert_eq!(url.path(), "/query");
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for pair in [
            ("function", "TIME_SERIES_DAILY"),
            ("symbol", "IBM"),
            ("outputsize", "compact"),
            ("apikey", "SECRET123"),
        ] {
            assert!(q.contains(&(pair.0.into(), pair.1.into())), "{q:?}");
        }
        assert!(!format!("{av:?}").contains("SECRET123"));
        assert!(matches!(
            AlphaVantage::new(&cfg, " "),
            Err(ProviderError::MissingKey {
                var: API_KEY_VAR,
                ..
            })
        ));
        Ok(())
    }
}
