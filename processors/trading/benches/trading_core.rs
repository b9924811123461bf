//! Throughput of the trading core in process: per instant every symbol's bar and its signal,
//! as the pipeline delivers them, with the router's decisions and the venue's fills made by
//! plain calls. Reports bars per second on one core and the cost of a snapshot at the end.
//! Run with `cargo bench -p tradestream-trading --bench trading_core` (`TRADING_BENCH_STEPS`,
//! default 20,000 instants of 60 symbols: 1.2M bars).

#[path = "../tests/support/market.rs"]
mod market;

use chrono::Utc;
use market::{Market, Shape};
use std::hint::black_box;
use std::time::Instant;
use tradestream_schemas::{AnyRecord, Processor};
use tradestream_trading::{TradingConfig, TradingCore};

const SYMBOLS: usize = 60;

fn main() {
    let steps: usize = std::env::var("TRADING_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // About the demo's mix: most signals HOLD, a few trades a day with brackets.
    let shape = Shape {
        moves: 0.03,
        wicks: 0.01,
        buy: 0.03,
        sell: 0.05,
        stop: 0.03,
        take: 0.05,
    };
    let mut market = Market::new(11, SYMBOLS, shape, "bench");
    let inputs: Vec<AnyRecord> = (0..steps)
        .flat_map(|i| {
            let (mut bars, signals) = market.instant(i, i as i64 + 1);
            bars.extend(signals);
            bars
        })
        .collect();
    let mut core = TradingCore::new(TradingConfig::default()).expect("core");
    let now = Utc::now();
    let (mut outputs, mut fills) = (0usize, 0usize);
    let start = Instant::now();
    for input in &inputs {
        let out = core.process(input, now).unwrap_or_default();
        fills += out
            .iter()
            .filter(|r| matches!(r, AnyRecord::Fill(_)))
            .count();
        outputs += out.len();
        black_box(&out);
    }
    let spent = start.elapsed().as_secs_f64().max(1e-9);
    let bars = steps * SYMBOLS;
    println!(
        "trading core: {bars} bars + {bars} signals ({SYMBOLS} symbols, {steps} instants) in {:.1} ms: {:.0} bars/s ({outputs} outputs, {fills} fills)",
        spent * 1e3,
        bars as f64 / spent
    );
    let start = Instant::now();
    let snapshot = core.snapshot().ok().flatten().unwrap_or_default();
    println!(
        "trading core: snapshot {} bytes in {:.1} ms",
        snapshot.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
