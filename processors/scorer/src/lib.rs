//! The scorer processor: turns each `features` record into a trading signal (BUY, SELL or
//! HOLD, from a linfa logistic-regression direction model) and, for unusual bars, an anomaly
//! (from a linfa Gaussian-mixture detector).
//!
//! - [`Scorer`] is the pure core ([`tradestream_schemas::Processor`]): no I/O, no clock.
//! - [`ModelHandle`] shares the models between the core and the runner's reload loop;
//!   [`model_store`] (file I/O, outside the core) loads, saves and hot-reloads model files.
//! - [`train`] / [`train_from_csv`] fit and evaluate both models and write the files.
//!
//! Model inputs are listed in [`inputs`]; model identity (versions) in [`model`].

pub mod anomaly;
pub mod config;
mod core;
pub mod error;
pub mod inputs;
pub mod metrics;
pub mod model;
pub mod model_store;
pub mod signal;
pub mod standardize;
pub mod train;
mod train_csv;

pub use crate::core::{ANOMALY_ID_PREFIX, PROCESSOR_NAME, SIGNAL_ID_PREFIX, Scored, Scorer};
pub use config::ScorerConfig;
pub use error::ScorerError;
pub use model::{ModelHandle, ModelVersions, Models};
pub use model_store::{ANOMALY_MODEL_FILE, SIGNAL_MODEL_FILE, load_models, save_models};
pub use train::{TrainConfig, TrainReport, Trained, train, train_to_dir};
pub use train_csv::{features_from_bars, features_from_csv, train_from_bars, train_from_csv};
