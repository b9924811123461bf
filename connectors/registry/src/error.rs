//! The registry's one error type and its Confluent wire form.
//!
//! Clients (schema_registry_converter, confluent-kafka, Kafka Connect) branch on the numeric
//! `error_code` in `{"error_code": N, "message": "..."}`, so the codes follow Confluent's
//! registry exactly. Datastore failures are logged here, where they become a response, and the
//! client sees only a generic message: SQL and connection details never leave the server.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use tradestream_schemas::ErrorClass;

/// Everything that can go wrong in the schema registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The subject has no (live) versions.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// The subject exists but not this version.
    #[error("Version {version} not found.")]
    VersionNotFound {
        /// The subject that was asked for.
        subject: String,
        /// The version that was asked for, as given.
        version: String,
    },
    /// No schema with this id (or no such schema under the subject, for lookups).
    #[error("{}", match .0 { Some(id) => format!("Schema {id} not found"), None => "Schema not found".to_owned() })]
    SchemaNotFound(Option<i64>),
    /// A soft delete of a subject whose versions are all soft-deleted already.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// A permanent delete of a subject that still has live versions.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// A soft delete of a version that is soft-deleted already.
    #[error(
        "Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently"
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: i32,
    },
    /// A permanent delete of a live version.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: i32,
    },
    /// `GET /config/{subject}` for a subject without its own level.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    /// The schema breaks the subject's compatibility level.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
        .messages.join("; ")
    )]
    Incompatible {
        /// The subject registered to.
        subject: String,
        /// One reason per failed check.
        messages: Vec<String>,
    },
    /// The schema does not parse or uses a feature this registry does not serve.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// `schemaType` other than AVRO.
    #[error(
        "Invalid schema type '{0}': this registry supports only AVRO schemas (leave schemaType out or set it to \"AVRO\")"
    )]
    UnsupportedSchemaType(String),
    /// A version path segment that is neither a positive number nor `latest`.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    /// An unknown compatibility level name.
    #[error(
        "Invalid compatibility level '{0}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel(String),
    /// A subject name the registry cannot store (empty or with control characters).
    #[error(
        "Invalid subject '{0}': subject names must be non-empty and free of control characters"
    )]
    InvalidSubject(String),
    /// The request body is not JSON.
    #[error("Malformed JSON body: {0}")]
    MalformedBody(String),
    /// The request body is JSON of the wrong shape.
    #[error("Unprocessable request body: {0}")]
    UnprocessableBody(String),
    /// A query parameter that does not parse.
    #[error("Invalid query parameter: {0}")]
    InvalidQuery(String),
    /// A body that is not declared as JSON.
    #[error(
        "Unsupported content type '{0}': send application/vnd.schemaregistry.v1+json or application/json"
    )]
    UnsupportedMediaType(String),
    /// The request body could not be read (too large, connection cut).
    #[error("Request body could not be read: {0}")]
    BodyUnreadable(String),
    /// No route matches the path.
    #[error("HTTP 404 Not Found")]
    RouteNotFound,
    /// The path exists but not for this method.
    #[error("HTTP 405 Method Not Allowed")]
    MethodNotAllowed,
    /// A database failure; details are logged, never sent.
    #[error("Error in the backend datastore")]
    Datastore(#[from] sqlx::Error),
    /// A row in the database breaks an invariant (e.g. a stored schema that no longer parses).
    #[error("Error in the backend datastore: {0}")]
    Corrupt(String),
    /// The HTTP server failed (bind, accept).
    #[error("schema registry server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Confluent's error body.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

impl RegistryError {
    /// HTTP status and Confluent `error_code`.
    pub fn codes(&self) -> (StatusCode, u32) {
        match self {
            Self::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            Self::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            Self::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            Self::SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            Self::SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            Self::VersionSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40406),
            Self::VersionNotSoftDeleted { .. } => (StatusCode::NOT_FOUND, 40407),
            Self::SubjectConfigNotFound(_) => (StatusCode::NOT_FOUND, 40408),
            Self::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            Self::InvalidSchema(_) | Self::UnsupportedSchemaType(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, 42201)
            }
            Self::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            Self::InvalidCompatibilityLevel(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            Self::InvalidSubject(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            Self::MalformedBody(_) | Self::InvalidQuery(_) | Self::BodyUnreadable(_) => {
                (StatusCode::BAD_REQUEST, 400)
            }
            Self::UnprocessableBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, 422),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, 415),
            Self::RouteNotFound => (StatusCode::NOT_FOUND, 404),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, 405),
            // 503 tells clients (schema_registry_converter among them) to retry.
            Self::Datastore(e) if is_transient(e) => (StatusCode::SERVICE_UNAVAILABLE, 50002),
            Self::Datastore(_) | Self::Corrupt(_) | Self::Serve(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, 50001)
            }
        }
    }

    /// How a caller of the registry's Rust API should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Datastore(e) if is_transient(e) => ErrorClass::Retryable,
            Self::Datastore(_) | Self::Corrupt(_) | Self::Serve(_) => ErrorClass::Fatal,
            _ => ErrorClass::DeadLetter,
        }
    }

    /// The message sent to the client: the error itself for client errors, a generic line for
    /// server-side failures.
    fn public_message(&self) -> String {
        match self {
            Self::Datastore(e) if is_transient(e) => {
                "The backend datastore is temporarily unavailable; retry later".to_owned()
            }
            Self::Datastore(_) | Self::Corrupt(_) | Self::Serve(_) => {
                "Error in the backend datastore".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// Failures that go away by themselves: pool exhaustion, lost connections, serialization
/// conflicts and deadlocks between concurrent transactions.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, error_code) = self.codes();
        if status.is_server_error() {
            tracing::error!(error = %DisplayChain(&self), error_code, "schema registry request failed");
        }
        let body = ErrorBody {
            error_code,
            message: self.public_message(),
        };
        (status, super::http::SrJson(body)).into_response()
    }
}

/// Renders an error with its sources, for logs.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_confluent() {
        assert_eq!(RegistryError::SubjectNotFound("s".into()).codes().1, 40401);
        assert_eq!(
            RegistryError::SubjectNotFound("s".into()).to_string(),
            "Subject 's' not found."
        );
        assert_eq!(
            RegistryError::SchemaNotFound(Some(7)).to_string(),
            "Schema 7 not found"
        );
        assert_eq!(
            RegistryError::SchemaNotFound(None).to_string(),
            "Schema not found"
        );
        let incompatible = RegistryError::Incompatible {
            subject: "t-value".into(),
            messages: vec!["a".into(), "b".into()],
        };
        assert_eq!(incompatible.codes(), (StatusCode::CONFLICT, 409));
        assert_eq!(
            incompatible.to_string(),
            "Schema being registered is incompatible with an earlier schema for subject \"t-value\", details: [a; b]"
        );
        assert_eq!(
            RegistryError::UnsupportedSchemaType("JSON".into()).codes(),
            (StatusCode::UNPROCESSABLE_ENTITY, 42201)
        );
    }

    #[test]
    fn datastore_errors_hide_details_and_classify() {
        let transient = RegistryError::Datastore(sqlx::Error::PoolTimedOut);
        assert_eq!(transient.codes(), (StatusCode::SERVICE_UNAVAILABLE, 50002));
        assert_eq!(transient.class(), ErrorClass::Retryable);
        let fatal = RegistryError::Datastore(sqlx::Error::Protocol("secret detail".into()));
        assert_eq!(fatal.codes(), (StatusCode::INTERNAL_SERVER_ERROR, 50001));
        assert_eq!(fatal.class(), ErrorClass::Fatal);
        assert!(!fatal.public_message().contains("secret"));
        assert_eq!(
            RegistryError::InvalidSchema("x".into()).class(),
            ErrorClass::DeadLetter
        );
    }
}
