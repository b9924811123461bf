//! Handler tests that need no database: input is validated before any query runs, and a dead
//! database must come out as a retryable error that reveals nothing about it. The behaviour
//! against real Postgres is covered by the workspace's `tests/registry.rs`.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

use super::*;

/// A pool that can never connect: port 1 on loopback refuses. The password and address must
/// never show up in a response.
fn unreachable_app() -> Router {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://registry:hunter2secret@127.0.0.1:1/registry")
        .expect("lazy pool builds without connecting");
    app(RegistryState::new(pool))
}

async fn call(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Option<String>, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request
        .body(Body::from(body.to_owned()))
        .expect("request builds");
    let response = unreachable_app()
        .oneshot(request)
        .await
        .expect("router is infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body reads");
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn call_json(method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, content_type, text) =
        call(method, uri, Some(CONTENT_TYPE_V1), &body.to_string()).await;
    assert_eq!(
        content_type.as_deref(),
        Some(CONTENT_TYPE_V1),
        "{uri}: {text}"
    );
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{uri}: {e}: {text}"));
    (status, value)
}

fn error_code(body: &Value) -> Option<i64> {
    body.get("error_code").and_then(Value::as_i64)
}

#[tokio::test]
async fn root_types_and_mode_answer_without_a_database() {
    let (status, body) = call_json(Method::GET, "/", Value::Null).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = call_json(Method::GET, "/schemas/types", Value::Null).await;
    assert_eq!((status, body), (StatusCode::OK, json!(["AVRO"])));
    let (status, body) = call_json(Method::GET, "/mode", Value::Null).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"mode": "READWRITE"}))
    );
}

#[tokio::test]
async fn invalid_avro_is_refused_with_42201() {
    let (status, body) = call_json(
        Method::POST,
        "/subjects/trades-value/versions",
        json!({"schema": r#"{"type":"record","name":"T","fields":[{"name":"x","type":"nope"}]}"#}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), Some(42201));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Invalid schema")),
        "{body}"
    );
}

#[tokio::test]
async fn other_schema_types_are_refused_with_a_clear_message() {
    for uri in [
        "/subjects/s/versions",
        "/subjects/s",
        "/compatibility/subjects/s/versions/latest",
    ] {
        let (status, body) = call_json(
            Method::POST,
            uri,
            json!({"schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(error_code(&body), Some(42201), "{uri}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("PROTOBUF") && message.contains("only AVRO"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let (status, _, text) = call(
        Method::POST,
        "/subjects/s/versions",
        Some("application/json"),
        "{not json",
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, Some(400))
    );

    let (status, body) = call_json(
        Method::POST,
        "/subjects/s/versions",
        json!({"schemas": "x"}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(422))
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("schema")),
        "{body}"
    );

    let (status, _, text) = call(
        Method::POST,
        "/subjects/s/versions",
        Some("text/plain"),
        r#"{"schema":"\"long\""}"#,
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(415))
    );
}

#[tokio::test]
async fn json_content_types_and_none_are_accepted_up_to_the_database() {
    // The body parses, so the request reaches the (unreachable) database: 503, not 4xx.
    for content_type in [
        Some(CONTENT_TYPE_V1),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/vnd.schemaregistry+json"),
        Some("application/octet-stream"),
        None,
    ] {
        let (status, _, text) = call(
            Method::POST,
            "/subjects/s/versions",
            content_type,
            r#"{"schema":"\"long\""}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{content_type:?}: {text}"
        );
    }
}

#[tokio::test]
async fn invalid_compatibility_levels_are_refused_with_42203() {
    for uri in ["/config", "/config/trades-value"] {
        let (status, body) =
            call_json(Method::PUT, uri, json!({"compatibility": "SIDEWAYS"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(error_code(&body), Some(42203));
        let (status, body) = call_json(Method::PUT, uri, json!({})).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(42203))
        );
    }
}

#[tokio::test]
async fn invalid_versions_and_ids_are_refused() {
    for uri in [
        "/subjects/s/versions/abc",
        "/subjects/s/versions/0",
        "/subjects/s/versions/abc/schema",
    ] {
        let (status, body) = call_json(Method::GET, uri, Value::Null).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_eq!(error_code(&body), Some(42202), "{uri}");
    }
    let (status, body) = call_json(
        Method::POST,
        "/compatibility/subjects/s/versions/first",
        json!({"schema": "\"long\""}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(42202))
    );

    let (status, body) = call_json(Method::GET, "/schemas/ids/abc", Value::Null).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(40403))
    );
    let (status, body) = call_json(Method::GET, "/schemas/ids/0", Value::Null).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(40403))
    );
}

#[tokio::test]
async fn bad_query_flags_unknown_routes_and_methods_get_json_errors() {
    let (status, body) = call_json(Method::GET, "/subjects?deleted=maybe", Value::Null).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, Some(400))
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("maybe")),
        "{body}"
    );

    let (status, body) = call_json(Method::GET, "/nope", Value::Null).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, Some(404))
    );
    let (status, body) = call_json(Method::PATCH, "/config", Value::Null).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, Some(405))
    );
}

#[tokio::test]
async fn control_characters_in_subjects_are_refused() {
    let (status, body) = call_json(
        Method::POST,
        "/subjects/bad%0Asubject/versions",
        json!({"schema": "\"long\""}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(42208))
    );
}

#[tokio::test]
async fn an_unreachable_database_is_retryable_and_reveals_nothing() {
    for (method, uri, body) in [
        (Method::GET, "/subjects", Value::Null),
        (Method::GET, "/schemas/ids/1", Value::Null),
        (Method::GET, "/config", Value::Null),
        (
            Method::POST,
            "/subjects/s/versions",
            json!({"schema": "\"long\""}),
        ),
    ] {
        let (status, body) = call_json(method, uri, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(error_code(&body), Some(50002), "{uri}");
        let text = body.to_string();
        for secret in ["hunter2secret", "127.0.0.1", "refused", "registry:"] {
            assert!(!text.contains(secret), "{uri} leaked {secret}: {text}");
        }
    }
}
