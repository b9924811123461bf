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
    if let Err(e) = logging::init(&cli.log) {
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
            tracing::error!(error = %format!("{e:#}"), "tradestream failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
