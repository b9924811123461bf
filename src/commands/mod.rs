//! Subcommand entry points.

mod demo;
mod infra;
pub(crate) mod pipeline;
mod stream;

use crate::args::Command;

/// Runs one subcommand to completion.
pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo(a) => demo::run(a).await,
        Command::Broker(a) => infra::broker(a).await,
        Command::Registry(a) => infra::registry(a).await,
        Command::Postgres(a) => infra::postgres(a).await,
        Command::Migrate(a) => infra::migrate(a).await,
        Command::Topics(a) => infra::topics(a).await,
        Command::Schemas(a) => infra::schemas(a).await,
        Command::Health(a) => infra::health(a).await,
        Command::Run(a) => stream::run(a).await,
        Command::Up(a) => stream::up(a).await,
        Command::Ingest(a) => stream::ingest(a).await,
        Command::Train(a) => stream::train(a).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
