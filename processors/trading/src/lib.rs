//! The trading core: the router (sizing, pre-trade risk checks, order state) and the paper
//! venue (matching) composed in one task, so that one market instant is processed in a fixed
//! order by plain calls instead of a protocol between two processes:
//!
//! 1. the venue fills the instant's bars against the orders resting before it (never an
//!    order on the bar that caused it);
//! 2. the router applies those fills and order updates, then the instant's closes;
//! 3. the router decides the instant's signals, by symbol;
//! 4. the venue accepts the new orders (and the router's cancel requests).
//!
//! A [`barrier::Barrier`] holds a sequenced instant's bars and signals until all of them are in
//! (`step_bars`), and releases instants in step order, so outputs and books do not depend on
//! how the input topics interleave. Pure: no I/O, no clock.

pub mod barrier;
pub mod core;
pub mod error;

pub use barrier::{Barrier, Instant};
pub use core::{SNAPSHOT_FORMAT, TradingConfig, TradingCore};
pub use error::TradingError;
