//! Postgres connector: a connection pool to `DATABASE_URL` or to a private cluster started from
//! the system's PostgreSQL binaries, the migrations in `sql/` (tables, stored procedures and the
//! triggers that keep positions and portfolio value exact), typed wrappers over those
//! procedures, and the mapping of database errors to domain errors.
//!
//! ```no_run
//! # async fn demo() -> tradestream_postgres::Result<()> {
//! use tradestream_postgres::{Database, PostgresConfig};
//! let config = PostgresConfig::from_env().map_err(tradestream_postgres::PostgresError::Config)?;
//! let db = Database::connect(&config).await?;
//! db.migrate().await?;
//! // ... tradestream_postgres::portfolio::insert_fill(db.pool(), &fill).await? ...
//! db.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod embedded;
pub mod error;
pub mod offsets;
pub mod portfolio;
#[doc(hidden)]
pub mod testing;

pub use config::PostgresConfig;
pub use embedded::EmbeddedPostgres;
pub use error::{PostgresError, Result};

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The migrations in `sql/` (ours and other crates'), embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../sql");

/// How long [`connect_pool`] keeps retrying a server that is not up yet.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// First pause between connection attempts; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a caller waits for a free pooled connection before a retryable error.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection pool, plus the private cluster it talks to when no `DATABASE_URL` was given.
pub struct Database {
    pool: PgPool,
    url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("Database")
            .field("pool", &self.pool)
            .field("url", &redact_url(&self.url))
            .field("embedded", &self.embedded)
            .finish()
    }
}

impl Database {
    /// Connects to `database_url`, or starts (or attaches to) the private cluster. Retries for
    /// a few seconds while the server is not accepting connections yet.
    pub async fn connect(config: &PostgresConfig) -> Result<Self> {
        config.validate().map_err(PostgresError::Config)?;
        let (url, embedded) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let cfg = config.clone();
                let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&cfg))
                    .await
                    .map_err(|e| {
                        PostgresError::embedded("start", format!("start task failed: {e}"))
                    })??;
                (pg.url(), Some(pg))
            }
        };
        let pool = connect_pool(&url, config.max_connections).await?;
        tracing::info!(url = %redact_url(&url), embedded = embedded.is_some(), "connected to PostgreSQL");
        Ok(Self {
            pool,
            url,
            embedded,
        })
    }

    /// The pool; cheap to clone.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The URL connected to (may hold a password: log [`redact_url`] of it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The private cluster, when this database is one.
    pub fn embedded(&self) -> Option<&EmbeddedPostgres> {
        self.embedded.as_ref()
    }

    /// Applies the migrations in `sql/` that have not run yet. Safe to call from several
    /// processes at once (sqlx serialises them with an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, then stops the private cluster (if we started it).
    pub async fn shutdown(mut self) -> Result<()> {
        self.pool.close().await;
        if let Some(pg) = self.embedded.take() {
            tokio::task::spawn_blocking(move || pg.stop())
                .await
                .map_err(|e| PostgresError::embedded("stop", format!("stop task failed: {e}")))??;
        }
        Ok(())
    }
}

/// A pool of `max_connections` to `url`, retrying with backoff for up to ten seconds while the
/// server refuses connections (starting up, restarting). Errors that retrying cannot fix (bad
/// password, missing database) return at once.
pub async fn connect_pool(url: &str, max_connections: u32) -> Result<PgPool> {
    connect_pool_within(url, max_connections, CONNECT_DEADLINE).await
}

async fn connect_pool_within(
    url: &str,
    max_connections: u32,
    deadline: Duration,
) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        PostgresError::Config(vec![format!(
            "DATABASE_URL (database_url): cannot be parsed: {e}"
        )])
    })?;
    // Probe with single connections first: the pool itself would retry refusals silently
    // until its acquire timeout and then report only "pool timed out".
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => {
                // Closing is best effort: the probe has done its job.
                let _ = conn.close().await;
                break;
            }
            Err(e) => {
                let err = PostgresError::from_sqlx(e);
                if err.class() != tradestream_schemas::ErrorClass::Retryable
                    || started.elapsed() + backoff > deadline
                {
                    tracing::error!(url = %redact_url(url), error = %err, "cannot connect to PostgreSQL");
                    return Err(err);
                }
                tracing::debug!(url = %redact_url(url), error = %err, ?backoff, "PostgreSQL not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &authority[..colon],
                &url[scheme_end + 3 + at..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// `url` pointing at database `database` instead (path replaced, query kept).
pub fn url_with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let base = scheme_end + 3;
    let rest = &url[base..];
    let authority_end = rest.find(['/', '?']).map(|i| base + i).unwrap_or(url.len());
    let query = url[authority_end..]
        .find('?')
        .map(|i| &url[authority_end + i..])
        .unwrap_or("");
    format!("{}/{}{}", &url[..authority_end], database, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=require"),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            url_with_database("postgres://u:p@h:1/db", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(url_with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            url_with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(
            url_with_database("postgres://h?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }

    #[test]
    fn migrations_include_ours() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(
            versions.contains(&1) && versions.contains(&2),
            "{versions:?}"
        );
    }

    #[tokio::test]
    async fn connect_gives_up_at_once_on_fatal_errors_and_retries_refusals() {
        // Nothing listens on port 1: retryable refusals until the deadline.
        let started = Instant::now();
        let err = connect_pool_within("postgres://u@127.0.0.1:1/db", 1, Duration::from_secs(2))
            .await
            .expect_err("refused");
        assert_eq!(
            err.class(),
            tradestream_schemas::ErrorClass::Retryable,
            "{err}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5),
            "{waited:?}"
        );

        let err = connect_pool("postgres://u@127.0.0.1:notaport/db", 1)
            .await
            .expect_err("bad url");
        assert_eq!(err.class(), tradestream_schemas::ErrorClass::Fatal);
    }

    #[tokio::test]
    async fn database_connect_starts_migrates_and_shuts_down_a_private_cluster() {
        let dir = tempfile::Builder::new()
            .prefix("tradestream-db-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let config = PostgresConfig {
            data_dir: Some(dir.path().join("pg")),
            ephemeral: true,
            max_connections: 2,
            ..Default::default()
        };
        let db = Database::connect(&config).await.expect("connect");
        assert!(db.embedded().is_some());
        db.migrate().await.expect("migrate");
        db.migrate().await.expect("migrate is idempotent");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
            .fetch_one(db.pool())
            .await
            .expect("query");
        assert_eq!(n, 0);
        let data_dir = db
            .embedded()
            .map(|e| e.data_dir().to_path_buf())
            .expect("embedded");
        db.shutdown().await.expect("shutdown");
        assert!(!data_dir.exists());
    }
}
