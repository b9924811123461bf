//! HTTP plumbing shared by the resource routers: Confluent's media type, extractors whose
//! failures come out as Confluent error bodies, and parsing of path and query values.
//!
//! axum's own extractors answer with plain-text bodies and insist on `application/json`;
//! Confluent clients expect JSON errors and send `application/vnd.schemaregistry.v1+json`
//! (or nothing at all, in hand-written curl calls), and Python's client spells booleans
//! `True`/`False` in query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::RegistryError;

/// The media type of every registry response.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// A JSON response with Confluent's media type.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SrJson<T>(pub(crate) T);

impl<T: Serialize> IntoResponse for SrJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => raw(body),
            Err(e) => RegistryError::Corrupt(format!("response serialization failed: {e}"))
                .into_response(),
        }
    }
}

/// A body that already is JSON text, sent with Confluent's media type.
pub(crate) fn raw(body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1));
    response
}

/// A JSON request body; accepts any `application/*json*` type, `application/octet-stream`
/// (Confluent accepts it too) and a missing content type.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = RegistryError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
            let value = content_type
                .to_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let essence = value.split(';').next().unwrap_or_default().trim();
            let accepted = essence.is_empty()
                || essence == "application/octet-stream"
                || (essence.starts_with("application/") && essence.ends_with("json"));
            if !accepted {
                return Err(RegistryError::UnsupportedMediaType(value));
            }
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| RegistryError::BodyUnreadable(e.body_text()))?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                RegistryError::UnprocessableBody(e.to_string())
            } else {
                RegistryError::MalformedBody(e.to_string())
            }
        })
    }
}

/// Query parameters; unknown ones are ignored, bad values give a JSON 400.
#[derive(Debug)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(params)| Params(params))
            .map_err(|e| RegistryError::InvalidQuery(e.body_text()))
    }
}

/// Path parameters (already percent-decoded, so `orders%2Fvalue` is the subject `orders/value`).
#[derive(Debug)]
pub(crate) struct PathParams<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = RegistryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|e| RegistryError::InvalidQuery(e.body_text()))
    }
}

/// A boolean query flag as clients send it: `true`/`false` in any case (Python sends `False`),
/// `1`/`0`, or present without a value (meaning true).
pub(crate) fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let raw = Option::<String>::deserialize(deserializer)?;
    match raw.as_deref().map(str::trim) {
        None => Ok(false),
        Some(v) if v.is_empty() || v == "1" || v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(serde::de::Error::custom(format!(
            "expected true or false, got '{v}'"
        ))),
    }
}

/// `?deleted=`: include soft-deleted subjects or versions.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeletedParam {
    #[serde(default, deserialize_with = "flag")]
    pub(crate) deleted: bool,
}

/// `?permanent=`: hard delete (after a soft delete).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PermanentParam {
    #[serde(default, deserialize_with = "flag")]
    pub(crate) permanent: bool,
}

/// Which version of a subject a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The highest version (live, unless deleted ones were asked for).
    Latest,
    /// A version number.
    Number(i32),
}

impl VersionSelector {
    /// Parses a path segment: `latest`, `-1` (Confluent's alias for latest) or `1..=2^31-1`.
    pub fn parse(raw: &str) -> Result<Self, RegistryError> {
        if raw.eq_ignore_ascii_case("latest") || raw == "-1" {
            return Ok(Self::Latest);
        }
        match raw.parse::<i32>() {
            Ok(n) if n > 0 => Ok(Self::Number(n)),
            _ => Err(RegistryError::InvalidVersion(raw.to_owned())),
        }
    }
}

impl std::fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Subjects are free-form (Confluent allows any name), but must be storable and printable.
pub(crate) fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().any(char::is_control) {
        return Err(RegistryError::InvalidSubject(
            subject.escape_debug().to_string(),
        ));
    }
    Ok(())
}

/// Schema ids on the wire are 4-byte signed integers.
pub(crate) fn parse_schema_id(raw: &str) -> Result<i32, RegistryError> {
    match raw.parse::<i64>() {
        Ok(id) => i32::try_from(id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or(RegistryError::SchemaNotFound(Some(id))),
        Err(_) => Err(RegistryError::SchemaNotFound(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Flags {
        #[serde(default, deserialize_with = "flag")]
        a: bool,
    }

    fn flags(query: &str) -> Result<bool, RegistryError> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().expect("uri");
        Query::<Flags>::try_from_uri(&uri)
            .map(|Query(f)| f.a)
            .map_err(|e| RegistryError::InvalidQuery(e.body_text()))
    }

    #[test]
    fn flags_accept_what_clients_send() {
        for (q, want) in [
            ("", false),
            ("a=true", true),
            ("a=True", true),
            ("a=FALSE", false),
            ("a=False", false),
            ("a=1", true),
            ("a=0", false),
            ("a=", true),
            ("other=x", false),
        ] {
            assert_eq!(flags(q).ok(), Some(want), "{q}");
        }
        assert!(
            matches!(flags("a=maybe"), Err(RegistryError::InvalidQuery(m)) if m.contains("maybe"))
        );
    }

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(
            VersionSelector::parse("latest").ok(),
            Some(VersionSelector::Latest)
        );
        assert_eq!(
            VersionSelector::parse("-1").ok(),
            Some(VersionSelector::Latest)
        );
        assert_eq!(
            VersionSelector::parse("3").ok(),
            Some(VersionSelector::Number(3))
        );
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert!(matches!(
                VersionSelector::parse(bad),
                Err(RegistryError::InvalidVersion(v)) if v == bad
            ));
        }
    }

    #[test]
    fn subjects_and_ids_are_validated() {
        assert!(validate_subject("orders-value").is_ok());
        assert!(validate_subject("a/b c").is_ok());
        assert!(validate_subject("").is_err());
        assert!(validate_subject("a\0b").is_err());
        assert_eq!(parse_schema_id("12").ok(), Some(12));
        assert!(matches!(
            parse_schema_id("0"),
            Err(RegistryError::SchemaNotFound(Some(0)))
        ));
        assert!(matches!(
            parse_schema_id("99999999999"),
            Err(RegistryError::SchemaNotFound(Some(99_999_999_999)))
        ));
        assert!(matches!(
            parse_schema_id("x"),
            Err(RegistryError::SchemaNotFound(None))
        ));
    }
}
