//! The `tradestream` binary: CLI wiring only. Each subcommand lives in `commands/` and calls
//! into the workspace crates, where the logic and its tests are.

mod args;
mod commands;
mod logging;

use clap::Parser;

/// mimalloc instead of glibc's allocator: every record is decoded into, and encoded from,
/// short-lived allocations on several threads, and glibc's free lists (`_int_free`,
/// `unlink_chunk`, `malloc_consolidate`) took about a quarter of the features processor's
/// CPU (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    commands::config::remember_cli(&cli.command);
    let default_log = matches!(cli.command, args::Command::Demo(_))
        .then(|| std::path::Path::new(".tradestream/demo.log"));
    if let Err(e) = logging::init(&cli.log, default_log) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = chain(&e);
            tracing::error!(error = %message, "tradestream failed");
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like `{:#}`, except a cause whose text the
/// message before it already ends with: the crates' errors name their source in their own
/// text (`reading model file …: No such file or directory`), and printing it again says
/// nothing new.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    /// Like the crates' errors: names its source in its own text and returns it as source.
    #[derive(Debug)]
    struct Reading {
        source: std::io::Error,
    }

    impl std::fmt::Display for Reading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading model file m.json: {}", self.source)
        }
    }

    impl std::error::Error for Reading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_already_in_its_parents_text_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Reading { source: io }).context("loading models from models");
        assert_eq!(
            chain(&e),
            "loading models from models: reading model file m.json: no such file"
        );
        let plain = anyhow::anyhow!("disk full").context("writing the report");
        assert_eq!(chain(&plain), "writing the report: disk full");
    }
}
