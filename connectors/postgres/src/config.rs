//! Where the database is: an external server (`DATABASE_URL`) or a private cluster that the
//! process starts from the system's PostgreSQL binaries, so a laptop run needs no setup.
//!
//! Every field is also an environment variable (listed on the field) and a CLI flag of the
//! `tradestream` binary; [`PostgresConfig::apply_env`] applies the variables.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

/// Environment variable of [`PostgresConfig::database_url`].
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
/// Environment variable of [`PostgresConfig::data_dir`].
pub const ENV_DATA_DIR: &str = "TRADESTREAM_PG_DATA_DIR";
/// Environment variable of [`PostgresConfig::port`].
pub const ENV_PORT: &str = "TRADESTREAM_PG_PORT";
/// Environment variable of [`PostgresConfig::os_user`].
pub const ENV_OS_USER: &str = "TRADESTREAM_PG_OS_USER";
/// Environment variable of [`PostgresConfig::bin_dir`].
pub const ENV_BIN_DIR: &str = "TRADESTREAM_PG_BIN_DIR";
/// Environment variable of [`PostgresConfig::max_connections`].
pub const ENV_MAX_CONNECTIONS: &str = "TRADESTREAM_PG_MAX_CONNECTIONS";
/// Environment variable of [`PostgresConfig::ephemeral`].
pub const ENV_EPHEMERAL: &str = "TRADESTREAM_PG_EPHEMERAL";

/// Upper bound for the pool size: more connections than this only add contention.
const MAX_POOL_SIZE: u32 = 1000;

/// Postgres connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` of an existing server (env `DATABASE_URL`).
    /// Unset: a private cluster is started from the local PostgreSQL binaries.
    #[serde(default)]
    pub database_url: Option<String>,
    /// Data directory of the private cluster (env `TRADESTREAM_PG_DATA_DIR`); default
    /// `.tradestream/postgres` under the current directory. Ignored with `database_url`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// TCP port of the private cluster on 127.0.0.1 (env `TRADESTREAM_PG_PORT`); default: a free
    /// port picked at start.
    #[serde(default)]
    pub port: Option<u16>,
    /// OS user that runs the private cluster when this process is root, because PostgreSQL
    /// refuses to run as root (env `TRADESTREAM_PG_OS_USER`); default `postgres` if that user
    /// exists, else `nobody`. Ignored when not root.
    #[serde(default)]
    pub os_user: Option<String>,
    /// Directory holding `initdb`, `pg_ctl`, `postgres` (env `TRADESTREAM_PG_BIN_DIR`); default:
    /// `pg_config --bindir`, else the highest `/usr/lib/postgresql/*/bin`, else `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Connection pool size (env `TRADESTREAM_PG_MAX_CONNECTIONS`).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Delete the private cluster's data directory when it stops (env
    /// `TRADESTREAM_PG_EPHEMERAL`): for tests and throw-away demos.
    #[serde(default = "default_ephemeral")]
    pub ephemeral: bool,
}

fn default_max_connections() -> u32 {
    10
}

fn default_ephemeral() -> bool {
    false
}

/// Default data directory of the private cluster, relative to the current directory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(".tradestream").join("postgres")
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: None,
            port: None,
            os_user: None,
            bin_dir: None,
            max_connections: default_max_connections(),
            ephemeral: default_ephemeral(),
        }
    }
}

impl PostgresConfig {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self, Vec<String>> {
        let mut config = Self::default();
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Overrides fields from environment variables read through `lookup`; reports every
    /// unparsable variable at once. Empty variables count as unset.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Vec<String>> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut problems = Vec::new();
        if let Some(v) = get(ENV_DATABASE_URL) {
            self.database_url = Some(v);
        }
        if let Some(v) = get(ENV_DATA_DIR) {
            self.data_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_PORT) {
            match v.trim().parse::<u16>() {
                Ok(p) => self.port = Some(p),
                Err(_) => problems.push(format!(
                    "{ENV_PORT}: expected a port number 1-65535, got {v:?}"
                )),
            }
        }
        if let Some(v) = get(ENV_OS_USER) {
            self.os_user = Some(v.trim().to_string());
        }
        if let Some(v) = get(ENV_BIN_DIR) {
            self.bin_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get(ENV_MAX_CONNECTIONS) {
            match v.trim().parse::<u32>() {
                Ok(n) => self.max_connections = n,
                Err(_) => problems.push(format!(
                    "{ENV_MAX_CONNECTIONS}: expected a positive integer, got {v:?}"
                )),
            }
        }
        if let Some(v) = get(ENV_EPHEMERAL) {
            match parse_bool(&v) {
                Some(b) => self.ephemeral = b,
                None => problems.push(format!(
                    "{ENV_EPHEMERAL}: expected true or false, got {v:?}"
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Checks every setting and reports all problems at once, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(url) = &self.database_url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(format!(
                    "{ENV_DATABASE_URL} (database_url): must start with postgres:// or postgresql://, got {:?}",
                    crate::redact_url(url)
                ));
            } else if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(url) {
                problems.push(format!(
                    "{ENV_DATABASE_URL} (database_url): cannot be parsed: {e}"
                ));
            }
        }
        if let Some(dir) = &self.data_dir {
            if dir.as_os_str().is_empty() {
                problems.push(format!(
                    "{ENV_DATA_DIR} (data_dir): must not be empty when set"
                ));
            } else if dir.exists() && !dir.is_dir() {
                problems.push(format!(
                    "{ENV_DATA_DIR} (data_dir): {} exists and is not a directory",
                    dir.display()
                ));
            }
        }
        if self.port == Some(0) {
            problems.push(format!(
                "{ENV_PORT} (port): must be 1-65535; leave it unset to pick a free port"
            ));
        }
        if let Some(user) = &self.os_user {
            if user.trim().is_empty() || user.contains(char::is_whitespace) {
                problems.push(format!(
                    "{ENV_OS_USER} (os_user): not a user name: {user:?}"
                ));
            } else if user == "root" {
                problems.push(format!(
                    "{ENV_OS_USER} (os_user): PostgreSQL refuses to run as root; name an unprivileged user"
                ));
            }
        }
        if let Some(dir) = &self.bin_dir
            && !dir.is_dir()
        {
            problems.push(format!(
                "{ENV_BIN_DIR} (bin_dir): {} is not a directory (install Debian package postgresql or point it at the directory holding initdb and pg_ctl)",
                dir.display()
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_POOL_SIZE {
            problems.push(format!(
                "{ENV_MAX_CONNECTIONS} (max_connections): must be 1-{MAX_POOL_SIZE}, got {}",
                self.max_connections
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The data directory of the private cluster, default applied (maybe relative).
    pub fn effective_data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_valid() {
        let c = PostgresConfig::default();
        assert_eq!(c.max_connections, 10);
        assert!(!c.ephemeral);
        assert_eq!(
            c.effective_data_dir(),
            PathBuf::from(".tradestream/postgres")
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_fields() {
        let c: PostgresConfig =
            serde_json::from_str(r#"{"database_url":"postgres://u@h/db","port":5433}"#)
                .expect("valid config");
        assert_eq!(c.database_url.as_deref(), Some("postgres://u@h/db"));
        assert_eq!(c.port, Some(5433));
        assert_eq!(c.max_connections, 10);
        let err = serde_json::from_str::<PostgresConfig>(r#"{"databse_url":"x"}"#)
            .expect_err("typo must be refused");
        assert!(err.to_string().contains("databse_url"), "{err}");
    }

    #[test]
    fn validate_reports_every_bad_setting() {
        let c = PostgresConfig {
            database_url: Some("mysql://x".into()),
            data_dir: Some(PathBuf::new()),
            port: Some(0),
            os_user: Some("root".into()),
            bin_dir: Some(PathBuf::from("/definitely/not/here")),
            max_connections: 0,
            ephemeral: true,
        };
        let problems = c.validate().expect_err("invalid");
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for (needle, p) in [
            "database_url",
            "data_dir",
            "(port)",
            "os_user",
            "bin_dir",
            "max_connections",
        ]
        .iter()
        .zip(&problems)
        {
            assert!(p.contains(needle), "{p:?} should name {needle}");
        }
    }

    #[test]
    fn validate_refuses_an_unparsable_url_and_redacts_passwords() {
        let c = PostgresConfig {
            database_url: Some("postgres://u:pw@h:notaport/db".into()),
            ..Default::default()
        };
        let problems = c.validate().expect_err("invalid");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("DATABASE_URL"), "{problems:?}");

        let c = PostgresConfig {
            database_url: Some("http://u:secret@h/db".into()),
            ..Default::default()
        };
        let problems = c.validate().expect_err("invalid");
        assert!(!problems[0].contains("secret"), "{problems:?}");
    }

    #[test]
    fn env_overrides_and_reports_all_parse_errors() {
        let env: HashMap<&str, &str> = [
            (ENV_DATABASE_URL, "postgres://a@b/c"),
            (ENV_DATA_DIR, "/tmp/x"),
            (ENV_OS_USER, "pguser"),
            (ENV_BIN_DIR, ""),
        ]
        .into();
        let mut c = PostgresConfig::default();
        c.apply_env(|k| env.get(k).map(|v| v.to_string()))
            .expect("valid env");
        assert_eq!(c.database_url.as_deref(), Some("postgres://a@b/c"));
        assert_eq!(c.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(c.os_user.as_deref(), Some("pguser"));
        assert_eq!(c.bin_dir, None, "empty variables count as unset");

        let env: HashMap<&str, &str> = [
            (ENV_PORT, "99999"),
            (ENV_MAX_CONNECTIONS, "-1"),
            (ENV_EPHEMERAL, "maybe"),
        ]
        .into();
        let problems = PostgresConfig::default()
            .apply_env(|k| env.get(k).map(|v| v.to_string()))
            .expect_err("bad env");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains(ENV_PORT));
        assert!(problems[1].contains(ENV_MAX_CONNECTIONS));
        assert!(problems[2].contains(ENV_EPHEMERAL));

        let env: HashMap<&str, &str> = [(ENV_EPHEMERAL, "yes"), (ENV_PORT, "6000")].into();
        let mut c = PostgresConfig::default();
        c.apply_env(|k| env.get(k).map(|v| v.to_string()))
            .expect("valid env");
        assert!(c.ephemeral);
        assert_eq!(c.port, Some(6000));
    }
}
