//! Training from an OHLCV CSV file: bars are read with the ingest processor's CSV reader and
//! turned into features by the features processor itself, so the models are trained on
//! exactly the inputs the live pipeline will give them. Backs `tradestream train`.

use crate::error::{Result, ScorerError};
use crate::train::{TrainConfig, TrainReport, train_to_dir};
use chrono::{DateTime, Utc};
use std::io::{BufRead, BufReader};
use std::path::Path;
use tradestream_features::FeaturesProcessor;
use tradestream_ingest::{CsvFormat, CsvReplay};
use tradestream_schemas::{Features, MarketData, Symbol};

/// Features of every bar of `symbol` in the CSV at `path`, in file order, and the number of
/// rows the reader refused (malformed, duplicated, out of order) or that belong to other
/// symbols. The file may be the daily layout (`Date,Open,High,Low,Close,Adj Close,Volume`,
/// every row `symbol`) or the generic one with a `symbol` column (rows of other symbols are
/// skipped).
pub fn features_from_csv(path: &Path, symbol: &str) -> Result<(Vec<Features>, usize)> {
    let symbol = Symbol::canonical(symbol).map_err(|e| ScorerError::Training(e.to_string()))?;
    let open = || {
        std::fs::File::open(path).map_err(|source| ScorerError::Io {
            context: "opening",
            path: path.to_path_buf(),
            source,
        })
    };
    let mut header = String::new();
    BufReader::new(open()?)
        .read_line(&mut header)
        .map_err(|source| ScorerError::Io {
            context: "reading",
            path: path.to_path_buf(),
            source,
        })?;
    let header = header.to_ascii_lowercase();
    let generic = header
        .split(',')
        .any(|c| matches!(c.trim(), "symbol" | "ticker"));
    let format = if generic {
        CsvFormat::Generic
    } else {
        CsvFormat::Daily {
            symbol: symbol.clone(),
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Ingest time is stamped on records but feeds no feature; a fixed value keeps this pure.
    let rows = CsvReplay::new(&file_name, format, "1d")
        .read(open()?, DateTime::<Utc>::UNIX_EPOCH)
        .map_err(|e| ScorerError::Training(format!("{}: {e}", path.display())))?;
    let mut bars = Vec::with_capacity(rows.len());
    let mut skipped = 0;
    for row in rows {
        match row {
            Ok(bar) if bar.symbol == symbol => bars.push(bar),
            _ => skipped += 1,
        }
    }
    if bars.is_empty() {
        return Err(ScorerError::Training(format!(
            "{}: no usable bars of {symbol}",
            path.display()
        )));
    }
    let out = features_from_bars(&bars)
        .map_err(|e| ScorerError::Training(format!("{}: {e}", path.display())))?;
    Ok((out, skipped))
}

/// Features of `bars` (one symbol, time-ordered) computed by the features processor with
/// its default configuration — the same records the live pipeline feeds the scorer.
pub fn features_from_bars(bars: &[MarketData]) -> Result<Vec<Features>> {
    let mut features = FeaturesProcessor::default();
    bars.iter()
        .map(|bar| {
            features
                .compute(bar)
                .map_err(|e| ScorerError::Training(format!("computing features: {e}")))
        })
        .collect()
}

/// Trains both models on `bars` (one symbol, time-ordered; e.g. read by the CLI with the
/// ingest CSV reader) and writes the model files into `out_dir`.
pub fn train_from_bars(
    bars: &[MarketData],
    source: &str,
    out_dir: &Path,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    train_to_dir(&features_from_bars(bars)?, source, cfg, out_dir)
}

/// Trains both models on the bars of `symbol` in the CSV at `path` and writes the model
/// files into `out_dir`.
pub fn train_from_csv(
    path: &Path,
    symbol: &str,
    out_dir: &Path,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    let (rows, skipped) = features_from_csv(path, symbol)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = train_to_dir(&rows, &format!("{file_name} ({symbol})"), cfg, out_dir)?;
    report.skipped_rows = skipped;
    Ok(report)
}
