//! CSV replay of OHLCV files.
//!
//! Two layouts: the Yahoo-style daily file (`Date,Open,High,Low,Close,Adj Close,Volume`, one
//! symbol given by the caller, dates `M/D/YYYY` or `YYYY-MM-DD`) and a generic one with a
//! symbol column (`symbol,timestamp,open,high,low,close,volume`, RFC 3339 or date
//! timestamps). Dates become 00:00 UTC of the session day. Record ids are derived from the
//! file name, symbol and event time, so a replay produces the same ids every time.
//! Rows that are malformed, non-positive, inconsistent (high < low), duplicated or out of
//! order come back as [`RowError`]s with the line number; nothing is dropped silently.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::io::Read;
use std::str::FromStr;
use tradestream_schemas::{MarketData, MarketDataKind, Record, Symbol};

/// Which column layout a file has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvFormat {
    /// `Date,Open,High,Low,Close,Adj Close,Volume` for one symbol.
    Daily {
        /// The symbol of every row.
        symbol: Symbol,
    },
    /// `symbol,timestamp,open,high,low,close,volume` (header names, any order).
    Generic,
}

/// A row that could not become a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong.
    pub reason: String,
    /// The raw row, for the dead-letter record.
    pub raw: String,
}

/// Reads a CSV file into market-data records (or row errors), in file order.
#[derive(Debug)]
pub struct CsvReplay {
    source: String,
    format: CsvFormat,
    interval: String,
}

struct Columns {
    symbol: Option<usize>,
    time: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
}

impl CsvReplay {
    /// A replay of the file named `file_name` (used in `source` and record ids).
    pub fn new(file_name: &str, format: CsvFormat, interval: &str) -> Self {
        Self {
            source: format!("csv:{file_name}"),
            format,
            interval: interval.to_string(),
        }
    }

    /// Parses everything `input` holds. `ingest_time` is stamped on every record (passed in
    /// so the core reads no clock).
    pub fn read(
        &self,
        input: impl Read,
        ingest_time: DateTime<Utc>,
    ) -> Result<Vec<Result<MarketData, RowError>>, RowError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let header_err = |reason: String| RowError {
            line: 1,
            reason,
            raw: String::new(),
        };
        let headers = reader
            .headers()
            .map_err(|e| header_err(e.to_string()))?
            .clone();
        let find = |names: &[&str]| {
            headers
                .iter()
                .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
        };
        let need = |names: &[&str]| {
            find(names).ok_or_else(|| {
                header_err(format!(
                    "missing column {:?} in header {:?}",
                    names[0], headers
                ))
            })
        };
        let cols = Columns {
            symbol: match self.format {
                CsvFormat::Generic => Some(need(&["symbol", "ticker"])?),
                CsvFormat::Daily { .. } => None,
            },
            time: need(&["date", "timestamp", "time"])?,
            open: need(&["open"])?,
            high: need(&["high"])?,
            low: need(&["low"])?,
            close: need(&["close"])?,
            volume: need(&["volume"])?,
        };
        let mut last_time: HashMap<Symbol, DateTime<Utc>> = HashMap::new();
        let mut out = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let line = i as u64 + 2;
            let parsed = match row {
                Err(e) => Err(RowError {
                    line,
                    reason: e.to_string(),
                    raw: String::new(),
                }),
                Ok(row) => self
                    .parse_row(&row, &cols, ingest_time)
                    .map_err(|reason| RowError {
                        line,
                        reason,
                        raw: row.iter().collect::<Vec<_>>().join(","),
                    }),
            };
            let checked = parsed.and_then(|md| {
                let order_problem = match last_time.get(&md.symbol) {
                    Some(t) if md.event_time == *t => {
                        Some(format!("duplicate bar for {} at {t}", md.symbol))
                    }
                    Some(t) if md.event_time < *t => Some(format!(
                        "out of order: {} is before {t} for {}",
                        md.event_time, md.symbol
                    )),
                    _ => None,
                };
                match order_problem {
                    Some(reason) => Err(RowError {
                        line,
                        reason,
                        raw: md.record_id,
                    }),
                    None => {
                        last_time.insert(md.symbol.clone(), md.event_time);
                        Ok(md)
                    }
                }
            });
            out.push(checked);
        }
        Ok(out)
    }

    fn parse_row(
        &self,
        row: &csv::StringRecord,
        c: &Columns,
        ingest_time: DateTime<Utc>,
    ) -> Result<MarketData, String> {
        let field = |i: usize, name: &str| row.get(i).ok_or_else(|| format!("missing {name}"));
        let num = |i: usize, name: &str| -> Result<Decimal, String> {
            let raw = field(i, name)?;
            let d = Decimal::from_str(raw)
                .or_else(|_| Decimal::from_scientific(raw))
                .map_err(|_| format!("{name} {raw:?} is not a number"))?;
            Ok(d.round_dp(8))
        };
        let symbol = match (&self.format, c.symbol) {
            (CsvFormat::Daily { symbol }, _) => symbol.clone(),
            (CsvFormat::Generic, Some(i)) => {
                Symbol::canonical(field(i, "symbol")?).map_err(|e| e.to_string())?
            }
            (CsvFormat::Generic, None) => return Err("no symbol column".into()),
        };
        let event_time = parse_time(field(c.time, "date")?)?;
        let md = MarketData {
            record_id: format!(
                "{}:{}:{}",
                self.source,
                symbol,
                event_time.timestamp_micros()
            ),
            symbol,
            event_time,
            kind: MarketDataKind::Bar,
            interval: Some(self.interval.clone()),
            open: num(c.open, "open")?,
            high: num(c.high, "high")?,
            low: num(c.low, "low")?,
            close: num(c.close, "close")?,
            volume: num(c.volume, "volume")?,
            source: self.source.clone(),
            ingest_time,
            step: 0,
            step_bars: 0,
        };
        md.validate().map_err(|e| e.to_string())?;
        Ok(md)
    }
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(raw, "%m/%d/%Y")
        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d"))
        .map_err(|_| format!("date {raw:?} is not M/D/YYYY, YYYY-MM-DD or RFC 3339"))?;
    date.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("date {raw:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    fn daily() -> CsvReplay {
        let symbol = Symbol::new("^IXIC").unwrap_or_else(|_| unreachable!());
        CsvReplay::new("t.csv", CsvFormat::Daily { symbol }, "1d")
    }

    #[test]
    fn reads_the_daily_format() {
        let csv = "Date,Open,High,Low,Close,Adj Close,Volume\n1/4/1999,2208.050049,2208.050049,2183.649902,2208.050049,2208.050049,1000\n";
        let rows = daily().read(csv.as_bytes(), now()).expect("header");
        let md = rows[0].clone().expect("valid");
        assert_eq!(md.event_time.to_rfc3339(), "1999-01-04T00:00:00+00:00");
        assert_eq!(md.close, Decimal::from_str("2208.050049").expect("lit"));
        assert_eq!(md.record_id, "csv:t.csv:^IXIC:915408000000000");
    }

    #[test]
    fn bad_rows_are_reported_with_line_and_reason() {
        let csv = "Date,Open,High,Low,Close,Adj Close,Volume\n\
                   1/4/1999,10,11,9,10,10,5\n\
                   1/5/1999,NaN,11,9,10,10,5\n\
                   1/6/1999,10,9,11,10,10,5\n\
                   1/7/1999,10,11,9,-1,10,5\n\
                   1/8/1999,10,11,9,10,10,-5\n\
                   1/4/1999,10,11,9,10,10,5\n\
                   1/3/1999,10,11,9,10,10,5\n\
                   1/9/1999,10,11,9,10,10,5\n";
        let rows = daily().read(csv.as_bytes(), now()).expect("header");
        let errors: Vec<(u64, String)> = rows
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| (e.line, e.reason.clone()))
            .collect();
        assert_eq!(rows.iter().filter(|r| r.is_ok()).count(), 2);
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].1.contains("not a number"), "{errors:?}");
        assert!(errors[1].1.contains("high"), "{errors:?}");
        assert!(errors[2].1.contains("close"), "{errors:?}");
        assert!(errors[3].1.contains("volume"), "{errors:?}");
        assert!(errors[4].1.contains("duplicate"), "{errors:?}");
        assert!(errors[5].1.contains("out of order"), "{errors:?}");
    }

    #[test]
    fn generic_format_canonicalises_symbols() {
        let csv = "symbol,timestamp,open,high,low,close,volume\n aapl ,2024-01-02T14:30:00-05:00,1,2,1,2,3\n";
        let replay = CsvReplay::new("g.csv", CsvFormat::Generic, "1m");
        let rows = replay.read(csv.as_bytes(), now()).expect("header");
        let md = rows[0].clone().expect("valid");
        assert_eq!(md.symbol.as_str(), "AAPL");
        assert_eq!(md.event_time.to_rfc3339(), "2024-01-02T19:30:00+00:00");
    }

    #[test]
    fn the_shipped_nasdaq_file_parses_cleanly() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/nasdaq-daily.csv"
        );
        let Ok(file) = std::fs::File::open(path) else {
            panic!("test data missing at {path}");
        };
        let rows = daily().read(file, now()).expect("header");
        assert_eq!(rows.len(), 5031);
        let bad: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(bad.is_empty(), "{bad:?}");
    }
}
