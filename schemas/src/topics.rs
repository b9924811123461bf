//! The topic catalogue: names, Avro schemas (the `.avsc` files, compiled in), keys and subjects.

use std::fmt;

/// Every data topic of the pipeline. Dead-letter topics are derived with [`Topic::dlq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// OHLCV bars and trade ticks, keyed by symbol.
    MarketData,
    /// Indicator values per bar, keyed by symbol.
    Features,
    /// Model signals, keyed by symbol.
    TradingSignals,
    /// Detected anomalies, keyed by symbol.
    Anomalies,
    /// Order events (every state change), keyed by account.
    Orders,
    /// Executions, keyed by account.
    Fills,
    /// Operator commands (the kill switch), keyed by control name. A control-plane topic:
    /// provisioned and registered like the others, but not in [`Topic::ALL`], so the sink
    /// does not store it.
    Controls,
    /// Each account's value at the end of each market instant, from the trading core's
    /// books, keyed by account: the portfolio snapshots.
    Valuations,
}

/// The topics each pipeline stage's consumer group (`<prefix>-<stage>`) reads, `controls`
/// aside: what the demo, the benchmarks and the tests watch to know the pipeline has drained.
/// Each processor's tests check that its core's inputs match its entry.
pub const STAGE_INPUTS: [(&str, &[Topic]); 4] = [
    ("features", &[Topic::MarketData]),
    ("scorer", &[Topic::Features]),
    (
        "trading",
        &[Topic::MarketData, Topic::TradingSignals, Topic::Orders],
    ),
    (
        "sink",
        &[
            Topic::MarketData,
            Topic::Features,
            Topic::TradingSignals,
            Topic::Anomalies,
            Topic::Orders,
            Topic::Fills,
            Topic::Valuations,
        ],
    ),
];

/// The watched topics (see [`STAGE_INPUTS`]) among `inputs`, in their order.
pub fn data_inputs(inputs: &[Topic]) -> Vec<Topic> {
    inputs
        .iter()
        .copied()
        .filter(|t| *t != Topic::Controls)
        .collect()
}

/// The [`STAGE_INPUTS`] entry of `stage`.
pub fn stage_inputs(stage: &str) -> Option<&'static [Topic]> {
    STAGE_INPUTS
        .iter()
        .find(|(s, _)| *s == stage)
        .map(|(_, topics)| *topics)
}

/// Which record field is the Kafka message key (a plain UTF-8 string, not Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    /// The instrument symbol: keeps each symbol's records in order on one partition.
    Symbol,
    /// The account: keeps each account's orders and fills in order on one partition.
    Account,
    /// The control's name: keeps each control's commands in order on one partition.
    ControlName,
}

impl Topic {
    /// All data topics, in pipeline order.
    pub const ALL: [Topic; 7] = [
        Topic::MarketData,
        Topic::Features,
        Topic::TradingSignals,
        Topic::Anomalies,
        Topic::Orders,
        Topic::Fills,
        Topic::Valuations,
    ];

    /// Every topic: the data topics, then the control-plane ones. Provisioning, schema
    /// registration and decoding cover all of them.
    pub const EVERY: [Topic; 8] = [
        Topic::MarketData,
        Topic::Features,
        Topic::TradingSignals,
        Topic::Anomalies,
        Topic::Orders,
        Topic::Fills,
        Topic::Valuations,
        Topic::Controls,
    ];

    /// The Kafka topic name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::MarketData => "market_data",
            Topic::Features => "features",
            Topic::TradingSignals => "trading_signals",
            Topic::Anomalies => "anomalies",
            Topic::Orders => "orders",
            Topic::Fills => "fills",
            Topic::Controls => "controls",
            Topic::Valuations => "valuations",
        }
    }

    /// The value schema (the `.avsc` file's text).
    pub fn schema(self) -> &'static str {
        match self {
            Topic::MarketData => include_str!("../avro/market_data.avsc"),
            Topic::Features => include_str!("../avro/features.avsc"),
            Topic::TradingSignals => include_str!("../avro/trading_signals.avsc"),
            Topic::Anomalies => include_str!("../avro/anomalies.avsc"),
            Topic::Orders => include_str!("../avro/orders.avsc"),
            Topic::Fills => include_str!("../avro/fills.avsc"),
            Topic::Controls => include_str!("../avro/control.avsc"),
            Topic::Valuations => include_str!("../avro/valuations.avsc"),
        }
    }

    /// The key field.
    pub fn key_field(self) -> KeyField {
        match self {
            Topic::MarketData | Topic::Features | Topic::TradingSignals | Topic::Anomalies => {
                KeyField::Symbol
            }
            Topic::Orders | Topic::Fills | Topic::Valuations => KeyField::Account,
            Topic::Controls => KeyField::ControlName,
        }
    }

    /// Registry subject of the value schema (Confluent TopicNameStrategy).
    pub fn value_subject(self) -> String {
        format!("{}-value", self.name())
    }

    /// The topic's dead-letter topic.
    pub fn dlq(self) -> String {
        dlq_topic(self.name())
    }

    /// Looks a topic up by its Kafka name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::EVERY.into_iter().find(|t| t.name() == name)
    }
}

/// Dead-letter topic for any source topic: `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Schema of the dead-letter envelope (value of every `<topic>.dlq`).
pub const DEAD_LETTER_SCHEMA: &str = include_str!("../avro/dead_letter.avsc");

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
