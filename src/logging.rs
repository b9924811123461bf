//! Structured logs: human-readable text by default, JSON lines when asked; on stderr, or in a
//! file (`--log-file`, and the demo's default so its terminal shows progress, not log lines).

use crate::args::{LogArgs, LogFormat};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// The file logs go to, when not stderr.
static FILE: OnceLock<PathBuf> = OnceLock::new();

/// Where logs go when they go to a file.
pub(crate) fn file() -> Option<&'static Path> {
    FILE.get().map(PathBuf::as_path)
}

/// Installs the global subscriber. `default_file`: where logs go when neither a level nor a
/// file was asked for (the demo's terminal shows progress, not log lines).
pub(crate) fn init(args: &LogArgs, default_file: Option<&Path>) -> anyhow::Result<()> {
    let level = args.log_level.as_deref().unwrap_or("info");
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("--log-level / RUST_LOG {level:?}: {e}"))?;
    let path = args.log_file.clone().or_else(|| {
        default_file
            .filter(|_| args.log_level.is_none())
            .map(Path::to_path_buf)
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match path {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("--log-file / TRADESTREAM_LOG_FILE {}: {e}", path.display())
                })?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| {
                    anyhow::anyhow!("--log-file / TRADESTREAM_LOG_FILE {}: {e}", path.display())
                })?;
            let _ = FILE.set(path);
            let builder = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file));
            match args.log_format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
            }
        }
        None => {
            let builder = builder.with_writer(std::io::stderr);
            match args.log_format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().flatten_event(true).try_init(),
            }
        }
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
