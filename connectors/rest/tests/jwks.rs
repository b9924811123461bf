//! RS256 tokens checked against a JWKS URL, as an identity provider such as Auth0 issues them:
//! the key set (public half of a committed, test-only key) is served on localhost, fetched by
//! the API on first use and cached; issuer, audience, expiry, unknown kids and forged
//! signatures are refused, and a provider outage does not lock out keys already known.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tradestream_rest::auth::{Authenticator, Claims, sign_rs256};
use tradestream_rest::{ApiError, RestConfig, Scope};

const PRIVATE: &[u8] = include_bytes!("fixtures/test-rsa-private.pem");
const OTHER_PRIVATE: &[u8] = include_bytes!("fixtures/test-rsa-other-private.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

/// Serves the JWKS on localhost; counts fetches; `up` false answers 503.
async fn provider(
    up: Arc<std::sync::atomic::AtomicBool>,
    hits: Arc<AtomicUsize>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (up, hits) = (up.clone(), hits.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if up.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, JWKS.to_string())
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

fn claims(iss: &str, aud: &str, exp_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: "auth0|trader-7".into(),
        scope: "orders:read portfolio:read".into(),
        account: Some("demo".into()),
        exp: u64::try_from(now + exp_in).unwrap_or(0),
        iat: u64::try_from(now).ok(),
        nbf: None,
        iss: iss.into(),
        aud: serde_json::json!([aud, "https://tenant.example.com/userinfo"]),
    }
}

const ISS: &str = "https://tenant.example.com/";
const AUD: &str = "https://api.tradestream.example";

#[tokio::test]
async fn rs256_tokens_verify_against_the_jwks_url() -> anyhow::Result<()> {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = provider(up.clone(), hits.clone()).await?;
    let config = RestConfig {
        jwks_url: Some(url),
        jwks_refresh_secs: 1,
        jwt_issuer: ISS.into(),
        jwt_audience: AUD.into(),
        ..RestConfig::default()
    };
    config.validate().map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let auth = Authenticator::new(&config)?;

    let good = sign_rs256(&claims(ISS, AUD, 300), PRIVATE, "test-key-1")?;
    let p = auth.verify(&good).await?;
    assert_eq!(p.subject, "auth0|trader-7");
    assert!(p.scopes.contains(&Scope::OrdersRead) && p.scopes.contains(&Scope::PortfolioRead));
    assert_eq!(p.account.as_ref().map(|a| a.as_str()), Some("demo"));
    // Cached: a second token does not refetch.
    auth.verify(&good).await?;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    for (token, why) in [
        (
            sign_rs256(
                &claims("https://evil.example.com/", AUD, 300),
                PRIVATE,
                "test-key-1",
            )?,
            "wrong issuer",
        ),
        (
            sign_rs256(&claims(ISS, "other-api", 300), PRIVATE, "test-key-1")?,
            "wrong audience",
        ),
        (
            sign_rs256(&claims(ISS, AUD, -3600), PRIVATE, "test-key-1")?,
            "expired",
        ),
        (
            sign_rs256(&claims(ISS, AUD, 300), OTHER_PRIVATE, "test-key-1")?,
            "bad signature",
        ),
        (
            sign_rs256(&claims(ISS, AUD, 300), OTHER_PRIVATE, "rotated-key")?,
            "unknown signing key",
        ),
    ] {
        match auth.verify(&token).await {
            Err(ApiError::Unauthorized(m)) => assert!(m.contains(why), "{why}: {m}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // HS256 is not accepted when only a JWKS is configured.
    let hs = tradestream_rest::mint_hs256(
        &"s".repeat(32),
        &tradestream_rest::TokenRequest {
            subject: "x".into(),
            scopes: vec![Scope::Admin],
            account: None,
            ttl: Duration::from_secs(60),
            issuer: ISS.into(),
            audience: AUD.into(),
        },
        chrono::Utc::now(),
    )?;
    assert!(matches!(
        auth.verify(&hs).await,
        Err(ApiError::Unauthorized(_))
    ));

    // The provider goes down after the refresh period: known keys keep working ...
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    auth.verify(&good).await?;
    // ... and a fresh verifier that never saw the keys answers 503 (not 401: retry later).
    let fresh = Authenticator::new(&config)?;
    assert!(matches!(
        fresh.verify(&good).await,
        Err(ApiError::Unavailable(_))
    ));
    Ok(())
}
