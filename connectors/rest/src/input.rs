//! Input the database cannot store, refused before it gets there: a NUL character (PostgreSQL
//! text cannot hold one) anywhere in the URI or in a JSON string, and times outside the years
//! 0001–9999 (RFC 3339's range; PostgreSQL's ends at 4713 BC). Without these checks such input
//! reached SQL and came back as a 500.

use crate::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Utc};

/// Middleware: 400 for a request whose path or query holds an encoded NUL (`%00`; a raw one
/// cannot cross HTTP).
pub async fn refuse_nul(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let has_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if has_nul(uri.path()) {
        return ApiError::bad_request("path", "must not contain NUL (%00)").into_response();
    }
    if uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("query", "must not contain NUL (%00)").into_response();
    }
    next.run(request).await
}

/// The path (`a.b[2]`) of the first JSON string, object key included, holding a NUL.
pub fn nul_in_json(value: &serde_json::Value) -> Option<String> {
    fn walk(v: &serde_json::Value, path: &str) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
                "body".into()
            } else {
                path.into()
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(k, item)| {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.contains('\0') {
                    Some(here)
                } else {
                    walk(item, &here)
                }
            }),
            _ => None,
        }
    }
    walk(value, "")
}

/// 422 unless `at` lies in the years 0001–9999.
pub fn check_time(field: &str, at: DateTime<Utc>) -> Result<(), ApiError> {
    if (1..=9999).contains(&at.year()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be within 0001-01-01T00:00:00Z..=9999-12-31T23:59:59Z, got {at}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_found_in_nested_strings_and_keys() {
        let v = serde_json::json!({"a": ["x", "y\u{0}"], "b": 1});
        assert_eq!(nul_in_json(&v).as_deref(), Some("a[1]"));
        let v = serde_json::json!({"k\u{0}": 1});
        assert_eq!(nul_in_json(&v).as_deref(), Some("k\u{0}"));
        assert_eq!(nul_in_json(&serde_json::json!({"a": "\\u0000"})), None);
    }

    #[test]
    fn times_outside_rfc_3339_years_are_refused() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
        assert!(check_time("from", t("2020-01-01T00:00:00Z")).is_ok());
        assert!(check_time("from", t("-5000-01-01T00:00:00Z")).is_err());
        assert!(check_time("to", t("+20000-01-01T00:00:00Z")).is_err());
    }
}
