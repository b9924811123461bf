//! Settings of the REST API. Every field is also an environment variable and a CLI flag (see
//! `tradestream api --help`); `validate()` reports every problem at once, each naming its
//! setting, so an operator fixes a bad deployment in one pass.

use serde::Deserialize;
use std::net::SocketAddr;

/// The API's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// Address the API listens on (`TRADESTREAM_API_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Shared secret for HS256 tokens (`TRADESTREAM_JWT_SECRET`, at least 32 bytes). Tokens
    /// minted by `tradestream token` are signed with it.
    #[serde(default)]
    pub jwt_secret: Option<String>,
    /// JWKS document URL for RS256 tokens, as Auth0 and other identity providers publish it
    /// (`TRADESTREAM_JWKS_URL`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Seconds a fetched JWKS is trusted before it is fetched again; an unknown `kid` forces a
    /// refetch at most once per this period too (`TRADESTREAM_JWKS_REFRESH_SECS`).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Required `iss` claim (`TRADESTREAM_JWT_ISSUER`).
    #[serde(default = "default_issuer")]
    pub jwt_issuer: String,
    /// Required `aud` claim (`TRADESTREAM_JWT_AUDIENCE`).
    #[serde(default = "default_audience")]
    pub jwt_audience: String,
    /// Requests per second each principal may make, on average; 0 turns the limit off
    /// (`TRADESTREAM_API_RATE_LIMIT`).
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_sec: u32,
    /// Requests a principal may make in a burst above the average (`TRADESTREAM_API_RATE_BURST`).
    #[serde(default = "default_rate_burst")]
    pub rate_limit_burst: u32,
    /// Largest request body accepted, in bytes; larger bodies get 413
    /// (`TRADESTREAM_API_BODY_LIMIT`).
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Seconds a request may take before it is answered 503 (`TRADESTREAM_API_TIMEOUT_SECS`).
    /// The event stream is exempt: it is meant to stay open.
    #[serde(default = "default_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Origins browsers may call the API from (`TRADESTREAM_API_CORS_ORIGINS`, comma-separated;
    /// `*` for any). Empty: no CORS headers, so browsers on other origins are refused.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Largest page a list endpoint returns (`TRADESTREAM_API_MAX_PAGE_SIZE`).
    #[serde(default = "default_max_page_size")]
    pub max_page_size: u32,
    /// Instruments orders may be placed for before any of their market data is stored
    /// (`TRADESTREAM_API_INSTRUMENTS`, comma-separated symbols). Besides these, the known
    /// instruments are those whose market data the sink has stored.
    #[serde(default)]
    pub instruments: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_jwks_refresh_secs() -> u64 {
    300
}
/// Default `iss` of tokens (also what `tradestream token` writes).
pub fn default_issuer() -> String {
    "tradestream".into()
}
/// Default `aud` of tokens (also what `tradestream token` writes).
pub fn default_audience() -> String {
    "tradestream-api".into()
}
fn default_rate_limit() -> u32 {
    50
}
fn default_rate_burst() -> u32 {
    100
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_max_page_size() -> u32 {
    500
}

/// Smallest HS256 secret accepted: RFC 7518 §3.2 wants a key at least as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            jwt_secret: None,
            jwks_url: None,
            jwks_refresh_secs: default_jwks_refresh_secs(),
            jwt_issuer: default_issuer(),
            jwt_audience: default_audience(),
            rate_limit_per_sec: default_rate_limit(),
            rate_limit_burst: default_rate_burst(),
            body_limit_bytes: default_body_limit(),
            request_timeout_secs: default_timeout_secs(),
            cors_origins: Vec::new(),
            instruments: Vec::new(),
            max_page_size: default_max_page_size(),
        }
    }
}

impl RestConfig {
    /// Every problem, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.jwt_secret.is_none() && self.jwks_url.is_none() {
            problems.push(
                "TRADESTREAM_JWT_SECRET / --jwt-secret or TRADESTREAM_JWKS_URL / --jwks-url: \
                 at least one is required (the API never runs unauthenticated)"
                    .to_string(),
            );
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_SECRET_BYTES
        {
            problems.push(format!(
                "TRADESTREAM_JWT_SECRET / --jwt-secret: must be at least {MIN_SECRET_BYTES} bytes, got {}",
                secret.len()
            ));
        }
        if let Some(url) = &self.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!(
                "TRADESTREAM_JWKS_URL / --jwks-url: must be an http(s) URL, got {url:?}"
            ));
        }
        if self.jwks_refresh_secs == 0 {
            problems
                .push("TRADESTREAM_JWKS_REFRESH_SECS / --jwks-refresh-secs: must be > 0".into());
        }
        if self.jwt_issuer.trim().is_empty() {
            problems.push("TRADESTREAM_JWT_ISSUER / --jwt-issuer: must not be empty".into());
        }
        if self.jwt_audience.trim().is_empty() {
            problems.push("TRADESTREAM_JWT_AUDIENCE / --jwt-audience: must not be empty".into());
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst < self.rate_limit_per_sec {
            problems.push(format!(
                "TRADESTREAM_API_RATE_BURST / --api-rate-burst: must be >= the rate limit ({}), got {}",
                self.rate_limit_per_sec, self.rate_limit_burst
            ));
        }
        if self.body_limit_bytes < 1024 {
            problems.push(format!(
                "TRADESTREAM_API_BODY_LIMIT / --api-body-limit: must be >= 1024 bytes, got {}",
                self.body_limit_bytes
            ));
        }
        if self.request_timeout_secs == 0 {
            problems.push("TRADESTREAM_API_TIMEOUT_SECS / --api-timeout-secs: must be > 0".into());
        }
        for origin in &self.cors_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && axum::http::HeaderValue::from_str(origin).is_ok()
                    && !origin.ends_with('/'));
            if !ok {
                problems.push(format!(
                    "TRADESTREAM_API_CORS_ORIGINS / --api-cors-origin: {origin:?} is not `*` or an origin like https://app.example.com"
                ));
            }
        }
        for symbol in &self.instruments {
            if let Err(e) = tradestream_schemas::Symbol::canonical(symbol) {
                problems.push(format!(
                    "TRADESTREAM_API_INSTRUMENTS / --api-instrument: {symbol:?}: {e}"
                ));
            }
        }
        if self.max_page_size == 0 || self.max_page_size > 10_000 {
            problems.push(format!(
                "TRADESTREAM_API_MAX_PAGE_SIZE / --api-max-page-size: must be within 1..=10000, got {}",
                self.max_page_size
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> RestConfig {
        RestConfig {
            jwt_secret: Some("x".repeat(32)),
            ..RestConfig::default()
        }
    }

    #[test]
    fn defaults_need_a_key_source() {
        let problems = RestConfig::default().validate().expect_err("no key");
        assert!(
            problems[0].contains("TRADESTREAM_JWT_SECRET"),
            "{problems:?}"
        );
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn every_problem_is_reported_and_named() {
        let config = RestConfig {
            jwt_secret: Some("short".into()),
            jwks_url: Some("ftp://x".into()),
            jwt_issuer: " ".into(),
            rate_limit_per_sec: 10,
            rate_limit_burst: 5,
            body_limit_bytes: 10,
            request_timeout_secs: 0,
            cors_origins: vec!["app.example.com".into()],
            max_page_size: 0,
            ..RestConfig::default()
        };
        let problems = config.validate().expect_err("bad");
        for name in [
            "TRADESTREAM_JWT_SECRET",
            "TRADESTREAM_JWKS_URL",
            "TRADESTREAM_JWT_ISSUER",
            "TRADESTREAM_API_RATE_BURST",
            "TRADESTREAM_API_BODY_LIMIT",
            "TRADESTREAM_API_TIMEOUT_SECS",
            "TRADESTREAM_API_CORS_ORIGINS",
            "TRADESTREAM_API_MAX_PAGE_SIZE",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(name)),
                "{name} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RestConfig>(r#"{"jwt_secert": "x"}"#).expect_err("typo");
        assert!(err.to_string().contains("jwt_secert"), "{err}");
    }
}
