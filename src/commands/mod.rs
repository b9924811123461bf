//! Subcommand entry points.

pub(crate) mod api;
mod bench;
pub(crate) mod config;
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
        Command::Bench(a) => bench::run(a).await,
        Command::Api(a) => api::run(a).await,
        Command::Token(a) => api::token(a).await,
        Command::Config(a) => config::run(a),
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

/// The process-wide stop request: the first SIGINT/SIGTERM asks every component to finish
/// its in-flight work (stop taking input, finish the batch, commit); a grace period bounds how
/// long that may take, and a second signal stops at once.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    signals: tokio::sync::watch::Receiver<u32>,
}

impl Shutdown {
    /// Starts listening for SIGINT/SIGTERM. The handlers are installed before this returns,
    /// so a signal sent right after the process announced itself is never lost.
    pub(crate) fn listen() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        #[cfg(unix)]
        let mut signals = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::terminate()).ok(),
                signal(SignalKind::interrupt()).ok(),
            )
        };
        tokio::spawn(async move {
            loop {
                #[cfg(unix)]
                {
                    let (term, int) = &mut signals;
                    tokio::select! {
                        Some(_) = async { match term { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
                        Some(_) = async { match int { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
                    }
                }
                #[cfg(not(unix))]
                shutdown_signal().await;
                tx.send_modify(|n| *n += 1);
                if *tx.borrow() == 1 {
                    tracing::info!(
                        "shutdown requested: finishing in-flight work (signal again to stop at once)"
                    );
                }
            }
        });
        Self { signals: rx }
    }

    /// Resolves once a stop was requested.
    pub(crate) fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.signals.clone();
        async move {
            let _ = rx.wait_for(|n| *n >= 1).await;
        }
    }

    /// Runs `work` (which watches [`requested`](Self::requested) itself) to completion. Once a
    /// stop is requested it has `grace` to finish; past that, or on a second signal, the
    /// process exits 1 naming what `still_running` reports, since waiting longer would only
    /// get it killed without a word.
    pub(crate) async fn run_with_grace<T>(
        &self,
        what: &str,
        grace: std::time::Duration,
        still_running: impl Fn() -> String,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let mut rx = self.signals.clone();
        let expired = async move {
            if rx.wait_for(|n| *n >= 1).await.is_err() {
                return std::future::pending::<&'static str>().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(grace) => "the grace period passed",
                _ = rx.wait_for(|n| *n >= 2) => "a second signal arrived",
            }
        };
        tokio::select! {
            result = work => result,
            why = expired => {
                let message = format!(
                    "{what} did not stop within the shutdown grace period \
                     (TRADESTREAM_SHUTDOWN_GRACE_SECS / --shutdown-grace-secs = {} s): {why}; still running: {}",
                    grace.as_secs(),
                    still_running()
                );
                tracing::error!(%message, "stopping without finishing");
                eprintln!("error: {message}");
                // Blocking tasks (a stuck commit, pg_ctl) would hold the runtime's drop.
                std::process::exit(1);
            }
        }
    }
}

/// Outage drills for the standalone broker: SIGUSR1 makes it unreachable (connections cut,
/// new ones refused, data kept), SIGUSR2 makes it reachable again.
pub(crate) fn outage_drills(
    mock: std::sync::Arc<tradestream_kafka::MockKafka>,
    reachability: tradestream_kafka::mock::Reachability,
) -> tokio::task::JoinHandle<()> {
    // Installed before returning: the default action of SIGUSR1 would kill the broker.
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        )
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let (Ok(mut down), Ok(mut up)) = handlers else {
                tracing::warn!("cannot install the SIGUSR1/SIGUSR2 outage handlers");
                return;
            };
            loop {
                let reachable = tokio::select! {
                    _ = down.recv() => false,
                    _ = up.recv() => true,
                };
                reachability.set(reachable);
                match mock.set_reachable(reachable) {
                    Ok(()) if reachable => tracing::warn!("broker reachable again (SIGUSR2)"),
                    Ok(()) => tracing::warn!("broker unreachable until SIGUSR2 (SIGUSR1)"),
                    Err(e) => tracing::error!(error = %e, "outage drill failed"),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (mock, reachability);
        }
    })
}
