//! The one error type of the API. Every failure a client can see is rendered as an RFC 7807
//! `application/problem+json` body whose `detail` is written for the client; database,
//! broker and registry errors are logged here, once, and reach the client only as a generic
//! "unavailable"/"internal" problem, so no internal text (SQL, hostnames, stack) leaks.

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tradestream_schemas::ErrorClass;

/// Media type of problem bodies (RFC 7807).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything that can go wrong in the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (syntax, query string, path): 400.
    #[error("{field}: {message}")]
    BadRequest {
        /// What was malformed (a field, `body`, `query`).
        field: String,
        /// Why.
        message: String,
    },
    /// Well-formed but semantically invalid input: 422.
    #[error("{field}: {message}")]
    Unprocessable {
        /// The offending field.
        field: String,
        /// Why.
        message: String,
    },
    /// No or invalid credentials: 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Valid credentials without the right scope or account: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such resource (or not visible to the caller): 404.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the resource's state: 409.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Body larger than the configured limit: 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Body is not JSON: 415.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Per-principal rate limit: 429 with `Retry-After`.
    #[error("rate limited; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be admitted.
        retry_after_secs: u64,
    },
    /// A dependency (Postgres, Kafka, registry, JWKS) failed: 503. The text is logged only.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or broken invariant: 500. The text is logged only.
    #[error("internal: {0}")]
    Internal(String),
    /// The API's configuration is invalid (startup only).
    #[error("invalid API configuration: {}", .0.join("; "))]
    Config(Vec<String>),
}

/// The RFC 7807 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI (`urn:tradestream:problem:<kind>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// Explanation for this occurrence, safe to show the client.
    pub detail: String,
    /// The offending input field, for 400 and 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// Shorthand for a 422 on `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for a 400 on `field`.
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Whether a caller should retry, the request is bad, or the process cannot go on.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::RateLimited { .. } | Self::Unavailable(_) => ErrorClass::Retryable,
            Self::Internal(_) | Self::Config(_) => ErrorClass::Fatal,
            _ => ErrorClass::DeadLetter,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::BadRequest { .. } => ("bad-request", "Malformed request"),
            Self::Unprocessable { .. } => ("validation", "Invalid request"),
            Self::Unauthorized(_) => ("unauthorized", "Authentication required"),
            Self::Forbidden(_) => ("forbidden", "Not allowed"),
            Self::NotFound(_) => ("not-found", "Not found"),
            Self::Conflict(_) => ("conflict", "Conflict"),
            Self::PayloadTooLarge => ("payload-too-large", "Request body too large"),
            Self::UnsupportedMediaType(_) => ("unsupported-media-type", "Unsupported media type"),
            Self::RateLimited { .. } => ("rate-limited", "Too many requests"),
            Self::Unavailable(_) => ("unavailable", "Service unavailable"),
            Self::Internal(_) | Self::Config(_) => ("internal", "Internal error"),
        }
    }

    /// The problem body a client sees.
    pub fn problem(&self) -> Problem {
        let (slug, title) = self.kind();
        let (detail, field) = match self {
            Self::BadRequest { field, message } | Self::Unprocessable { field, message } => {
                (format!("{field}: {message}"), Some(field.clone()))
            }
            Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::UnsupportedMediaType(m) => (m.clone(), None),
            Self::PayloadTooLarge => ("the request body exceeds the configured limit".into(), None),
            Self::RateLimited { retry_after_secs } => (
                format!("rate limit exceeded; retry after {retry_after_secs} s"),
                None,
            ),
            Self::Unavailable(_) => (
                "a dependency of the API is unavailable; retry later".into(),
                None,
            ),
            Self::Internal(_) | Self::Config(_) => (
                "the request could not be completed; the error was logged".into(),
                None,
            ),
        };
        Problem {
            problem_type: format!("urn:tradestream:problem:{slug}"),
            title: title.into(),
            status: self.status().as_u16(),
            detail,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Unavailable(m) => {
                tracing::warn!(error = %m, "request failed: dependency unavailable")
            }
            Self::Internal(m) => tracing::error!(error = %m, "request failed"),
            Self::Config(p) => {
                tracing::error!(error = %p.join("; "), "request failed: configuration")
            }
            _ => {}
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tradestream\""),
                );
            }
            Self::RateLimited { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<tradestream_postgres::PostgresError> for ApiError {
    fn from(e: tradestream_postgres::PostgresError) -> Self {
        match e.class() {
            ErrorClass::Retryable => Self::Unavailable(format!("postgres: {e}")),
            // A value the database refuses (a data exception, a broken constraint) came from
            // the request: the handlers check input first, so this is the net under them.
            // The client gets no SQL text; the log has it.
            ErrorClass::DeadLetter => {
                tracing::warn!(error = %e, "the database refused a value of a request");
                Self::invalid("request", "a value of this request cannot be stored")
            }
            ErrorClass::Fatal => Self::Internal(format!("postgres: {e}")),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tradestream_postgres::PostgresError::from_sqlx(e).into()
    }
}

impl From<tradestream_kafka::KafkaError> for ApiError {
    fn from(e: tradestream_kafka::KafkaError) -> Self {
        Self::Unavailable(format!("kafka: {e}"))
    }
}

impl From<tradestream_schemas::SchemaError> for ApiError {
    fn from(e: tradestream_schemas::SchemaError) -> Self {
        match e.class() {
            ErrorClass::Retryable => Self::Unavailable(format!("schema registry: {e}")),
            _ => Self::Internal(format!("encoding: {e}")),
        }
    }
}

/// axum's `Json` with its rejections rendered as problems: syntax errors are 400, type and
/// missing-field errors 422 naming the field, a wrong content type 415, an oversized body 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        // A NUL escape in a string: refused here, naming the field, before any other check
        // (PostgreSQL text cannot hold it). The bytes are read once and handed on.
        let (parts, body) = req.into_parts();
        let limited = axum::extract::Request::from_parts(parts.clone(), body);
        let bytes = axum::body::Bytes::from_request(limited, state)
            .await
            .map_err(|e| json_rejection(JsonRejection::BytesRejection(e)))?;
        if bytes.windows(6).any(|w| w == b"\\u0000")
            && let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(field) = crate::input::nul_in_json(&value)
        {
            return Err(ApiError::invalid(field, "must not contain NUL (\\u0000)"));
        }
        let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // axum's text is "Failed to deserialize ...: <path>: <serde message>".
            let text = e.body_text();
            let detail = text
                .split_once("target type: ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or(text);
            let field = detail
                .split_once(": ")
                .map(|(f, _)| f.to_string())
                .filter(|f| !f.contains(' '))
                .or_else(|| {
                    detail
                        .split('`')
                        .nth(1)
                        .filter(|_| detail.starts_with("missing field"))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "body".into());
            ApiError::invalid(field, detail)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("body", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::BytesRejection(e) => {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request("body", "the request body could not be read")
            }
        }
        other => ApiError::bad_request("body", other.body_text()),
    }
}

/// Query-string rejections as 400 problems naming the parameter.
pub fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let detail = text
        .split_once("query string: ")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or(text);
    let field = detail
        .split_once(": ")
        .map(|(f, _)| f.to_string())
        .filter(|f| !f.contains(' '))
        .unwrap_or_else(|| "query".into());
    ApiError::bad_request(field, detail)
}

/// Path rejections as 400 problems.
pub fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::bad_request("path", rejection.body_text())
}

/// axum's `Query` with rejections as problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(query_rejection)
    }
}

/// axum's `Path` with rejections as problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(path_rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_text_never_reaches_the_body() {
        let e = ApiError::Internal("relation \"secret_table\" does not exist at 10.0.0.7".into());
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret_table"));
        let e = ApiError::Unavailable("kafka: broker 10.0.0.7:9092 down".into());
        assert!(!e.problem().detail.contains("10.0.0.7"));
        assert_eq!(e.class(), ErrorClass::Retryable);
    }

    #[test]
    fn problems_name_the_field() {
        let p = ApiError::invalid("quantity", "must be > 0").problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("quantity"));
        assert_eq!(p.problem_type, "urn:tradestream:problem:validation");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let r = ApiError::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
