//! Per-symbol indicator state and its O(1) update.
//!
//! Definitions follow TA-Lib (called once over a symbol's whole history), including warm-up:
//! an indicator is absent until its window is full, so a record never carries a value computed
//! from fewer bars than its definition needs.
//! - `return_1` = close/prev − 1, `log_return_1` = ln(close/prev): from the 2nd bar.
//! - `sma_n`: mean of the last n closes. `ema_n`: seeded with the SMA of the first n closes,
//!   then `prev + k·(close − prev)`, k = 2/(n+1).
//! - `rsi_n`: gains and losses of the close changes; the first averages are simple means of the
//!   first n changes (first value on bar n+1), then Wilder's `(prev·(n−1) + x)/n`.
//!   RSI = 100·gain/(gain + loss). When nothing moved (gain + loss = 0) RSI is undefined and
//!   absent; TA-Lib writes 0 there, which a model would read as "maximally oversold".
//! - `macd`, `macd_signal`, `macd_hist` (TA-Lib `MACD`): the slow EMA starts as usual on bar
//!   `slow`; the fast EMA starts on the same bar, seeded with the SMA of the last `fast` closes
//!   (TA-Lib's MACD quirk, so `macd` ≠ `ema_12 − ema_26` exactly); the signal is an EMA of the
//!   MACD line; all three appear with the signal, on bar `slow + signal − 1`.
//! - `bb_*_n`: SMA(n) ± k·population stddev(n); `bb_percent_b_n` = (close − lower)/(upper −
//!   lower), absent when the bands coincide.
//! - `atr_n`: true range from the 2nd bar (max of high − low, |high − prev close|, |low − prev
//!   close|); first ATR = mean of the first n true ranges (bar n+1), then Wilder.
//! - `volatility_n`: sample stddev of the last n log returns (bar n+1), not annualized.
//! - `vwap_n`: Σ typical price·volume / Σ volume over n bars, typical = (high+low+close)/3;
//!   absent when no volume traded in the window.
//! - `zscore_close_n`, `zscore_volume_n`: (x − mean)/population stddev over the last n bars
//!   including this one; absent when the stddev is 0.
//! - `range_pct` = (high − low)/close and `volume`: every bar.
//!
//! Values are `f64`: they are statistics, not money. Bar classes compare the exact decimals.

use crate::config::FeaturesConfig;
use crate::rolling::{Smoother, Window};
use crate::trend::{TrendMachine, classify};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tradestream_schemas::{BarClass, FeatureName, FeatureValues, Trend};

/// The indicator names of a configuration and the slot of each in name order, built once.
/// An update writes values into slots (no allocation, no string comparisons); the record's
/// record's values are then the present slots in order, with shared names (no sort, no
/// string allocation).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// Every name, sorted; slot i holds `sorted[i]`.
    sorted: Vec<FeatureName>,
    return_1: usize,
    log_return_1: usize,
    sma: Vec<usize>,
    ema: Vec<usize>,
    rsi: usize,
    macd: usize,
    macd_signal: usize,
    macd_hist: usize,
    bb_upper: usize,
    bb_middle: usize,
    bb_lower: usize,
    bb_percent_b: usize,
    atr: usize,
    volatility: usize,
    vwap: usize,
    zscore_close: usize,
    zscore_volume: usize,
    range_pct: usize,
    volume: usize,
}

impl Names {
    pub(crate) fn new(c: &FeaturesConfig) -> Self {
        let (bb, st) = (c.bollinger_period, c.stats_period);
        let mut all: Vec<String> = Vec::new();
        let mut name = |n: String| {
            all.push(n);
            all.len() - 1
        };
        // Provisional slots in declaration order, remapped to sorted order below.
        let mut names = Self {
            sorted: Vec::new(),
            return_1: name("return_1".into()),
            log_return_1: name("log_return_1".into()),
            sma: c
                .sma_periods
                .iter()
                .map(|n| name(format!("sma_{n}")))
                .collect(),
            ema: c
                .ema_periods
                .iter()
                .map(|n| name(format!("ema_{n}")))
                .collect(),
            rsi: name(format!("rsi_{}", c.rsi_period)),
            macd: name("macd".into()),
            macd_signal: name("macd_signal".into()),
            macd_hist: name("macd_hist".into()),
            bb_upper: name(format!("bb_upper_{bb}")),
            bb_middle: name(format!("bb_middle_{bb}")),
            bb_lower: name(format!("bb_lower_{bb}")),
            bb_percent_b: name(format!("bb_percent_b_{bb}")),
            atr: name(format!("atr_{}", c.atr_period)),
            volatility: name(format!("volatility_{st}")),
            vwap: name(format!("vwap_{st}")),
            zscore_close: name(format!("zscore_close_{st}")),
            zscore_volume: name(format!("zscore_volume_{st}")),
            range_pct: name("range_pct".into()),
            volume: name("volume".into()),
        };
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by(|a, b| all[*a].cmp(&all[*b]));
        let mut rank = vec![0; all.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let remap = |slot: &mut usize| *slot = rank[*slot];
        for slot in [
            &mut names.return_1,
            &mut names.log_return_1,
            &mut names.rsi,
            &mut names.macd,
            &mut names.macd_signal,
            &mut names.macd_hist,
            &mut names.bb_upper,
            &mut names.bb_middle,
            &mut names.bb_lower,
            &mut names.bb_percent_b,
            &mut names.atr,
            &mut names.volatility,
            &mut names.vwap,
            &mut names.zscore_close,
            &mut names.zscore_volume,
            &mut names.range_pct,
            &mut names.volume,
        ] {
            remap(slot);
        }
        names
            .sma
            .iter_mut()
            .chain(names.ema.iter_mut())
            .for_each(remap);
        names.sorted = order
            .into_iter()
            .map(|i| FeatureName::from(std::mem::take(&mut all[i])))
            .collect();
        names
    }

    /// How many slots an update writes.
    pub(crate) fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The record's values from the slots of one update (NaN = absent).
    pub(crate) fn collect(&self, slots: &[f64]) -> FeatureValues {
        let mut entries = Vec::with_capacity(self.sorted.len());
        entries.extend(
            self.sorted
                .iter()
                .zip(slots)
                .filter(|(_, v)| !v.is_nan())
                .map(|(n, v)| (n.clone(), *v)),
        );
        FeatureValues::from_sorted(entries)
    }
}

/// One bar's inputs, already converted and checked by the processor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BarInput {
    pub(crate) high: Decimal,
    pub(crate) low: Decimal,
    pub(crate) close: Decimal,
    pub(crate) high_f: f64,
    pub(crate) low_f: f64,
    pub(crate) close_f: f64,
    pub(crate) volume_f: f64,
}

/// The previous bar, as far as the indicators need it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Previous {
    high: Decimal,
    low: Decimal,
    close: f64,
}

/// TA-Lib MACD state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Macd {
    /// The last `fast` closes, to seed the fast EMA when the slow one starts.
    fast_seed: Window,
    fast: Smoother,
    slow: Smoother,
    signal: Smoother,
}

impl Macd {
    fn push(&mut self, close: f64) -> Option<(f64, f64)> {
        if self.fast.value().is_none() {
            self.fast_seed.push(close);
        }
        let slow = self.slow.push(close)?;
        let fast = match self.fast.value() {
            None => {
                let seed = self.fast_seed.mean();
                self.fast.seed(seed);
                seed
            }
            Some(_) => self.fast.push(close)?,
        };
        let macd = fast - slow;
        self.signal.push(macd).map(|signal| (macd, signal))
    }
}

/// Everything the indicators remember about one symbol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SymbolState {
    previous: Option<Previous>,
    trend: TrendMachine,
    smas: Vec<Window>,
    emas: Vec<Smoother>,
    rsi_gain: Smoother,
    rsi_loss: Smoother,
    macd: Macd,
    bollinger: Window,
    bollinger_k: f64,
    atr: Smoother,
    log_returns: Window,
    closes: Window,
    volumes: Window,
    price_volume: Window,
}

impl SymbolState {
    pub(crate) fn new(c: &FeaturesConfig) -> Self {
        let macd_fast = Smoother::ema(c.macd_fast);
        Self {
            previous: None,
            trend: TrendMachine::new(),
            smas: c.sma_periods.iter().map(|&n| Window::new(n)).collect(),
            emas: c.ema_periods.iter().map(|&n| Smoother::ema(n)).collect(),
            rsi_gain: Smoother::wilder(c.rsi_period),
            rsi_loss: Smoother::wilder(c.rsi_period),
            macd: Macd {
                fast_seed: Window::new(c.macd_fast),
                fast: macd_fast,
                slow: Smoother::ema(c.macd_slow),
                signal: Smoother::ema(c.macd_signal),
            },
            bollinger: Window::new(c.bollinger_period),
            bollinger_k: c.bollinger_stddev,
            atr: Smoother::wilder(c.atr_period),
            log_returns: Window::new(c.stats_period),
            closes: Window::new(c.stats_period),
            volumes: Window::new(c.stats_period),
            price_volume: Window::new(c.stats_period),
        }
    }

    /// Whether restored state `self` was built for the same indicator settings as `fresh`
    /// (same windows and periods, consistent cursors): a snapshot check.
    pub(crate) fn same_shape(&self, fresh: &SymbolState) -> bool {
        let smoothers = [
            (&self.rsi_gain, &fresh.rsi_gain),
            (&self.rsi_loss, &fresh.rsi_loss),
            (&self.atr, &fresh.atr),
            (&self.macd.fast, &fresh.macd.fast),
            (&self.macd.slow, &fresh.macd.slow),
            (&self.macd.signal, &fresh.macd.signal),
        ];
        let windows = [
            (&self.macd.fast_seed, &fresh.macd.fast_seed),
            (&self.bollinger, &fresh.bollinger),
            (&self.log_returns, &fresh.log_returns),
            (&self.closes, &fresh.closes),
            (&self.volumes, &fresh.volumes),
            (&self.price_volume, &fresh.price_volume),
        ];
        self.smas.len() == fresh.smas.len()
            && self.emas.len() == fresh.emas.len()
            && self
                .smas
                .iter()
                .zip(&fresh.smas)
                .all(|(a, b)| a.same_shape(b))
            && self
                .emas
                .iter()
                .zip(&fresh.emas)
                .all(|(a, b)| a.same_shape(b))
            && smoothers.iter().all(|(a, b)| a.same_shape(b))
            && windows.iter().all(|(a, b)| a.same_shape(b))
            && self.bollinger_k.to_bits() == fresh.bollinger_k.to_bits()
    }

    /// Folds in the next bar and writes the defined indicators into `out`.
    pub(crate) fn update(
        &mut self,
        bar: &BarInput,
        names: &Names,
        out: &mut [f64],
    ) -> (BarClass, Trend) {
        let mut put = |slot: usize, v: f64| {
            // Every formula below is finite for validated bars (positive prices, zero
            // divisors excluded); the guard keeps a future mistake from poisoning a record.
            if v.is_finite() {
                out[slot] = v;
            } else {
                debug_assert!(false, "{} = {v}", names.sorted[slot]);
            }
        };
        let close = bar.close_f;
        let class = classify(bar.close, self.previous.map(|p| (p.high, p.low)));
        let trend = self.trend.update(class);

        if let Some(prev) = self.previous {
            let ratio = close / prev.close;
            put(names.return_1, ratio - 1.0);
            let log_return = ratio.ln();
            put(names.log_return_1, log_return);

            let change = close - prev.close;
            let gain = self.rsi_gain.push(change.max(0.0));
            let loss = self.rsi_loss.push((-change).max(0.0));
            if let (Some(g), Some(l)) = (gain, loss)
                && g + l > 0.0
            {
                put(names.rsi, 100.0 * (g / (g + l)));
            }

            let true_range = (bar.high_f - bar.low_f)
                .max((bar.high_f - prev.close).abs())
                .max((bar.low_f - prev.close).abs());
            if let Some(atr) = self.atr.push(true_range) {
                put(names.atr, atr);
            }

            self.log_returns.push(log_return);
            if self.log_returns.is_full() {
                put(names.volatility, self.log_returns.stddev_sample());
            }
        }

        for (w, name) in self.smas.iter_mut().zip(&names.sma) {
            w.push(close);
            if w.is_full() {
                put(*name, w.mean());
            }
        }
        for (e, name) in self.emas.iter_mut().zip(&names.ema) {
            if let Some(v) = e.push(close) {
                put(*name, v);
            }
        }
        if let Some((macd, signal)) = self.macd.push(close) {
            put(names.macd, macd);
            put(names.macd_signal, signal);
            put(names.macd_hist, macd - signal);
        }

        self.bollinger.push(close);
        if self.bollinger.is_full() {
            let middle = self.bollinger.mean();
            let width = self.bollinger_k * self.bollinger.stddev_population();
            let (upper, lower) = (middle + width, middle - width);
            put(names.bb_upper, upper);
            put(names.bb_middle, middle);
            put(names.bb_lower, lower);
            if upper > lower {
                put(names.bb_percent_b, (close - lower) / (upper - lower));
            }
        }

        let typical = (bar.high_f + bar.low_f + close) / 3.0;
        self.closes.push(close);
        self.volumes.push(bar.volume_f);
        self.price_volume.push(typical * bar.volume_f);
        if self.closes.is_full() {
            let volume_sum = self.volumes.sum();
            if volume_sum > 0.0 {
                put(names.vwap, self.price_volume.sum() / volume_sum);
            }
            for (w, name, x) in [
                (&self.closes, names.zscore_close, close),
                (&self.volumes, names.zscore_volume, bar.volume_f),
            ] {
                let sd = w.stddev_population();
                if sd > 0.0 {
                    put(name, (x - w.mean()) / sd);
                }
            }
        }

        put(names.range_pct, (bar.high_f - bar.low_f) / close);
        put(names.volume, bar.volume_f);

        self.previous = Some(Previous {
            high: bar.high,
            low: bar.low,
            close,
        });
        (class, trend)
    }
}
