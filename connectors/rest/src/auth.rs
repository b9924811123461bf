//! Bearer-token security: HS256 tokens signed with a shared secret (what `tradestream token`
//! mints for local use) and RS256 tokens checked against an identity provider's JWKS (as
//! Auth0 issues them), both with issuer, audience and expiry checks. A token carries scopes
//! and the account it may trade; `admin` may act on every account.
//!
//! The [`Principal`] extractor authenticates and applies the per-principal rate limit, so a
//! handler that takes a `Principal` cannot forget either.

use crate::config::RestConfig;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use tradestream_schemas::AccountId;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Place and cancel orders.
    OrdersWrite,
    /// Read orders.
    OrdersRead,
    /// Read positions, portfolio, fills, signals, anomalies and the event stream.
    PortfolioRead,
    /// Everything, on every account, plus the kill switch.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::OrdersWrite,
        Scope::OrdersRead,
        Scope::PortfolioRead,
        Scope::Admin,
    ];

    /// The scope's name in the `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersWrite => "orders:write",
            Scope::OrdersRead => "orders:read",
            Scope::PortfolioRead => "portfolio:read",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope {s:?} (known: {})",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The token claims tradestream reads and `tradestream token` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the caller is.
    pub sub: String,
    /// Space-separated scopes (OAuth 2.0 style).
    #[serde(default)]
    pub scope: String,
    /// The account the principal trades and reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before (seconds since the epoch): refused until then (with the same leeway as
    /// `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    pub iss: String,
    /// Audience: a string or a list of strings.
    pub aud: serde_json::Value,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub` claim.
    pub subject: String,
    /// Granted scopes (unknown scope names are ignored).
    pub scopes: BTreeSet<Scope>,
    /// The account the token is bound to.
    pub account: Option<AccountId>,
}

impl Principal {
    /// Whether the token has the admin scope.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// 403 unless the token has `scope` (admin has every scope).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) || self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the token lacks the `{scope}` scope"
            )))
        }
    }

    /// The account a request acts on: the requested one if the principal may act on it, else
    /// the token's own. Non-admins get 403 for any other account; admins must name one when
    /// their token has none.
    pub fn account_for(&self, requested: Option<&AccountId>) -> Result<AccountId, ApiError> {
        match (requested, &self.account) {
            (Some(r), _) if self.is_admin() => Ok(r.clone()),
            (Some(r), Some(own)) if r == own => Ok(own.clone()),
            (Some(r), _) => Err(ApiError::Forbidden(format!(
                "the token may not act on account {r}"
            ))),
            (None, Some(own)) => Ok(own.clone()),
            (None, None) if self.is_admin() => Err(ApiError::invalid(
                "account",
                "required: the token is not bound to an account",
            )),
            (None, None) => Err(ApiError::Forbidden(
                "the token is not bound to an account (`account` claim)".into(),
            )),
        }
    }

    /// For reads: `None` means every account (admins only, when they name none).
    pub fn read_scope(&self, requested: Option<&AccountId>) -> Result<Option<AccountId>, ApiError> {
        if self.is_admin() && requested.is_none() {
            return Ok(None);
        }
        self.account_for(requested).map(Some)
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state).await {
            Ok(principal) => {
                state
                    .limiter()
                    .check(&format!("sub:{}", principal.subject))?;
                Ok(principal)
            }
            Err(refused) => {
                // Failed attempts count against the client's address, so guessing tokens is
                // throttled like any other burst (behind a proxy: the proxy's address).
                let client = parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
                state.limiter().check(&format!("client:{client}"))?;
                Err(refused)
            }
        }
    }
}

/// The principal of a request's bearer token; 401 without one or with an invalid one.
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing `Authorization: Bearer <token>`".into()))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
    state.auth().verify(token).await
}

/// Verifies tokens.
#[derive(Debug, Clone)]
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<JwksCache>>,
    issuer: String,
    audience: String,
}

impl Authenticator {
    /// From the API's configuration (which must have been validated).
    pub fn new(config: &RestConfig) -> Result<Self, ApiError> {
        let jwks = match &config.jwks_url {
            Some(url) => Some(Arc::new(JwksCache::new(
                url,
                Duration::from_secs(config.jwks_refresh_secs),
            )?)),
            None => None,
        };
        Ok(Self {
            hs256: config
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_nbf = true;
        v.leeway = 30;
        v
    }

    /// Checks signature, expiry, issuer and audience; 401 on any failure.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let unauthorized = |e: jsonwebtoken::errors::Error| {
            ApiError::Unauthorized(format!("invalid token: {}", describe(&e)))
        };
        let header = jsonwebtoken::decode_header(token).map_err(unauthorized)?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let key = self.hs256.as_ref().ok_or_else(|| {
                    ApiError::Unauthorized("HS256 tokens are not accepted here".into())
                })?;
                jsonwebtoken::decode::<Claims>(token, key, &self.validation(Algorithm::HS256))
                    .map_err(unauthorized)?
                    .claims
            }
            alg @ (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::ES256) => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    ApiError::Unauthorized(format!("{alg:?} tokens are not accepted here"))
                })?;
                let kid = header.kid.ok_or_else(|| {
                    ApiError::Unauthorized("invalid token: no `kid` header".into())
                })?;
                let key = jwks.key(&kid).await?;
                jsonwebtoken::decode::<Claims>(token, &key, &self.validation(alg))
                    .map_err(unauthorized)?
                    .claims
            }
            other => {
                return Err(ApiError::Unauthorized(format!(
                    "invalid token: algorithm {other:?} is not accepted"
                )));
            }
        };
        let account = match claims.account {
            Some(a) => Some(AccountId::new(a).map_err(|e| {
                ApiError::Unauthorized(format!("invalid token: account claim: {e}"))
            })?),
            None => None,
        };
        // The subject keys rate limits and lands in audit rows: a printable name only.
        if claims.sub.is_empty()
            || claims.sub.len() > 255
            || claims.sub.chars().any(char::is_control)
        {
            return Err(ApiError::Unauthorized(
                "invalid token: `sub` must be 1 to 255 bytes without control characters".into(),
            ));
        }
        Ok(Principal {
            subject: claims.sub,
            scopes: claims
                .scope
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect(),
            account,
        })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "expired",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud, sub) is missing",
        K::ImmatureSignature => "not valid yet",
        K::InvalidAlgorithm => "algorithm does not match the key",
        _ => "malformed",
    }
}

/// An identity provider's JWKS, fetched on first use, refreshed after `refresh` and when a
/// token names an unknown `kid` (key rotation), but never more than once per `refresh` for
/// unknown kids, so forged kids cannot make the API hammer the provider.
#[derive(Debug)]
pub struct JwksCache {
    url: String,
    refresh: Duration,
    http: reqwest::Client,
    state: RwLock<Option<(JwkSet, Instant)>>,
}

impl JwksCache {
    /// A cache for `url`.
    pub fn new(url: &str, refresh: Duration) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::Config(vec![format!("TRADESTREAM_JWKS_URL: {e}")]))?;
        Ok(Self {
            url: url.to_string(),
            refresh,
            http,
            state: RwLock::new(None),
        })
    }

    async fn fetch(&self) -> Result<JwkSet, ApiError> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("fetching JWKS {}: {e}", self.url)))?;
        if !response.status().is_success() {
            return Err(ApiError::Unavailable(format!(
                "fetching JWKS {}: HTTP {}",
                self.url,
                response.status()
            )));
        }
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| ApiError::Unavailable(format!("JWKS {} is not a key set: {e}", self.url)))
    }

    /// The decoding key for `kid`.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, ApiError> {
        {
            let state = self.state.read().await;
            if let Some((set, fetched)) = state.as_ref() {
                if let Some(jwk) = set.find(kid) {
                    if fetched.elapsed() < self.refresh {
                        return decoding_key(jwk);
                    }
                } else if fetched.elapsed() < self.refresh {
                    return Err(ApiError::Unauthorized(format!(
                        "invalid token: unknown signing key {kid:?}"
                    )));
                }
            }
        }
        let mut state = self.state.write().await;
        let set = match self.fetch().await {
            Ok(set) => set,
            // The provider is down but we know the key: keep using it.
            Err(e) => match state.as_ref().and_then(|(s, _)| s.find(kid)) {
                Some(jwk) => {
                    tracing::warn!(error = %e, "JWKS refresh failed; using the cached keys");
                    return decoding_key(jwk);
                }
                None => return Err(e),
            },
        };
        let key = set.find(kid).map(decoding_key);
        *state = Some((set, Instant::now()));
        key.unwrap_or_else(|| {
            Err(ApiError::Unauthorized(format!(
                "invalid token: unknown signing key {kid:?}"
            )))
        })
    }
}

fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk) -> Result<DecodingKey, ApiError> {
    DecodingKey::from_jwk(jwk)
        .map_err(|e| ApiError::Unauthorized(format!("invalid token: unusable signing key: {e}")))
}

/// What [`mint_hs256`] puts in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// `sub`.
    pub subject: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Bound account.
    pub account: Option<AccountId>,
    /// Lifetime.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

/// Mints an HS256 token (for `tradestream token`, tests and the demo).
pub fn mint_hs256(
    secret: &str,
    request: &TokenRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, ApiError> {
    let iat = u64::try_from(now.timestamp()).unwrap_or(0);
    let claims = Claims {
        sub: request.subject.clone(),
        scope: request
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        account: request.account.as_ref().map(|a| a.to_string()),
        exp: iat.saturating_add(request.ttl.as_secs()),
        iat: Some(iat),
        nbf: None,
        iss: request.issuer.clone(),
        aud: serde_json::Value::String(request.audience.clone()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))
}

/// A random HS256 secret (256 bits from the OS generator, hex) for processes that must serve
/// the API without a configured key: `up` and the demo on a laptop.
pub fn ephemeral_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Parses a token lifetime: `90s`, `30m`, `12h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{text:?}: must be > 0"));
    }
    Ok(Duration::from_secs(secs))
}

/// Signs `claims` with an RSA private key (PEM) as RS256 with `kid` (tests and tooling that
/// stand in for an identity provider).
pub fn sign_rs256(claims: &Claims, private_pem: &[u8], kid: &str) -> Result<String, ApiError> {
    let key = EncodingKey::from_rsa_pem(private_pem)
        .map_err(|e| ApiError::Config(vec![format!("RSA private key: {e}")]))?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key)
        .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config() -> RestConfig {
        RestConfig {
            jwt_secret: Some(SECRET.into()),
            ..RestConfig::default()
        }
    }

    fn request(scopes: Vec<Scope>, account: Option<&str>) -> TokenRequest {
        TokenRequest {
            subject: "alice".into(),
            scopes,
            account: account.map(|a| AccountId::new(a).unwrap_or_else(|_| unreachable!())),
            ttl: Duration::from_secs(60),
            issuer: crate::config::default_issuer(),
            audience: crate::config::default_audience(),
        }
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_scopes_and_account() -> Result<(), ApiError> {
        let auth = Authenticator::new(&config())?;
        let token = mint_hs256(
            SECRET,
            &request(vec![Scope::OrdersWrite, Scope::OrdersRead], Some("alice")),
            chrono::Utc::now(),
        )?;
        let p = auth.verify(&token).await?;
        assert_eq!(p.subject, "alice");
        assert!(p.require(Scope::OrdersWrite).is_ok());
        assert!(matches!(
            p.require(Scope::Admin),
            Err(ApiError::Forbidden(_))
        ));
        let alice = AccountId::new("alice").unwrap_or_else(|_| unreachable!());
        let bob = AccountId::new("bob").unwrap_or_else(|_| unreachable!());
        assert_eq!(p.account_for(None)?, alice);
        assert!(matches!(
            p.account_for(Some(&bob)),
            Err(ApiError::Forbidden(_))
        ));
        Ok(())
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("soon").is_err());
        assert_eq!(ephemeral_secret().len(), 64);
    }

    #[tokio::test]
    async fn admin_acts_on_any_account() -> Result<(), ApiError> {
        let auth = Authenticator::new(&config())?;
        let token = mint_hs256(
            SECRET,
            &request(vec![Scope::Admin], None),
            chrono::Utc::now(),
        )?;
        let p = auth.verify(&token).await?;
        let bob = AccountId::new("bob").unwrap_or_else(|_| unreachable!());
        assert_eq!(p.account_for(Some(&bob))?, bob);
        assert_eq!(p.read_scope(None)?, None);
        assert!(p.require(Scope::OrdersWrite).is_ok());
        Ok(())
    }

    #[tokio::test]
    async fn wrong_secret_issuer_audience_or_expiry_are_401() -> Result<(), ApiError> {
        let auth = Authenticator::new(&config())?;
        let now = chrono::Utc::now();
        let other = mint_hs256(&"z".repeat(32), &request(vec![Scope::Admin], None), now)?;
        let mut wrong_iss = request(vec![Scope::Admin], None);
        wrong_iss.issuer = "evil".into();
        let mut wrong_aud = request(vec![Scope::Admin], None);
        wrong_aud.audience = "other-api".into();
        let expired = mint_hs256(
            SECRET,
            &request(vec![Scope::Admin], None),
            now - chrono::Duration::hours(2),
        )?;
        for (token, why) in [
            (other, "bad signature"),
            (mint_hs256(SECRET, &wrong_iss, now)?, "wrong issuer"),
            (mint_hs256(SECRET, &wrong_aud, now)?, "wrong audience"),
            (expired, "expired"),
            ("not.a.token".to_string(), "malformed"),
        ] {
            match auth.verify(&token).await {
                Err(ApiError::Unauthorized(m)) => assert!(m.contains(why), "{m} vs {why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        Ok(())
    }
}
