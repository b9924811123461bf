//! Exchange processor: a paper venue. It holds accepted orders from `orders` and fills them
//! against market data that comes strictly after each order was created (no look-ahead),
//! publishing `fills` and the orders' status updates. Pure: no I/O, no clock.

pub mod config;
pub mod error;
mod ledger;
pub mod matching;
pub mod processor;

pub use config::{DaySession, ExchangeConfig};
pub use error::ExchangeError;
pub use processor::{ExchangeProcessor, SNAPSHOT_FORMAT};
