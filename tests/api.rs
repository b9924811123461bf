//! End to end through the REST API: `tradestream up` (every stage plus the API) against a
//! shared `tradestream broker`, a schema registry and a test database. An order POSTed over
//! HTTP must become an order, a fill and a position in Postgres, readable back over HTTP; the
//! kill switch must stop new orders within one second and release them when turned off.

use anyhow::{Context, Result, bail};
use rust_decimal::Decimal;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tradestream_kafka::{Kafka, KafkaConfig};
use tradestream_postgres::testing::TestDatabase;
use tradestream_registry::{RegistryState, serve};
use tradestream_rest::{Scope, TokenRequest, mint_hs256};
use tradestream_schemas::{AccountId, Codec, MarketData, Symbol, samples};

const SECRET: &str = "e2e-secret-0123456789abcdef0123456789abcdef";

/// Children this test started; killed (by handle) when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn token(scopes: Vec<Scope>, account: Option<&str>) -> Result<String> {
    Ok(mint_hs256(
        SECRET,
        &TokenRequest {
            subject: format!("e2e-{}", account.unwrap_or("admin")),
            scopes,
            account: account.map(AccountId::new).transpose()?,
            ttl: Duration::from_secs(600),
            issuer: "tradestream".into(),
            audience: "tradestream-api".into(),
        },
        chrono::Utc::now(),
    )?)
}

async fn bar(
    kafka: &Kafka,
    codec: &Codec,
    symbol: &str,
    at: chrono::DateTime<chrono::Utc>,
    px: Decimal,
) -> Result<()> {
    let mut b: MarketData = samples::market_data();
    b.record_id = format!("e2e:{symbol}:{}", at.timestamp_micros());
    b.symbol = Symbol::new(symbol)?;
    b.event_time = at;
    b.ingest_time = at;
    b.interval = Some("1m".into());
    b.open = px;
    b.high = px + Decimal::ONE;
    b.low = px - Decimal::ONE;
    b.close = px;
    b.volume = Decimal::from(10_000);
    let bytes = codec.encode(&b).await?;
    let producer = kafka.producer()?;
    producer
        .send(
            tradestream_kafka::rdkafka::producer::FutureRecord::to("market_data")
                .key(symbol)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Polls `query` (one text column) until it returns `want` or `limit` passes.
async fn wait_for(
    pool: &sqlx::PgPool,
    query: &str,
    id: &str,
    want: &str,
    limit: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let got: Option<String> = sqlx::query_scalar(query)
            .bind(id)
            .fetch_optional(pool)
            .await?;
        if got.as_deref() == Some(want) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{query} [{id}]: wanted {want:?}, last saw {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_over_http_become_orders_fills_and_positions() -> Result<()> {
    let db = TestDatabase::new().await?;
    let pool = db.pool().clone();
    // Registry in this process, on the test database.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let registry = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(
        listener,
        RegistryState::new(pool.clone()),
        std::future::pending(),
    ));
    let exe = env!("CARGO_BIN_EXE_tradestream");
    let mut children = Children(Vec::new());
    // A shared broker.
    let mut broker = Command::new(exe)
        .args(["broker", "--port", "0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = broker.stdout.take().context("broker stdout")?;
    children.0.push(broker);
    let mut bootstrap = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(b) = line.strip_prefix("bootstrap: ") {
            bootstrap = b.trim().to_string();
            break;
        }
    }
    if bootstrap.is_empty() {
        bail!("the broker printed no bootstrap address");
    }
    // Every stage plus the API.
    let api_port = free_port()?;
    let base = format!("http://127.0.0.1:{api_port}");
    children.0.push(
        Command::new(exe)
            .args(["up", "--log-level", "warn"])
            .env("KAFKA_BROKERS", &bootstrap)
            .env("KAFKA_SESSION_TIMEOUT_MS", "3000")
            .env("SCHEMA_REGISTRY_URL", &registry)
            .env("DATABASE_URL", db.url())
            .env("TRADESTREAM_JWT_SECRET", SECRET)
            .env("TRADESTREAM_API_LISTEN", format!("127.0.0.1:{api_port}"))
            .env(
                "TRADESTREAM_METRICS_LISTEN",
                format!("127.0.0.1:{}", free_port()?),
            )
            .env_remove("TRADESTREAM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let http = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("`tradestream up` did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kafka = Kafka::connect(KafkaConfig {
        brokers: Some(bootstrap.clone()),
        ..KafkaConfig::default()
    })?;
    let codec = Codec::new(&registry)?;
    let trader = token(
        vec![Scope::OrdersWrite, Scope::OrdersRead, Scope::PortfolioRead],
        Some("demo"),
    )?;
    let admin = token(vec![Scope::Admin], None)?;

    // 0. The API takes orders only for instruments the system knows: APIT's first bar, stored
    // by the sink, makes it one.
    bar(
        &kafka,
        &codec,
        "APIT",
        chrono::Utc::now() - chrono::Duration::minutes(1),
        Decimal::from(100),
    )
    .await?;
    wait_for(
        &pool,
        "SELECT symbol FROM symbol_marks WHERE symbol = $1",
        "APIT",
        "APIT",
        Duration::from_secs(30),
    )
    .await?;

    // 1. An order over HTTP ...
    let r = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&trader)
        .header("Idempotency-Key", "e2e-1")
        .json(&serde_json::json!({
            "symbol": "APIT", "side": "BUY", "type": "LIMIT",
            "quantity": "10", "limit_price": "105", "client_order_id": "e2e-1"
        }))
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    let location = r.headers()["location"].to_str()?.to_string();
    let order_id = "order:manual:demo:e2e-1";
    assert_eq!(location, format!("/v1/orders/{order_id}"));
    // ... a retry with the same key is the same order ...
    let again = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&trader)
        .header("Idempotency-Key", "e2e-1")
        .json(&serde_json::json!({
            "symbol": "APIT", "side": "BUY", "type": "LIMIT",
            "quantity": "10", "limit_price": "105", "client_order_id": "e2e-1"
        }))
        .send()
        .await?;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["location"].to_str()?, location);
    // ... is accepted by the router and filled by the venue against the next bars ...
    let q_status = "SELECT status FROM orders WHERE order_id = $1";
    wait_for(
        &pool,
        q_status,
        order_id,
        "ACCEPTED",
        Duration::from_secs(30),
    )
    .await?;
    let now = chrono::Utc::now();
    for i in 1..=3 {
        bar(
            &kafka,
            &codec,
            "APIT",
            now + chrono::Duration::minutes(i),
            Decimal::from(100),
        )
        .await?;
    }
    wait_for(&pool, q_status, order_id, "FILLED", Duration::from_secs(30)).await?;
    // ... and is an order, a fill and a position in Postgres.
    let (fills, filled_qty): (i64, Decimal) = sqlx::query_as(
        "SELECT count(*), COALESCE(sum(quantity), 0) FROM fills WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_one(&pool)
    .await?;
    assert!(fills >= 1);
    assert_eq!(filled_qty, Decimal::from(10));
    let position: Decimal = sqlx::query_scalar(
        "SELECT quantity FROM positions WHERE account_id = 'demo' AND symbol = 'APIT'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(position, Decimal::from(10));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(
        events, 3,
        "NEW, ACCEPTED, FILLED (the retry made no second order)"
    );
    // Readable back over HTTP.
    let o: serde_json::Value = http
        .get(format!("{base}{location}"))
        .bearer_auth(&trader)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(o["status"], "FILLED", "{o}");
    let p: serde_json::Value = http
        .get(format!("{base}/v1/positions?symbol=APIT"))
        .bearer_auth(&trader)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(p["items"][0]["symbol"], "APIT", "{p}");
    let f: serde_json::Value = http
        .get(format!("{base}/v1/fills?order_id={order_id}"))
        .bearer_auth(&trader)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        f["items"].as_array().map(Vec::len),
        Some(fills as usize),
        "{f}"
    );

    // 2. The kill switch: one second after it turns on, new orders are rejected ...
    let r = http
        .post(format!("{base}/v1/controls/kill-switch"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"enabled": true, "reason": "e2e halt"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&trader)
        .json(&serde_json::json!({
            "symbol": "APIT", "side": "BUY", "type": "LIMIT",
            "quantity": "1", "limit_price": "99", "client_order_id": "e2e-halted"
        }))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let halted = "order:manual:demo:e2e-halted";
    wait_for(&pool, q_status, halted, "REJECTED", Duration::from_secs(30)).await?;
    let reason: String = sqlx::query_scalar("SELECT reject_reason FROM orders WHERE order_id = $1")
        .bind(halted)
        .fetch_one(&pool)
        .await?;
    assert_eq!(reason, "RISK_KILL_SWITCH: reason=e2e halt");
    // ... and accepted again one second after it turns off.
    let r = http
        .post(format!("{base}/v1/controls/kill-switch"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"enabled": false, "reason": "resume"}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let state: serde_json::Value = http
        .get(format!("{base}/v1/controls/kill-switch"))
        .bearer_auth(&admin)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(state["enabled"], false, "{state}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&trader)
        .json(&serde_json::json!({
            "symbol": "APIT", "side": "BUY", "type": "LIMIT",
            "quantity": "1", "limit_price": "95", "client_order_id": "e2e-resumed"
        }))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let resumed = "order:manual:demo:e2e-resumed";
    wait_for(
        &pool,
        q_status,
        resumed,
        "ACCEPTED",
        Duration::from_secs(30),
    )
    .await?;
    // 3. Cancel it over HTTP: the venue confirms.
    let r = http
        .post(format!("{base}/v1/orders/{resumed}/cancel"))
        .bearer_auth(&trader)
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    wait_for(
        &pool,
        q_status,
        resumed,
        "CANCELED",
        Duration::from_secs(30),
    )
    .await?;

    drop(children);
    db.cleanup().await;
    Ok(())
}
