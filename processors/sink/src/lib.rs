//! Sink processor: consumes all six topics (market data, features, signals, anomalies,
//! orders, fills) and the trading core's settlement marks on `progress` into Postgres in batches,
//! idempotently, with the consumed offsets stored in the same database transaction as the rows.
//!
//! * [`SinkWriter`] — the database side: one batch in one transaction; replays (same offsets
//!   or same ids) change nothing; records the database refuses come back as dead letters.
//! * [`run_sink`] — the Kafka side: one consumer per lane assigned every partition at the
//!   offsets the database holds, batching by size and linger, dead letters to `<topic>.dlq`,
//!   retries with backoff.
//! * [`SinkConfig`] — batching and retry settings.
//!
//! Tables written: `market_data`, `features` (sql/0020), `signals`, `anomalies`, `orders`
//! (current state) and `order_events` (every event, sql/0021), `fills` (whose trigger moves
//! cash and positions; an exchange mark's fills too), positions marked at newly stored market
//! data, and `portfolio_snapshots` settled per market instant (sql/0060).

pub mod config;
pub mod error;
mod order_state;
pub mod runner;
pub mod writer;

pub use config::SinkConfig;
pub use error::SinkError;
pub use runner::{PROCESSOR, SinkStats, run_sink};
pub use writer::{BatchItem, BatchOutcome, DeadLetterRecord, PreparedBatch, SinkWriter};
