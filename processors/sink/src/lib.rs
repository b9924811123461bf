//! Sink processor: consumes the seven data topics (market data, features, signals, anomalies,
//! orders, fills, valuations) into Postgres in batches,
//! idempotently, with the consumed offsets stored in the same database transaction as the rows.
//!
//! * [`SinkWriter`] — the database side: one batch in one transaction; replays (same offsets
//!   or same ids) change nothing; records the database refuses come back as dead letters.
//! * [`run_sink`] — the Kafka side: one consumer per lane assigned every partition at the
//!   offsets the database holds, batching by size and linger, dead letters to `<topic>.dlq`,
//!   retries with backoff.
//! * [`SinkConfig`] — batching and retry settings.
//!
//! Tables written: `market_data`, `features`, `signals`, `anomalies`, `orders` (current state)
//! and `order_events` (every event), `fills` (whose trigger moves cash and positions),
//! positions marked at newly stored market data, and `portfolio_snapshots` (the trading
//! core's valuations, one per account and instant); see `sql/` and docs/database.md.

pub mod config;
pub mod error;
mod order_state;
pub mod runner;
pub mod writer;

pub use config::SinkConfig;
pub use error::SinkError;
pub use runner::{PROCESSOR, SinkStats, run_sink};
pub use writer::{BatchItem, BatchOutcome, DeadLetterRecord, PreparedBatch, SinkWriter};
