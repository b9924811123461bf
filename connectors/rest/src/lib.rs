//! tradestream's REST API (axum): manual orders through the router's risk checks, portfolio
//! and history queries, live events, the kill switch, health, and an OpenAPI document
//! generated from the handlers.
//!
//! [`app`] merges one router per resource and wraps them in the cross-cutting layers: body
//! size limit, request timeout, CORS and RFC 7807 problems for unknown routes and methods.
//! Authentication and the per-principal rate limit live in the [`auth::Principal`]
//! extractor, so every handler that takes a principal gets both.

pub mod auth;
pub mod config;
pub mod controls;
pub mod error;
pub mod health;
pub mod input;
pub mod limits;
pub mod model;
pub mod openapi;
pub mod orders;
pub mod outbox;
pub mod portfolio;
pub mod state;
pub mod stream;

pub use auth::{Authenticator, Claims, Principal, Scope, TokenRequest, mint_hs256};
pub use config::RestConfig;
pub use error::ApiError;
pub use state::{AppState, Publisher};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The whole API.
pub fn app(state: AppState) -> Router {
    let config = state.config().clone();
    let timeout = Duration::from_secs(config.request_timeout_secs);
    let mut router = Router::new()
        .merge(orders::router())
        .merge(portfolio::router())
        .merge(controls::router())
        .merge(stream::router())
        .merge(health::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { MethodNotAllowed.into_response() })
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| with_timeout(req, next, timeout),
        ))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(axum::middleware::from_fn(input::refuse_nul))
        .with_state(state);
    if let Some(cors) = cors(&config.cors_origins) {
        router = router.layer(cors);
    }
    router
}

/// 405 as a problem.
struct MethodNotAllowed;

impl IntoResponse for MethodNotAllowed {
    fn into_response(self) -> Response {
        let mut r = ApiError::Conflict(String::new()).into_response();
        let problem = serde_json::json!({
            "type": "urn:tradestream:problem:method-not-allowed",
            "title": "Method not allowed",
            "status": 405,
            "detail": "this route does not support the method",
        });
        *r.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
        *r.body_mut() = axum::body::Body::from(problem.to_string());
        r
    }
}

/// Answers 503 when a request takes longer than `timeout`; the event stream is exempt.
async fn with_timeout(req: Request, next: Next, timeout: Duration) -> Response {
    if req.uri().path() == "/v1/stream" {
        return next.run(req).await;
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!("request exceeded {timeout:?}")).into_response(),
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::LOCATION, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// How long open event streams may stay after shutdown starts: they never end on their own.
const STREAM_DRAIN: Duration = Duration::from_secs(3);

/// Serves `app(state)` on `listener` until `shutdown` resolves; in-flight requests finish,
/// open event streams are cut after a short drain. The outbox relay
/// ([`outbox::run_relay`]) runs beside it and stops with it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let mut relay_stop = rx.clone();
    let relay = tokio::spawn(outbox::run_relay(state.clone(), async move {
        let _ = relay_stop.wait_for(|s| *s).await;
    }));
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let served = tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r,
        _ = async move {
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(STREAM_DRAIN).await;
        } => Ok(()),
    };
    relay.abort();
    served
}

#[cfg(test)]
mod tests;
