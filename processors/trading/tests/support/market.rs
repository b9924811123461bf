//! A seeded random market for the trading core: per instant, a bar and a signal for every
//! symbol, as ingest, features and the scorer would publish them. Shared by the `determinism`
//! test and the `trading_core` bench (which includes this file by path).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use tradestream_schemas::{
    AnyRecord, MarketData, MarketDataKind, SignalSide, Symbol, TradingSignal,
};

/// Deterministic xorshift, so runs compare.
pub(crate) fn next(state: &mut u64) -> f64 {
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

/// When instant `index` happens: one a day from 2020-01-01 14:30 UTC.
pub(crate) fn time_of(index: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 14, 30, 0)
        .single()
        .expect("time")
        + Duration::days(index as i64)
}

/// How the market moves and the model calls it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Largest close-to-open move, as a fraction (uniform in ± half of it).
    pub(crate) moves: f64,
    /// Largest wick beyond the body, as a fraction.
    pub(crate) wicks: f64,
    /// Probability of a BUY call; SELL up to `sell`, HOLD above.
    pub(crate) buy: f64,
    /// Cumulative probability of BUY or SELL.
    pub(crate) sell: f64,
    /// Stop-loss distance from the close, as a fraction.
    pub(crate) stop: f64,
    /// Take-profit distance from the close, as a fraction.
    pub(crate) take: f64,
}

/// The market's state between instants.
#[derive(Debug)]
pub(crate) struct Market {
    rng: u64,
    prices: Vec<f64>,
    symbols: Vec<Symbol>,
    shape: Shape,
    /// Prefix of record ids and the source name.
    source: &'static str,
}

impl Market {
    /// `symbols` symbols `SYM0..`, all starting at 100.
    pub(crate) fn new(seed: u64, symbols: usize, shape: Shape, source: &'static str) -> Self {
        Self {
            rng: seed,
            prices: vec![100.0; symbols],
            symbols: (0..symbols)
                .map(|i| Symbol::new(format!("SYM{i}")).expect("symbol"))
                .collect(),
            shape,
            source,
        }
    }

    /// Instant `index` (at [`time_of`] it): every symbol's bar and its signal. `step` numbers
    /// the bars by instant (0: unsequenced).
    pub(crate) fn instant(&mut self, index: usize, step: i64) -> (Vec<AnyRecord>, Vec<AnyRecord>) {
        let at = time_of(index);
        let n = self.symbols.len();
        let step_bars = if step > 0 { n as i32 } else { 0 };
        let (mut bars, mut signals) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let s = self.shape;
        for (price, symbol) in self.prices.iter_mut().zip(&self.symbols) {
            let rng = &mut self.rng;
            let open = *price;
            let close = (open * (1.0 + s.moves * (next(rng) - 0.5))).max(1.0);
            *price = close;
            let high = open.max(close) * (1.0 + s.wicks * next(rng));
            let low = open.min(close) * (1.0 - s.wicks * next(rng));
            let id = format!("{}:{symbol}:{index}", self.source);
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
                volume: Decimal::from((next(rng) * 1e6) as i64 + 1),
                source: self.source.into(),
                ingest_time: at,
                step,
                step_bars,
            }));
            let side = match next(rng) {
                x if x < s.buy => SignalSide::Buy,
                x if x < s.sell => SignalSide::Sell,
                _ => SignalSide::Hold,
            };
            let entry = dec(close);
            let (sl, tp) = match side {
                SignalSide::Buy => (entry * dec(1.0 - s.stop), entry * dec(1.0 + s.take)),
                _ => (entry * dec(1.0 + s.stop), entry * dec(1.0 - s.take)),
            };
            signals.push(AnyRecord::Signal(TradingSignal {
                signal_id: format!("signal:{id}"),
                source_id: format!("features:{id}"),
                symbol: symbol.clone(),
                event_time: at,
                side,
                confidence: 0.5 + 0.5 * next(rng),
                model_name: self.source.into(),
                model_version: "1".into(),
                reference_price: entry,
                stop_loss: Some(sl.round_dp(2)),
                take_profit: Some(tp.round_dp(2)),
                reason: self.source.into(),
                step,
            }));
        }
        (bars, signals)
    }
}
