//! The features processor: turns each `market_data` bar into a `features` record with
//! streaming technical indicators (TA-Lib definitions, warm-up included), the bar's class
//! (REAL_BULL / REAL_BEAR / FAKE) and the symbol's trend state.
//!
//! [`FeaturesProcessor`] is a pure core implementing [`tradestream_schemas::Processor`]: no
//! I/O, no clock, O(1) amortized work per bar with fixed-size per-symbol state. The Kafka
//! runner, the backtester and the tests drive the same code. Indicator names and formulas are
//! listed in [`indicators`].

pub mod config;
pub mod error;
pub mod indicators;
pub mod processor;
mod rolling;
pub mod trend;

pub use config::{FEATURE_SET_VERSION, FeaturesConfig, MAX_PERIOD};
pub use error::FeaturesError;
pub use processor::{FeaturesProcessor, PROCESSOR_NAME, RECORD_ID_PREFIX, SNAPSHOT_FORMAT};
pub use trend::{TrendMachine, classify};
