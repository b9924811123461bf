//! Handler tests through `tower::ServiceExt::oneshot` against a real Postgres test database,
//! the embedded Kafka mock cluster and tradestream's schema registry: what a client sends,
//! what it gets back, and what lands on the topics.

use super::*;
use crate::auth::{Scope, TokenRequest};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rust_decimal_macros::dec;
use std::sync::Arc;
use tower::ServiceExt;
use tradestream_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use tradestream_kafka::{Kafka, KafkaConfig, standard_topics};
use tradestream_postgres::portfolio::{NewAccount, create_account, insert_fill, insert_order};
use tradestream_postgres::testing::TestDatabase;
use tradestream_registry::{RegistryState, serve as serve_registry};
use tradestream_schemas::{AccountId, AnyRecord, Codec, Topic, samples};

mod hardening;

type R = anyhow::Result<()>;

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

struct Harness {
    db: TestDatabase,
    kafka: Kafka,
    codec: Codec,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Harness {
    async fn new(f: impl FnOnce(&mut RestConfig)) -> anyhow::Result<Self> {
        let db = TestDatabase::new().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_registry(
            listener,
            RegistryState::new(db.pool().clone()),
            async {
                let _ = stopped.await;
            },
        ));
        let kafka = Kafka::connect(KafkaConfig {
            session_timeout_ms: 3_000,
            partitions: 2,
            ..KafkaConfig::default()
        })?;
        kafka.provision(&standard_topics(kafka.config())).await?;
        let codec = Codec::new(&url)?;
        codec.register_all().await?;
        for id in ["demo", "other"] {
            create_account(
                db.pool(),
                &NewAccount::new(AccountId::new(id)?, id, dec!(100000)),
            )
            .await?;
        }
        // The instruments the system knows: those with market data stored (their last mark).
        for symbol in ["AAPL", "MSFT", "A"] {
            sqlx::query("INSERT INTO symbol_marks (symbol, price, at) VALUES ($1, 100, now())")
                .bind(symbol)
                .execute(db.pool())
                .await?;
        }
        let mut config = RestConfig {
            jwt_secret: Some(SECRET.into()),
            ..RestConfig::default()
        };
        f(&mut config);
        let publisher = Publisher::new(&kafka, codec.clone(), Duration::from_secs(10))?;
        let state = AppState::new(config, db.pool().clone(), publisher)?;
        Ok(Self {
            db,
            kafka,
            codec,
            state,
            stop: Some(stop),
        })
    }

    fn token(&self, scopes: &[Scope], account: Option<&str>) -> String {
        let subject = format!("user-{}", account.unwrap_or("admin"));
        self.token_of(&subject, scopes, account)
    }

    /// A token of `subject` (several accounts' tokens may share one).
    fn token_of(&self, subject: &str, scopes: &[Scope], account: Option<&str>) -> String {
        mint_hs256(
            SECRET,
            &TokenRequest {
                subject: subject.into(),
                scopes: scopes.to_vec(),
                account: account.map(|a| AccountId::new(a).unwrap_or_else(|_| unreachable!())),
                ttl: Duration::from_secs(300),
                issuer: config::default_issuer(),
                audience: config::default_audience(),
            },
            chrono::Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn trader(&self) -> String {
        self.token(
            &[Scope::OrdersWrite, Scope::OrdersRead, Scope::PortfolioRead],
            Some("demo"),
        )
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, axum::http::HeaderMap, serde_json::Value)> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())?;
        let response = app(self.state.clone()).oneshot(req).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, headers, json))
    }

    /// Records on `topic` (reads until `n` arrived or 10 s passed).
    async fn records(&self, topic: Topic, n: usize) -> anyhow::Result<Vec<AnyRecord>> {
        let consumer: StreamConsumer = self
            .kafka
            .consumer(&format!("test-{}", uuid::Uuid::new_v4()))?;
        consumer.subscribe(&[topic.name()])?;
        let consumer = Arc::new(consumer);
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while out.len() < n {
            let Ok(msg) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
                break;
            };
            let msg = msg?;
            let payload = tradestream_kafka::rdkafka::Message::payload(&msg).unwrap_or_default();
            out.push(self.codec.decode_any(topic, payload).await?);
        }
        Ok(out)
    }

    /// Messages on every partition of `topic` (high watermarks summed).
    async fn count(&self, topic: Topic) -> anyhow::Result<i64> {
        let consumer = self.kafka.base_consumer("test-watermarks")?;
        let partitions = self.kafka.config().partitions;
        tokio::task::spawn_blocking(move || {
            let mut total = 0;
            for p in 0..partitions {
                total += consumer
                    .fetch_watermarks(topic.name(), p, Duration::from_secs(10))?
                    .1;
            }
            Ok(total)
        })
        .await?
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.db.cleanup().await;
    }
}

fn problem(headers: &axum::http::HeaderMap, json: &serde_json::Value, status: u16) {
    assert_eq!(headers[header::CONTENT_TYPE], error::PROBLEM_JSON, "{json}");
    assert_eq!(json["status"], status, "{json}");
    assert!(
        json["type"]
            .as_str()
            .unwrap_or("")
            .starts_with("urn:tradestream:problem:")
    );
    assert!(
        json["title"].is_string() && json["detail"].is_string(),
        "{json}"
    );
}

const LIMIT_BUY: &str = r#"{"symbol":"aapl","side":"BUY","type":"LIMIT","quantity":"10","limit_price":"101.5","client_order_id":"c-1"}"#;

#[tokio::test]
async fn authentication_and_authorization_are_enforced() -> R {
    let h = Harness::new(|_| {}).await?;
    let (s, hd, j) = h.call("GET", "/v1/orders", None, None, &[]).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    problem(&hd, &j, 401);
    assert!(hd.contains_key(header::WWW_AUTHENTICATE));
    let (s, hd, j) = h
        .call("GET", "/v1/orders", Some("garbage"), None, &[])
        .await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    problem(&hd, &j, 401);
    // Read-only token cannot trade.
    let reader = h.token(&[Scope::OrdersRead], Some("demo"));
    let (s, hd, j) = h
        .call("POST", "/v1/orders", Some(&reader), Some(LIMIT_BUY), &[])
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    problem(&hd, &j, 403);
    // A trader cannot trade or read another account.
    let body = r#"{"account":"other","symbol":"A","side":"BUY","type":"MARKET","quantity":"1"}"#;
    let (s, hd, j) = h
        .call("POST", "/v1/orders", Some(&h.trader()), Some(body), &[])
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    problem(&hd, &j, 403);
    let (s, _, _) = h
        .call(
            "GET",
            "/v1/orders?account=other",
            Some(&h.trader()),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Only admins touch the kill switch.
    let (s, _, _) = h
        .call(
            "GET",
            "/v1/controls/kill-switch",
            Some(&h.trader()),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Health and the document need no token.
    let (s, _, _) = h.call("GET", "/healthz", None, None, &[]).await?;
    assert_eq!(s, StatusCode::OK);
    let (s, _, j) = h.call("GET", "/readyz", None, None, &[]).await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    let (s, _, j) = h.call("GET", "/openapi.json", None, None, &[]).await?;
    assert_eq!(s, StatusCode::OK);
    assert!(j["paths"]["/v1/orders"].is_object());
    let (s, hd, j) = h.call("GET", "/v1/nothing", None, None, &[]).await?;
    assert_eq!(s, StatusCode::NOT_FOUND);
    problem(&hd, &j, 404);
    let (s, _, j) = h
        .call("PUT", "/v1/orders", Some(&h.trader()), None, &[])
        .await?;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(j["status"], 405);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_manual_order_is_published_as_new_with_location() -> R {
    let h = Harness::new(|_| {}).await?;
    let (s, hd, j) = h
        .call(
            "POST",
            "/v1/orders",
            Some(&h.trader()),
            Some(LIMIT_BUY),
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    assert_eq!(hd[header::LOCATION], "/v1/orders/order:manual:demo:c-1");
    assert_eq!(j["order_id"], "order:manual:demo:c-1");
    assert_eq!(j["status"], "NEW");
    assert_eq!(j["symbol"], "AAPL");
    assert_eq!(j["limit_price"], "101.5");
    let records = h.records(Topic::Orders, 1).await?;
    let [AnyRecord::Order(o)] = records.as_slice() else {
        panic!("{records:?}")
    };
    assert_eq!(o.event_id, "order:manual:demo:c-1:0");
    assert_eq!(o.sequence, 0);
    assert_eq!(o.status, tradestream_schemas::OrderStatus::New);
    assert_eq!(o.origin_kind, tradestream_schemas::OriginKind::Manual);
    assert_eq!(o.account.as_str(), "demo");
    assert_eq!(o.quantity, dec!(10));
    // The client order id cannot be used again.
    let (s, hd, j) = h
        .call(
            "POST",
            "/v1/orders",
            Some(&h.trader()),
            Some(LIMIT_BUY),
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::CONFLICT);
    problem(&hd, &j, 409);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn idempotency_keys_return_the_first_response_and_one_order() -> R {
    let h = Harness::new(|_| {}).await?;
    let body = r#"{"symbol":"MSFT","side":"SELL","type":"MARKET","quantity":"3"}"#;
    let key = [("Idempotency-Key", "retry-me-1")];
    let (s1, h1, j1) = h
        .call("POST", "/v1/orders", Some(&h.trader()), Some(body), &key)
        .await?;
    let (s2, h2, j2) = h
        .call("POST", "/v1/orders", Some(&h.trader()), Some(body), &key)
        .await?;
    assert_eq!(s1, StatusCode::ACCEPTED, "{j1}");
    assert_eq!(s2, StatusCode::ACCEPTED);
    assert_eq!(j1, j2);
    assert_eq!(h1[header::LOCATION], h2[header::LOCATION]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(h.count(Topic::Orders).await?, 1, "one order, not two");
    // Same key, different request: refused.
    let other = r#"{"symbol":"MSFT","side":"SELL","type":"MARKET","quantity":"4"}"#;
    let (s, hd, j) = h
        .call("POST", "/v1/orders", Some(&h.trader()), Some(other), &key)
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    problem(&hd, &j, 422);
    assert_eq!(j["field"], "Idempotency-Key");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn malformed_input_is_400_or_422_naming_the_field() -> R {
    let h = Harness::new(|c| c.body_limit_bytes = 2048).await?;
    let t = h.trader();
    for (body, status, field) in [
        ("{not json", 400, "body"),
        (
            r#"{"side":"BUY","type":"MARKET","quantity":"1"}"#,
            422,
            "symbol",
        ),
        (
            r#"{"symbol":"A","side":"HOLD","type":"MARKET","quantity":"1"}"#,
            422,
            "side",
        ),
        (
            r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"abc"}"#,
            422,
            "quantity",
        ),
        (
            r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"-1"}"#,
            422,
            "quantity",
        ),
        (
            r#"{"symbol":"A","side":"BUY","type":"LIMIT","quantity":"1"}"#,
            422,
            "limit_price",
        ),
        (
            r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"1","bogus":1}"#,
            422,
            "body",
        ),
    ] {
        let (s, hd, j) = h
            .call("POST", "/v1/orders", Some(&t), Some(body), &[])
            .await?;
        assert_eq!(s.as_u16(), status, "{body}: {j}");
        problem(&hd, &j, status);
        if field != "body" {
            assert_eq!(j["field"], field, "{body}: {j}");
        }
    }
    // Not JSON at all.
    let req = Request::post("/v1/orders")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("hello"))?;
    let r = app(h.state.clone()).oneshot(req).await?;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Too large.
    let big = format!(
        r#"{{"symbol":"A","side":"BUY","type":"MARKET","quantity":"1","client_order_id":"{}"}}"#,
        "x".repeat(4096)
    );
    let (s, hd, j) = h
        .call("POST", "/v1/orders", Some(&t), Some(&big), &[])
        .await?;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    problem(&hd, &j, 413);
    // Query strings.
    let (s, hd, j) = h
        .call("GET", "/v1/orders?limit=abc", Some(&t), None, &[])
        .await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    problem(&hd, &j, 400);
    let (s, _, j) = h
        .call("GET", "/v1/orders?limit=0", Some(&t), None, &[])
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(j["field"], "limit");
    let (s, _, j) = h
        .call("GET", "/v1/orders?cursor=zz", Some(&t), None, &[])
        .await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(j["field"], "cursor");
    h.stop().await;
    Ok(())
}

fn stored_order(
    id: &str,
    status: tradestream_schemas::OrderStatus,
    minute: u32,
) -> tradestream_schemas::Order {
    let mut o = samples::order();
    o.order_id = format!("order:manual:demo:{id}");
    o.event_id = format!("{}:1", o.order_id);
    o.client_order_id = Some(id.into());
    o.status = status;
    o.created_time += chrono::Duration::minutes(i64::from(minute));
    o.updated_time = o.created_time;
    if status == tradestream_schemas::OrderStatus::Filled {
        o.filled_quantity = o.quantity;
    }
    o
}

#[tokio::test]
async fn orders_are_read_filtered_paginated_and_canceled() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    use tradestream_schemas::OrderStatus::*;
    for (i, (id, status)) in [("a", Accepted), ("b", Filled), ("c", Accepted)]
        .iter()
        .enumerate()
    {
        insert_order(h.db.pool(), &stored_order(id, *status, i as u32)).await?;
    }
    let (s, _, j) = h
        .call("GET", "/v1/orders/order:manual:demo:a", Some(&t), None, &[])
        .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["status"], "ACCEPTED");
    let (s, hd, j) = h
        .call(
            "GET",
            "/v1/orders/order:manual:demo:zzz",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND);
    problem(&hd, &j, 404);
    // Another account's order answers as a missing one does.
    let other = h.token(&[Scope::OrdersRead], Some("other"));
    let (s, _, j) = h
        .call(
            "GET",
            "/v1/orders/order:manual:demo:a",
            Some(&other),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND, "{j}");
    // Pages of two, newest first.
    let (s, _, j) = h
        .call("GET", "/v1/orders?limit=2", Some(&t), None, &[])
        .await?;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = j["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["client_order_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, ["c", "b"]);
    let cursor = j["next_cursor"].as_str().unwrap_or_default().to_string();
    let (_, _, j) = h
        .call(
            "GET",
            &format!("/v1/orders?limit=2&cursor={cursor}"),
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(j["items"].as_array().map(Vec::len), Some(1));
    assert!(j.get("next_cursor").is_none());
    let (_, _, j) = h
        .call(
            "GET",
            "/v1/orders?status=FILLED&symbol=%5EIXIC",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(j["items"].as_array().map(Vec::len), Some(1), "{j}");
    // The other account sees none of them.
    let (_, _, j) = h.call("GET", "/v1/orders", Some(&other), None, &[]).await?;
    assert_eq!(j["items"].as_array().map(Vec::len), Some(0));
    // Cancel: a request at the last known sequence; finished orders are 409.
    let (s, _, j) = h
        .call(
            "POST",
            "/v1/orders/order:manual:demo:a/cancel",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{j}");
    let (s, hd, j) = h
        .call(
            "POST",
            "/v1/orders/order:manual:demo:b/cancel",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::CONFLICT);
    problem(&hd, &j, 409);
    let records = h.records(Topic::Orders, 1).await?;
    let [AnyRecord::Order(cancel)] = records.as_slice() else {
        panic!("{records:?}")
    };
    assert_eq!(cancel.status, Canceled);
    assert_eq!(cancel.sequence, 1, "the last known sequence");
    assert!(
        cancel.event_id.starts_with("order:manual:demo:a:cancel:"),
        "{}",
        cancel.event_id
    );
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn portfolio_and_history_come_from_postgres() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    insert_order(
        h.db.pool(),
        &stored_order("f", tradestream_schemas::OrderStatus::Filled, 0),
    )
    .await?;
    let mut fill = samples::fill();
    fill.order_id = "order:manual:demo:f".into();
    insert_fill(h.db.pool(), &fill).await?;
    // The trading core's valuation after the fill: the portfolio snapshot the stats read.
    let valuation = tradestream_schemas::Valuation::new(
        fill.account.clone(),
        (1, fill.fill_time, None),
        dec!(100000) - fill.quantity * fill.price - fill.commission,
        fill.quantity * fill.price,
    );
    tradestream_postgres::portfolio::write_valuations(h.db.pool(), &[&valuation]).await?;
    let (s, _, j) = h.call("GET", "/v1/positions", Some(&t), None, &[]).await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["items"][0]["symbol"], "^IXIC");
    let qty: rust_decimal::Decimal = j["items"][0]["quantity"].as_str().unwrap_or("0").parse()?;
    assert_eq!(qty, fill.quantity);
    let (s, _, j) = h.call("GET", "/v1/portfolio", Some(&t), None, &[]).await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["account"], "demo");
    assert_eq!(j["open_positions"], 1);
    let cash: rust_decimal::Decimal = j["cash"].as_str().unwrap_or("0").parse()?;
    assert_eq!(
        cash,
        dec!(100000) - fill.quantity * fill.price - fill.commission
    );
    let (s, _, j) = h
        .call(
            "GET",
            "/v1/portfolio/stats?from=2018-01-01T00:00:00Z&to=2019-01-01T00:00:00Z",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["snapshots"].as_i64(), Some(1), "{j}");
    let (s, _, j) = h
        .call(
            "GET",
            "/v1/portfolio/stats?from=2019-01-01T00:00:00Z&to=2018-01-01T00:00:00Z",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
    let (s, _, j) = h
        .call(
            "GET",
            "/v1/fills?order_id=order:manual:demo:f",
            Some(&t),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["items"][0]["fill_id"], fill.fill_id);
    for path in ["/v1/signals?symbol=AAPL", "/v1/anomalies?limit=5"] {
        let (s, _, j) = h.call("GET", path, Some(&t), None, &[]).await?;
        assert_eq!(s, StatusCode::OK, "{path}: {j}");
        assert!(j["items"].is_array());
    }
    // Admins without an account must name one for the portfolio.
    let admin = h.token(&[Scope::Admin], None);
    let (s, _, j) = h
        .call("GET", "/v1/portfolio", Some(&admin), None, &[])
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
    let (s, _, _) = h
        .call(
            "GET",
            "/v1/portfolio?account=other",
            Some(&admin),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::OK);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_kill_switch_is_published_and_recorded() -> R {
    let h = Harness::new(|_| {}).await?;
    let admin = h.token(&[Scope::Admin], None);
    let (s, _, j) = h
        .call("GET", "/v1/controls/kill-switch", Some(&admin), None, &[])
        .await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["enabled"], false);
    let (s, _, j) = h
        .call(
            "POST",
            "/v1/controls/kill-switch",
            Some(&admin),
            Some(r#"{"enabled":true,"reason":"desk halt"}"#),
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    let (_, _, j) = h
        .call("GET", "/v1/controls/kill-switch", Some(&admin), None, &[])
        .await?;
    assert_eq!(j["enabled"], true);
    assert_eq!(j["reason"], "desk halt");
    assert_eq!(j["actor"], "user-admin");
    let records = h.records(Topic::Controls, 1).await?;
    let [AnyRecord::Control(c)] = records.as_slice() else {
        panic!("{records:?}")
    };
    assert!(c.enabled);
    assert_eq!(c.name, "KILL_SWITCH");
    assert_eq!(c.reason, "desk halt");
    let (s, _, j) = h
        .call(
            "POST",
            "/v1/controls/kill-switch",
            Some(&admin),
            Some(r#"{"enabled":true,"reason":" "}"#),
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(j["field"], "reason");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() -> R {
    let h = Harness::new(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await?;
    let t = h.trader();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (s, hd, j) = h.call("GET", "/v1/signals", Some(&t), None, &[]).await?;
        if s == StatusCode::TOO_MANY_REQUESTS {
            problem(&hd, &j, 429);
            assert_eq!(hd[header::RETRY_AFTER], "1");
        }
        statuses.push(s.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Another principal is not affected.
    let other = h.token(&[Scope::PortfolioRead], Some("other"));
    let (s, _, _) = h
        .call("GET", "/v1/signals", Some(&other), None, &[])
        .await?;
    assert_eq!(s, StatusCode::OK);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn cors_is_configurable() -> R {
    let h = Harness::new(|c| c.cors_origins = vec!["https://app.example.com".into()]).await?;
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/v1/orders")
        .header(header::ORIGIN, "https://app.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())?;
    let r = app(h.state.clone()).oneshot(req).await?;
    assert_eq!(
        r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let req = Request::get("/healthz")
        .header(header::ORIGIN, "https://evil.example.com")
        .body(Body::empty())?;
    let r = app(h.state.clone()).oneshot(req).await?;
    assert!(
        !r.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
    h.stop().await;
    Ok(())
}

/// Reads SSE frames (`event`, `id`, `data`) from a streaming body until `n` arrived.
async fn sse_frames(
    body: axum::body::Body,
    n: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} events: {out:?}", out.len()))?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            if !field("event").is_empty() {
                out.push((field("event"), field("id"), field("data")));
            }
        }
    }
    Ok(out)
}

async fn open_stream(
    h: &Harness,
    token: &str,
    last: Option<&str>,
) -> anyhow::Result<axum::response::Response> {
    let mut req =
        Request::get("/v1/stream").header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(id) = last {
        req = req.header("Last-Event-ID", id);
    }
    Ok(app(h.state.clone())
        .oneshot(req.body(Body::empty())?)
        .await?)
}

#[tokio::test]
async fn the_event_stream_is_live_scoped_and_resumable() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    let r = open_stream(&h, &t, None).await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    // Another account's fill is not shown; ours and the market-wide anomalies are.
    let mut theirs = samples::fill();
    theirs.fill_id = "fill:other".into();
    theirs.account = AccountId::new("other")?;
    insert_fill(h.db.pool(), &theirs).await?;
    let mut ours = samples::fill();
    ours.fill_id = "fill:ours".into();
    insert_fill(h.db.pool(), &ours).await?;
    for id in ["anomaly:1", "anomaly:2"] {
        sqlx::query(
            "INSERT INTO anomalies (anomaly_id, symbol, event_time, kind, score, severity, detector_version) \
             VALUES ($1, 'AAPL', now(), 'VOLUME', 9.5, 'HIGH', 'gmm-1')",
        )
        .bind(id)
        .execute(h.db.pool())
        .await?;
    }
    let frames = sse_frames(r.into_body(), 3).await?;
    let kinds: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(kinds, ["fill", "anomaly", "anomaly"], "{frames:?}");
    assert!(frames[0].2.contains("fill:ours"), "{frames:?}");
    assert!(frames[1].2.contains("anomaly:1"), "{frames:?}");
    // Resume after the first anomaly: the next event is the second one.
    let r = open_stream(&h, &t, Some(&frames[1].1)).await?;
    let resumed = sse_frames(r.into_body(), 1).await?;
    assert_eq!(resumed[0].1, frames[2].1);
    assert!(resumed[0].2.contains("anomaly:2"));
    // A garbage Last-Event-ID is a 400 problem.
    let r = open_stream(&h, &t, Some("nonsense")).await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    h.stop().await;
    Ok(())
}
