//! Throughput of the pipeline's two single-task cores, the router and the exchange, fed the
//! way the live pipeline feeds them but without Kafka: per time step every symbol's bar goes
//! to both, the previous step's signals go to the router (market data runs ahead of signals
//! in the pipeline), every order goes back to the router (it reads `orders`) and to the
//! venue, and the venue's fills and order updates go back to the router. Reports each core's
//! records per second and the cost of a snapshot of its state at the end: these two cores
//! run on one task each, so they bound the pipeline however many cores it has. Run with
//! `cargo bench -p tradestream-exchange --bench venue_loop` (`VENUE_LOOP_STEPS`, default
//! 1,667 steps of 60 symbols: 100k bars, the `bench pipeline` scale).

#[path = "../tests/support/market.rs"]
mod market;

use chrono::{DateTime, Utc};
use market::{Market, Shape};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};
use tradestream_exchange::{ExchangeConfig, ExchangeProcessor};
use tradestream_router::{RouterConfig, RouterProcessor};
use tradestream_schemas::{AnyRecord, Processor};

const SYMBOLS: usize = 60;

/// Times one core's calls.
#[derive(Default)]
struct Timed {
    records: u64,
    spent: StdDuration,
}

impl Timed {
    fn feed<P: Processor>(
        &mut self,
        core: &mut P,
        input: &AnyRecord,
        now: DateTime<Utc>,
    ) -> Vec<AnyRecord> {
        let start = Instant::now();
        let out = core.process(input, now).unwrap_or_default();
        self.spent += start.elapsed();
        self.records += 1;
        out
    }

    fn report(&self, name: &str) {
        let secs = self.spent.as_secs_f64().max(1e-9);
        println!(
            "{name:<10} {:>9} records in {:>8.1} ms: {:>10.0} records/s",
            self.records,
            secs * 1e3,
            self.records as f64 / secs
        );
    }
}

fn snapshot_cost<P: Processor>(name: &str, core: &P) {
    let start = Instant::now();
    let bytes = core.snapshot().ok().flatten().unwrap_or_default();
    let encode = start.elapsed();
    let start = Instant::now();
    let compressed = lz4_flex::block::compress_prepend_size(&bytes);
    let compress = start.elapsed();
    println!(
        "{name:<10} snapshot {:>9} bytes ({:>8} lz4) encoded in {:>6.1} ms, compressed in {:>5.1} ms",
        bytes.len(),
        compressed.len(),
        encode.as_secs_f64() * 1e3,
        compress.as_secs_f64() * 1e3
    );
    black_box(compressed);
}

fn main() {
    let steps: usize = std::env::var("VENUE_LOOP_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_667);
    let shape = Shape {
        moves: 0.03,
        wicks: 0.01,
        buy: 0.45,
        sell: 0.9,
        stop: 0.03,
        take: 0.05,
    };
    let mut market = Market::new(0x9E37_79B9_7F4A_7C15, SYMBOLS, shape, "bench");
    let mut router = RouterProcessor::new(RouterConfig::default()).expect("router");
    let mut venue = ExchangeProcessor::new(ExchangeConfig::default()).expect("exchange");
    let mut timed_router = Timed::default();
    let mut timed_venue = Timed::default();
    let mut pending_signals: Vec<AnyRecord> = Vec::new();
    let mut orders = 0u64;
    let mut fills = 0u64;
    for step in 0..steps {
        let at = market::time_of(step);
        // Unsequenced (step 0): the cores' own logic, without the lockstep round trips.
        let (bars, signals) = market.instant(step, 0);
        // Bars first (market data runs ahead), then last step's signals.
        let mut to_router: VecDeque<AnyRecord> = VecDeque::new();
        for bar in &bars {
            for out in timed_venue.feed(&mut venue, bar, at) {
                to_router.push_back(out);
            }
            timed_router.feed(&mut router, bar, at);
        }
        for signal in pending_signals.drain(..) {
            to_router.push_back(signal);
        }
        while let Some(input) = to_router.pop_front() {
            if matches!(input, AnyRecord::Fill(_)) {
                fills += 1;
            }
            for out in timed_router.feed(&mut router, &input, at) {
                if let AnyRecord::Order(_) = &out {
                    orders += 1;
                    // The router reads its own orders back; the venue takes them.
                    for v in timed_venue.feed(&mut venue, &out, at) {
                        to_router.push_back(v);
                    }
                    to_router.push_back(out);
                }
            }
        }
        pending_signals = signals;
    }
    println!(
        "{steps} steps x {SYMBOLS} symbols: {} bars, {orders} orders from the router, {fills} fills",
        steps * SYMBOLS
    );
    timed_router.report("router");
    timed_venue.report("exchange");
    snapshot_cost("router", &router);
    snapshot_cost("exchange", &venue);
}
