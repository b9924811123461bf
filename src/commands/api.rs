//! `api` (the REST API as its own process), `token` (mints HS256 tokens for local use), and
//! the API's settings, which `up` and `demo` also take so they can serve it next to the
//! stages. Every setting is a flag and an environment variable; `RestConfig::validate()`
//! names any bad one.

use super::pipeline::Stack;
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;
use tradestream_rest::auth::{ephemeral_secret, parse_ttl};
use tradestream_rest::{AppState, Publisher, RestConfig, Scope, TokenRequest, mint_hs256};
use tradestream_schemas::AccountId;

/// The REST API's settings.
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// Address the REST API listens on (`api` and `up`: 127.0.0.1:8080; `demo`: a free port).
    #[arg(long, env = "TRADESTREAM_API_LISTEN")]
    pub(crate) api_listen: Option<SocketAddr>,
    /// HS256 secret (≥ 32 bytes) tokens are signed with. `up` and `demo` make a random one
    /// (and print an admin token) when neither this nor a JWKS URL is set.
    #[arg(long, env = "TRADESTREAM_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// JWKS URL of an identity provider (RS256 tokens, e.g. Auth0's
    /// https://TENANT/.well-known/jwks.json).
    #[arg(long, env = "TRADESTREAM_JWKS_URL")]
    pub(crate) jwks_url: Option<String>,
    /// Seconds a fetched JWKS is trusted before it is fetched again.
    #[arg(long, env = "TRADESTREAM_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub(crate) jwks_refresh_secs: u64,
    /// Required token issuer (`iss`).
    #[arg(long, env = "TRADESTREAM_JWT_ISSUER", default_value = "tradestream")]
    pub(crate) jwt_issuer: String,
    /// Required token audience (`aud`).
    #[arg(
        long,
        env = "TRADESTREAM_JWT_AUDIENCE",
        default_value = "tradestream-api"
    )]
    pub(crate) jwt_audience: String,
    /// Requests per second per principal (0: no limit).
    #[arg(long, env = "TRADESTREAM_API_RATE_LIMIT", default_value_t = 50)]
    pub(crate) api_rate_limit: u32,
    /// Burst above the per-second rate.
    #[arg(long, env = "TRADESTREAM_API_RATE_BURST", default_value_t = 100)]
    pub(crate) api_rate_burst: u32,
    /// Largest request body in bytes.
    #[arg(long, env = "TRADESTREAM_API_BODY_LIMIT", default_value_t = 65_536)]
    pub(crate) api_body_limit: usize,
    /// Seconds a request may take (the event stream is exempt).
    #[arg(long, env = "TRADESTREAM_API_TIMEOUT_SECS", default_value_t = 10)]
    pub(crate) api_timeout_secs: u64,
    /// Origins browsers may call the API from (comma-separated; `*` for any; empty: none).
    #[arg(long, env = "TRADESTREAM_API_CORS_ORIGINS", value_delimiter = ',')]
    pub(crate) api_cors_origin: Vec<String>,
    /// Largest page a list endpoint returns.
    #[arg(long, env = "TRADESTREAM_API_MAX_PAGE_SIZE", default_value_t = 500)]
    pub(crate) api_max_page_size: u32,
    /// Instruments orders may be placed for before their market data is stored
    /// (comma-separated symbols; those with stored market data are always known).
    #[arg(long, env = "TRADESTREAM_API_INSTRUMENTS", value_delimiter = ',')]
    pub(crate) api_instrument: Vec<String>,
}

impl ApiArgs {
    /// The API config; `default_listen` when no address is set.
    pub(crate) fn config(&self, default_listen: SocketAddr) -> RestConfig {
        RestConfig {
            listen: self.api_listen.unwrap_or(default_listen),
            jwt_secret: self.jwt_secret.clone().filter(|s| !s.is_empty()),
            jwks_url: self.jwks_url.clone().filter(|s| !s.is_empty()),
            jwks_refresh_secs: self.jwks_refresh_secs,
            jwt_issuer: self.jwt_issuer.clone(),
            jwt_audience: self.jwt_audience.clone(),
            rate_limit_per_sec: self.api_rate_limit,
            rate_limit_burst: self.api_rate_burst,
            body_limit_bytes: self.api_body_limit,
            request_timeout_secs: self.api_timeout_secs,
            cors_origins: self
                .api_cors_origin
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            max_page_size: self.api_max_page_size,
            instruments: self
                .api_instrument
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

/// `api`.
#[derive(Debug, Args)]
pub(crate) struct ApiCommandArgs {
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Seconds to finish in-flight requests after SIGTERM/SIGINT.
    #[arg(long, env = "TRADESTREAM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub(crate) shutdown_grace_secs: u64,
    #[command(flatten)]
    pub(crate) kafka: crate::args::KafkaArgs,
    #[command(flatten)]
    pub(crate) pg: crate::args::PgArgs,
    #[command(flatten)]
    pub(crate) registry: crate::args::RegistryClientArgs,
}

/// `token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    /// Scopes (repeat or comma-separate): orders:write, orders:read, portfolio:read, admin.
    #[arg(
        long,
        env = "TRADESTREAM_TOKEN_SCOPE",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) scope: Vec<String>,
    /// Lifetime: 90s, 30m, 12h, 7d or seconds.
    #[arg(long, env = "TRADESTREAM_TOKEN_TTL", default_value = "1h")]
    pub(crate) ttl: String,
    /// Account the token trades and reads (admins may omit it).
    #[arg(long, env = "TRADESTREAM_TOKEN_ACCOUNT")]
    pub(crate) account: Option<String>,
    /// Subject (`sub`): who the token is for; rate limits are kept per subject. Default:
    /// `account:<account>` with `--account`, else `admin`, so tokens for different accounts
    /// are different principals.
    #[arg(long, env = "TRADESTREAM_TOKEN_SUBJECT")]
    pub(crate) subject: Option<String>,
    /// HS256 secret the API is configured with.
    #[arg(long, env = "TRADESTREAM_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// Issuer (`iss`), as the API requires.
    #[arg(long, env = "TRADESTREAM_JWT_ISSUER", default_value = "tradestream")]
    pub(crate) jwt_issuer: String,
    /// Audience (`aud`), as the API requires.
    #[arg(
        long,
        env = "TRADESTREAM_JWT_AUDIENCE",
        default_value = "tradestream-api"
    )]
    pub(crate) jwt_audience: String,
}

/// A running API inside another command.
#[derive(Debug)]
pub(crate) struct ApiHandle {
    /// Where it listens.
    pub(crate) address: SocketAddr,
    /// An admin token when the secret was generated for this run (nobody else knows it).
    pub(crate) admin_token: Option<String>,
    /// The server task.
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Starts the API on `stack` until `stopped` turns true. With no key configured and
/// `ephemeral` set (`up`, `demo`), a random secret is used and an admin token returned.
pub(crate) async fn spawn(
    args: &ApiArgs,
    default_listen: SocketAddr,
    stack: &Stack,
    metrics: Option<tradestream_kafka::Metrics>,
    mut stopped: watch::Receiver<bool>,
    ephemeral: bool,
) -> anyhow::Result<ApiHandle> {
    let mut config = args.config(default_listen);
    let mut admin_token = None;
    if ephemeral && config.jwt_secret.is_none() && config.jwks_url.is_none() {
        let secret = ephemeral_secret();
        admin_token = Some(mint_hs256(
            &secret,
            &TokenRequest {
                subject: "local-admin".into(),
                scopes: vec![Scope::Admin],
                account: None,
                ttl: Duration::from_secs(12 * 3600),
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
            },
            chrono::Utc::now(),
        )?);
        config.jwt_secret = Some(secret);
    }
    config
        .validate()
        .map_err(|p| anyhow::anyhow!("invalid API settings:\n  {}", p.join("\n  ")))?;
    let pool = stack
        .pool()
        .context("the REST API needs Postgres (DATABASE_URL or the private cluster)")?;
    let publisher = Publisher::new(
        &stack.kafka,
        stack.codec.clone(),
        Duration::from_secs(config.request_timeout_secs),
    )?;
    let listen = config.listen;
    let state =
        AppState::new(config, pool, publisher)?.with_probes(Some(stack.readiness()), metrics);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("TRADESTREAM_API_LISTEN / --api-listen {listen}"))?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = tradestream_rest::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "REST API stopped with an error");
        }
    });
    tracing::info!(%address, "REST API listening");
    Ok(ApiHandle {
        address,
        admin_token,
        task,
    })
}

/// Default address of `api` and `up`.
pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `tradestream api`.
pub(crate) async fn run(args: ApiCommandArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.config()?;
    if kafka.brokers.is_none() {
        anyhow::bail!(
            "KAFKA_BROKERS / --kafka-brokers is required for `api`: it publishes to the \
             pipeline's broker (or use `tradestream up`, which serves the API too)"
        );
    }
    // Check the API settings before connecting anything.
    args.api
        .config(default_listen())
        .validate()
        .map_err(|p| anyhow::anyhow!("invalid API settings:\n  {}", p.join("\n  ")))?;
    let stack = Stack::start(
        kafka,
        args.pg.config()?,
        args.registry.schema_registry_url.clone(),
        true,
    )
    .await?;
    let metrics = tradestream_kafka::Metrics::new();
    let (stop, stopped) = super::pipeline::shutdown_channel();
    let handle = spawn(
        &args.api,
        default_listen(),
        &stack,
        Some(metrics),
        stopped,
        false,
    )
    .await?;
    eprintln!(
        "REST API on http://{}/ (docs http://{}/docs); Ctrl-C or SIGTERM stops",
        handle.address, handle.address
    );
    super::shutdown_signal().await;
    let _ = stop.send(true);
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    if tokio::time::timeout(grace, handle.task).await.is_err() {
        tracing::warn!("REST API did not finish within the grace period");
    }
    stack.stop().await?;
    Ok(())
}

/// The `sub` of a minted token: `--subject`, else `account:<account>`, else `admin`, so the
/// tokens of two accounts are two principals (rate limits are kept per subject).
fn token_subject(subject: Option<String>, account: Option<&AccountId>) -> anyhow::Result<String> {
    let subject = match (subject.filter(|s| !s.trim().is_empty()), account) {
        (Some(s), _) => s,
        (None, Some(a)) => format!("account:{a}"),
        (None, None) => "admin".to_string(),
    };
    if subject.len() > 255 || subject.chars().any(char::is_control) {
        anyhow::bail!("--subject: at most 255 bytes, no control characters");
    }
    Ok(subject)
}

/// `tradestream token`.
pub(crate) async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let secret = args.jwt_secret.clone().filter(|s| !s.is_empty()).context(
        "TRADESTREAM_JWT_SECRET / --jwt-secret is required: the secret the API verifies tokens with",
    )?;
    if secret.len() < tradestream_rest::config::MIN_SECRET_BYTES {
        anyhow::bail!(
            "TRADESTREAM_JWT_SECRET / --jwt-secret: must be at least {} bytes",
            tradestream_rest::config::MIN_SECRET_BYTES
        );
    }
    let scopes = args
        .scope
        .iter()
        .map(|s| s.trim().parse::<Scope>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
    let ttl = parse_ttl(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let account = args
        .account
        .as_deref()
        .map(AccountId::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--account: {e}"))?;
    if account.is_none() && !scopes.contains(&Scope::Admin) {
        anyhow::bail!("--account is required unless the token has the admin scope");
    }
    let subject = token_subject(args.subject, account.as_ref())?;
    let token = mint_hs256(
        &secret,
        &TokenRequest {
            subject,
            scopes,
            account,
            ttl,
            issuer: args.jwt_issuer,
            audience: args.jwt_audience,
        },
        chrono::Utc::now(),
    )?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_two_accounts_are_two_principals() -> anyhow::Result<()> {
        let demo = AccountId::new("demo")?;
        let other = AccountId::new("other")?;
        assert_eq!(token_subject(None, Some(&demo))?, "account:demo");
        assert_ne!(
            token_subject(None, Some(&demo))?,
            token_subject(None, Some(&other))?
        );
        assert_eq!(token_subject(None, None)?, "admin");
        assert_eq!(token_subject(Some("ops".into()), Some(&demo))?, "ops");
        assert!(token_subject(Some("a\0b".into()), None).is_err());
        Ok(())
    }
}
