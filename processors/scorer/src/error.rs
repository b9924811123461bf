//! The scorer crate's one error type. Each variant knows whether the runner should retry,
//! dead-letter or stop, so the Kafka runner, the CLI and the reload loop react uniformly.

use std::path::PathBuf;
use tradestream_schemas::ErrorClass;

/// Everything that can go wrong configuring, loading, training or running the scorer.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    /// Invalid settings; each line names its setting.
    #[error("invalid scorer configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// A model file is unreadable, malformed or inconsistent; the message names the file.
    #[error("model file {}: {message}", path.display())]
    ModelFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// In-memory model parameters are inconsistent (wrong sizes, non-finite numbers).
    #[error("invalid {model} model: {message}")]
    InvalidModel {
        /// Which model (`signal` or `anomaly`).
        model: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Training could not produce a model (too little data, a degenerate data set, a fit
    /// that did not converge).
    #[error("training: {0}")]
    Training(String),
}

impl ScorerError {
    /// How a runner should react. A model file that fails to load at start is fatal; the
    /// reload loop instead logs the error and keeps serving the previous models (see
    /// [`crate::ModelHandle::reload_if_changed`]). I/O errors are transient (a file being
    /// replaced, a remounted volume).
    pub fn class(&self) -> ErrorClass {
        match self {
            ScorerError::Io { .. } => ErrorClass::Retryable,
            ScorerError::Config(_)
            | ScorerError::ModelFile { .. }
            | ScorerError::InvalidModel { .. }
            | ScorerError::Training(_) => ErrorClass::Fatal,
        }
    }

    pub(crate) fn invalid(model: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidModel {
            model,
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ScorerError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let io = ScorerError::Io {
            context: "reading",
            path: "m.json".into(),
            source: std::io::Error::other("x"),
        };
        assert_eq!(io.class(), ErrorClass::Retryable);
        assert_eq!(
            ScorerError::Config(vec!["a".into()]).class(),
            ErrorClass::Fatal
        );
        let mf = ScorerError::ModelFile {
            path: "models/signal-model.json".into(),
            message: "bad".into(),
        };
        assert!(mf.to_string().contains("models/signal-model.json"));
        assert_eq!(mf.class(), ErrorClass::Fatal);
    }
}
