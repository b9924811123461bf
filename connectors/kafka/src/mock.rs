//! The embedded Kafka: librdkafka's mock cluster, owned by a dedicated thread.
//!
//! The mock cluster handle is a raw pointer (neither `Send` nor `Sync`), so one thread owns it
//! and everything else talks to that thread through a channel; [`MockKafka`] is then an
//! ordinary `Send + Sync` value that async code can share. The mock has no CreateTopics admin
//! API, so topics are created here through the mock's own call.
//!
//! [`serve_broker`] runs the same cluster as a standalone process on a fixed port for several
//! processes to share: a small TCP forwarder listens on the port and hands bootstrap
//! connections to the mock (which advertises its own address in metadata afterwards).
//! [`Reachability`] and [`MockKafka::set_reachable`] simulate a broker outage without losing
//! the mock's data (`tradestream broker` maps them to SIGUSR1 / SIGUSR2).

use crate::error::KafkaError;
use rdkafka::mocking::MockCluster;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), String>>,
    },
    BrokerDown {
        broker: i32,
        reply: mpsc::Sender<Result<(), String>>,
    },
    BrokerUp {
        broker: i32,
        reply: mpsc::Sender<Result<(), String>>,
    },
    Stop,
}

/// A running in-process mock Kafka cluster.
#[derive(Debug)]
pub struct MockKafka {
    bootstrap: String,
    brokers: i32,
    commands: Mutex<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// Default of [`crate::KafkaConfig::mock_partition_max_mb`].
pub const DEFAULT_PARTITION_MAX_MB: u64 = 64;

impl MockKafka {
    /// Starts a mock cluster with `brokers` brokers, keeping the default
    /// [`DEFAULT_PARTITION_MAX_MB`] of each partition's log.
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        Self::start_keeping(brokers, DEFAULT_PARTITION_MAX_MB)
    }

    /// Starts a mock cluster with `brokers` brokers that keeps the newest `partition_max_mb`
    /// MiB of each partition's log (upstream librdkafka keeps 5 MiB, and a consumer that
    /// falls further behind loses records; see vendor/README.md). The setting is
    /// process-wide: it applies to the partitions of every mock created afterwards.
    pub fn start_keeping(brokers: i32, partition_max_mb: u64) -> Result<Self, KafkaError> {
        let max_bytes =
            usize::try_from(partition_max_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        // The byte limit is the one that matters; the count only bounds per-set overhead.
        rdkafka_sys::mock_set_partition_retention(max_bytes, 10_000_000);
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("kafka-mock".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for cmd in rx {
                    match cmd {
                        Command::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let r = cluster.create_topic(&name, partitions, 1);
                            let _ = reply.send(r.map_err(|e| e.to_string()));
                        }
                        Command::BrokerDown { broker, reply } => {
                            let _ =
                                reply.send(cluster.broker_down(broker).map_err(|e| e.to_string()));
                        }
                        Command::BrokerUp { broker, reply } => {
                            let _ =
                                reply.send(cluster.broker_up(broker).map_err(|e| e.to_string()));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|e| KafkaError::Mock(format!("cannot spawn mock thread: {e}")))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::Mock("mock thread exited during start".into()))?
            .map_err(KafkaError::Mock)?;
        Ok(Self {
            bootstrap,
            brokers,
            commands: Mutex::new(tx),
            thread: Some(thread),
        })
    }

    /// The mock's bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    fn call(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), KafkaError> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .lock()
            .map_err(|_| KafkaError::Mock("mock command channel poisoned".into()))?
            .send(make(reply))
            .map_err(|_| KafkaError::Mock("mock cluster has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| KafkaError::Mock("mock cluster has stopped".into()))?
            .map_err(KafkaError::Mock)
    }

    /// Creates a topic (the mock's own API; it has no CreateTopics). Creating an existing
    /// topic is an error from the mock, which callers treat as "already exists".
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::CreateTopic {
            name: name.to_string(),
            partitions,
            reply,
        })
    }

    /// Takes a broker down (its connections are closed), for outage tests.
    pub fn broker_down(&self, broker: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::BrokerDown { broker, reply })
    }

    /// Brings a broker back.
    pub fn broker_up(&self, broker: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::BrokerUp { broker, reply })
    }
}

impl Drop for MockKafka {
    fn drop(&mut self) {
        if let Ok(tx) = self.commands.lock() {
            let _ = tx.send(Command::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards every connection accepted on `listener` to `target` until `shutdown` resolves.
pub async fn forward(
    listener: TcpListener,
    target: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), KafkaError> {
    forward_with(listener, target, Reachability::new(), shutdown).await
}

/// Whether the standalone broker accepts clients: an outage drill switch. While unreachable,
/// the forwarder drops every connection (new and established) and [`MockKafka::set_reachable`]
/// takes the mock's brokers down, so clients see a dead broker; the mock keeps its topics,
/// records and committed offsets, and clients reconnect once it is reachable again.
#[derive(Debug, Clone)]
pub struct Reachability {
    tx: watch::Sender<bool>,
}

impl Default for Reachability {
    fn default() -> Self {
        Self::new()
    }
}

impl Reachability {
    /// Reachable.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(true),
        }
    }

    /// Switches reachability; established connections are dropped when it turns false.
    pub fn set(&self, reachable: bool) {
        self.tx.send_replace(reachable);
    }

    /// Whether clients are accepted now.
    pub fn is_reachable(&self) -> bool {
        *self.tx.borrow()
    }

    fn watch(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

impl MockKafka {
    /// Takes every broker of the cluster down (`false`) or brings them back (`true`). Down
    /// brokers close their connections and refuse new ones; data and offsets are kept.
    pub fn set_reachable(&self, reachable: bool) -> Result<(), KafkaError> {
        for broker in 1..=self.brokers {
            if reachable {
                self.broker_up(broker)?;
            } else {
                self.broker_down(broker)?;
            }
        }
        Ok(())
    }
}

/// [`forward`] with an outage switch: while `reachability` is false, accepted connections are
/// closed at once and established ones are cut.
pub async fn forward_with(
    listener: TcpListener,
    target: String,
    reachability: Reachability,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), KafkaError> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (mut inbound, _) = accepted.map_err(|source| KafkaError::Io {
                    context: "accepting a broker connection".into(),
                    source,
                })?;
                if !reachability.is_reachable() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut up = reachability.watch();
                tokio::spawn(async move {
                    match TcpStream::connect(&target).await {
                        Ok(mut outbound) => {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = up.wait_for(|reachable| !*reachable) => {}
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, %target, "mock broker unreachable"),
                    }
                });
            }
        }
    }
}

/// Binds the standalone broker's listener on 127.0.0.1:`port` (0 picks a free port).
pub async fn bind_broker(port: u16) -> Result<TcpListener, KafkaError> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| KafkaError::Io {
            context: format!("binding the broker port 127.0.0.1:{port}"),
            source,
        })
}

/// First address of a bootstrap list.
pub fn first_bootstrap(bootstrap: &str) -> String {
    bootstrap
        .split(',')
        .next()
        .unwrap_or(bootstrap)
        .trim()
        .to_string()
}
