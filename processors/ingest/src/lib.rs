//! Ingest processor: sources of `market_data` records. Each source yields validated records
//! or, for input it cannot accept, a [`RowError`] that says where and why, so the runner can
//! dead-letter it instead of dropping it.

pub mod csv_replay;
pub mod publish;
pub mod synthetic;

pub use csv_replay::{CsvFormat, CsvReplay, RowError};
pub use publish::{
    AlreadyPublished, IngestError, Pace, PublishStats, SourceItem, merge_by_event_time,
    number_item_steps, number_steps, publish,
};
pub use synthetic::{SyntheticConfig, SyntheticConfigError, SyntheticFeed, with_synthetic};
