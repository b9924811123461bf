//! Runs the real NASDAQ Composite daily file (1999–2018) through the features processor: every
//! bar must produce a valid record with finite values, the trend machine must see real bars,
//! and the last bar's indicators must sit in sane ranges.

use chrono::{TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use std::fs::File;
use tradestream_features::{FEATURE_SET_VERSION, FeaturesProcessor};
use tradestream_ingest::{CsvFormat, CsvReplay};
use tradestream_schemas::{AnyRecord, BarClass, MarketData, Processor, Record, Symbol, Trend};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/nasdaq-daily.csv"
);

fn bars() -> Vec<MarketData> {
    let symbol = Symbol::new("^IXIC").expect("symbol");
    let replay = CsvReplay::new("nasdaq-daily.csv", CsvFormat::Daily { symbol }, "1d");
    let file = File::open(DATA).unwrap_or_else(|e| panic!("{DATA}: {e}"));
    let now = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let rows = replay.read(file, now).expect("header");
    let bars: Vec<MarketData> = rows.into_iter().filter_map(Result::ok).collect();
    assert!(bars.len() > 5_000, "only {} bars parsed", bars.len());
    bars
}

#[test]
fn every_real_bar_produces_sane_features() {
    let bars = bars();
    let mut p = FeaturesProcessor::default();
    let now = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let mut features = Vec::with_capacity(bars.len());
    for bar in &bars {
        let out = p
            .process(&AnyRecord::MarketData(bar.clone()), now)
            .expect("valid bar");
        let [AnyRecord::Features(f)] = out.as_slice() else {
            panic!("one record per bar: {out:?}")
        };
        assert_eq!(f.validate(), Ok(()), "{}", f.record_id);
        assert!(f.values.values().all(|v| v.is_finite()));
        assert_eq!(f.record_id, format!("features:{}", bar.record_id));
        assert_eq!(f.feature_set_version, FEATURE_SET_VERSION);
        features.push(f.clone());
    }
    assert_eq!(features.len(), bars.len());

    // From bar 50 on every indicator is present (no data gaps make one vanish).
    for f in &features[49..] {
        assert_eq!(f.values.len(), 24, "{} has {:?}", f.record_id, f.values);
    }

    let last = features.last().expect("records");
    let close = last.close.to_f64().expect("f64");
    let v = |name: &str| {
        *last
            .values
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!((0.0..=100.0).contains(&v("rsi_14")), "rsi {}", v("rsi_14"));
    assert!(
        v("atr_14") > 0.0 && v("atr_14") < 0.1 * close,
        "atr {} at close {close}",
        v("atr_14")
    );
    assert!(v("bb_lower_20") < v("bb_middle_20") && v("bb_middle_20") < v("bb_upper_20"));
    assert!(
        v("volatility_20") > 0.0 && v("volatility_20") < 0.1,
        "daily vol {}",
        v("volatility_20")
    );
    assert!((v("sma_50") / close - 1.0).abs() < 0.3);

    // The last SMA(50) equals a plain average of the file's last 50 closes.
    let tail: f64 = bars[bars.len() - 50..]
        .iter()
        .map(|b| b.close.to_f64().expect("f64"))
        .sum::<f64>()
        / 50.0;
    assert!((v("sma_50") - tail).abs() <= 1e-9 * tail);

    // Twenty years of an index have real bars both ways and both trends.
    for class in [BarClass::RealBull, BarClass::RealBear, BarClass::Fake] {
        assert!(
            features.iter().any(|f| f.bar_class == class),
            "{class:?} never seen"
        );
    }
    for trend in [Trend::Bullish, Trend::Bearish] {
        assert!(
            features.iter().any(|f| f.trend == trend),
            "{trend:?} never seen"
        );
    }
}

#[test]
fn a_replay_reproduces_identical_records() {
    let bars = bars();
    let run = || {
        let mut p = FeaturesProcessor::default();
        bars.iter()
            .map(|b| p.compute(b).expect("valid"))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
