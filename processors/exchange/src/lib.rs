//! The paper venue, one part of the trading core (`tradestream-trading`): it holds accepted
//! orders and fills them against market data that comes strictly after each order was
//! created (no look-ahead), producing fills and the orders' status updates. Pure: no I/O, no
//! clock.

pub mod config;
pub mod error;
pub mod matching;
pub mod processor;

pub use config::{DaySession, ExchangeConfig};
pub use error::ExchangeError;
pub use processor::{ExchangeProcessor, Holdings, SNAPSHOT_FORMAT};
