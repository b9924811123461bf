//! Router processor: turns model signals (`trading_signals`) and manual requests (NEW orders
//! on `orders`) into accepted or rejected orders, after sizing and pre-trade risk checks per
//! account. It follows `fills` and `market_data` to keep each account's cash, positions and
//! equity with the database's exact rules. Pure: no I/O, no clock.

pub mod accounting;
pub mod amount;
pub mod config;
pub mod error;
pub mod forgetting;
pub mod processor;
pub mod reason;
pub mod sizing;

pub use accounting::{Book, Commission, Position, check_available_funds};
pub use config::{AccountConfig, RiskLimits, RouterConfig, SignalOrderType, TradingHours};
pub use error::RouterError;
pub use processor::{AccountView, RouterProcessor, SNAPSHOT_FORMAT};
pub use reason::RejectReason;
