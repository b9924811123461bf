//! Kafka client settings shared by every producer and consumer of a process.
//!
//! One struct feeds librdkafka for both directions, so security settings are written once.
//! Anything librdkafka understands but this struct does not name goes through `extra`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Connection and client settings. Every field is also an environment variable
/// (`KAFKA_*`) and a CLI flag of the `tradestream` binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers (`host:port,...`). Unset: an embedded librdkafka mock cluster.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Client id reported to the brokers.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Consumer group id; processors default it to `tradestream-<processor>`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[serde(default = "default_security_protocol")]
    pub security_protocol: String,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI or OAUTHBEARER.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password.
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// CA certificate file for verifying the brokers.
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// Client certificate file (mutual TLS).
    #[serde(default)]
    pub ssl_certificate_location: Option<String>,
    /// Client private key file (mutual TLS).
    #[serde(default)]
    pub ssl_key_location: Option<String>,
    /// Password of the client private key.
    #[serde(default)]
    pub ssl_key_password: Option<String>,
    /// Consumer session timeout; a crashed member's partitions move after this long.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u32,
    /// Default partition count for provisioned topics.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor for provisioned topics (real clusters only).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Default retention of provisioned topics, in milliseconds (-1: forever).
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// How long producers wait to batch records before sending (`linger.ms`): higher
    /// favours throughput, 0 favours latency.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Delivery guarantee of the processors: `effectively-once` (any broker, the mock
    /// included: acknowledged outputs before offsets, ids from the cause, state restored from
    /// the changelog) or `exactly-once` (Kafka transactions; needs a real cluster).
    #[serde(default = "default_guarantee")]
    pub guarantee: String,
    /// Transactional id with `exactly-once` (default `<group>-<host>-<pid>`).
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// A stateful processor task snapshots its state at least this often (ms)...
    #[serde(default = "default_snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    /// ... and after at most this many input records.
    #[serde(default = "default_snapshot_records")]
    pub snapshot_records: u64,
    /// Batches a per-partition or stateless processor may have awaiting acknowledgement
    /// while it processes the next (0: wait for each batch before the next).
    #[serde(default = "default_max_in_flight_batches")]
    pub max_in_flight_batches: usize,
    /// How long a processor waits for more records after the first of a batch (ms): what is
    /// already fetched is taken at once, so this only adds latency when input trickles in.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Consumer tasks per per-partition processor (features, scorer) in one process, each a
    /// member of the processor's consumer group with its own share of the partitions, so one
    /// process can use several cores. Processors that keep one global state (router,
    /// exchange) always run one.
    #[serde(default = "default_stream_tasks")]
    pub stream_tasks: usize,
    /// MiB of each partition's log the embedded mock broker keeps (no `brokers`): a reader
    /// further behind than that loses records, so this bounds how far a slow consumer may
    /// lag. The mock keeps it all in memory.
    #[serde(default = "default_mock_partition_max_mb")]
    pub mock_partition_max_mb: u64,
    /// Extra librdkafka properties passed through verbatim (e.g. `compression.type=zstd`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// The guarantees `guarantee` accepts.
pub const GUARANTEES: [&str; 2] = ["effectively-once", "exactly-once"];

fn default_guarantee() -> String {
    GUARANTEES[0].into()
}
fn default_snapshot_interval_ms() -> u64 {
    10_000
}
fn default_snapshot_records() -> u64 {
    50_000
}

fn default_max_in_flight_batches() -> usize {
    4
}

fn default_batch_linger_ms() -> u64 {
    1
}

fn default_stream_tasks() -> usize {
    1
}

fn default_mock_partition_max_mb() -> u64 {
    crate::mock::DEFAULT_PARTITION_MAX_MB
}

/// Most [`KafkaConfig::mock_partition_max_mb`] accepted.
pub const MAX_MOCK_PARTITION_MB: u64 = 64 * 1024;

/// Most [`KafkaConfig::stream_tasks`] accepted.
pub const MAX_STREAM_TASKS: usize = 64;

fn default_linger_ms() -> u32 {
    5
}

fn default_client_id() -> String {
    "tradestream".into()
}
fn default_security_protocol() -> String {
    "PLAINTEXT".into()
}
fn default_session_timeout_ms() -> u32 {
    10_000
}
fn default_partitions() -> i32 {
    6
}
fn default_replication_factor() -> i32 {
    1
}
fn default_retention_ms() -> i64 {
    7 * 24 * 3600 * 1000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            client_id: default_client_id(),
            group_id: None,
            security_protocol: default_security_protocol(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            session_timeout_ms: default_session_timeout_ms(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            retention_ms: default_retention_ms(),
            linger_ms: default_linger_ms(),
            guarantee: default_guarantee(),
            transactional_id: None,
            snapshot_interval_ms: default_snapshot_interval_ms(),
            snapshot_records: default_snapshot_records(),
            max_in_flight_batches: default_max_in_flight_batches(),
            batch_linger_ms: default_batch_linger_ms(),
            stream_tasks: default_stream_tasks(),
            mock_partition_max_mb: default_mock_partition_max_mb(),
            extra: BTreeMap::new(),
        }
    }
}

const PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: [&str; 5] = [
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "GSSAPI",
    "OAUTHBEARER",
];

impl KafkaConfig {
    /// Checks every setting and reports all problems at once, each naming its setting.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if let Some(b) = &self.brokers {
            if b.trim().is_empty() {
                problems.push("KAFKA_BROKERS: must not be empty when set".to_string());
            }
            for part in b.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let port_ok = part
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    problems.push(format!("KAFKA_BROKERS: {part:?} is not host:port"));
                }
            }
        }
        if self.client_id.trim().is_empty() {
            problems.push("KAFKA_CLIENT_ID: must not be empty".into());
        }
        let protocol = self.security_protocol.to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            problems.push(format!(
                "KAFKA_SECURITY_PROTOCOL: {:?} is not one of {}",
                self.security_protocol,
                PROTOCOLS.join(", ")
            ));
        }
        let sasl = protocol.starts_with("SASL");
        match (&self.sasl_mechanism, sasl) {
            (Some(m), _) if !MECHANISMS.contains(&m.to_ascii_uppercase().as_str()) => problems
                .push(format!(
                    "KAFKA_SASL_MECHANISM: {m:?} is not one of {}",
                    MECHANISMS.join(", ")
                )),
            (None, true) => problems.push(format!(
                "KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL={protocol}"
            )),
            _ => {}
        }
        let mech = self
            .sasl_mechanism
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        if sasl && (mech == "PLAIN" || mech.starts_with("SCRAM")) {
            if self.sasl_username.is_none() {
                problems.push(format!(
                    "KAFKA_SASL_USERNAME: required with SASL mechanism {mech}"
                ));
            }
            if self.sasl_password.is_none() {
                problems.push(format!(
                    "KAFKA_SASL_PASSWORD: required with SASL mechanism {mech}"
                ));
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            problems.push(
                "KAFKA_SSL_CERTIFICATE_LOCATION / KAFKA_SSL_KEY_LOCATION: set both or neither"
                    .into(),
            );
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            problems.push(format!(
                "KAFKA_SESSION_TIMEOUT_MS: {} is outside 1000..=300000",
                self.session_timeout_ms
            ));
        }
        if !GUARANTEES.contains(&self.guarantee.as_str()) {
            problems.push(format!(
                "TRADESTREAM_GUARANTEE: {:?} is not one of {}",
                self.guarantee,
                GUARANTEES.join(", ")
            ));
        } else if self.guarantee == "exactly-once" && self.brokers.is_none() {
            problems.push(
                "TRADESTREAM_GUARANTEE: exactly-once needs a real Kafka cluster (KAFKA_BROKERS); \
                 the embedded mock cannot verify transactions"
                    .into(),
            );
        }
        if self.snapshot_interval_ms < 100 {
            problems.push(format!(
                "TRADESTREAM_SNAPSHOT_INTERVAL_MS: {} must be >= 100",
                self.snapshot_interval_ms
            ));
        }
        if self.snapshot_records == 0 {
            problems.push("TRADESTREAM_SNAPSHOT_RECORDS: must be >= 1".into());
        }
        if self.max_in_flight_batches > 64 {
            problems.push(format!(
                "TRADESTREAM_MAX_IN_FLIGHT_BATCHES: {} must be <= 64",
                self.max_in_flight_batches
            ));
        }
        if self.batch_linger_ms > 1_000 {
            problems.push(format!(
                "TRADESTREAM_BATCH_LINGER_MS: {} must be <= 1000",
                self.batch_linger_ms
            ));
        }
        if !(1..=MAX_STREAM_TASKS).contains(&self.stream_tasks) {
            problems.push(format!(
                "TRADESTREAM_STREAM_TASKS: {} must be between 1 and {MAX_STREAM_TASKS}",
                self.stream_tasks
            ));
        }
        if !(1..=MAX_MOCK_PARTITION_MB).contains(&self.mock_partition_max_mb) {
            problems.push(format!(
                "TRADESTREAM_MOCK_PARTITION_MAX_MB: {} must be between 1 and {MAX_MOCK_PARTITION_MB}",
                self.mock_partition_max_mb
            ));
        }
        if self.partitions < 1 {
            problems.push(format!(
                "KAFKA_PARTITIONS: {} must be >= 1",
                self.partitions
            ));
        }
        if self.replication_factor < 1 {
            problems.push(format!(
                "KAFKA_REPLICATION_FACTOR: {} must be >= 1",
                self.replication_factor
            ));
        }
        if self.retention_ms < -1 || self.retention_ms == 0 {
            problems.push(format!(
                "KAFKA_RETENTION_MS: {} must be -1 (forever) or > 0",
                self.retention_ms
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// librdkafka properties common to producers, consumers and admin clients, for the
    /// given bootstrap address (the configured brokers or an embedded mock's).
    pub fn client_properties(&self, bootstrap: &str) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        p.insert("bootstrap.servers".into(), bootstrap.to_string());
        p.insert("client.id".into(), self.client_id.clone());
        p.insert(
            "security.protocol".into(),
            self.security_protocol.to_ascii_lowercase(),
        );
        let optional = [
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
            ("ssl.key.password", &self.ssl_key_password),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                p.insert(k.to_string(), v.clone());
            }
        }
        for (k, v) in &self.extra {
            p.insert(k.clone(), v.clone());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(KafkaConfig::default().validate(), Ok(()));
    }

    #[test]
    fn reports_every_problem_with_its_setting() {
        let cfg = KafkaConfig {
            brokers: Some("nohost".into()),
            security_protocol: "SASL_SSL".into(),
            partitions: 0,
            session_timeout_ms: 10,
            batch_linger_ms: 5_000,
            stream_tasks: 0,
            mock_partition_max_mb: 0,
            ..KafkaConfig::default()
        };
        let problems = cfg.validate().expect_err("invalid");
        let joined = problems.join("\n");
        for setting in [
            "KAFKA_BROKERS",
            "KAFKA_SASL_MECHANISM",
            "KAFKA_PARTITIONS",
            "KAFKA_SESSION_TIMEOUT_MS",
            "TRADESTREAM_BATCH_LINGER_MS",
            "TRADESTREAM_STREAM_TASKS",
            "TRADESTREAM_MOCK_PARTITION_MAX_MB",
        ] {
            assert!(joined.contains(setting), "{setting} missing from {joined}");
        }
    }

    #[test]
    fn sasl_scram_needs_credentials() {
        let cfg = KafkaConfig {
            brokers: Some("k:9093".into()),
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            ..KafkaConfig::default()
        };
        let joined = cfg.validate().expect_err("invalid").join("\n");
        assert!(joined.contains("KAFKA_SASL_USERNAME") && joined.contains("KAFKA_SASL_PASSWORD"));
    }

    #[test]
    fn security_settings_pass_through() {
        let cfg = KafkaConfig {
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            ssl_ca_location: Some("/ca.pem".into()),
            extra: [("compression.type".to_string(), "zstd".to_string())].into(),
            ..KafkaConfig::default()
        };
        let p = cfg.client_properties("k:9093");
        assert_eq!(p["security.protocol"], "sasl_ssl");
        assert_eq!(p["sasl.username"], "u");
        assert_eq!(p["ssl.ca.location"], "/ca.pem");
        assert_eq!(p["compression.type"], "zstd");
        assert_eq!(p["bootstrap.servers"], "k:9093");
    }
}
