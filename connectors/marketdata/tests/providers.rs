//! Provider clients against a scripted local HTTP server that replays recorded responses
//! from `tests/fixtures/`: parsing, rejects, retries (429 + Retry-After, 5xx, timeouts),
//! fatal errors, Alpha Vantage's in-band throttling, and client-side rate limiting measured
//! at the server.

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tradestream_marketdata::alphavantage::{API_KEY_VAR, OutputSize};
use tradestream_marketdata::{
    AlphaVantage, MarketDataProvider, ProviderConfig, ProviderError, Yahoo,
};
use tradestream_schemas::{ErrorClass, Record, Symbol};

/// One scripted answer.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn ok(name: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![],
        body: fixture(name),
        delay: Duration::ZERO,
    }
}

fn status(code: u16, body: &str) -> Reply {
    Reply {
        status: code,
        headers: vec![],
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    /// (arrival, path?query) of every request.
    seen: Mutex<Vec<(Instant, String)>>,
}

struct Server {
    base_url: String,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn requests(&self) -> Vec<(Instant, String)> {
        self.script.seen.lock().await.clone()
    }
}

async fn answer(State(script): State<Arc<Script>>, uri: Uri) -> Response {
    script
        .seen
        .lock()
        .await
        .push((Instant::now(), uri.to_string()));
    let next = script.replies.lock().await.pop_front();
    let Some(reply) = next else {
        return (StatusCode::IM_A_TEAPOT, "script exhausted").into_response();
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in &reply.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(*k, v);
        }
    }
    let code = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, headers, reply.body).into_response()
}

async fn serve(replies: Vec<Reply>) -> Result<Server> {
    let script = Arc::new(Script {
        replies: Mutex::new(replies.into()),
        seen: Mutex::default(),
    });
    let app = Router::new()
        .fallback(answer)
        .with_state(Arc::clone(&script));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        base_url: format!("http://{addr}"),
        script,
        task,
    })
}

/// Fast settings: short backoff, no client-side pacing to speak of.
fn cfg(server: &Server) -> ProviderConfig {
    ProviderConfig {
        base_url: Some(server.base_url.clone()),
        timeout_ms: 2_000,
        max_attempts: 4,
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        max_retry_after_secs: 5,
        requests_per_minute: Some(60_000),
        burst: 10,
        ..ProviderConfig::default()
    }
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn aapl() -> Symbol {
    Symbol::canonical("aapl").unwrap_or_else(|e| panic!("{e}"))
}

fn ibm() -> Symbol {
    Symbol::canonical("IBM").unwrap_or_else(|e| panic!("{e}"))
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test]
async fn yahoo_normal_response_becomes_valid_bars() -> Result<()> {
    let server = serve(vec![ok("yahoo_chart_aapl_ok.json")]).await?;
    let yahoo = Yahoo::new(&cfg(&server))?;
    assert_eq!(yahoo.name(), "yahoo");
    let out = yahoo
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await?;
    ensure!(out.rejects.is_empty(), "{:?}", out.rejects);
    assert_eq!(out.bars.len(), 5);
    let first = &out.bars[0];
    assert_eq!(first.symbol.as_str(), "AAPL");
    assert_eq!(first.event_time.to_rfc3339(), "2024-01-02T00:00:00+00:00");
    assert_eq!(
        first.record_id,
        format!("yahoo:AAPL:{}", first.event_time.timestamp_micros())
    );
    assert_eq!(first.source, "yahoo");
    assert_eq!(first.interval.as_deref(), Some("1d"));
    assert_eq!(first.open, dec("187.14999390"));
    assert_eq!(first.close, dec("185.63999939"));
    assert_eq!(first.volume, dec("82488700"));
    let dates: Vec<String> = out
        .bars
        .iter()
        .map(|b| b.event_time.date_naive().to_string())
        .collect();
    assert_eq!(
        dates,
        [
            "2024-01-02",
            "2024-01-03",
            "2024-01-04",
            "2024-01-05",
            "2024-01-08"
        ]
    );
    for b in &out.bars {
        b.validate()?;
    }
    let reqs = server.requests().await;
    assert_eq!(reqs.len(), 1);
    assert!(
        reqs[0].1.starts_with("/v8/finance/chart/AAPL?period1="),
        "{}",
        reqs[0].1
    );
    assert!(reqs[0].1.contains("interval=1d"), "{}", reqs[0].1);

    // A narrower range trims the answer; the same ids come back (deterministic).
    let server = serve(vec![ok("yahoo_chart_aapl_ok.json")]).await?;
    let again = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-03"), date("2024-01-04"))
        .await?;
    let ids: Vec<&str> = again.bars.iter().map(|b| b.record_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            out.bars[1].record_id.as_str(),
            out.bars[2].record_id.as_str()
        ]
    );
    Ok(())
}

#[tokio::test]
async fn yahoo_null_and_inconsistent_rows_are_rejects_not_drops() -> Result<()> {
    let server = serve(vec![ok("yahoo_chart_aapl_nulls.json")]).await?;
    let out = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await?;
    assert_eq!(out.bars.len(), 3);
    assert_eq!(out.rejects.len(), 2, "{:?}", out.rejects);
    let null_row = &out.rejects[0];
    assert_eq!(null_row.date, Some(date("2024-01-04")));
    assert_eq!(
        null_row.reason,
        "missing (null) open, high, low, close, volume"
    );
    assert!(null_row.raw.contains("\"open\":null"), "{}", null_row.raw);
    assert_eq!(null_row.provider, "yahoo");
    let bad = &out.rejects[1];
    assert_eq!(bad.date, Some(date("2024-01-05")));
    assert!(bad.reason.contains("high"), "{}", bad.reason);
    Ok(())
}

#[tokio::test]
async fn http_429_with_retry_after_is_retried_after_the_wait() -> Result<()> {
    let mut throttled = status(429, r#"{"finance":{"error":{"code":"Too Many Requests"}}}"#);
    throttled.headers.push(("retry-after", "1".into()));
    let server = serve(vec![throttled, ok("yahoo_chart_aapl_ok.json")]).await?;
    let started = Instant::now();
    let out = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await?;
    assert_eq!(out.bars.len(), 5);
    let reqs = server.requests().await;
    assert_eq!(reqs.len(), 2, "one 429, one retry");
    let gap = reqs[1].0 - reqs[0].0;
    // The configured backoff is at most 100 ms: a gap of a second is the Retry-After.
    assert!(
        gap >= Duration::from_millis(950),
        "retry came after {gap:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test]
async fn retry_after_longer_than_allowed_fails_as_rate_limited() -> Result<()> {
    let mut throttled = status(429, "slow down");
    throttled.headers.push(("retry-after", "3600".into()));
    let server = serve(vec![throttled]).await?;
    let err = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(err, ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3600)),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(server.requests().await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn server_errors_twice_then_success() -> Result<()> {
    let server = serve(vec![
        status(500, "boom"),
        status(503, "busy"),
        ok("yahoo_chart_aapl_ok.json"),
    ])
    .await?;
    let out = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await?;
    assert_eq!(out.bars.len(), 5);
    let reqs = server.requests().await;
    assert_eq!(reqs.len(), 3);
    // Backoff with jitter: at least half the 20 ms then 40 ms steps.
    assert!(reqs[1].0 - reqs[0].0 >= Duration::from_millis(10));
    assert!(reqs[2].0 - reqs[1].0 >= Duration::from_millis(20));
    Ok(())
}

#[tokio::test]
async fn server_errors_until_attempts_run_out() -> Result<()> {
    let server = serve(vec![status(502, "bad gateway"); 4]).await?;
    let err = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(err, ProviderError::Server { status: 502, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(server.requests().await.len(), 4, "max_attempts = 4");
    Ok(())
}

#[tokio::test]
async fn timeouts_are_retried() -> Result<()> {
    let mut slow = ok("yahoo_chart_aapl_ok.json");
    slow.delay = Duration::from_millis(800);
    let server = serve(vec![slow, ok("yahoo_chart_aapl_ok.json")]).await?;
    let config = ProviderConfig {
        timeout_ms: 200,
        ..cfg(&server)
    };
    let out = Yahoo::new(&config)?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await?;
    assert_eq!(out.bars.len(), 5);
    assert_eq!(server.requests().await.len(), 2);
    Ok(())
}

#[tokio::test]
async fn unauthorized_is_fatal_and_not_retried() -> Result<()> {
    let server = serve(vec![status(401, &fixture("yahoo_unauthorized.json")); 4]).await?;
    let err = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("Invalid Crumb"), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert_eq!(server.requests().await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn unknown_symbol_is_fatal() -> Result<()> {
    let server = serve(vec![status(404, &fixture("yahoo_chart_not_found.json"))]).await?;
    let nope = Symbol::new("NOPE")?;
    let err = Yahoo::new(&cfg(&server))?
        .daily_bars(&nope, date("2024-01-01"), date("2024-01-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(err, ProviderError::InvalidSymbol { ref symbol, .. } if symbol == "NOPE"),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Fatal);
    Ok(())
}

#[tokio::test]
async fn unparseable_body_is_dead_lettered_with_the_body() -> Result<()> {
    let server = serve(vec![status(200, "<html>maintenance</html>")]).await?;
    let err = Yahoo::new(&cfg(&server))?
        .daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(
        matches!(err, ProviderError::Parse { ref body, .. } if body.contains("maintenance")),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::DeadLetter);
    assert_eq!(server.requests().await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn alphavantage_normal_response() -> Result<()> {
    let server = serve(vec![ok("alphavantage_daily_ibm_ok.json")]).await?;
    let av = AlphaVantage::new(&cfg(&server), "TESTKEY")?;
    assert_eq!(av.name(), "alphavantage");
    let out = av
        .daily_bars(&ibm(), date("2024-05-01"), date("2024-05-10"))
        .await?;
    ensure!(out.rejects.is_empty(), "{:?}", out.rejects);
    // 2024-04-30 is outside the range asked for.
    let dates: Vec<String> = out
        .bars
        .iter()
        .map(|b| b.event_time.date_naive().to_string())
        .collect();
    assert_eq!(
        dates,
        [
            "2024-05-03",
            "2024-05-06",
            "2024-05-07",
            "2024-05-08",
            "2024-05-09",
            "2024-05-10"
        ]
    );
    let last = &out.bars[5];
    assert_eq!(
        (last.open, last.high, last.low, last.close),
        (dec("167.13"), dec("168.07"), dec("166.32"), dec("167.15"))
    );
    assert_eq!(last.volume, dec("3393398"));
    assert_eq!(
        last.record_id,
        format!("alphavantage:IBM:{}", last.event_time.timestamp_micros())
    );
    assert_eq!(last.event_time.to_rfc3339(), "2024-05-10T00:00:00+00:00");
    let reqs = server.requests().await;
    assert_eq!(reqs.len(), 1);
    for part in [
        "/query?",
        "function=TIME_SERIES_DAILY",
        "symbol=IBM",
        "outputsize=full",
        "apikey=TESTKEY",
    ] {
        assert!(reqs[0].1.contains(part), "{part} missing in {}", reqs[0].1);
    }
    Ok(())
}

#[tokio::test]
async fn alphavantage_note_is_retried_then_succeeds() -> Result<()> {
    let server = serve(vec![
        ok("alphavantage_note_rate_limit.json"),
        ok("alphavantage_daily_ibm_ok.json"),
    ])
    .await?;
    let av = AlphaVantage::new(&cfg(&server), "TESTKEY")?.with_output_size(OutputSize::Compact);
    let out = av
        .daily_bars(&ibm(), date("2024-04-01"), date("2024-05-31"))
        .await?;
    assert_eq!(out.bars.len(), 7);
    let reqs = server.requests().await;
    assert_eq!(reqs.len(), 2, "the Note answer was retried");
    assert!(reqs[1].1.contains("outputsize=compact"));
    Ok(())
}

#[tokio::test]
async fn alphavantage_note_until_attempts_run_out_is_rate_limited() -> Result<()> {
    let server = serve(vec![ok("alphavantage_note_rate_limit.json"); 2]).await?;
    let config = ProviderConfig {
        max_attempts: 2,
        ..cfg(&server)
    };
    let err = AlphaVantage::new(&config, "TESTKEY")?
        .daily_bars(&ibm(), date("2024-04-01"), date("2024-05-31"))
        .await
        .err()
        .context("expected an error")?;
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err}");
    assert!(err.to_string().contains("5 calls per minute"), "{err}");
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(server.requests().await.len(), 2);
    Ok(())
}

#[tokio::test]
async fn alphavantage_fatal_answers_are_not_retried() -> Result<()> {
    for (name, expect) in [
        ("alphavantage_invalid_key.json", "API key refused"),
        ("alphavantage_invalid_symbol.json", "unknown symbol IBM"),
        (
            "alphavantage_information_daily_limit.json",
            "quota exhausted",
        ),
    ] {
        let server = serve(vec![ok(name); 4]).await?;
        let err = AlphaVantage::new(&cfg(&server), "BADKEY")?
            .daily_bars(&ibm(), date("2024-04-01"), date("2024-05-31"))
            .await
            .err()
            .context("expected an error")?;
        assert!(err.to_string().contains(expect), "{name}: {err}");
        assert!(
            !err.to_string().contains("BADKEY"),
            "the key must not leak: {err}"
        );
        assert_eq!(err.class(), ErrorClass::Fatal, "{name}");
        assert_eq!(server.requests().await.len(), 1, "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn alphavantage_key_from_the_environment() {
    // Tests cannot set variables (unsafe in edition 2024); check the unset case when it holds.
    if std::env::var(API_KEY_VAR)
        .map(|v| v.trim().is_empty())
        .unwrap_or(true)
    {
        let err = AlphaVantage::from_env(&ProviderConfig::default()).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(API_KEY_VAR), "{text}");
    }
}

#[tokio::test]
async fn rate_limiter_spaces_requests_at_the_server() -> Result<()> {
    let server = serve(vec![ok("yahoo_chart_aapl_ok.json"); 5]).await?;
    // 20 requests per second, no burst: one every 50 ms.
    let config = ProviderConfig {
        requests_per_minute: Some(1_200),
        burst: 1,
        ..cfg(&server)
    };
    let yahoo = Arc::new(Yahoo::new(&config)?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let y = Arc::clone(&yahoo);
        tasks.push(tokio::spawn(async move {
            y.daily_bars(&aapl(), date("2024-01-01"), date("2024-01-31"))
                .await
                .map(|o| o.bars.len())
        }));
    }
    for t in tasks {
        assert_eq!(t.await??, 5);
    }
    let mut times: Vec<Instant> = server.requests().await.into_iter().map(|r| r.0).collect();
    assert_eq!(times.len(), 5);
    times.sort();
    // Arrival times at the server carry the scheduling jitter of a loaded machine: one request
    // sent on time but delivered late shortens the gap before the next (a CI run saw 34 ms).
    // Without the limiter all five arrive within a few milliseconds, so the median gap and
    // the whole span still tell: the median is immune to one late request, and the span loses
    // at most the delay of the first.
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    assert!(
        gaps[gaps.len() / 2] >= Duration::from_millis(40),
        "requests {gaps:?} apart"
    );
    let span = times[4] - times[0];
    assert!(
        span >= Duration::from_millis(150) && span < Duration::from_millis(1_000),
        "{span:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}
