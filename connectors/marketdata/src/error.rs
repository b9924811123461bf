//! The market-data connector's error, classified so the runner reacts uniformly: transient
//! provider trouble is retried, a bad response body is dead-lettered (with the body), and a
//! request that can never succeed (bad key, unknown symbol, bad config) stops the job.

use std::time::Duration;
use tradestream_schemas::ErrorClass;

/// Everything that can go wrong fetching bars from a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Invalid settings; each line names its setting.
    #[error("invalid market-data provider configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// A required API key is not set.
    #[error("{provider}: API key missing: set the environment variable {var}")]
    MissingKey {
        /// Provider name.
        provider: &'static str,
        /// The environment variable to set.
        var: &'static str,
    },
    /// The provider throttled us (HTTP 429 or a rate-limit body) and attempts ran out.
    #[error("{provider}: rate limited: {message}")]
    RateLimited {
        /// Provider name.
        provider: &'static str,
        /// What the provider said.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The provider's daily or plan quota is used up; retrying today will not help.
    #[error("{provider}: quota exhausted: {message}")]
    QuotaExhausted {
        /// Provider name.
        provider: &'static str,
        /// What the provider said.
        message: String,
    },
    /// The provider failed (HTTP 5xx) and attempts ran out.
    #[error("{provider}: server error HTTP {status}: {message}")]
    Server {
        /// Provider name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        message: String,
    },
    /// Network trouble: connect failure, timeout, reset connection.
    #[error("{provider}: {message}")]
    Transport {
        /// Provider name.
        provider: &'static str,
        /// What happened.
        message: String,
        /// Whether the request may succeed if sent again (timeouts, connect errors).
        retryable: bool,
    },
    /// The API key was refused (HTTP 401/403 or an invalid-key body).
    #[error("{provider}: API key refused: {message}")]
    Unauthorized {
        /// Provider name.
        provider: &'static str,
        /// What the provider said.
        message: String,
    },
    /// The provider does not know the symbol.
    #[error("{provider}: unknown symbol {symbol}: {message}")]
    InvalidSymbol {
        /// Provider name.
        provider: &'static str,
        /// The symbol asked for.
        symbol: String,
        /// What the provider said.
        message: String,
    },
    /// Any other refusal of the request (other 4xx, premium-only endpoint, bad parameters).
    #[error("{provider}: request refused (HTTP {status}): {message}")]
    Refused {
        /// Provider name.
        provider: &'static str,
        /// HTTP status (200 when the refusal came in a successful response's body).
        status: u16,
        /// What the provider said.
        message: String,
    },
    /// The response body is not the documented format.
    #[error("{provider}: cannot parse response: {message}")]
    Parse {
        /// Provider name.
        provider: &'static str,
        /// What did not match.
        message: String,
        /// Start of the body (at most 2 KiB), for the dead-letter record.
        body: String,
    },
}

impl ProviderError {
    /// How a runner should react.
    ///
    /// An unparseable body is [`ErrorClass::DeadLetter`]: the process and the other symbols
    /// are fine, only this response is bad, so the runner records it (with `body`) on the
    /// dead-letter topic and moves on rather than stopping the whole ingest.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::RateLimited { .. } | ProviderError::Server { .. } => {
                ErrorClass::Retryable
            }
            ProviderError::Transport {
                retryable: true, ..
            } => ErrorClass::Retryable,
            ProviderError::Parse { .. } => ErrorClass::DeadLetter,
            ProviderError::Config(_)
            | ProviderError::MissingKey { .. }
            | ProviderError::QuotaExhausted { .. }
            | ProviderError::Transport {
                retryable: false, ..
            }
            | ProviderError::Unauthorized { .. }
            | ProviderError::InvalidSymbol { .. }
            | ProviderError::Refused { .. } => ErrorClass::Fatal,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// At most `max` bytes of `body`, cut at a character boundary.
pub(crate) fn snippet(body: &str, max: usize) -> String {
    if body.len() <= max {
        return body.to_string();
    }
    let mut end = max;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let p = "t";
        assert_eq!(
            ProviderError::RateLimited {
                provider: p,
                message: String::new(),
                retry_after: None
            }
            .class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            ProviderError::Server {
                provider: p,
                status: 503,
                message: String::new()
            }
            .class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            ProviderError::Transport {
                provider: p,
                message: String::new(),
                retryable: true
            }
            .class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            ProviderError::Unauthorized {
                provider: p,
                message: String::new()
            }
            .class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            ProviderError::InvalidSymbol {
                provider: p,
                symbol: "X".into(),
                message: String::new()
            }
            .class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            ProviderError::MissingKey {
                provider: p,
                var: "V"
            }
            .class(),
            ErrorClass::Fatal
        );
        assert_eq!(
            ProviderError::Parse {
                provider: p,
                message: String::new(),
                body: String::new()
            }
            .class(),
            ErrorClass::DeadLetter
        );
    }

    #[test]
    fn missing_key_names_the_variable() {
        let e = ProviderError::MissingKey {
            provider: "alphavantage",
            var: "ALPHAVANTAGE_API_KEY",
        };
        assert!(e.to_string().contains("ALPHAVANTAGE_API_KEY"));
    }

    #[test]
    fn snippet_cuts_at_char_boundary() {
        assert_eq!(snippet("abc", 10), "abc");
        assert_eq!(snippet("héllo", 2), "h…");
    }
}
