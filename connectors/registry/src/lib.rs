//! A Confluent-compatible schema registry, persisted in Postgres.
//!
//! tradestream's topics carry Confluent-framed Avro (magic byte + schema id), so producers and
//! consumers need a registry. Production points `SCHEMA_REGISTRY_URL` at any Confluent-compatible
//! one; without it tradestream serves this one, which unmodified Confluent clients
//! (`schema_registry_converter`, `confluent-kafka`'s `SchemaRegistryClient`, ...) talk to.
//!
//! Scope: Avro schemas only (`schemaType` absent or `AVRO`), no schema references, and the
//! subject/schema/config/compatibility resources of Confluent's REST API with its error codes.
//! Ids, versions and levels live in the `schema_registry_*` tables, so they survive restarts
//! and several registry processes can share one database.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), tradestream_registry::RegistryError> {
//! use tradestream_registry::{RegistryState, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081")
//!     .await
//!     .map_err(tradestream_registry::RegistryError::Serve)?;
//! serve(listener, RegistryState::new(pool), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod api;
mod compatibility;
mod error;
mod http;
mod schema;
mod store;

use std::future::Future;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use compatibility::{CompatibilityLevel, PreviousVersion, check as check_compatibility};
pub use error::RegistryError;
pub use http::{CONTENT_TYPE_V1, VersionSelector};
pub use schema::{AVRO, ParsedSchema, SchemaRequest};
pub use store::{Registration, RegistryStore, SubjectVersion};

/// What the handlers share: the storage.
#[derive(Debug, Clone)]
pub struct RegistryState {
    store: RegistryStore,
}

impl RegistryState {
    /// A registry over `pool`, whose database must already be migrated with `sql/`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: RegistryStore::new(pool),
        }
    }

    /// The storage, for in-process use without HTTP.
    pub fn store(&self) -> &RegistryStore {
        &self.store
    }
}

/// The registry's HTTP API.
pub fn app(state: RegistryState) -> Router {
    Router::new()
        .route("/", get(|| async { http::SrJson(json!({})) }))
        // Registries in read-only or import mode say so here; this one is always read-write.
        .route(
            "/mode",
            get(|| async { http::SrJson(json!({"mode": "READWRITE"})) }),
        )
        .merge(api::subjects::router())
        .merge(api::schemas::router())
        .merge(api::config::router())
        .merge(api::compatibility::router())
        .fallback(|| async { RegistryError::RouteNotFound })
        .method_not_allowed_fallback(|| async { RegistryError::MethodNotAllowed })
        .with_state(state)
}

/// Serves the registry on `listener` until `shutdown` completes, then finishes in-flight
/// requests and returns.
pub async fn serve<F>(
    listener: TcpListener,
    state: RegistryState,
    shutdown: F,
) -> Result<(), RegistryError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let address = listener.local_addr().map_err(RegistryError::Serve)?;
    tracing::info!(%address, "schema registry listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RegistryError::Serve)?;
    tracing::info!(%address, "schema registry stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
