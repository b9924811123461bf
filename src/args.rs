//! Command-line arguments. Every setting is a flag and an environment variable; the values
//! are turned into the crates' config structs, whose `validate()` names any bad setting.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tradestream_kafka::KafkaConfig;
use tradestream_postgres::PostgresConfig;

/// tradestream: a streaming trading platform on Kafka.
///
/// Market data flows through stream processors over Avro-typed Kafka topics into an exact
/// Postgres portfolio. With no KAFKA_BROKERS, SCHEMA_REGISTRY_URL or DATABASE_URL set,
/// everything runs embedded: librdkafka's mock cluster, tradestream's own schema registry and
/// a private PostgreSQL cluster.
#[derive(Debug, Parser)]
#[command(
    name = "tradestream",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the end-to-end demo: embedded broker, registry and Postgres, replaying the NASDAQ
    /// daily file, then a summary.
    Demo(DemoArgs),
    /// Serve a standalone embedded Kafka broker (librdkafka mock cluster) for several
    /// processes to share; prints its bootstrap address and serves until stopped.
    Broker(BrokerArgs),
    /// Serve tradestream's Confluent-compatible schema registry (persisted in Postgres).
    Registry(RegistryArgs),
    /// Serve a private PostgreSQL cluster from the system's binaries; prints its URL and
    /// serves until stopped.
    Postgres(PostgresArgs),
    /// Apply the SQL migrations in sql/ to the database.
    Migrate(MigrateArgs),
    /// Create the pipeline's topics (and dead-letter topics) with partitions and retention
    /// from the Kafka settings.
    Topics(TopicsArgs),
    /// Register every topic's Avro schema with the schema registry.
    Schemas(SchemasArgs),
    /// Check that Kafka, Postgres and the schema registry answer.
    Health(HealthArgs),
    /// Run one stream processor (features, scorer, router, exchange or sink) until stopped.
    Run(RunArgs),
    /// Run every stream processor in this one process until stopped.
    Up(UpArgs),
    /// Publish market data to `market_data`: replay a CSV file or generate a synthetic feed.
    Ingest(IngestArgs),
    /// Train the signal model and the anomaly detector on historical bars and print test
    /// metrics.
    Train(TrainArgs),
    /// Measure throughput and latency on the real code path (mock broker, Avro, runner,
    /// sink): the figures of docs/benchmarks.md. Use a release build (`make bench`).
    Bench(BenchArgs),
    /// Serve the REST trading API (manual orders, portfolio, events, kill switch) against a
    /// shared broker and Postgres.
    Api(crate::commands::api::ApiCommandArgs),
    /// Mint an HS256 token for the REST API (local use).
    Token(crate::commands::api::TokenArgs),
    /// Show the effective processor settings (`config show`) or list every setting with its
    /// environment variable and --set path (`config env`); see docs/configuration.md.
    Config(crate::commands::config::ConfigArgs),
}

/// Settings shared by the processes that run stream processors.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProcessArgs {
    /// TOML file with [features], [scorer], [router], [exchange], [sink] sections.
    #[arg(long, env = "TRADESTREAM_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) overrides: crate::commands::config::SetArgs,
    /// Address serving /metrics and /healthz.
    #[arg(
        long,
        env = "TRADESTREAM_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub(crate) metrics_listen: SocketAddr,
    /// Seconds the stages may take to finish their batches and commit after SIGTERM/SIGINT;
    /// past that the process exits 1 naming the stages still running.
    #[arg(long, env = "TRADESTREAM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub(crate) shutdown_grace_secs: u64,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryClientArgs,
}

/// `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Which processor.
    #[arg(value_enum)]
    pub(crate) stage: crate::commands::pipeline::Stage,
    #[command(flatten)]
    pub(crate) process: ProcessArgs,
}

/// `up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) process: ProcessArgs,
    #[command(flatten)]
    pub(crate) api: crate::commands::api::ApiArgs,
}

/// `ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Source kind.
    #[arg(value_enum)]
    pub(crate) source: IngestSource,
    /// CSV file (csv source).
    #[arg(long, env = "TRADESTREAM_INGEST_FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Symbol of a daily-format CSV's rows; omit for the generic format with a symbol column.
    #[arg(long, env = "TRADESTREAM_INGEST_SYMBOL")]
    pub(crate) symbol: Option<String>,
    /// Bar interval label of CSV rows.
    #[arg(long, env = "TRADESTREAM_INGEST_INTERVAL", default_value = "1d")]
    pub(crate) interval: String,
    /// Synthetic symbols (comma-separated).
    #[arg(
        long,
        env = "TRADESTREAM_SYNTHETIC_SYMBOLS",
        value_delimiter = ',',
        default_value = "SYNA,SYNB,SYNC"
    )]
    pub(crate) symbols: Vec<String>,
    /// Synthetic seed (same seed, same bars).
    #[arg(long, env = "TRADESTREAM_SYNTHETIC_SEED", default_value_t = 42)]
    pub(crate) seed: u64,
    /// Synthetic bars per symbol.
    #[arg(long, env = "TRADESTREAM_SYNTHETIC_BARS", default_value_t = 1000)]
    pub(crate) bars: u64,
    /// Synthetic bar interval in seconds.
    #[arg(
        long,
        env = "TRADESTREAM_SYNTHETIC_INTERVAL_SECS",
        default_value_t = 86_400
    )]
    pub(crate) interval_secs: u64,
    /// Event time runs this many times faster than real time (0: as fast as possible).
    #[arg(long, env = "TRADESTREAM_INGEST_SPEEDUP", default_value_t = 0.0)]
    pub(crate) speedup: f64,
    /// Fixed publishing rate in records per second (overrides --speedup).
    #[arg(long, env = "TRADESTREAM_INGEST_RATE")]
    pub(crate) rate: Option<f64>,
    /// Publish every record of the source even when `market_data` already has it. By
    /// default a restarted ingest skips what an earlier run of the same source published
    /// (a second copy would carry a new ingest time under the same record id).
    #[arg(long, env = "TRADESTREAM_INGEST_REPUBLISH")]
    pub(crate) republish: bool,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryClientArgs,
    #[command(flatten)]
    pub(crate) grace: GraceArgs,
}

/// The shutdown grace period of the processes that are not stream stages (`ingest`,
/// `broker`, `registry`, `postgres`); `run` and `up` carry the same flag in their settings.
#[derive(Debug, Clone, Args)]
pub(crate) struct GraceArgs {
    /// Seconds to finish in-flight work after SIGTERM/SIGINT before exiting 1 (naming what
    /// was still running).
    #[arg(long, env = "TRADESTREAM_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub(crate) shutdown_grace_secs: u64,
}

/// Market-data sources.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum IngestSource {
    /// Replay a CSV file.
    Csv,
    /// Geometric Brownian motion with jumps.
    Synthetic,
}

/// `train`.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// OHLCV CSV (daily format, or generic with a symbol column).
    #[arg(
        long,
        env = "TRADESTREAM_TRAIN_DATA",
        default_value = "../shared/data/nasdaq-daily.csv"
    )]
    pub(crate) data: PathBuf,
    /// Directory to write signal-model.json and anomaly-model.json to.
    #[arg(long, env = "TRADESTREAM_TRAIN_OUT", default_value = "models")]
    pub(crate) out: PathBuf,
    /// Symbol of a daily-format file's rows.
    #[arg(long, env = "TRADESTREAM_TRAIN_SYMBOL", default_value = "^IXIC")]
    pub(crate) symbol: String,
}

/// Log output.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogArgs {
    /// Log format.
    #[arg(long, env = "TRADESTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    /// Log filter, e.g. `info` or `tradestream=debug,rdkafka=warn` (default `info`). `demo`
    /// writes its logs to `.tradestream/demo.log` unless this or `--log-file` is given, so the
    /// terminal shows progress and the summary.
    #[arg(long, env = "RUST_LOG", global = true)]
    pub(crate) log_level: Option<String>,
    /// Write logs to this file instead of stderr (appended).
    #[arg(long, env = "TRADESTREAM_LOG_FILE", global = true)]
    pub(crate) log_file: Option<PathBuf>,
}

/// Log formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Kafka connection settings (see the README's configuration table).
#[derive(Debug, Clone, Args)]
pub(crate) struct KafkaArgs {
    /// Bootstrap servers, host:port[,host:port]. Unset: an embedded mock cluster.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub(crate) kafka_brokers: Option<String>,
    /// Client id reported to the brokers.
    #[arg(long, env = "KAFKA_CLIENT_ID", default_value = "tradestream")]
    pub(crate) kafka_client_id: String,
    /// Consumer group id (processors default to tradestream-<processor>).
    #[arg(long, env = "KAFKA_GROUP_ID")]
    pub(crate) kafka_group_id: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = "KAFKA_SECURITY_PROTOCOL", default_value = "PLAINTEXT")]
    pub(crate) kafka_security_protocol: String,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI, OAUTHBEARER.
    #[arg(long, env = "KAFKA_SASL_MECHANISM")]
    pub(crate) kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub(crate) kafka_sasl_username: Option<String>,
    /// SASL password (prefer the environment variable).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub(crate) kafka_sasl_password: Option<String>,
    /// CA certificate file.
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION")]
    pub(crate) kafka_ssl_ca_location: Option<String>,
    /// Client certificate file (mutual TLS).
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub(crate) kafka_ssl_certificate_location: Option<String>,
    /// Client key file (mutual TLS).
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION")]
    pub(crate) kafka_ssl_key_location: Option<String>,
    /// Client key password.
    #[arg(long, env = "KAFKA_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub(crate) kafka_ssl_key_password: Option<String>,
    /// Consumer session timeout in ms.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub(crate) kafka_session_timeout_ms: u32,
    /// Partitions of provisioned topics.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    pub(crate) kafka_partitions: i32,
    /// Replication factor of provisioned topics.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub(crate) kafka_replication_factor: i32,
    /// Retention of provisioned topics in ms (-1 forever; orders and fills are always kept).
    #[arg(long, env = "KAFKA_RETENTION_MS", default_value_t = 604_800_000)]
    pub(crate) kafka_retention_ms: i64,
    /// Producer linger in ms (batching vs latency).
    #[arg(long, env = "KAFKA_LINGER_MS", default_value_t = 5)]
    pub(crate) kafka_linger_ms: u32,
    /// Delivery guarantee: effectively-once (any broker) or exactly-once (Kafka transactions).
    #[arg(
        long,
        env = "TRADESTREAM_GUARANTEE",
        default_value = "effectively-once"
    )]
    pub(crate) guarantee: String,
    /// Transactional id with exactly-once (default `<group>-<host>-<pid>`).
    #[arg(long, env = "KAFKA_TRANSACTIONAL_ID")]
    pub(crate) kafka_transactional_id: Option<String>,
    /// Stateful processors snapshot their state at least this often (ms).
    #[arg(
        long,
        env = "TRADESTREAM_SNAPSHOT_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub(crate) snapshot_interval_ms: u64,
    /// ... and after at most this many input records.
    #[arg(long, env = "TRADESTREAM_SNAPSHOT_RECORDS", default_value_t = 50_000)]
    pub(crate) snapshot_records: u64,
    /// Batches a per-partition or stateless processor may have awaiting acknowledgement
    /// while it processes the next (0: wait for each batch).
    #[arg(long, env = "TRADESTREAM_MAX_IN_FLIGHT_BATCHES", default_value_t = 4)]
    pub(crate) max_in_flight_batches: usize,
    /// How long a processor waits for more records after the first of a batch (ms).
    #[arg(long, env = "TRADESTREAM_BATCH_LINGER_MS", default_value_t = 1)]
    pub(crate) batch_linger_ms: u64,
    /// Consumer tasks per per-partition processor (features, scorer) in one process; the
    /// trading core always runs one.
    #[arg(long, env = "TRADESTREAM_STREAM_TASKS", default_value_t = 1)]
    pub(crate) stream_tasks: usize,
    /// MiB of each partition's log the embedded mock broker keeps (without KAFKA_BROKERS);
    /// a reader further behind loses records. Kept in memory.
    #[arg(
        long,
        env = "TRADESTREAM_MOCK_PARTITION_MAX_MB",
        default_value_t = tradestream_kafka::mock::DEFAULT_PARTITION_MAX_MB
    )]
    pub(crate) mock_partition_max_mb: u64,
    /// Extra librdkafka property key=value (repeatable; env: comma-separated).
    #[arg(
        long = "kafka-property",
        env = "KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub(crate) kafka_properties: Vec<String>,
}

impl KafkaArgs {
    /// The connector config; malformed `key=value` properties are reported by name.
    pub(crate) fn config(&self) -> anyhow::Result<KafkaConfig> {
        let mut extra = BTreeMap::new();
        for p in &self.kafka_properties {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("KAFKA_PROPERTIES / --kafka-property: {p:?} is not key=value")
            })?;
            extra.insert(k.trim().to_string(), v.trim().to_string());
        }
        let cfg = KafkaConfig {
            brokers: self.kafka_brokers.clone().filter(|b| !b.trim().is_empty()),
            client_id: self.kafka_client_id.clone(),
            group_id: self.kafka_group_id.clone(),
            security_protocol: self.kafka_security_protocol.clone(),
            sasl_mechanism: self.kafka_sasl_mechanism.clone(),
            sasl_username: self.kafka_sasl_username.clone(),
            sasl_password: self.kafka_sasl_password.clone(),
            ssl_ca_location: self.kafka_ssl_ca_location.clone(),
            ssl_certificate_location: self.kafka_ssl_certificate_location.clone(),
            ssl_key_location: self.kafka_ssl_key_location.clone(),
            ssl_key_password: self.kafka_ssl_key_password.clone(),
            session_timeout_ms: self.kafka_session_timeout_ms,
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication_factor,
            retention_ms: self.kafka_retention_ms,
            linger_ms: self.kafka_linger_ms,
            guarantee: self.guarantee.clone(),
            transactional_id: self.kafka_transactional_id.clone(),
            snapshot_interval_ms: self.snapshot_interval_ms,
            snapshot_records: self.snapshot_records,
            max_in_flight_batches: self.max_in_flight_batches,
            batch_linger_ms: self.batch_linger_ms,
            stream_tasks: self.stream_tasks,
            mock_partition_max_mb: self.mock_partition_max_mb,
            extra,
        };
        cfg.validate()
            .map_err(|p| anyhow::anyhow!("invalid Kafka settings:\n  {}", p.join("\n  ")))?;
        Ok(cfg)
    }
}

/// Postgres settings.
#[derive(Debug, Clone, Args)]
pub(crate) struct PgArgs {
    /// Database URL. Unset: a private cluster from the system's PostgreSQL binaries.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Data directory of the private cluster.
    #[arg(long, env = "TRADESTREAM_PG_DATA_DIR")]
    pub(crate) pg_data_dir: Option<PathBuf>,
    /// Port of the private cluster (default: a free port).
    #[arg(long, env = "TRADESTREAM_PG_PORT")]
    pub(crate) pg_port: Option<u16>,
    /// OS user that runs the private cluster when tradestream runs as root.
    #[arg(long, env = "TRADESTREAM_PG_OS_USER")]
    pub(crate) pg_os_user: Option<String>,
    /// Directory of the PostgreSQL binaries (default: pg_config --bindir).
    #[arg(long, env = "TRADESTREAM_PG_BIN_DIR")]
    pub(crate) pg_bin_dir: Option<PathBuf>,
    /// Connection pool size.
    #[arg(long, env = "TRADESTREAM_PG_MAX_CONNECTIONS", default_value_t = 10)]
    pub(crate) pg_max_connections: u32,
}

impl PgArgs {
    /// The connector config, validated.
    pub(crate) fn config(&self) -> anyhow::Result<PostgresConfig> {
        let cfg = PostgresConfig {
            database_url: self.database_url.clone().filter(|u| !u.trim().is_empty()),
            data_dir: self.pg_data_dir.clone(),
            port: self.pg_port,
            os_user: self.pg_os_user.clone(),
            bin_dir: self.pg_bin_dir.clone(),
            max_connections: self.pg_max_connections,
            ..PostgresConfig::default()
        };
        cfg.validate()
            .map_err(|p| anyhow::anyhow!("invalid Postgres settings:\n  {}", p.join("\n  ")))?;
        Ok(cfg)
    }
}

/// Schema registry client settings.
#[derive(Debug, Clone, Args)]
pub(crate) struct RegistryClientArgs {
    /// Confluent-compatible registry URL. Unset: tradestream serves its own.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub(crate) schema_registry_url: Option<String>,
}

/// `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Daily OHLCV CSV to replay.
    #[arg(
        long,
        env = "TRADESTREAM_DEMO_DATA",
        default_value = "../shared/data/nasdaq-daily.csv"
    )]
    pub(crate) data: PathBuf,
    /// Symbol of the CSV's rows.
    #[arg(long, env = "TRADESTREAM_DEMO_SYMBOL", default_value = "^IXIC")]
    pub(crate) symbol: String,
    /// Synthetic symbols replayed alongside the file (comma-separated; empty for none).
    #[arg(
        long,
        env = "TRADESTREAM_DEMO_SYNTHETIC",
        value_delimiter = ',',
        default_value = "SYNA,SYNB,SYNC"
    )]
    pub(crate) synthetic: Vec<String>,
    /// Seed of the synthetic symbols.
    #[arg(long, env = "TRADESTREAM_DEMO_SEED", default_value_t = 7)]
    pub(crate) seed: u64,
    /// Print the summary as JSON on stdout (for scripts and tests).
    #[arg(long, env = "TRADESTREAM_DEMO_JSON", default_value_t = false)]
    pub(crate) json: bool,
    /// TOML file with [features], [scorer], [router], [exchange], [sink] sections.
    #[arg(long, env = "TRADESTREAM_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) overrides: crate::commands::config::SetArgs,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryClientArgs,
    #[command(flatten)]
    pub(crate) api: crate::commands::api::ApiArgs,
}

/// What `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchScenario {
    /// The features processor alone: records/s, Avro in and out through the broker.
    Features,
    /// Every stage including the sink: market-data records/s end to end.
    Pipeline,
    /// Every stage at a fixed rate: bar produced → its fill received, percentiles.
    Latency,
}

/// `bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Scenario to run.
    #[arg(value_enum)]
    pub(crate) scenario: BenchScenario,
    #[command(flatten)]
    pub(crate) overrides: crate::commands::config::SetArgs,
    /// Market-data records to feed.
    #[arg(long, env = "TRADESTREAM_BENCH_RECORDS", default_value_t = 200_000)]
    pub(crate) records: u64,
    /// Synthetic symbols (records are spread round robin).
    #[arg(long, env = "TRADESTREAM_BENCH_SYMBOLS", default_value_t = 60)]
    pub(crate) symbols: usize,
    /// Seed of the synthetic feed.
    #[arg(long, env = "TRADESTREAM_BENCH_SEED", default_value_t = 1)]
    pub(crate) seed: u64,
    /// Most records any reader may have left to read on a topic before the feeder pauses
    /// (a `window / partitions` share on the account-keyed `orders` and `fills`): the mock
    /// broker keeps only `--mock-partition-max-mb` per partition.
    #[arg(long, env = "TRADESTREAM_BENCH_WINDOW", default_value_t = 10_000)]
    pub(crate) window: u64,
    /// Records per second of the latency scenario.
    #[arg(long, env = "TRADESTREAM_BENCH_RATE", default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Seconds the latency scenario waits for consumer groups to settle before feeding.
    #[arg(long, env = "TRADESTREAM_BENCH_SETTLE_SECS", default_value_t = 5)]
    pub(crate) settle_secs: u64,
    /// Print the figures as JSON.
    #[arg(long, env = "TRADESTREAM_BENCH_JSON", default_value_t = false)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryClientArgs,
}

/// `broker`.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    #[command(flatten)]
    pub(crate) grace: GraceArgs,
    /// Port to listen on (127.0.0.1). 0 picks a free port.
    #[arg(long, env = "TRADESTREAM_BROKER_PORT", default_value_t = 9092)]
    pub(crate) port: u16,
    /// Number of mock brokers.
    #[arg(long, env = "TRADESTREAM_BROKER_COUNT", default_value_t = 1)]
    pub(crate) brokers: i32,
    /// MiB of each partition's log the broker keeps; a reader further behind loses records.
    /// Kept in memory.
    #[arg(
        long,
        env = "TRADESTREAM_MOCK_PARTITION_MAX_MB",
        default_value_t = tradestream_kafka::mock::DEFAULT_PARTITION_MAX_MB
    )]
    pub(crate) mock_partition_max_mb: u64,
    /// Partitions of the pipeline topics created at start.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    pub(crate) partitions: i32,
    /// Also create these topics (name or name:partitions; repeatable, env comma-separated).
    #[arg(
        long = "topic",
        env = "TRADESTREAM_BROKER_TOPICS",
        value_delimiter = ','
    )]
    pub(crate) topics: Vec<String>,
}

/// `registry`.
#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    #[command(flatten)]
    pub(crate) grace: GraceArgs,
    /// Address to serve on.
    #[arg(
        long,
        env = "TRADESTREAM_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub(crate) listen: SocketAddr,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
}

/// `postgres`.
#[derive(Debug, Args)]
pub(crate) struct PostgresArgs {
    #[command(flatten)]
    pub(crate) grace: GraceArgs,
    /// Apply migrations after start.
    #[arg(long, env = "TRADESTREAM_PG_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) migrate: bool,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
}

/// `migrate`.
#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) pg: PgArgs,
}

/// `topics`.
#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    #[command(subcommand)]
    pub(crate) action: TopicsAction,
}

/// What to do with topics.
#[derive(Debug, Subcommand)]
pub(crate) enum TopicsAction {
    /// Create missing topics.
    Create(KafkaOnly),
    /// List topics and partition counts.
    List(KafkaOnly),
}

/// Only Kafka settings.
#[derive(Debug, Args)]
pub(crate) struct KafkaOnly {
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
}

/// `schemas`.
#[derive(Debug, Args)]
pub(crate) struct SchemasArgs {
    #[command(subcommand)]
    pub(crate) action: SchemasAction,
}

/// What to do with schemas.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemasAction {
    /// Register every topic's schema (idempotent) and print subject → id.
    Register {
        /// Registry URL.
        #[arg(long, env = "SCHEMA_REGISTRY_URL")]
        schema_registry_url: String,
    },
    /// Print a topic's Avro schema.
    Show {
        /// Topic name (market_data, features, trading_signals, anomalies, orders, fills, dead_letter).
        topic: String,
    },
}

/// `health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Seconds to wait for each component.
    #[arg(long, env = "TRADESTREAM_HEALTH_TIMEOUT_SECS", default_value_t = 5)]
    pub(crate) timeout_secs: u64,
    #[command(flatten)]
    pub(crate) kafka: KafkaArgs,
    #[command(flatten)]
    pub(crate) pg: PgArgs,
    #[command(flatten)]
    pub(crate) registry: RegistryClientArgs,
}
