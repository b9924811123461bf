//! Test support: a fresh, migrated, uniquely named database per test, on the server at
//! `TRADESTREAM_TEST_DATABASE_URL` (else `DATABASE_URL`), or else on one private cluster per
//! test process.
//!
//! The private cluster lives in a static and statics are never dropped, so it is started with a
//! watchdog process that stops it and deletes its data once the test process has exited,
//! however it exits.

use crate::config::PostgresConfig;
use crate::embedded::{EmbeddedPostgres, StartOptions};
use crate::error::{PostgresError, Result};
use crate::{MIGRATOR, redact_url, url_with_database};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};
use std::os::unix::fs::PermissionsExt;
use std::str::FromStr;
use tokio::sync::OnceCell;

/// Environment variable naming the server tests create their databases on.
pub const ENV_TEST_DATABASE_URL: &str = "TRADESTREAM_TEST_DATABASE_URL";
/// Connections per test database pool: tests run in parallel on a 2-core machine.
const TEST_POOL_SIZE: u32 = 4;

/// The private cluster shared by all tests of this process.
static CLUSTER: OnceCell<EmbeddedPostgres> = OnceCell::const_new();

/// A migrated database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pool: PgPool,
    url: String,
    name: String,
    server_url: String,
}

impl TestDatabase {
    /// Creates `test_<random>` on the test server, migrates it and connects a small pool.
    pub async fn new() -> Result<Self> {
        let server_url = server_url().await?;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&server_url).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        // Best effort: the admin connection has done its job.
        let _ = admin.close().await;

        let url = url_with_database(&server_url, &name);
        let options = PgConnectOptions::from_str(&url)
            .map_err(|e| PostgresError::Config(vec![format!("{ENV_TEST_DATABASE_URL}: {e}")]))?;
        let pool = PgPoolOptions::new()
            .max_connections(TEST_POOL_SIZE)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            url,
            name,
            server_url,
        })
    }

    /// Pool to the test database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of the test database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the pool and drops the database (best effort: failures are logged).
    pub async fn cleanup(self) {
        self.pool.close().await;
        let result = async {
            let mut admin = admin_connection(&self.server_url).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await?;
            Ok::<_, PostgresError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(database = %self.name, error = %e, "could not drop the test database");
        }
    }
}

/// A connection to the maintenance database `postgres` of the test server.
async fn admin_connection(server_url: &str) -> Result<PgConnection> {
    let url = url_with_database(server_url, "postgres");
    let options = PgConnectOptions::from_str(&url).map_err(|e| {
        PostgresError::Config(vec![format!(
            "{ENV_TEST_DATABASE_URL}: {}: {e}",
            redact_url(&url)
        )])
    })?;
    Ok(PgConnection::connect_with(&options).await?)
}

async fn server_url() -> Result<String> {
    for var in [ENV_TEST_DATABASE_URL, crate::config::ENV_DATABASE_URL] {
        if let Ok(url) = std::env::var(var)
            && !url.trim().is_empty()
        {
            return Ok(url);
        }
    }
    let cluster = CLUSTER.get_or_try_init(start_test_cluster).await?;
    Ok(cluster.url())
}

async fn start_test_cluster() -> Result<EmbeddedPostgres> {
    tokio::task::spawn_blocking(|| {
        let dir = tempfile::Builder::new()
            .prefix("tradestream-test-pg-")
            .tempdir()
            .map_err(|e| {
                PostgresError::embedded("creating a temp dir for the test cluster", e.to_string())
            })?;
        // Ours from now on: the cluster (or its watchdog) deletes it.
        let dir = dir.keep();
        // The PostgreSQL user must be able to enter it when we are root; it is ours to chown.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            PostgresError::embedded("preparing the test cluster dir", e.to_string())
        })?;
        let config = PostgresConfig {
            data_dir: Some(dir),
            ephemeral: true,
            ..Default::default()
        };
        EmbeddedPostgres::start_with(&config, StartOptions { watchdog: true })
    })
    .await
    .map_err(|e| PostgresError::embedded("start", format!("start task failed: {e}")))?
}
