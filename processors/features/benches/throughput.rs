//! Throughput of the features core, without Kafka: bars per second through
//! `FeaturesProcessor::process` on a synthetic random walk over several symbols (the steady
//! state: every indicator warmed up). Run with `cargo bench -p tradestream-features`.

use chrono::{Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;
use tradestream_features::FeaturesProcessor;
use tradestream_schemas::{AnyRecord, MarketData, MarketDataKind, Processor, Symbol};

const SYMBOLS: usize = 50;
const BARS_PER_SYMBOL: usize = 4_000;

/// Deterministic xorshift so runs compare.
fn next(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn synthetic() -> Vec<AnyRecord> {
    let t0 = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let symbols: Vec<Symbol> = (0..SYMBOLS)
        .map(|i| Symbol::new(format!("SYM{i}")).expect("symbol"))
        .collect();
    let mut price = vec![100.0f64; SYMBOLS];
    let dec = |x: f64| {
        Decimal::from_f64_retain(x)
            .unwrap_or(Decimal::ONE)
            .round_dp(4)
    };
    let mut out = Vec::with_capacity(SYMBOLS * BARS_PER_SYMBOL);
    for i in 0..BARS_PER_SYMBOL {
        for (s, symbol) in symbols.iter().enumerate() {
            let open = price[s];
            let close = (open * (1.0 + 0.02 * (next(&mut rng) - 0.5))).max(1.0);
            price[s] = close;
            let high = open.max(close) * (1.0 + 0.01 * next(&mut rng));
            let low = open.min(close) * (1.0 - 0.01 * next(&mut rng));
            out.push(AnyRecord::MarketData(MarketData {
                record_id: format!("bench:{symbol}:{i}"),
                symbol: symbol.clone(),
                event_time: t0 + Duration::minutes(i as i64),
                kind: MarketDataKind::Bar,
                interval: Some("1m".into()),
                open: dec(open),
                high: dec(high).max(dec(open)).max(dec(close)),
                low: dec(low).min(dec(open)).min(dec(close)),
                close: dec(close),
                volume: Decimal::from((next(&mut rng) * 1e6) as i64),
                source: "bench".into(),
                ingest_time: t0,
                step: 0,
                step_bars: 0,
            }));
        }
    }
    out
}

/// The floor set by the record type alone: building and dropping a `values` map with the
/// same owned keys, which every `Features` record needs whatever the indicator code does.
fn values_map_floor(names: &[String], records: usize) {
    let start = Instant::now();
    for _ in 0..records {
        let map: BTreeMap<String, f64> = names.iter().map(|n| (n.clone(), 1.0)).collect();
        black_box(map);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "floor: building + dropping a {}-entry BTreeMap<String, f64> alone: {:.0} maps/s",
        names.len(),
        records as f64 / secs
    );
}

fn main() {
    let bars = synthetic();
    let now = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("time");
    let mut last_keys = Vec::new();
    for round in 1..=3 {
        let mut p = FeaturesProcessor::default();
        let start = Instant::now();
        let mut values = 0usize;
        for bar in &bars {
            let out = p.process(black_box(bar), now).expect("valid bar");
            if let Some(AnyRecord::Features(f)) = out.first() {
                values += f.values.len();
                if f.values.len() > last_keys.len() {
                    last_keys = f.values.keys().map(str::to_owned).collect();
                }
            }
            black_box(out);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "features round {round}: {} bars over {SYMBOLS} symbols in {:.3} s = {:.0} bars/s ({:.2} values/bar)",
            bars.len(),
            secs,
            bars.len() as f64 / secs,
            values as f64 / bars.len() as f64
        );
    }
    values_map_floor(&last_keys, bars.len());
}
