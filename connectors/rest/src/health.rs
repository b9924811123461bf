//! `/healthz` (the process answers), `/readyz` (the probe given to the state — broker,
//! Postgres, schema registry — or, without one, Postgres alone answers: what load balancers
//! and Kubernetes act on) and `/metrics` (Prometheus). None of them needs a token.

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Every dependency answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = serde_json::Value),
        (status = 503, description = "A dependency does not answer (listed in `failures`)", body = serde_json::Value),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mut failures = Vec::new();
    if let Some(check) = state.readiness() {
        // The process's probe already pings this pool's Postgres, with the broker and the
        // registry: asking Postgres again here would be the same round trip twice.
        for failure in check().await {
            // Name the component; the error text (addresses, driver messages) stays in the log.
            tracing::warn!(error = %failure, "readiness");
            let component = failure.split(':').next().unwrap_or("dependency").trim();
            failures.push(format!("{component}: not answering"));
        }
    } else {
        let db = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(state.pool()),
        )
        .await;
        match db {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: postgres");
                failures.push("postgres: not answering".into());
            }
            Err(_) => failures.push("postgres: no answer within 3 s".into()),
        }
    }
    let (status, body) = if failures.is_empty() {
        (StatusCode::OK, serde_json::json!({"status": "ready"}))
    } else {
        // Operators need to know which dependency is down; details stay in the log.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "unready", "failures": failures}),
        )
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics of the process.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics().map(|m| m.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
