//! Throughput of the pipeline's two single-task cores, the router and the exchange, fed the
//! way the live pipeline feeds them but without Kafka: per time step every symbol's bar goes
//! to both, the previous step's signals go to the router (market data runs ahead of signals
//! in the pipeline), every order goes back to the router (it reads `orders`) and to the
//! venue, and the venue's fills and order updates go back to the router. Reports each core's
//! records per second and the cost of a snapshot of its state at the end: these two cores
//! run on one task each, so they bound the pipeline however many cores it has. Run with
//! `cargo bench -p tradestream-exchange --bench venue_loop` (`VENUE_LOOP_STEPS`, default
//! 1,667 steps of 60 symbols: 100k bars, the `bench pipeline` scale).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};
use tradestream_exchange::{ExchangeConfig, ExchangeProcessor};
use tradestream_router::{RouterConfig, RouterProcessor};
use tradestream_schemas::{
    AnyRecord, MarketData, MarketDataKind, Processor, SignalSide, Symbol, TradingSignal,
};

const SYMBOLS: usize = 60;

/// Deterministic xorshift so runs compare.
fn next(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

fn dec(x: f64) -> Decimal {
    Decimal::from_f64_retain(x)
        .unwrap_or(Decimal::ONE)
        .round_dp(2)
}

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
    let t0 = Utc
        .with_ymd_and_hms(2020, 1, 1, 14, 30, 0)
        .single()
        .expect("time");
    let symbols: Vec<Symbol> = (0..SYMBOLS)
        .map(|i| Symbol::new(format!("SYM{i}")).expect("symbol"))
        .collect();
    let mut router = RouterProcessor::new(RouterConfig::default()).expect("router");
    let mut venue = ExchangeProcessor::new(ExchangeConfig::default()).expect("exchange");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut price = [100.0f64; SYMBOLS];
    let mut timed_router = Timed::default();
    let mut timed_venue = Timed::default();
    let mut pending_signals: Vec<AnyRecord> = Vec::new();
    let mut orders = 0u64;
    let mut fills = 0u64;
    for step in 0..steps {
        let at = t0 + Duration::days(step as i64);
        let mut bars = Vec::with_capacity(SYMBOLS);
        let mut signals = Vec::with_capacity(SYMBOLS);
        for (s, symbol) in symbols.iter().enumerate() {
            let open = price[s];
            let close = (open * (1.0 + 0.03 * (next(&mut rng) - 0.5))).max(1.0);
            price[s] = close;
            let high = open.max(close) * (1.0 + 0.01 * next(&mut rng));
            let low = open.min(close) * (1.0 - 0.01 * next(&mut rng));
            let id = format!("bench:{symbol}:{step}");
            bars.push(AnyRecord::MarketData(MarketData {
                record_id: id.clone(),
                symbol: symbol.clone(),
                event_time: at,
                kind: MarketDataKind::Bar,
                interval: Some("1d".into()),
                open: dec(open),
                high: dec(high).max(dec(open)).max(dec(close)),
                low: dec(low).min(dec(open)).min(dec(close)),
                close: dec(close),
                volume: Decimal::from((next(&mut rng) * 1e6) as i64 + 1),
                source: "bench".into(),
                ingest_time: at,
                step: 0,
                step_bars: 0,
            }));
            let side = match next(&mut rng) {
                x if x < 0.45 => SignalSide::Buy,
                x if x < 0.9 => SignalSide::Sell,
                _ => SignalSide::Hold,
            };
            let entry = dec(close);
            let (sl, tp) = match side {
                SignalSide::Buy => (entry * dec(0.97), entry * dec(1.05)),
                _ => (entry * dec(1.03), entry * dec(0.95)),
            };
            signals.push(AnyRecord::Signal(TradingSignal {
                signal_id: format!("signal:{id}"),
                source_id: format!("features:{id}"),
                symbol: symbol.clone(),
                event_time: at,
                side,
                confidence: 0.5 + 0.5 * next(&mut rng),
                model_name: "bench".into(),
                model_version: "1".into(),
                reference_price: entry,
                stop_loss: Some(sl.round_dp(2)),
                take_profit: Some(tp.round_dp(2)),
                reason: "bench".into(),
                step: 0,
            }));
        }
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
