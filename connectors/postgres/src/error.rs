//! The Postgres connector's one error type, classified so a runner can decide uniformly whether
//! to retry, dead-letter the record or stop.
//!
//! Database errors are mapped in one place, [`PostgresError::from_sqlx`]: by the custom
//! SQLSTATEs our triggers and functions raise (class `TS`, see `sql/0002_books.sql`) and by
//! the `<table>_<column>_<rule>` names of our constraints.

use sqlx::postgres::PgDatabaseError;
use tradestream_schemas::ErrorClass;

/// SQLSTATE raised by `validate_order` for a malformed order (COLUMN names the field).
pub const SQLSTATE_INVALID_ORDER: &str = "TS001";
/// SQLSTATE raised for an order, fill or funds check naming an unknown account (DETAIL is the id).
pub const SQLSTATE_UNKNOWN_ACCOUNT: &str = "TS002";
/// SQLSTATE raised by our functions for a bad argument (COLUMN names the parameter).
pub const SQLSTATE_INVALID_ARGUMENT: &str = "TS003";
/// SQLSTATE raised by `require_available_funds` (DETAIL is the account id).
pub const SQLSTATE_INSUFFICIENT_FUNDS: &str = "TS004";

/// Suffixes of our constraint names (`<table>_<column>_<rule>`), longest first.
const RULE_SUFFIXES: &[&str] = &[
    "_non_negative",
    "_not_empty",
    "_consistent",
    "_positive",
    "_required",
    "_finite",
    "_range",
    "_valid",
    "_fkey",
    "_pkey",
    "_key",
];

/// Everything that can go wrong in the Postgres connector.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// Invalid settings; each line names its setting.
    #[error("invalid Postgres configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The PostgreSQL server binaries needed for the private cluster are missing.
    #[error("PostgreSQL binaries not found: {0}")]
    BinariesNotFound(String),
    /// Starting or stopping the private cluster failed.
    #[error("private PostgreSQL cluster: {action} failed: {message}")]
    Embedded {
        /// What was being done (`initdb`, `pg_ctl start`, ...).
        action: String,
        /// What went wrong, with the tool's output.
        message: String,
    },
    /// The server could not be reached or the connection broke (I/O, TLS, pool timeout).
    #[error("database connection: {0}")]
    Connection(#[source] sqlx::Error),
    /// Applying the migrations in `sql/` failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// An order broke a rule (`validate_order` or an `orders_*` constraint).
    #[error("invalid order: {reason}")]
    InvalidOrder {
        /// The offending column, when known.
        field: Option<String>,
        /// The database's explanation.
        reason: String,
    },
    /// A record names an account that does not exist.
    #[error("unknown account {account:?}")]
    UnknownAccount {
        /// The account id as given.
        account: String,
    },
    /// The account cannot afford the order (`require_available_funds`).
    #[error("{reason}")]
    InsufficientFunds {
        /// The account id.
        account: String,
        /// The database's explanation.
        reason: String,
    },
    /// A unique constraint refused a second row with the same key.
    #[error("duplicate ({constraint}): {message}")]
    Duplicate {
        /// Constraint or unique index name.
        constraint: String,
        /// The database's explanation.
        message: String,
    },
    /// A record broke a constraint or data rule of its table.
    #[error("invalid data{}: {message}", fmt_where(.table, .field, .constraint))]
    InvalidData {
        /// Table, when known.
        table: Option<String>,
        /// Column, when known.
        field: Option<String>,
        /// Constraint name, when known.
        constraint: Option<String>,
        /// The database's explanation.
        message: String,
    },
    /// One of our SQL functions refused an argument (SQLSTATE TS003).
    #[error("invalid argument{}: {reason}", .argument.as_deref().map(|a| format!(" {a}")).unwrap_or_default())]
    InvalidArgument {
        /// The parameter name, when known.
        argument: Option<String>,
        /// The database's explanation.
        reason: String,
    },
    /// A serialization failure or deadlock: retrying the transaction will succeed.
    #[error("transaction conflict ({code}): {message}")]
    Conflict {
        /// SQLSTATE (40001 or 40P01).
        code: String,
        /// The database's explanation.
        message: String,
    },
    /// Any other error reported by the server.
    #[error("database error {code}: {message}")]
    Database {
        /// SQLSTATE.
        code: String,
        /// The database's explanation.
        message: String,
    },
    /// A client-side failure (decoding a row, a driver bug): a broken invariant.
    #[error("database client: {0}")]
    Client(#[source] sqlx::Error),
}

fn fmt_where(
    table: &Option<String>,
    field: &Option<String>,
    constraint: &Option<String>,
) -> String {
    let mut s = String::new();
    match (table, field) {
        (Some(t), Some(f)) => s.push_str(&format!(" in {t}.{f}")),
        (Some(t), None) => s.push_str(&format!(" in {t}")),
        (None, Some(f)) => s.push_str(&format!(" in {f}")),
        (None, None) => {}
    }
    if let Some(c) = constraint {
        s.push_str(&format!(" ({c})"));
    }
    s
}

/// Result alias of this crate.
pub type Result<T, E = PostgresError> = std::result::Result<T, E>;

impl PostgresError {
    /// How a runner should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Connection(_) | Self::Conflict { .. } => ErrorClass::Retryable,
            Self::InvalidOrder { .. }
            | Self::UnknownAccount { .. }
            | Self::InsufficientFunds { .. }
            | Self::Duplicate { .. }
            | Self::InvalidData { .. }
            | Self::InvalidArgument { .. } => ErrorClass::DeadLetter,
            Self::Database { code, .. } => class_of_sqlstate(code),
            Self::Config(_)
            | Self::BinariesNotFound(_)
            | Self::Embedded { .. }
            | Self::Migration(_)
            | Self::Client(_) => ErrorClass::Fatal,
        }
    }

    /// The SQLSTATE behind this error, when the server raised it.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Conflict { code, .. } | Self::Database { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn embedded(action: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Embedded {
            action: action.into(),
            message: message.into(),
        }
    }

    /// Maps a driver error to a domain error. The single place where SQLSTATEs and constraint
    /// names become Rust variants.
    pub fn from_sqlx(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(db) => {
                let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() else {
                    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                    return Self::Database {
                        code,
                        message: db.message().to_string(),
                    };
                };
                from_pg(pg)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Connection(err),
            sqlx::Error::Migrate(m) => Self::Migration(*m),
            other => Self::Client(other),
        }
    }
}

impl From<sqlx::Error> for PostgresError {
    fn from(err: sqlx::Error) -> Self {
        Self::from_sqlx(err)
    }
}

fn from_pg(pg: &PgDatabaseError) -> PostgresError {
    let code = pg.code();
    let message = pg.message().to_string();
    let table = pg.table().map(str::to_string);
    let constraint = pg.constraint().map(str::to_string);
    let field = pg.column().map(str::to_string).or_else(|| {
        constraint
            .as_deref()
            .and_then(|c| column_of_constraint(c, table.as_deref()))
    });
    match code {
        SQLSTATE_INVALID_ORDER => PostgresError::InvalidOrder {
            field,
            reason: message,
        },
        SQLSTATE_UNKNOWN_ACCOUNT => PostgresError::UnknownAccount {
            account: pg.detail().unwrap_or_default().to_string(),
        },
        SQLSTATE_INVALID_ARGUMENT => PostgresError::InvalidArgument {
            argument: field,
            reason: message,
        },
        SQLSTATE_INSUFFICIENT_FUNDS => PostgresError::InsufficientFunds {
            account: pg.detail().unwrap_or_default().to_string(),
            reason: message,
        },
        // unique_violation
        "23505" => PostgresError::Duplicate {
            constraint: constraint.unwrap_or_default(),
            message: detail_or(pg, message),
        },
        // foreign_key_violation: a missing account is the one a record can cause.
        "23503" => match (constraint.as_deref(), pg.detail()) {
            (Some(c), Some(detail))
                if c.ends_with("_account_id_fkey") && detail.contains("is not present") =>
            {
                PostgresError::UnknownAccount {
                    account: key_value(detail).unwrap_or_default(),
                }
            }
            _ => PostgresError::InvalidData {
                table,
                field,
                constraint,
                message: detail_or(pg, message),
            },
        },
        // check_violation on orders is an invalid order; elsewhere, invalid data.
        "23514" if table.as_deref() == Some("orders") => PostgresError::InvalidOrder {
            field,
            reason: message,
        },
        "40001" | "40P01" => PostgresError::Conflict {
            code: code.to_string(),
            message,
        },
        // Other integrity violations (not null, check, exclusion) and data exceptions (bad
        // number, value out of range, division by zero...) are caused by the record's content.
        c if c.starts_with("23") || c.starts_with("22") => PostgresError::InvalidData {
            table,
            field,
            constraint,
            message,
        },
        c => PostgresError::Database {
            code: c.to_string(),
            message,
        },
    }
}

fn detail_or(pg: &PgDatabaseError, message: String) -> String {
    match pg.detail() {
        Some(d) => format!("{message}: {d}"),
        None => message,
    }
}

/// The column a constraint named `<table>_<column>_<rule>` is about.
fn column_of_constraint(constraint: &str, table: Option<&str>) -> Option<String> {
    let rest = match table {
        Some(t) => constraint.strip_prefix(t)?.strip_prefix('_')?,
        None => constraint,
    };
    let column = RULE_SUFFIXES.iter().find_map(|s| rest.strip_suffix(s))?;
    (!column.is_empty()).then(|| column.to_string())
}

/// The value in a foreign-key detail: `Key (account_id)=(acct-1) is not present in table ...`.
fn key_value(detail: &str) -> Option<String> {
    let start = detail.find(")=(")? + 3;
    let end = detail.rfind(") is ")?;
    (end >= start).then(|| detail[start..end].to_string())
}

/// Class of a SQLSTATE the mapping did not turn into a domain variant.
fn class_of_sqlstate(code: &str) -> ErrorClass {
    match code.get(..2) {
        // connection exception, insufficient resources, operator intervention (shutdown,
        // cannot connect now), system error (I/O)
        Some("08" | "53" | "57" | "58") => ErrorClass::Retryable,
        Some("40") => ErrorClass::Retryable,
        Some("22" | "23") => ErrorClass::DeadLetter,
        _ => ErrorClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    //! The mapping against real errors raised by a real server lives in
    //! `tests/errors.rs`; these cover the pure helpers and the classification table.
    use super::*;

    #[test]
    fn constraint_names_yield_columns() {
        assert_eq!(
            column_of_constraint("orders_quantity_positive", Some("orders")).as_deref(),
            Some("quantity")
        );
        assert_eq!(
            column_of_constraint("fills_commission_non_negative", Some("fills")).as_deref(),
            Some("commission")
        );
        assert_eq!(
            column_of_constraint("orders_limit_price_required", Some("orders")).as_deref(),
            Some("limit_price")
        );
        assert_eq!(
            column_of_constraint("fills_account_id_fkey", Some("fills")).as_deref(),
            Some("account_id")
        );
        assert_eq!(column_of_constraint("orders_pkey", Some("orders")), None);
        assert_eq!(
            column_of_constraint("other_table_x_valid", Some("orders")),
            None
        );
        assert_eq!(column_of_constraint("weird", None), None);
    }

    #[test]
    fn foreign_key_detail_yields_the_value() {
        assert_eq!(
            key_value(r#"Key (account_id)=(acct-1) is not present in table "accounts"."#)
                .as_deref(),
            Some("acct-1")
        );
        assert_eq!(key_value("no key here"), None);
    }

    #[test]
    fn classes() {
        assert_eq!(
            PostgresError::Config(vec!["x".into()]).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            PostgresError::BinariesNotFound("x".into()).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            PostgresError::Connection(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            PostgresError::from_sqlx(sqlx::Error::PoolTimedOut).class(),
            ErrorClass::Retryable
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            PostgresError::from_sqlx(sqlx::Error::Io(io)).class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            PostgresError::from_sqlx(sqlx::Error::RowNotFound).class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            PostgresError::Conflict {
                code: "40001".into(),
                message: String::new()
            }
            .class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            PostgresError::UnknownAccount {
                account: "a".into()
            }
            .class(),
            ErrorClass::DeadLetter
        );
        for (code, class) in [
            ("08006", ErrorClass::Retryable),
            ("57P01", ErrorClass::Retryable),
            ("53300", ErrorClass::Retryable),
            ("22003", ErrorClass::DeadLetter),
            ("42P01", ErrorClass::Fatal),
            ("28P01", ErrorClass::Fatal),
        ] {
            let e = PostgresError::Database {
                code: code.into(),
                message: String::new(),
            };
            assert_eq!(e.class(), class, "{code}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        let e = PostgresError::Config(vec!["A: bad".into(), "B: worse".into()]);
        assert_eq!(
            e.to_string(),
            "invalid Postgres configuration:\n  A: bad\n  B: worse"
        );
        let e = PostgresError::InvalidData {
            table: Some("fills".into()),
            field: Some("price".into()),
            constraint: Some("fills_price_positive".into()),
            message: "violates".into(),
        };
        assert_eq!(
            e.to_string(),
            "invalid data in fills.price (fills_price_positive): violates"
        );
    }
}
