//! What a hostile or careless client found (issue 25), one test per finding: tokens not valid
//! yet, NUL bytes and dates PostgreSQL cannot store, a kill switch that split its state,
//! amounts and symbols that should be refused, racing idempotency keys, keys shared across
//! accounts, unthrottled bad tokens, another account's order told apart from a missing one,
//! and the outbox that keeps Kafka and Postgres in step.

use super::*;
use crate::auth::Claims;
use crate::model::Cursor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn signed(claims: &Claims) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() -> R {
    let h = Harness::new(|_| {}).await?;
    let now = u64::try_from(chrono::Utc::now().timestamp())?;
    let mut claims = Claims {
        sub: "early-bird".into(),
        scope: "admin".into(),
        account: None,
        exp: now + 7200,
        iat: Some(now),
        nbf: Some(now + 3600),
        iss: config::default_issuer(),
        aud: serde_json::json!(config::default_audience()),
    };
    let (s, hd, j) = h
        .call(
            "GET",
            "/v1/controls/kill-switch",
            Some(&signed(&claims)?),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{j}");
    problem(&hd, &j, 401);
    assert!(j["detail"].as_str().unwrap_or("").contains("not valid yet"));
    claims.nbf = Some(now - 5);
    let (s, _, j) = h
        .call(
            "GET",
            "/v1/controls/kill-switch",
            Some(&signed(&claims)?),
            None,
            &[],
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{j}");
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn nul_bytes_and_dates_postgres_cannot_hold_are_4xx() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    let now = chrono::Utc::now();
    let nul_cursor = Cursor {
        at: now,
        id: "order\0x".into(),
    }
    .encode();
    let ancient_cursor = Cursor {
        at: "-5000-01-01T00:00:00Z".parse()?,
        id: "x".into(),
    }
    .encode();
    for (method, uri, status) in [
        ("GET", "/v1/orders/order%00id".to_string(), 400),
        ("POST", "/v1/orders/order%00id/cancel".to_string(), 400),
        ("GET", "/v1/fills?order_id=a%00b".to_string(), 400),
        ("GET", "/v1/orders?symbol=A%00".to_string(), 400),
        ("GET", format!("/v1/orders?cursor={nul_cursor}"), 422),
        ("GET", format!("/v1/fills?cursor={ancient_cursor}"), 422),
        ("GET", "/v1/fills?order_id=".to_string(), 422),
        (
            "GET",
            "/v1/orders?from=-5000-01-01T00:00:00Z".to_string(),
            422,
        ),
        (
            "GET",
            "/v1/portfolio/stats?from=-5000-01-01T00:00:00Z".to_string(),
            422,
        ),
        (
            "GET",
            "/v1/signals?to=%2B20000-01-01T00:00:00Z".to_string(),
            422,
        ),
    ] {
        let (s, hd, j) = h.call(method, &uri, Some(&t), None, &[]).await?;
        assert_eq!(s.as_u16(), status, "{method} {uri}: {j}");
        problem(&hd, &j, status);
    }
    let body = r#"{"symbol":"AAPL","side":"BUY","type":"MARKET","quantity":"1","client_order_id":"a\u0000b"}"#;
    let (s, hd, j) = h
        .call("POST", "/v1/orders", Some(&t), Some(body), &[])
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
    problem(&hd, &j, 422);
    assert_eq!(j["field"], "client_order_id");
    assert_eq!(h.count(Topic::Orders).await?, 0);
    h.stop().await;
    Ok(())
}

/// A kill-switch change the database cannot store is refused before anything is published:
/// the trading core and `GET` never disagree.
#[tokio::test]
async fn a_refused_kill_switch_change_publishes_nothing() -> R {
    let h = Harness::new(|_| {}).await?;
    let admin = h.token(&[Scope::Admin], None);
    for reason in [r#""halt\u0000now""#, r#""two\nlines""#] {
        let body = format!(r#"{{"enabled":true,"reason":{reason}}}"#);
        let (s, hd, j) = h
            .call(
                "POST",
                "/v1/controls/kill-switch",
                Some(&admin),
                Some(&body),
                &[],
            )
            .await?;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{reason}: {j}");
        problem(&hd, &j, 422);
        assert_eq!(j["field"], "reason");
    }
    let (_, _, j) = h
        .call("GET", "/v1/controls/kill-switch", Some(&admin), None, &[])
        .await?;
    assert_eq!(j["enabled"], false);
    assert_eq!(h.count(Topic::Controls).await?, 0);
    // A valid change: recorded, published, marked published.
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
    assert_eq!(h.count(Topic::Controls).await?, 1);
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM control_events WHERE published_at IS NULL")
            .fetch_one(h.db.pool())
            .await?;
    assert_eq!(unpublished, 0);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn amounts_are_strict_and_symbols_must_be_known() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    let long_price = format!("101.{}", "1".repeat(40));
    for (body, field) in [
        (
            r#"{"symbol":"AAPL","side":"BUY","type":"MARKET","quantity":"1_000"}"#.to_string(),
            "quantity",
        ),
        (
            r#"{"symbol":"AAPL","side":"BUY","type":"MARKET","quantity":"1e3"}"#.to_string(),
            "quantity",
        ),
        (
            format!(
                r#"{{"symbol":"AAPL","side":"BUY","type":"LIMIT","quantity":"1","limit_price":"{long_price}"}}"#
            ),
            "limit_price",
        ),
        (
            r#"{"symbol":"NOPE","side":"BUY","type":"MARKET","quantity":"1"}"#.to_string(),
            "symbol",
        ),
    ] {
        let (s, hd, j) = h
            .call("POST", "/v1/orders", Some(&t), Some(&body), &[])
            .await?;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {j}");
        problem(&hd, &j, 422);
        assert_eq!(j["field"], field, "{body}: {j}");
    }
    assert_eq!(h.count(Topic::Orders).await?, 0, "nothing published");
    h.stop().await;
    Ok(())
}

/// Ten concurrent requests with one key and two bodies: one order, one record on `orders`;
/// the requests with the winner's body get its answer, the others 422.
#[tokio::test]
async fn racing_requests_with_one_key_make_one_order() -> R {
    let h = Harness::new(|_| {}).await?;
    let t = h.trader();
    let a = r#"{"symbol":"MSFT","side":"BUY","type":"MARKET","quantity":"3"}"#;
    let b = r#"{"symbol":"MSFT","side":"BUY","type":"MARKET","quantity":"4"}"#;
    let key = [("Idempotency-Key", "race-1")];
    let answers = futures::future::join_all((0..10).map(|i| {
        let body = if i % 2 == 0 { a } else { b };
        let call = h.call("POST", "/v1/orders", Some(&t), Some(body), &key);
        async move { (body, call.await) }
    }))
    .await;
    let records = h.records(Topic::Orders, 2).await?;
    let [AnyRecord::Order(o)] = records.as_slice() else {
        panic!("one record on orders: {records:?}")
    };
    let winner = if o.quantity == dec!(3) { a } else { b };
    for (body, answer) in answers {
        let (s, _, j) = answer?;
        if body == winner {
            assert_eq!(s, StatusCode::ACCEPTED, "{j}");
            assert_eq!(j["order_id"], o.order_id.as_str());
        } else {
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
            assert_eq!(j["field"], "Idempotency-Key");
        }
    }
    h.stop().await;
    Ok(())
}

/// Keys belong to accounts: two accounts may use the same key, and each gets its own order,
/// even with tokens of one subject (as `tradestream token` minted them before it gave each
/// account its own).
#[tokio::test]
async fn idempotency_keys_are_per_account() -> R {
    let h = Harness::new(|_| {}).await?;
    let demo = h.token_of("local", &[Scope::OrdersWrite], Some("demo"));
    let other = h.token_of("local", &[Scope::OrdersWrite], Some("other"));
    let body = r#"{"symbol":"MSFT","side":"SELL","type":"MARKET","quantity":"2"}"#;
    let key = [("Idempotency-Key", "shared-key")];
    let (s1, _, j1) = h
        .call("POST", "/v1/orders", Some(&demo), Some(body), &key)
        .await?;
    let (s2, _, j2) = h
        .call("POST", "/v1/orders", Some(&other), Some(body), &key)
        .await?;
    assert_eq!(
        (s1, s2),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED),
        "{j1} {j2}"
    );
    assert_ne!(j1["order_id"], j2["order_id"]);
    assert_eq!(j2["account"], "other");
    assert_eq!(h.count(Topic::Orders).await?, 2);
    h.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_tokens_are_rate_limited_per_client_address() -> R {
    let h = Harness::new(|c| {
        c.rate_limit_per_sec = 1;
        c.rate_limit_burst = 2;
    })
    .await?;
    let from = |ip: [u8; 4]| {
        let addr = std::net::SocketAddr::from((ip, 40000));
        Request::get("/v1/signals")
            .header(header::AUTHORIZATION, "Bearer not-a-token")
            .extension(axum::extract::ConnectInfo(addr))
            .body(Body::empty())
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = app(h.state.clone()).oneshot(from([10, 0, 0, 1])?).await?;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);
    let r = app(h.state.clone()).oneshot(from([10, 0, 0, 2])?).await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "another client");
    h.stop().await;
    Ok(())
}

/// A write recorded but not published (Kafka down, or the process killed between the commit
/// and the publish) is published by the relay, once, and marked published.
#[tokio::test]
async fn the_outbox_relay_publishes_what_was_recorded() -> R {
    let h = Harness::new(|_| {}).await?;
    let mut order = samples::order();
    order.order_id = "order:manual:demo:recorded".into();
    order.event_id = format!("{}:0", order.order_id);
    order.status = tradestream_schemas::OrderStatus::New;
    sqlx::query(
        "INSERT INTO api_order_requests (order_id, account_id, request_hash, record) \
         VALUES ($1, 'demo', 'h', $2)",
    )
    .bind(&order.order_id)
    .bind(serde_json::to_value(&order)?)
    .execute(h.db.pool())
    .await?;
    sqlx::query(
        "INSERT INTO control_events (control_id, name, enabled, reason, actor, issued_at) \
         VALUES ('control:KILL_SWITCH:r', 'KILL_SWITCH', true, 'recorded', 'ops', now())",
    )
    .execute(h.db.pool())
    .await?;
    assert_eq!(crate::outbox::publish_pending(&h.state).await?, 2);
    assert_eq!(crate::outbox::publish_pending(&h.state).await?, 0, "once");
    let records = h.records(Topic::Orders, 1).await?;
    assert_eq!(records, vec![AnyRecord::Order(order)]);
    let controls = h.records(Topic::Controls, 1).await?;
    assert!(
        matches!(controls.as_slice(), [AnyRecord::Control(c)] if c.reason == "recorded"),
        "{controls:?}"
    );
    h.stop().await;
    Ok(())
}

/// Percent-encodes every byte but the unreserved ones, so any text reaches the handler.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Text a careless or hostile client sends: any Unicode (control characters included), NUL
/// inside, extreme numbers and dates, and the empty string.
fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<String>(),
        any::<String>().prop_map(|s| format!("{s}\0{s}")),
        "[A-Za-z0-9._:-]{1,70}",
        Just(String::new()),
        prop::sample::select(vec![
            "1e308",
            "-0",
            "NaN",
            "Infinity",
            "99999999999999999999999999999999",
            "0.000000001",
            "-262143-01-01T00:00:00Z",
            "+262142-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "18446744073709551616",
            "-1",
            "ffff",
            "7c",
            "\u{202e}",
        ])
        .prop_map(str::to_string),
    ]
}

/// Every text field of a body and every query parameter and path id, given arbitrary text:
/// never a 5xx, never a hang; and afterwards every order and control on Kafka has its
/// Postgres record and every record was published (nothing on one side only).
#[test]
fn any_text_in_any_field_is_never_a_5xx_and_kafka_matches_postgres() -> R {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let rt = tokio::runtime::Runtime::new()?;
    let h = rt.block_on(Harness::new(|c| c.rate_limit_per_sec = 0))?;
    let trader = h.trader();
    let admin = h.token(&[Scope::Admin], None);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    let result = runner.run(&hostile_text(), |text| {
        rt.block_on(async {
            let q = encoded(&text);
            let json = serde_json::to_string(&text).unwrap_or_default();
            let order = |field: &str| {
                let mut body = serde_json::json!({
                    "symbol": "AAPL", "side": "BUY", "type": "LIMIT",
                    "quantity": "1", "limit_price": "100"
                });
                body[field] = serde_json::Value::String(text.clone());
                body.to_string()
            };
            let mut calls: Vec<(&str, String, &String, Option<String>)> = Vec::new();
            for field in [
                "symbol",
                "account",
                "client_order_id",
                "quantity",
                "limit_price",
                "stop_price",
                "side",
                "type",
                "time_in_force",
            ] {
                calls.push(("POST", "/v1/orders".into(), &trader, Some(order(field))));
            }
            calls.push((
                "POST",
                "/v1/controls/kill-switch".into(),
                &admin,
                Some(format!(r#"{{"enabled":false,"reason":{json}}}"#)),
            ));
            for param in [
                "account", "symbol", "status", "from", "to", "limit", "cursor",
            ] {
                calls.push(("GET", format!("/v1/orders?{param}={q}"), &trader, None));
            }
            for param in ["order_id", "from", "cursor", "symbol"] {
                calls.push(("GET", format!("/v1/fills?{param}={q}"), &trader, None));
            }
            calls.push(("GET", format!("/v1/portfolio/stats?to={q}"), &trader, None));
            calls.push(("GET", format!("/v1/positions?cursor={q}"), &trader, None));
            calls.push(("GET", format!("/v1/signals?symbol={q}"), &trader, None));
            calls.push(("GET", format!("/v1/orders/{q}"), &trader, None));
            calls.push(("POST", format!("/v1/orders/{q}/cancel"), &trader, None));
            for (method, uri, token, body) in &calls {
                let call = h.call(method, uri, Some(token), body.as_deref(), &[]);
                let (s, _, j) = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .map_err(|_| TestCaseError::fail(format!("{method} {uri}: hung")))?
                    .map_err(|e| TestCaseError::fail(format!("{method} {uri}: {e}")))?;
                if s.is_server_error() {
                    return Err(TestCaseError::fail(format!(
                        "{method} {uri} {body:?}: {s} {j}"
                    )));
                }
            }
            Ok(())
        })
    });
    let consistent = rt.block_on(async {
        let pool = h.db.pool();
        let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM api_order_requests")
            .fetch_one(pool)
            .await?;
        let controls: i64 = sqlx::query_scalar("SELECT count(*) FROM control_events")
            .fetch_one(pool)
            .await?;
        let unpublished: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM api_order_requests WHERE published_at IS NULL) \
                  + (SELECT count(*) FROM control_events WHERE published_at IS NULL)",
        )
        .fetch_one(pool)
        .await?;
        let on_kafka = (
            h.count(Topic::Orders).await?,
            h.count(Topic::Controls).await?,
        );
        anyhow::Ok(((orders, controls), on_kafka, unpublished))
    });
    rt.block_on(h.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
    let (recorded, on_kafka, unpublished) = consistent?;
    assert_eq!(recorded, on_kafka, "Postgres records vs Kafka records");
    assert_eq!(unpublished, 0);
    assert!(
        recorded.0 > 0 && recorded.1 > 0,
        "{recorded:?}: some writes went through"
    );
    Ok(())
}
