//! The features processor core: `market_data` bars in, one `features` record per valid bar out.
//!
//! State is per symbol (indicator windows, previous bar, trend), because market data is keyed
//! by symbol and every indicator is order-dependent. A bad bar is refused before any state
//! changes, so dead-lettering it leaves the symbol exactly as if the bar had never arrived.
//!
//! Delivery guarantees: a restarted task restores the per-symbol state from a snapshot
//! ([`Processor::snapshot`], MessagePack behind a format-version byte) and replays the bars
//! after it, and upstream replays re-publish bars with their original `record_id`. Each
//! symbol therefore remembers its last `dedup_window` record ids: a bar at or before the
//! symbol's last time whose id is among them is a redelivery and is dropped silently, while
//! any other bar at or before that time is still dead-lettered as a duplicate or out of order.
//! The id check runs only on that refusal path, so in-order bars pay nothing for it.

use crate::config::FeaturesConfig;
use crate::error::FeaturesError;
use crate::indicators::{BarInput, Names, SymbolState};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use tradestream_schemas::{
    AnyRecord, Features, MarketData, MarketDataKind, ProcessError, Processor, Record, Symbol,
    TaskScope, Topic,
};

/// Processor name: consumer group suffix, metric label, DLQ header.
pub const PROCESSOR_NAME: &str = "features";

/// Prefix of every features record id: `features:<market_data record_id>`.
pub const RECORD_ID_PREFIX: &str = "features:";

/// Version of the snapshot layout, the first byte of every snapshot. Bump it whenever a
/// serialized state type changes shape; an older or newer snapshot is then refused (fatal)
/// instead of being misread.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// Per-symbol series state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    last_time: DateTime<Utc>,
    interval: Option<String>,
    indicators: SymbolState,
    /// Record ids of the last `dedup_window` bars processed, oldest first.
    recent_ids: VecDeque<String>,
}

/// What a snapshot holds: the settings it was taken under (checked on restore) and every
/// symbol's series, sorted by symbol so equal states give equal bytes.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    config: &'a FeaturesConfig,
    series: Vec<(&'a Symbol, &'a Series)>,
}

/// The owned form of [`SnapshotRef`], read back on restore.
#[derive(Deserialize)]
struct SnapshotOwned {
    config: FeaturesConfig,
    series: Vec<(Symbol, Series)>,
}

/// Streaming indicators per symbol. See the crate docs for the definitions.
#[derive(Debug, Clone)]
pub struct FeaturesProcessor {
    config: FeaturesConfig,
    names: Names,
    /// Scratch slots one update writes its values into (reused: no allocation per bar).
    slots: Vec<f64>,
    series: HashMap<Symbol, Series>,
}

impl Default for FeaturesProcessor {
    /// The processor with the default configuration (feature set [`crate::FEATURE_SET_VERSION`]).
    fn default() -> Self {
        Self::build(FeaturesConfig::default())
    }
}

impl FeaturesProcessor {
    /// A processor for a validated configuration.
    pub fn new(config: FeaturesConfig) -> Result<Self, FeaturesError> {
        config.validate().map_err(FeaturesError::Config)?;
        Ok(Self::build(config))
    }

    fn build(config: FeaturesConfig) -> Self {
        let names = Names::new(&config);
        Self {
            slots: vec![f64::NAN; names.len()],
            names,
            config,
            series: HashMap::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &FeaturesConfig {
        &self.config
    }

    /// How many symbols have state.
    pub fn symbol_count(&self) -> usize {
        self.series.len()
    }

    /// Event time of the last bar processed for `symbol`.
    pub fn last_event_time(&self, symbol: &Symbol) -> Option<DateTime<Utc>> {
        self.series.get(symbol).map(|s| s.last_time)
    }

    /// Computes the features of the next bar of its symbol. On error nothing changes; a
    /// redelivered bar is refused with [`FeaturesError::Redelivered`] (use
    /// [`Self::compute_once`] to drop redeliveries instead).
    pub fn compute(&mut self, bar: &MarketData) -> Result<Features, FeaturesError> {
        self.compute_once(bar)?
            .ok_or_else(|| FeaturesError::Redelivered {
                record_id: bar.record_id.clone(),
                symbol: bar.symbol.clone(),
            })
    }

    /// Like [`Self::compute`], but `Ok(None)` for a redelivery: a bar at or before the
    /// symbol's last time whose `record_id` is among its last `dedup_window` processed bars.
    /// Nothing changes then either.
    pub fn compute_once(&mut self, bar: &MarketData) -> Result<Option<Features>, FeaturesError> {
        if bar.kind == MarketDataKind::Tick {
            return Err(FeaturesError::Tick {
                record_id: bar.record_id.clone(),
                symbol: bar.symbol.clone(),
            });
        }
        bar.validate()?;
        let input = BarInput {
            high: bar.high,
            low: bar.low,
            close: bar.close,
            high_f: to_f64(bar.high),
            low_f: to_f64(bar.low),
            close_f: to_f64(bar.close),
            volume_f: to_f64(bar.volume),
        };
        let version = &self.config.feature_set_version;
        let window = self.config.dedup_window;
        if let Some(series) = self.series.get_mut(&bar.symbol) {
            if series.is_redelivery(bar) {
                return Ok(None);
            }
            series.check(bar)?;
            let next = series.next(bar, &input, &self.names, &mut self.slots, version, window);
            return Ok(Some(next));
        }
        let series = self
            .series
            .entry(bar.symbol.clone())
            .or_insert_with(|| Series {
                last_time: bar.event_time,
                interval: bar.interval.clone(),
                indicators: SymbolState::new(&self.config),
                recent_ids: VecDeque::new(),
            });
        let next = series.next(bar, &input, &self.names, &mut self.slots, version, window);
        Ok(Some(next))
    }

    /// The state as snapshot bytes: [`SNAPSHOT_FORMAT`], then MessagePack (named fields;
    /// f64 values, NaN included, round-trip bit for bit).
    pub fn snapshot_bytes(&self) -> Result<Vec<u8>, FeaturesError> {
        let mut series: Vec<(&Symbol, &Series)> = self.series.iter().collect();
        series.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let state = SnapshotRef {
            config: &self.config,
            series,
        };
        tradestream_schemas::snapshot::encode(SNAPSHOT_FORMAT, &state)
            .map_err(FeaturesError::Snapshot)
    }

    /// Replaces the state with a snapshot from [`Self::snapshot_bytes`]. Refuses (and changes
    /// nothing) a snapshot of another format version, corrupt bytes, or one taken under other
    /// indicator settings; a different `dedup_window` is fine (the id lists are trimmed).
    pub fn restore_bytes(&mut self, bytes: &[u8]) -> Result<(), FeaturesError> {
        let state: SnapshotOwned = tradestream_schemas::snapshot::decode(SNAPSHOT_FORMAT, bytes)
            .map_err(FeaturesError::Snapshot)?;
        if !state.config.same_indicators(&self.config) {
            return Err(FeaturesError::Snapshot(format!(
                "taken under other indicator settings (feature set {:?}, this core runs {:?} \
                 with different windows): its indicator state would be misread",
                state.config.feature_set_version, self.config.feature_set_version
            )));
        }
        let fresh = SymbolState::new(&self.config);
        let mut restored = HashMap::with_capacity(state.series.len());
        let mut seen = HashSet::with_capacity(state.series.len());
        for (symbol, mut series) in state.series {
            if !series.indicators.same_shape(&fresh) {
                return Err(FeaturesError::Snapshot(format!(
                    "corrupt snapshot: the indicator state of {symbol} does not fit the configuration"
                )));
            }
            if !seen.insert(symbol.clone()) {
                return Err(FeaturesError::Snapshot(format!(
                    "corrupt snapshot: {symbol} appears twice"
                )));
            }
            while series.recent_ids.len() > self.config.dedup_window {
                series.recent_ids.pop_front();
            }
            restored.insert(symbol, series);
        }
        self.series = restored;
        Ok(())
    }
}

impl Series {
    /// Whether `bar` is one this series already folded in, re-sent by an upstream replay.
    /// Only bars that could not continue the series are looked up.
    fn is_redelivery(&self, bar: &MarketData) -> bool {
        bar.event_time <= self.last_time && self.recent_ids.iter().any(|id| *id == bar.record_id)
    }

    /// Refuses a bar that does not continue this series.
    fn check(&self, bar: &MarketData) -> Result<(), FeaturesError> {
        if bar.event_time <= self.last_time {
            return Err(FeaturesError::OutOfOrder {
                kind: if bar.event_time == self.last_time {
                    "duplicate"
                } else {
                    "out-of-order"
                },
                record_id: bar.record_id.clone(),
                symbol: bar.symbol.clone(),
                time: bar.event_time,
                last: self.last_time,
            });
        }
        if self.interval != bar.interval {
            return Err(FeaturesError::IntervalChanged {
                record_id: bar.record_id.clone(),
                symbol: bar.symbol.clone(),
                expected: self.interval.clone(),
                found: bar.interval.clone(),
            });
        }
        Ok(())
    }

    /// Folds in a checked bar and builds its record.
    fn next(
        &mut self,
        bar: &MarketData,
        input: &BarInput,
        names: &Names,
        slots: &mut [f64],
        version: &str,
        dedup_window: usize,
    ) -> Features {
        slots.fill(f64::NAN);
        let (bar_class, trend) = self.indicators.update(input, names, slots);
        let values = names.collect(slots);
        self.last_time = bar.event_time;
        // Reuse the oldest id's allocation once the list is full.
        let mut id = if self.recent_ids.len() >= dedup_window {
            self.recent_ids.pop_front().unwrap_or_default()
        } else {
            String::new()
        };
        id.clear();
        id.push_str(&bar.record_id);
        self.recent_ids.push_back(id);
        Features {
            record_id: format!("{RECORD_ID_PREFIX}{}", bar.record_id),
            source_id: bar.record_id.clone(),
            symbol: bar.symbol.clone(),
            event_time: bar.event_time,
            close: bar.close,
            values,
            bar_class,
            trend,
            feature_set_version: version.to_owned(),
            step: bar.step,
        }
    }
}

/// Decimal → f64. Every `Decimal` (|x| < 8·10²⁸) has a finite `f64` neighbour, so this cannot
/// fail; NaN would be caught by the finiteness guard of the indicators.
fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

impl Processor for FeaturesProcessor {
    fn name(&self) -> &'static str {
        PROCESSOR_NAME
    }

    fn inputs(&self) -> &'static [Topic] {
        &[Topic::MarketData]
    }

    fn process(
        &mut self,
        input: &AnyRecord,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError> {
        match input {
            AnyRecord::MarketData(bar) => Ok(self
                .compute_once(bar)?
                .map(AnyRecord::Features)
                .into_iter()
                .collect()),
            other => Err(FeaturesError::WrongTopic(other.topic()).into()),
        }
    }

    /// State is per symbol and symbols are the record key: one copy per input partition.
    fn scope(&self) -> TaskScope {
        TaskScope::PerPartition
    }

    fn snapshot(&self) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(Some(self.snapshot_bytes()?))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), ProcessError> {
        Ok(self.restore_bytes(snapshot)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use std::str::FromStr;
    use tradestream_schemas::{BarClass, ErrorClass, Trend, samples};

    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
            .single()
            .expect("date")
            + Duration::days(i)
    }

    #[test]
    fn reads_what_the_pipeline_watches_it_read() {
        let p = FeaturesProcessor::new(FeaturesConfig::default()).expect("valid");
        assert_eq!(
            tradestream_schemas::topics::data_inputs(p.inputs()),
            tradestream_schemas::topics::stage_inputs("features").expect("listed")
        );
    }

    fn dec(x: f64) -> Decimal {
        Decimal::from_str(&format!("{x:.4}")).expect("decimal")
    }

    fn bar(symbol: &str, i: i64, [o, h, l, c, v]: [f64; 5]) -> MarketData {
        MarketData {
            record_id: format!("test:{symbol}:{i}"),
            symbol: Symbol::new(symbol).expect("symbol"),
            event_time: t(i),
            kind: MarketDataKind::Bar,
            interval: Some("1d".into()),
            open: dec(o),
            high: dec(h),
            low: dec(l),
            close: dec(c),
            volume: dec(v),
            source: "test".into(),
            ingest_time: t(0),
            step: 0,
            step_bars: 0,
        }
    }

    /// A deterministic, wiggly series with trends both ways and real/fake bars.
    fn series(n: usize) -> Vec<[f64; 5]> {
        (0..n)
            .map(|i| {
                let x = i as f64;
                let c = 100.0 + 10.0 * (x / 5.0).sin() + 0.3 * x + 3.0 * (x * 1.7).sin();
                let o = c - 1.5 * (x * 0.9).cos();
                let h = o.max(c) + 0.5 + (x * 2.3).sin().abs();
                let l = o.min(c) - 0.5 - (x * 1.1).cos().abs();
                let v = 1000.0 + ((i * 37) % 500) as f64;
                [o, h, l, c, v]
            })
            .collect()
    }

    /// The f64 values the processor sees (after rounding to 4 places).
    fn columns(bars: &[MarketData]) -> [Vec<f64>; 4] {
        let f = |d: Decimal| d.to_f64().expect("f64");
        [
            bars.iter().map(|b| f(b.high)).collect(),
            bars.iter().map(|b| f(b.low)).collect(),
            bars.iter().map(|b| f(b.close)).collect(),
            bars.iter().map(|b| f(b.volume)).collect(),
        ]
    }

    fn run(p: &mut FeaturesProcessor, bars: &[MarketData]) -> Vec<Features> {
        bars.iter()
            .map(|b| p.compute(b).expect("valid bar"))
            .collect()
    }

    // ---- naive batch references (TA-Lib called once over the whole series) ----

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    fn stddev(xs: &[f64], sample: bool) -> f64 {
        let m = mean(xs);
        let ss: f64 = xs.iter().map(|x| (x - m).powi(2)).sum();
        (ss / (xs.len() as f64 - if sample { 1.0 } else { 0.0 })).sqrt()
    }

    fn windowed(xs: &[f64], n: usize, f: impl Fn(&[f64]) -> Option<f64>) -> Vec<Option<f64>> {
        (0..xs.len())
            .map(|i| {
                if i + 1 >= n {
                    f(&xs[i + 1 - n..=i])
                } else {
                    None
                }
            })
            .collect()
    }

    fn ta_ema(xs: &[Option<f64>], n: usize) -> Vec<Option<f64>> {
        let k = 2.0 / (n as f64 + 1.0);
        let start = xs.iter().position(Option::is_some).unwrap_or(xs.len());
        let mut out = vec![None; xs.len()];
        let mut prev = None;
        for i in start..xs.len() {
            let x = xs[i].expect("contiguous");
            prev = match prev {
                None if i + 1 - start == n => {
                    Some(xs[start..=i].iter().map(|v| v.expect("some")).sum::<f64>() / n as f64)
                }
                None => None,
                Some(p) => Some((x - p) * k + p),
            };
            out[i] = prev;
        }
        out
    }

    fn wilder_from(xs: &[f64], first: usize, n: usize) -> Vec<Option<f64>> {
        // xs[first..] are the inputs; the first average is at first + n − 1.
        let mut out = vec![None; xs.len()];
        let mut prev: Option<f64> = None;
        for i in first..xs.len() {
            prev = match prev {
                None if i + 1 - first == n => Some(xs[first..=i].iter().sum::<f64>() / n as f64),
                None => None,
                Some(p) => Some((p * (n as f64 - 1.0) + xs[i]) / n as f64),
            };
            out[i] = prev;
        }
        out
    }

    fn references(bars: &[MarketData]) -> Vec<(String, Vec<Option<f64>>)> {
        let [high, low, close, volume] = columns(bars);
        let len = close.len();
        let some = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        let mut refs: Vec<(String, Vec<Option<f64>>)> = Vec::new();
        let ret: Vec<Option<f64>> = (0..len)
            .map(|i| (i > 0).then(|| close[i] / close[i - 1] - 1.0))
            .collect();
        let logret: Vec<Option<f64>> = (0..len)
            .map(|i| (i > 0).then(|| (close[i] / close[i - 1]).ln()))
            .collect();
        refs.push(("return_1".into(), ret));
        refs.push(("log_return_1".into(), logret.clone()));
        for n in [5, 10, 20, 50] {
            refs.push((format!("sma_{n}"), windowed(&close, n, |w| Some(mean(w)))));
        }
        for n in [12, 26, 50] {
            refs.push((format!("ema_{n}"), ta_ema(&some(&close), n)));
        }
        // RSI: changes from index 1, Wilder averages of gains and losses.
        let gains: Vec<f64> = (0..len)
            .map(|i| {
                if i == 0 {
                    0.0
                } else {
                    (close[i] - close[i - 1]).max(0.0)
                }
            })
            .collect();
        let losses: Vec<f64> = (0..len)
            .map(|i| {
                if i == 0 {
                    0.0
                } else {
                    (close[i - 1] - close[i]).max(0.0)
                }
            })
            .collect();
        let (ag, al) = (wilder_from(&gains, 1, 14), wilder_from(&losses, 1, 14));
        let rsi = (0..len)
            .map(|i| match (ag[i], al[i]) {
                (Some(g), Some(l)) if g + l > 0.0 => Some(100.0 * g / (g + l)),
                _ => None,
            })
            .collect();
        refs.push(("rsi_14".into(), rsi));
        // MACD the way TA-Lib's MACD does it: both EMAs start at index slow − 1, the fast one
        // seeded with the SMA of the 12 closes ending there.
        let slow = ta_ema(&some(&close), 26);
        let mut fast = vec![None; len];
        for i in 25..len {
            fast[i] = Some(match fast[i - 1] {
                None => mean(&close[i - 11..=i]),
                Some(p) => (close[i] - p) * (2.0 / 13.0) + p,
            });
        }
        let line: Vec<Option<f64>> = (0..len).map(|i| Some(fast[i]? - slow[i]?)).collect();
        let signal = ta_ema(&line, 9);
        let with_signal = |f: &dyn Fn(f64, f64) -> f64| -> Vec<Option<f64>> {
            (0..len).map(|i| Some(f(line[i]?, signal[i]?))).collect()
        };
        refs.push(("macd".into(), with_signal(&|m, _| m)));
        refs.push(("macd_signal".into(), with_signal(&|_, s| s)));
        refs.push(("macd_hist".into(), with_signal(&|m, s| m - s)));
        let bb_mid = windowed(&close, 20, |w| Some(mean(w)));
        let bb_sd = windowed(&close, 20, |w| Some(stddev(w, false)));
        let band = |sign: f64| -> Vec<Option<f64>> {
            (0..len)
                .map(|i| Some(bb_mid[i]? + sign * 2.0 * bb_sd[i]?))
                .collect()
        };
        let (upper, lower) = (band(1.0), band(-1.0));
        refs.push(("bb_upper_20".into(), upper.clone()));
        refs.push(("bb_middle_20".into(), bb_mid));
        refs.push(("bb_lower_20".into(), lower.clone()));
        refs.push((
            "bb_percent_b_20".into(),
            (0..len)
                .map(|i| {
                    let (u, l) = (upper[i]?, lower[i]?);
                    (u > l).then(|| (close[i] - l) / (u - l))
                })
                .collect(),
        ));
        let tr: Vec<f64> = (0..len)
            .map(|i| {
                if i == 0 {
                    return high[0] - low[0];
                }
                let pc = close[i - 1];
                (high[i] - low[i])
                    .max((high[i] - pc).abs())
                    .max((low[i] - pc).abs())
            })
            .collect();
        refs.push(("atr_14".into(), wilder_from(&tr, 1, 14)));
        let lr: Vec<f64> = logret.iter().map(|x| x.unwrap_or(f64::NAN)).collect();
        refs.push((
            "volatility_20".into(),
            (0..len)
                .map(|i| (i >= 20).then(|| stddev(&lr[i - 19..=i], true)))
                .collect(),
        ));
        refs.push((
            "vwap_20".into(),
            (0..len)
                .map(|i| {
                    if i < 19 {
                        return None;
                    }
                    let r = i - 19..=i;
                    let vs: f64 = volume[r.clone()].iter().sum();
                    let pv: f64 = r
                        .map(|j| (high[j] + low[j] + close[j]) / 3.0 * volume[j])
                        .sum();
                    (vs > 0.0).then(|| pv / vs)
                })
                .collect(),
        ));
        for (name, xs) in [("zscore_close_20", &close), ("zscore_volume_20", &volume)] {
            let z = (0..len)
                .map(|i| {
                    if i < 19 {
                        return None;
                    }
                    let w = &xs[i - 19..=i];
                    let sd = stddev(w, false);
                    (sd > 0.0).then(|| (xs[i] - mean(w)) / sd)
                })
                .collect();
            refs.push((name.into(), z));
        }
        refs.push((
            "range_pct".into(),
            (0..len)
                .map(|i| Some((high[i] - low[i]) / close[i]))
                .collect(),
        ));
        refs.push(("volume".into(), some(&volume)));
        refs
    }

    fn assert_close(name: &str, bar: usize, got: f64, want: f64) {
        let tol = 1e-9 * want.abs().max(1.0);
        assert!(
            (got - want).abs() <= tol,
            "{name} on bar {}: got {got}, want {want}",
            bar + 1
        );
    }

    #[test]
    fn every_indicator_matches_its_naive_batch_reference() {
        let bars: Vec<MarketData> = series(160)
            .into_iter()
            .enumerate()
            .map(|(i, b)| bar("ABC", i as i64, b))
            .collect();
        let out = run(&mut FeaturesProcessor::default(), &bars);
        let refs = references(&bars);
        assert_eq!(refs.len(), 24);
        for (name, want) in &refs {
            for (i, (f, w)) in out.iter().zip(want).enumerate() {
                match (f.values.get(name), w) {
                    (Some(g), Some(w)) => assert_close(name, i, *g, *w),
                    (None, None) => {}
                    (g, w) => panic!("{name} on bar {}: got {g:?}, want {w:?}", i + 1),
                }
            }
        }
        // Nothing but the 24 documented names, and all of them once warmed up.
        let last = out.last().expect("records");
        assert_eq!(last.values.len(), 24);
        assert!(
            last.values.keys().all(|k| refs.iter().any(|(n, _)| n == k)),
            "{:?}",
            last.values
        );
    }

    #[test]
    fn warm_up_absence() {
        let bars: Vec<MarketData> = series(60)
            .into_iter()
            .enumerate()
            .map(|(i, b)| bar("ABC", i as i64, b))
            .collect();
        let out = run(&mut FeaturesProcessor::default(), &bars);
        // First bar (1-based) on which each indicator appears.
        let first = [
            ("range_pct", 1),
            ("volume", 1),
            ("return_1", 2),
            ("log_return_1", 2),
            ("sma_5", 5),
            ("sma_10", 10),
            ("sma_20", 20),
            ("sma_50", 50),
            ("ema_12", 12),
            ("ema_26", 26),
            ("ema_50", 50),
            ("rsi_14", 15),
            ("macd", 34),
            ("macd_signal", 34),
            ("macd_hist", 34),
            ("bb_upper_20", 20),
            ("bb_middle_20", 20),
            ("bb_lower_20", 20),
            ("bb_percent_b_20", 20),
            ("atr_14", 15),
            ("volatility_20", 21),
            ("vwap_20", 20),
            ("zscore_close_20", 20),
            ("zscore_volume_20", 20),
        ];
        for (name, bar_no) in first {
            for (i, f) in out.iter().enumerate() {
                assert_eq!(
                    f.values.contains_key(name),
                    i + 1 >= bar_no,
                    "{name} on bar {}",
                    i + 1
                );
            }
        }
        assert_eq!(FeaturesConfig::default().warm_up_bars(), 50);
    }

    #[test]
    fn hand_computed_small_windows() {
        let config = FeaturesConfig {
            feature_set_version: "fs-test".into(),
            sma_periods: vec![3],
            ema_periods: vec![3],
            rsi_period: 2,
            macd_fast: 2,
            macd_slow: 3,
            macd_signal: 2,
            bollinger_period: 2,
            atr_period: 2,
            stats_period: 2,
            ..FeaturesConfig::default()
        };
        let mut p = FeaturesProcessor::new(config).expect("valid");
        // close 10, 11, 10.5, 12; high = close + 1, low = close − 1; volume 100, 300, 0, 100.
        let closes = [10.0, 11.0, 10.5, 12.0];
        let volumes = [100.0, 300.0, 0.0, 100.0];
        let out: Vec<Features> = closes
            .iter()
            .zip(volumes)
            .enumerate()
            .map(|(i, (&c, v))| {
                p.compute(&bar("H", i as i64, [c, c + 1.0, c - 1.0, c, v]))
                    .expect("valid")
            })
            .collect();
        let v = |i: usize, name: &str| out[i].values.get(name).copied();
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-12);
        // RSI(2): changes +1, −0.5, +1.5. Bar 3: gain (1+0)/2, loss (0+0.5)/2 → 66.67;
        // bar 4: gain (0.5·1 + 1.5)/2 = 1, loss (0.25·1 + 0)/2 = 0.125 → 88.89.
        assert_eq!(v(1, "rsi_2"), None);
        assert!(near(v(2, "rsi_2"), 200.0 / 3.0), "{:?}", v(2, "rsi_2"));
        assert!(near(v(3, "rsi_2"), 800.0 / 9.0), "{:?}", v(3, "rsi_2"));
        // EMA(3): seed (10 + 11 + 10.5)/3 = 10.5, then 10.5 + 0.5·(12 − 10.5) = 11.25.
        assert!(near(v(2, "ema_3"), 10.5));
        assert!(near(v(3, "ema_3"), 11.25));
        assert!(near(v(3, "sma_3"), 33.5 / 3.0));
        // ATR(2): TR bar 2 = max(2, |12 − 10|, |10 − 10|) = 2, bar 3 = max(2, 0.5, 1.5) = 2,
        // bar 4 = max(2, |13 − 10.5|, |11 − 10.5|) = 2.5 → first 2, then (2·1 + 2.5)/2 = 2.25.
        assert!(near(v(2, "atr_2"), 2.0));
        assert!(near(v(3, "atr_2"), 2.25));
        // MACD(2, 3, 2): slow EMA(3) starts on bar 3 at 10.5; the fast EMA(2) starts there too,
        // seeded with mean(11, 10.5) = 10.75 → line 0.25. Bar 4: slow 10.5 + 0.5·1.5 = 11.25,
        // fast 10.75 + (2/3)·1.25 = 11.5833 → line 0.3333; signal = mean(0.25, 0.3333).
        let line4 = 10.75 + 2.0 / 3.0 * 1.25 - 11.25;
        assert_eq!(v(2, "macd"), None);
        assert!(near(v(3, "macd"), line4), "{:?}", v(3, "macd"));
        assert!(
            near(v(3, "macd_signal"), (0.25 + line4) / 2.0),
            "{:?}",
            v(3, "macd_signal")
        );
        assert!(near(v(3, "macd_hist"), line4 - (0.25 + line4) / 2.0));
        // Bollinger(2): bar 4 closes 10.5, 12 → mean 11.25, population sd 0.75.
        assert!(near(v(3, "bb_upper_2"), 12.75));
        assert!(near(v(3, "bb_lower_2"), 9.75));
        assert!(near(v(3, "bb_percent_b_2"), 0.75));
        // VWAP(2): bar 2 (10·100 + 11·300)/400 = 10.75; bar 4: only bar 4 has volume → 12.
        assert!(near(v(1, "vwap_2"), 10.75));
        assert!(near(v(3, "vwap_2"), 12.0));
        // Volatility(2) needs 2 log returns: bar 3 on.
        assert_eq!(v(1, "volatility_2"), None);
        let (r1, r2) = ((11.0f64 / 10.0).ln(), (10.5f64 / 11.0).ln());
        assert!(near(v(2, "volatility_2"), (r1 - r2).abs() / 2f64.sqrt()));
        // Bar classes: 11 > high 11? no (FAKE); 10.5 < low 10? no; 12 > 11.5 → REAL_BULL.
        let classes: Vec<BarClass> = out.iter().map(|f| f.bar_class).collect();
        assert_eq!(
            classes,
            [
                BarClass::Fake,
                BarClass::Fake,
                BarClass::Fake,
                BarClass::RealBull
            ]
        );
        assert_eq!(out[3].feature_set_version, "fs-test");
    }

    #[test]
    fn degenerate_windows_leave_undefined_values_absent() {
        let mut p = FeaturesProcessor::default();
        let out = run(
            &mut p,
            &(0..40)
                .map(|i| bar("FLAT", i, [5.0, 5.0, 5.0, 5.0, 0.0]))
                .collect::<Vec<_>>(),
        );
        let last = out.last().expect("records");
        for absent in [
            "rsi_14",
            "bb_percent_b_20",
            "zscore_close_20",
            "zscore_volume_20",
            "vwap_20",
        ] {
            assert!(
                !last.values.contains_key(absent),
                "{absent} should be absent: {:?}",
                last.values
            );
        }
        for (present, want) in [
            ("sma_20", 5.0),
            ("bb_upper_20", 5.0),
            ("atr_14", 0.0),
            ("volatility_20", 0.0),
            ("return_1", 0.0),
        ] {
            assert_eq!(last.values.get(present), Some(&want), "{present}");
        }
        assert!(
            out.iter()
                .all(|f| f.bar_class == BarClass::Fake && f.trend == Trend::Neutral)
        );
    }

    #[test]
    fn record_identity_and_lineage() {
        let mut p = FeaturesProcessor::default();
        let md = samples::market_data();
        let out = p
            .process(&AnyRecord::MarketData(md.clone()), t(0))
            .expect("valid");
        let [AnyRecord::Features(f)] = out.as_slice() else {
            panic!("one features record: {out:?}")
        };
        assert_eq!(f.record_id, format!("features:{}", md.record_id));
        assert_eq!(f.source_id, md.record_id);
        assert_eq!(
            (&f.symbol, f.event_time, f.close),
            (&md.symbol, md.event_time, md.close)
        );
        assert_eq!(f.feature_set_version, crate::FEATURE_SET_VERSION);
        assert_eq!((f.bar_class, f.trend), (BarClass::Fake, Trend::Neutral));
        assert_eq!(f.validate(), Ok(()));
        assert_eq!(p.name(), "features");
        assert_eq!(p.inputs(), &[Topic::MarketData]);
    }

    #[test]
    fn refusals_are_classified_and_leave_state_unchanged() {
        let bars: Vec<MarketData> = series(40)
            .into_iter()
            .enumerate()
            .map(|(i, b)| bar("ABC", i as i64, b))
            .collect();
        let mut clean = FeaturesProcessor::default();
        let expected = run(&mut clean, &bars);

        let mut p = FeaturesProcessor::default();
        let now = t(0);
        for (i, b) in bars.iter().enumerate() {
            let got = p
                .process(&AnyRecord::MarketData(b.clone()), now)
                .expect("valid");
            assert_eq!(got, vec![AnyRecord::Features(expected[i].clone())]);
            if i < 3 {
                continue;
            }
            let mut dup = b.clone();
            dup.record_id.push_str(":again");
            let e = p
                .process(&AnyRecord::MarketData(dup), now)
                .expect_err("duplicate");
            assert_eq!(e.class, ErrorClass::DeadLetter);
            assert!(
                e.message.contains("duplicate") && e.message.contains(&b.event_time.to_string()),
                "{e}"
            );

            let mut late = bars[i - 2].clone();
            late.record_id.push_str(":late");
            let e = p
                .process(&AnyRecord::MarketData(late.clone()), now)
                .expect_err("late");
            assert_eq!(e.class, ErrorClass::DeadLetter);
            assert!(e.message.contains("out-of-order"), "{e}");
            assert!(
                e.message.contains(&late.event_time.to_string())
                    && e.message.contains(&b.event_time.to_string())
            );

            let mut bad = bars[i].clone();
            bad.event_time = t(1000 + i as i64);
            bad.low = bad.high + Decimal::ONE;
            let e = p
                .process(&AnyRecord::MarketData(bad.clone()), now)
                .expect_err("high < low");
            assert_eq!(e.class, ErrorClass::DeadLetter);

            let mut tick = bad.clone();
            tick.low = tick.close.min(tick.open);
            tick.kind = MarketDataKind::Tick;
            let e = p
                .process(&AnyRecord::MarketData(tick.clone()), now)
                .expect_err("tick");
            assert_eq!(e.class, ErrorClass::DeadLetter);

            let mut minute = tick;
            minute.kind = MarketDataKind::Bar;
            minute.interval = Some("1m".into());
            let e = p
                .process(&AnyRecord::MarketData(minute), now)
                .expect_err("interval");
            assert_eq!(e.class, ErrorClass::DeadLetter);
            assert!(e.message.contains("1m"), "{e}");
        }
        assert_eq!(p.last_event_time(&bars[0].symbol), Some(t(39)));

        let e = p
            .process(&AnyRecord::Features(samples::features()), now)
            .expect_err("wrong topic");
        assert_eq!(e.class, ErrorClass::Fatal);
        assert!(e.message.contains("features"), "{e}");
    }

    #[test]
    fn symbols_are_independent() {
        let a: Vec<MarketData> = series(70)
            .into_iter()
            .enumerate()
            .map(|(i, b)| bar("AAA", i as i64, b))
            .collect();
        let b: Vec<MarketData> = series(90)
            .into_iter()
            .rev()
            .enumerate()
            .map(|(i, b)| bar("BBB", i as i64, b))
            .collect();
        let alone_a = run(&mut FeaturesProcessor::default(), &a);
        let alone_b = run(&mut FeaturesProcessor::default(), &b);
        let mut p = FeaturesProcessor::default();
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        for i in 0..90 {
            got_b.push(p.compute(&b[i]).expect("b"));
            if i < 70 {
                got_a.push(p.compute(&a[i]).expect("a"));
            }
        }
        assert_eq!(p.symbol_count(), 2);
        assert_eq!(got_a, alone_a);
        assert_eq!(got_b, alone_b);
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let e = FeaturesProcessor::new(FeaturesConfig {
            rsi_period: 0,
            ..FeaturesConfig::default()
        })
        .expect_err("invalid");
        assert_eq!(e.class(), ErrorClass::Fatal);
        assert!(e.to_string().contains("rsi_period"), "{e}");
    }

    /// Three symbols of different lengths, interleaved as a partition would deliver them.
    fn interleaved(n: usize) -> Vec<AnyRecord> {
        let raw = series(n);
        let mut out = Vec::new();
        for (i, b) in raw.iter().enumerate() {
            out.push(AnyRecord::MarketData(bar("AAA", i as i64, *b)));
            if i % 3 != 0 {
                out.push(AnyRecord::MarketData(bar("BBB", i as i64, raw[n - 1 - i])));
            }
            if i >= n / 2 {
                out.push(AnyRecord::MarketData(bar("CCC", i as i64, raw[i / 2])));
            }
        }
        out
    }

    fn feed(p: &mut FeaturesProcessor, records: &[AnyRecord]) -> Vec<AnyRecord> {
        records
            .iter()
            .flat_map(|r| p.process(r, t(0)).expect("valid"))
            .collect()
    }

    /// Runs `records[..k]`, snapshots, restores into a fresh core and runs the rest.
    fn resumed(config: &FeaturesConfig, records: &[AnyRecord], k: usize) -> Vec<AnyRecord> {
        let mut first = FeaturesProcessor::new(config.clone()).expect("valid");
        let mut out = feed(&mut first, &records[..k]);
        let bytes = first.snapshot().expect("snapshot").expect("stateful");
        let mut second = FeaturesProcessor::new(config.clone()).expect("valid");
        second.restore(&bytes).expect("restore");
        out.extend(feed(&mut second, &records[k..]));
        out
    }

    #[test]
    fn snapshot_restore_continues_exactly() {
        let records = interleaved(80);
        let config = FeaturesConfig::default();
        let whole = feed(
            &mut FeaturesProcessor::new(config.clone()).expect("valid"),
            &records,
        );
        assert_eq!(whole.len(), records.len());
        for k in [0, 1, 2, 49, 50, 51, 120, records.len() - 1, records.len()] {
            assert_eq!(
                resumed(&config, &records, k),
                whole,
                "resumed after {k} records"
            );
        }
    }

    #[test]
    fn snapshot_restore_snapshot_is_byte_identical() {
        let records = interleaved(60);
        for k in [0, 7, records.len()] {
            let mut p = FeaturesProcessor::default();
            feed(&mut p, &records[..k]);
            let bytes = p.snapshot().expect("snapshot").expect("stateful");
            assert_eq!(bytes[0], SNAPSHOT_FORMAT);
            let mut q = FeaturesProcessor::default();
            q.restore(&bytes).expect("restore");
            assert_eq!(q.snapshot().expect("snapshot"), Some(bytes), "after {k}");
            assert_eq!(q.symbol_count(), p.symbol_count());
        }
        assert_eq!(
            FeaturesProcessor::default().scope(),
            TaskScope::PerPartition
        );
    }

    #[test]
    fn redelivered_bars_are_dropped_silently_and_change_nothing() {
        let records = interleaved(70);
        let mut p = FeaturesProcessor::default();
        for (i, r) in records.iter().enumerate() {
            p.process(r, t(0)).expect("valid");
            // Everything so far, replayed: the dedup window (256) covers it all.
            for old in records[..=i].iter().step_by(7) {
                let before = p.snapshot().expect("snapshot");
                assert_eq!(
                    p.process(old, t(0)),
                    Ok(vec![]),
                    "redelivery of {}",
                    old.id()
                );
                assert_eq!(p.snapshot().expect("snapshot"), before);
            }
        }
        // compute() must return a record, so it names the redelivery instead.
        let AnyRecord::MarketData(last) = &records[records.len() - 1] else {
            panic!("market data")
        };
        let e = p.compute(last).expect_err("redelivery");
        assert!(matches!(e, FeaturesError::Redelivered { .. }), "{e}");
        // A different bar at the last time is still a duplicate for the dead-letter topic.
        let mut other = last.clone();
        other.record_id.push_str(":other");
        let e = p
            .process(&AnyRecord::MarketData(other), t(0))
            .expect_err("duplicate");
        assert_eq!(e.class, ErrorClass::DeadLetter);
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn only_the_last_dedup_window_ids_are_recognised() {
        let config = FeaturesConfig {
            dedup_window: 3,
            ..FeaturesConfig::default()
        };
        let bars: Vec<AnyRecord> = series(10)
            .into_iter()
            .enumerate()
            .map(|(i, b)| AnyRecord::MarketData(bar("W", i as i64, b)))
            .collect();
        let mut p = FeaturesProcessor::new(config.clone()).expect("valid");
        feed(&mut p, &bars);
        for (i, old) in bars.iter().enumerate() {
            let got = p.process(old, t(0));
            if i >= 7 {
                assert_eq!(got, Ok(vec![]), "bar {i} is among the last 3");
            } else {
                let e = got.expect_err("too old to recognise");
                assert_eq!(e.class, ErrorClass::DeadLetter, "bar {i}");
                assert!(e.message.contains("out-of-order"), "{e}");
            }
        }
        // The window survives a snapshot, and a smaller window on restore trims it.
        let bytes = p.snapshot().expect("snapshot").expect("stateful");
        let mut q = FeaturesProcessor::new(FeaturesConfig {
            dedup_window: 1,
            ..config
        })
        .expect("valid");
        q.restore(&bytes).expect("restore");
        assert_eq!(q.process(&bars[9], t(0)), Ok(vec![]));
        assert!(q.process(&bars[8], t(0)).is_err());
    }

    #[test]
    fn unusable_snapshots_are_fatal_and_change_nothing() {
        let records = interleaved(30);
        let mut p = FeaturesProcessor::default();
        feed(&mut p, &records);
        let good = p.snapshot().expect("snapshot").expect("stateful");
        let mut target = FeaturesProcessor::default();
        feed(&mut target, &records[..5]);
        let before = target.snapshot().expect("snapshot");

        let mut wrong_version = good.clone();
        wrong_version[0] = SNAPSHOT_FORMAT + 1;
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let cases: [(&str, &[u8], &str); 5] = [
            ("empty", &[], "empty"),
            ("version", &wrong_version, "format version"),
            ("truncated", &good[..good.len() / 2], "corrupt"),
            ("garbage", &[SNAPSHOT_FORMAT, 0xc1, 0x00, 0x17], "corrupt"),
            ("flipped", &flipped, "snapshot"),
        ];
        for (name, bytes, words) in cases {
            let Err(e) = target.restore(bytes) else {
                // A flipped byte may land in a value (a close, an id) and decode fine.
                assert_eq!(name, "flipped", "{name} was accepted");
                target = FeaturesProcessor::default();
                feed(&mut target, &records[..5]);
                continue;
            };
            assert_eq!(e.class, ErrorClass::Fatal, "{name}");
            assert!(e.message.contains(words), "{name}: {e}");
            assert_eq!(target.snapshot().expect("snapshot"), before, "{name}");
        }

        let other = FeaturesConfig {
            feature_set_version: "fs-other".into(),
            rsi_period: 7,
            ..FeaturesConfig::default()
        };
        let e = FeaturesProcessor::new(other)
            .expect("valid")
            .restore(&good)
            .expect_err("other settings");
        assert_eq!(e.class, ErrorClass::Fatal);
        assert!(e.message.contains("other indicator settings"), "{e}");
    }

    /// Measures the snapshot of 60 symbols after 1000 bars each (printed with --nocapture):
    /// the per-symbol state is fixed-size, so this bounds what a changelog record carries.
    #[test]
    fn snapshot_size_for_sixty_symbols() {
        let mut p = FeaturesProcessor::default();
        let raw = series(1000);
        for (i, b) in raw.iter().enumerate() {
            for s in 0..60 {
                p.compute(&bar(&format!("S{s:02}"), i as i64, *b))
                    .expect("valid");
            }
        }
        let bytes = p.snapshot().expect("snapshot").expect("stateful");
        eprintln!(
            "features snapshot: 60 symbols x 1000 bars = {} bytes ({} per symbol)",
            bytes.len(),
            bytes.len() / 60
        );
        // Fixed-size state: windows (≤ 50 values each) and 256 ids of ~20 bytes per symbol.
        assert!(bytes.len() < 60 * 16_000, "{}", bytes.len());
    }

    fn random_bar() -> impl Strategy<Value = [f64; 5]> {
        (
            1.0f64..1000.0,
            0.0f64..0.05,
            0.0f64..0.05,
            0.0f64..1.0,
            prop_oneof![Just(0.0), 0.0f64..1e9],
        )
            .prop_map(|(c, up, down, open_at, v)| {
                let (h, l) = (c * (1.0 + up), c * (1.0 - down));
                [l + (h - l) * open_at, h, l, c, v.round()]
            })
    }

    proptest! {
        /// Stopping after any prefix, snapshotting and resuming in a fresh core gives exactly
        /// the records of an uninterrupted run.
        #[test]
        fn resuming_after_any_prefix_is_exact(k in 0usize..=200) {
            let records = interleaved(90);
            let k = k.min(records.len());
            let config = FeaturesConfig::default();
            let whole = feed(&mut FeaturesProcessor::new(config.clone()).expect("valid"), &records);
            prop_assert_eq!(resumed(&config, &records, k), whole);
        }

        /// On random series the incremental SMA, Bollinger stddev and VWAP equal a from-scratch
        /// recomputation over the window on every bar.
        #[test]
        fn incremental_equals_naive(raw in prop::collection::vec(random_bar(), 1..120)) {
            let bars: Vec<MarketData> = raw.into_iter().enumerate().map(|(i, b)| bar("R", i as i64, b)).collect();
            let out = run(&mut FeaturesProcessor::default(), &bars);
            let [high, low, close, volume] = columns(&bars);
            for (i, f) in out.iter().enumerate() {
                for n in [5usize, 10, 20, 50] {
                    let got = f.values.get(&format!("sma_{n}"));
                    prop_assert_eq!(got.is_some(), i + 1 >= n);
                    if let Some(g) = got {
                        let w = &close[i + 1 - n..=i];
                        prop_assert!((g - mean(w)).abs() <= 1e-9 * mean(w), "sma_{} {} vs {}", n, g, mean(w));
                    }
                }
                if i >= 19 {
                    let w = &close[i - 19..=i];
                    let (m, sd) = (mean(w), stddev(w, false));
                    let upper = f.values.get("bb_upper_20").copied().unwrap_or(f64::NAN);
                    let got_sd = (upper - f.values.get("bb_middle_20").copied().unwrap_or(f64::NAN)) / 2.0;
                    prop_assert!((got_sd - sd).abs() <= 1e-9 * m, "stddev {} vs {}", got_sd, sd);
                    let vs: f64 = volume[i - 19..=i].iter().sum();
                    let pv: f64 = (i - 19..=i).map(|j| (high[j] + low[j] + close[j]) / 3.0 * volume[j]).sum();
                    match f.values.get("vwap_20") {
                        Some(g) => prop_assert!(vs > 0.0 && (g - pv / vs).abs() <= 1e-9 * (pv / vs), "vwap {} vs {}", g, pv / vs),
                        None => prop_assert_eq!(vs, 0.0),
                    }
                }
            }
        }
    }
}
