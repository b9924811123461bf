//! Synthetic multi-symbol market data, for load tests, demos and soak runs.
//!
//! Each symbol follows geometric Brownian motion with Merton jumps (close to close), split into
//! an overnight gap (which carries the jumps) and an intrabar leg whose high and low are drawn
//! exactly from the Brownian bridge between open and close, so every bar is internally
//! consistent (`low <= min(open, close) <= max(open, close) <= high`, all > 0). Volume is
//! log-normal around `base_volume` and grows with the size of the bar's move, as real volume
//! does.
//!
//! The feed is pure and deterministic: no clock reads (the caller passes `ingest_time`), and a
//! seeded ChaCha stream per symbol, so the same config yields byte-identical records on every
//! run and adding a symbol does not change the paths of the others. Bars come round-robin
//! across symbols in event-time order; pacing them to wall time is the runner's job.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson, StandardNormal};
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tradestream_schemas::{ErrorClass, MarketData, MarketDataKind, Symbol};

/// Lowest price a path may reach; keeps 8-decimal rounding from ever producing 0.
const MIN_PRICE: f64 = 1e-4;
/// Highest price a path may reach; keeps every value well inside `Decimal`'s range.
const MAX_PRICE: f64 = 1e12;
/// Cap on the volume multiplier from the size of the move (keeps volume finite).
const MAX_VOLUME_MULTIPLIER: f64 = 1e3;

/// Settings of a synthetic feed. Every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Symbols to generate, in round-robin order (canonicalised: trimmed, upper-cased).
    #[serde(default = "default_symbols")]
    pub symbols: Vec<String>,
    /// RNG seed: the same seed (and config) gives identical records.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Event time of the first bar (RFC 3339, UTC).
    #[serde(default = "default_start")]
    pub start: DateTime<Utc>,
    /// Seconds between bars: 86400 for daily bars, 60 for minute bars.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// Bars per symbol before the feed ends; `None` for an unbounded feed.
    #[serde(default = "default_bars_per_symbol")]
    pub bars_per_symbol: Option<u64>,
    /// Price of every symbol before its first bar (a number or a decimal string).
    #[serde(
        default = "default_initial_price",
        deserialize_with = "lenient_decimal"
    )]
    pub initial_price: Decimal,
    /// Annualised expected return mu (0.05 = 5 % a year), jumps included.
    #[serde(default = "default_drift")]
    pub drift: f64,
    /// Annualised volatility sigma of the diffusion (0.2 = 20 %).
    #[serde(default = "default_volatility")]
    pub volatility: f64,
    /// Expected number of price jumps per year (Poisson intensity); 0 disables jumps.
    #[serde(default = "default_jump_intensity")]
    pub jump_intensity: f64,
    /// Mean of a jump's log size (-0.02: jumps are 2 % drops on average).
    #[serde(default = "default_jump_mean")]
    pub jump_mean: f64,
    /// Standard deviation of a jump's log size.
    #[serde(default = "default_jump_std")]
    pub jump_std: f64,
    /// Length of the year that `drift`, `volatility` and `jump_intensity` refer to, in
    /// seconds of event time (default 365.25 days: bars are generated every interval,
    /// weekends included).
    #[serde(default = "default_year_secs")]
    pub year_secs: f64,
    /// Share (0..=1) of each bar's diffusion variance that happens before the open, as an
    /// overnight gap between the previous close and this open; jumps also land in the gap.
    #[serde(default = "default_open_gap_fraction")]
    pub open_gap_fraction: f64,
    /// Median volume of a quiet bar, in whole units (a number or a decimal string).
    #[serde(default = "default_base_volume", deserialize_with = "lenient_decimal")]
    pub base_volume: Decimal,
    /// Dispersion (log standard deviation) of the log-normal volume noise.
    #[serde(default = "default_volume_sigma")]
    pub volume_sigma: f64,
    /// How strongly volume grows with the bar's move: the multiplier is
    /// `1 + volume_return_scale * |close-to-close log return| / typical bar move`.
    #[serde(default = "default_volume_return_scale")]
    pub volume_return_scale: f64,
}

/// A decimal written as a string (`"100.5"`) or a plain number (`100.5`): config files are
/// written by people, and the workspace's `Decimal` serde form accepts strings only.
fn lenient_decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    use serde::de::Error as _;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Int(i64),
        Float(f64),
        Text(String),
    }
    let text = match Lenient::deserialize(d)? {
        Lenient::Int(i) => return Ok(Decimal::from(i)),
        // Display of an f64 is its shortest round-trip form, so 100.1 stays 100.1.
        Lenient::Float(f) => f.to_string(),
        Lenient::Text(t) => t,
    };
    let text = text.trim();
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|e| D::Error::custom(format!("{text:?} is not a decimal number: {e}")))
}

fn default_symbols() -> Vec<String> {
    vec!["SYNA".into(), "SYNB".into(), "SYNC".into()]
}
fn default_seed() -> u64 {
    42
}
fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0)
        .single()
        .unwrap_or_default()
}
fn default_interval_secs() -> u64 {
    86_400
}
fn default_bars_per_symbol() -> Option<u64> {
    None
}
fn default_initial_price() -> Decimal {
    Decimal::ONE_HUNDRED
}
fn default_drift() -> f64 {
    0.05
}
fn default_volatility() -> f64 {
    0.2
}
fn default_jump_intensity() -> f64 {
    2.0
}
fn default_jump_mean() -> f64 {
    -0.02
}
fn default_jump_std() -> f64 {
    0.05
}
fn default_year_secs() -> f64 {
    365.25 * 86_400.0
}
fn default_open_gap_fraction() -> f64 {
    0.2
}
fn default_base_volume() -> Decimal {
    Decimal::from(1_000_000)
}
fn default_volume_sigma() -> f64 {
    0.3
}
fn default_volume_return_scale() -> f64 {
    0.5
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            symbols: default_symbols(),
            seed: default_seed(),
            start: default_start(),
            interval_secs: default_interval_secs(),
            bars_per_symbol: default_bars_per_symbol(),
            initial_price: default_initial_price(),
            drift: default_drift(),
            volatility: default_volatility(),
            jump_intensity: default_jump_intensity(),
            jump_mean: default_jump_mean(),
            jump_std: default_jump_std(),
            year_secs: default_year_secs(),
            open_gap_fraction: default_open_gap_fraction(),
            base_volume: default_base_volume(),
            volume_sigma: default_volume_sigma(),
            volume_return_scale: default_volume_return_scale(),
        }
    }
}

/// A synthetic config that cannot be used; lists every problem, each naming its setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid synthetic feed configuration:\n  {}", .problems.join("\n  "))]
pub struct SyntheticConfigError {
    /// One line per problem, each starting with the setting's name.
    pub problems: Vec<String>,
}

impl SyntheticConfigError {
    /// A bad config stops the process.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

fn check_range(problems: &mut Vec<String>, name: &str, v: f64, lo: f64, hi: f64) {
    if !v.is_finite() || v < lo || v > hi {
        problems.push(format!(
            "{name}: must be a finite number in [{lo}, {hi}], got {v}"
        ));
    }
}

impl SyntheticConfig {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), SyntheticConfigError> {
        let mut problems = Vec::new();
        if self.symbols.is_empty() {
            problems.push("symbols: must list at least one symbol".to_string());
        }
        let mut seen = HashSet::new();
        for raw in &self.symbols {
            match Symbol::canonical(raw) {
                Ok(s) => {
                    if !seen.insert(s.clone()) {
                        problems.push(format!("symbols: {s} is listed twice"));
                    }
                }
                Err(e) => problems.push(format!("symbols: {e}")),
            }
        }
        if self.interval_secs == 0 || self.interval_secs > 366 * 86_400 {
            problems.push(format!(
                "interval_secs: must be between 1 and {} (one year), got {}",
                366 * 86_400,
                self.interval_secs
            ));
        }
        if self.bars_per_symbol == Some(0) {
            problems.push(
                "bars_per_symbol: must be at least 1 (leave it unset for an unbounded feed)".into(),
            );
        }
        let min_price = Decimal::from_f64(MIN_PRICE).unwrap_or(Decimal::ONE);
        let max_price = Decimal::from_f64(MAX_PRICE).unwrap_or(Decimal::MAX);
        if self.initial_price < min_price || self.initial_price > max_price {
            problems.push(format!(
                "initial_price: must be in [{min_price}, {max_price}], got {}",
                self.initial_price
            ));
        }
        check_range(&mut problems, "drift", self.drift, -10.0, 10.0);
        check_range(&mut problems, "volatility", self.volatility, 0.0, 5.0);
        check_range(
            &mut problems,
            "jump_intensity",
            self.jump_intensity,
            0.0,
            100_000.0,
        );
        check_range(&mut problems, "jump_mean", self.jump_mean, -1.0, 1.0);
        check_range(&mut problems, "jump_std", self.jump_std, 0.0, 1.0);
        check_range(&mut problems, "year_secs", self.year_secs, 1.0, 1e12);
        check_range(
            &mut problems,
            "open_gap_fraction",
            self.open_gap_fraction,
            0.0,
            1.0,
        );
        check_range(&mut problems, "volume_sigma", self.volume_sigma, 0.0, 3.0);
        check_range(
            &mut problems,
            "volume_return_scale",
            self.volume_return_scale,
            0.0,
            100.0,
        );
        if self.base_volume < Decimal::ZERO
            || self.base_volume > Decimal::from(1_000_000_000_000_000i64)
        {
            problems.push(format!(
                "base_volume: must be in [0, 1e18], got {}",
                self.base_volume
            ));
        }
        if self.year_secs.is_finite() && self.year_secs > 0.0 {
            let per_bar = self.jump_intensity * self.interval_secs as f64 / self.year_secs;
            if per_bar.is_finite() && per_bar > 50.0 {
                problems.push(format!(
                    "jump_intensity: {per_bar:.1} expected jumps per bar is more than 50; lower it or shorten interval_secs"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SyntheticConfigError { problems })
        }
    }
}

/// The bar-interval label for `interval_secs` (`1d`, `4h`, `1m`, `30s`).
pub fn interval_label(interval_secs: u64) -> String {
    match interval_secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[derive(Debug)]
struct SymbolPath {
    symbol: Symbol,
    log_close: f64,
    rng: ChaCha8Rng,
}

/// Per-bar constants derived once from the config.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// Total drift of a bar's log price (Itô and jump compensated).
    drift: f64,
    /// Diffusion standard deviation of a bar's log return.
    sd: f64,
    jump_mean: f64,
    jump_std: f64,
    gap_fraction: f64,
    /// Typical absolute bar move (diffusion plus jumps), the unit of volume scaling.
    typical_move: f64,
    base_volume: f64,
    volume_sigma: f64,
    volume_return_scale: f64,
}

/// Iterator over synthetic bars: for each time step, one bar per symbol in config order.
///
/// As an [`Iterator`] it stamps `ingest_time = event_time` (what a backtest or a
/// reproducible load file wants); a live runner calls [`SyntheticFeed::next_at`] with the
/// wall-clock time instead.
#[derive(Debug)]
pub struct SyntheticFeed {
    paths: Vec<SymbolPath>,
    params: Params,
    poisson: Option<Poisson<f64>>,
    seed: u64,
    source: String,
    interval: String,
    start: DateTime<Utc>,
    interval_secs: u64,
    bars_per_symbol: Option<u64>,
    /// Current time step (bar index per symbol).
    step: u64,
    /// Next symbol within the step.
    cursor: usize,
    /// Event time of the current step; `None` once the feed has ended.
    step_time: Option<DateTime<Utc>>,
}

impl SyntheticFeed {
    /// Validates `cfg` and builds the feed.
    pub fn new(cfg: SyntheticConfig) -> Result<Self, SyntheticConfigError> {
        cfg.validate()?;
        let mut paths = Vec::with_capacity(cfg.symbols.len());
        let log_price = cfg.initial_price.to_f64().unwrap_or(1.0).ln();
        for (i, raw) in cfg.symbols.iter().enumerate() {
            let symbol = Symbol::canonical(raw).map_err(|e| SyntheticConfigError {
                problems: vec![format!("symbols: {e}")],
            })?;
            // One independent stream per symbol: adding a symbol leaves the others unchanged.
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(i as u64);
            paths.push(SymbolPath {
                symbol,
                log_close: log_price,
                rng,
            });
        }
        let dt = cfg.interval_secs as f64 / cfg.year_secs;
        let sigma = cfg.volatility;
        let jumps_per_bar = cfg.jump_intensity * dt;
        // Merton: E[e^J] - 1, subtracted so that `drift` is the expected return with jumps.
        let jump_comp = (cfg.jump_mean + cfg.jump_std * cfg.jump_std / 2.0).exp() - 1.0;
        let drift = (cfg.drift - sigma * sigma / 2.0 - cfg.jump_intensity * jump_comp) * dt;
        let sd = sigma * dt.sqrt();
        let jump_var =
            jumps_per_bar * (cfg.jump_mean * cfg.jump_mean + cfg.jump_std * cfg.jump_std);
        let params = Params {
            drift,
            sd,
            jump_mean: cfg.jump_mean,
            jump_std: cfg.jump_std,
            gap_fraction: cfg.open_gap_fraction,
            typical_move: (sd * sd + jump_var).sqrt(),
            base_volume: cfg.base_volume.to_f64().unwrap_or(0.0),
            volume_sigma: cfg.volume_sigma,
            volume_return_scale: cfg.volume_return_scale,
        };
        let poisson = if jumps_per_bar > 0.0 {
            Poisson::new(jumps_per_bar).ok()
        } else {
            None
        };
        Ok(Self {
            paths,
            params,
            poisson,
            seed: cfg.seed,
            source: format!("synthetic:{}", cfg.seed),
            interval: interval_label(cfg.interval_secs),
            start: cfg.start,
            interval_secs: cfg.interval_secs,
            bars_per_symbol: cfg.bars_per_symbol,
            step: 0,
            cursor: 0,
            step_time: Some(cfg.start),
        })
    }

    /// The `source` stamped on every record (`synthetic:<seed>`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Event time of the next bar, or `None` when the feed has ended. Lets a runner pace
    /// bars to wall time without consuming one.
    pub fn peek_event_time(&self) -> Option<DateTime<Utc>> {
        match self.bars_per_symbol {
            Some(n) if self.step >= n => None,
            _ => self.step_time,
        }
    }

    /// The next bar, stamped with `ingest_time`; `None` when the feed has ended.
    pub fn next_at(&mut self, ingest_time: DateTime<Utc>) -> Option<MarketData> {
        let event_time = self.peek_event_time()?;
        let params = self.params;
        let poisson = self.poisson;
        let path = self.paths.get_mut(self.cursor)?;
        let bar = draw_bar(path, &params, poisson.as_ref());
        let md = MarketData {
            record_id: format!(
                "synthetic:{}:{}:{}",
                self.seed,
                path.symbol,
                event_time.timestamp_micros()
            ),
            symbol: path.symbol.clone(),
            event_time,
            kind: MarketDataKind::Bar,
            interval: Some(self.interval.clone()),
            open: bar.open,
            high: bar.high,
            low: bar.low,
            close: bar.close,
            volume: bar.volume,
            source: self.source.clone(),
            ingest_time,
            step: 0,
            step_bars: 0,
        };
        self.cursor += 1;
        if self.cursor == self.paths.len() {
            self.cursor = 0;
            self.step += 1;
            self.step_time = i64::try_from(self.step.saturating_mul(self.interval_secs))
                .ok()
                .and_then(TimeDelta::try_seconds)
                .and_then(|d| self.start.checked_add_signed(d));
        }
        Some(md)
    }
}

impl Iterator for SyntheticFeed {
    type Item = MarketData;

    fn next(&mut self) -> Option<MarketData> {
        let t = self.peek_event_time()?;
        self.next_at(t)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.bars_per_symbol {
            None if self.step_time.is_some() => (usize::MAX, None),
            None => (0, Some(0)),
            Some(n) => {
                let left = if self.step_time.is_some() {
                    n.saturating_sub(self.step)
                        .saturating_mul(self.paths.len() as u64)
                        .saturating_sub(self.cursor as u64)
                } else {
                    0
                };
                let left = usize::try_from(left).unwrap_or(usize::MAX);
                (left, Some(left))
            }
        }
    }
}

struct Bar {
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
}

fn clamp_log(x: f64) -> f64 {
    let (lo, hi) = (MIN_PRICE.ln(), MAX_PRICE.ln());
    if x.is_nan() { lo } else { x.clamp(lo, hi) }
}

fn price(log_price: f64) -> Decimal {
    // `log_price` is clamped, so exp is finite and within [MIN_PRICE, MAX_PRICE].
    let p = Decimal::from_f64(log_price.exp())
        .unwrap_or(Decimal::ONE)
        .round_dp(8);
    p.max(Decimal::new(1, 8))
}

/// A uniform draw in (0, 1]: safe to take the logarithm of.
fn open_unit(rng: &mut ChaCha8Rng) -> f64 {
    1.0 - rng.random::<f64>()
}

fn draw_bar(path: &mut SymbolPath, p: &Params, poisson: Option<&Poisson<f64>>) -> Bar {
    let rng = &mut path.rng;
    // A fixed number of draws per bar (besides the Poisson's own) keeps streams aligned.
    let z_gap: f64 = rng.sample(StandardNormal);
    let z_day: f64 = rng.sample(StandardNormal);
    let z_jump: f64 = rng.sample(StandardNormal);
    let z_vol: f64 = rng.sample(StandardNormal);
    let u_high = open_unit(rng);
    let u_low = open_unit(rng);
    let jumps = poisson.map_or(0.0, |d| d.sample(rng)).min(1e6);
    let jump = if jumps > 0.0 {
        jumps * p.jump_mean + jumps.sqrt() * p.jump_std * z_jump
    } else {
        0.0
    };

    let f = p.gap_fraction;
    let gap = f * p.drift + f.sqrt() * p.sd * z_gap + jump;
    let intrabar = (1.0 - f) * p.drift + (1.0 - f).sqrt() * p.sd * z_day;
    let log_open = clamp_log(path.log_close + gap);
    let log_close = clamp_log(log_open + intrabar);

    // Exact extremes of a Brownian bridge from 0 to b with variance v over the bar:
    // P(max > m) = exp(-2 m (m - b) / v), inverted at a uniform draw.
    let b = log_close - log_open;
    let v = (1.0 - f) * p.sd * p.sd;
    let up = (b + (b * b - 2.0 * v * u_high.ln()).sqrt()) / 2.0;
    let down = (b - (b * b - 2.0 * v * u_low.ln()).sqrt()) / 2.0;
    let log_high = clamp_log(log_open + up.max(b).max(0.0));
    let log_low = clamp_log(log_open + down.min(b).min(0.0));

    let ret = (log_close - path.log_close).abs();
    path.log_close = log_close;

    let open = price(log_open);
    let close = price(log_close);
    let high = price(log_high).max(open).max(close);
    let low = price(log_low).min(open).min(close);

    let move_multiplier = if p.typical_move > 0.0 {
        (1.0 + p.volume_return_scale * ret / p.typical_move).min(MAX_VOLUME_MULTIPLIER)
    } else {
        1.0
    };
    let noise = (p.volume_sigma * z_vol - p.volume_sigma * p.volume_sigma / 2.0).exp();
    let volume = Decimal::from_f64(p.base_volume * noise * move_multiplier)
        .unwrap_or(Decimal::ZERO)
        .round_dp(0)
        .max(Decimal::ZERO);
    Bar {
        open,
        high,
        low,
        close,
        volume,
    }
}

/// A replayed source with synthetic symbols over the same dates: `symbols` each get as many
/// bars as `source` has items, starting at its first bar, seeded by `seed`; everything is
/// merged by event time and numbered by instant ([`crate::number_item_steps`]). This is the
/// market `tradestream demo` publishes, and what the in-process driver replays to prove it
/// decides as the Kafka pipeline does.
pub fn with_synthetic(
    source: Vec<crate::SourceItem>,
    symbols: &[String],
    seed: u64,
    ingest_time: DateTime<Utc>,
) -> Result<Vec<crate::SourceItem>, SyntheticConfigError> {
    let first_time = source
        .iter()
        .find_map(|r| r.as_ref().ok().map(|m| m.event_time));
    let bars = source.len() as u64;
    let mut sources = vec![source];
    let symbols: Vec<String> = symbols
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    if !symbols.is_empty() {
        let cfg = SyntheticConfig {
            symbols,
            seed,
            start: first_time.unwrap_or(ingest_time),
            bars_per_symbol: Some(bars),
            ..SyntheticConfig::default()
        };
        let mut feed = SyntheticFeed::new(cfg)?;
        sources.push(
            std::iter::from_fn(|| feed.next_at(ingest_time))
                .map(Ok)
                .collect(),
        );
    }
    let mut items = crate::merge_by_event_time(sources);
    crate::number_item_steps(&mut items);
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tradestream_schemas::Record;

    fn cfg(bars: u64) -> SyntheticConfig {
        SyntheticConfig {
            bars_per_symbol: Some(bars),
            ..SyntheticConfig::default()
        }
    }

    #[test]
    fn empty_config_is_valid_and_uses_defaults() {
        let parsed: SyntheticConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(parsed, SyntheticConfig::default());
        assert!(parsed.validate().is_ok());
        let numbers: SyntheticConfig = serde_json::from_str(
            r#"{"initial_price": 250.1, "base_volume": 5000, "start": "2020-03-02T14:30:00Z"}"#,
        )
        .expect("numbers");
        assert_eq!(numbers.initial_price, Decimal::new(2501, 1));
        assert_eq!(numbers.base_volume, Decimal::from(5000));
        assert_eq!(numbers.start.to_rfc3339(), "2020-03-02T14:30:00+00:00");
        let text: SyntheticConfig =
            serde_json::from_str(r#"{"initial_price": "0.0005"}"#).expect("string");
        assert_eq!(text.initial_price, Decimal::new(5, 4));
        assert!(serde_json::from_str::<SyntheticConfig>(r#"{"initial_price": "abc"}"#).is_err());
        assert!(
            serde_json::from_str::<SyntheticConfig>(r#"{"sed": 1}"#).is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn validate_lists_every_problem() {
        let bad = SyntheticConfig {
            symbols: vec!["ok".into(), "OK".into(), "bad sym".into()],
            interval_secs: 0,
            bars_per_symbol: Some(0),
            initial_price: Decimal::ZERO,
            drift: f64::NAN,
            volatility: -1.0,
            jump_intensity: -1.0,
            jump_std: 2.0,
            open_gap_fraction: 1.5,
            base_volume: Decimal::NEGATIVE_ONE,
            ..SyntheticConfig::default()
        };
        let err = bad.validate().expect_err("invalid");
        let text = err.to_string();
        for name in [
            "listed twice",
            "symbols: invalid symbol",
            "interval_secs",
            "bars_per_symbol",
            "initial_price",
            "drift",
            "volatility",
            "jump_intensity",
            "jump_std",
            "open_gap_fraction",
            "base_volume",
        ] {
            assert!(text.contains(name), "missing {name} in {text}");
        }
        assert_eq!(err.problems.len(), 11, "{text}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(SyntheticFeed::new(bad).is_err());
    }

    #[test]
    fn round_robin_in_event_time_order_with_deterministic_ids() {
        let c = SyntheticConfig {
            seed: 7,
            interval_secs: 60,
            ..cfg(4)
        };
        let bars: Vec<MarketData> = SyntheticFeed::new(c.clone()).expect("valid").collect();
        assert_eq!(bars.len(), 12);
        for (i, md) in bars.iter().enumerate() {
            assert_eq!(md.symbol.as_str(), c.symbols[i % 3]);
            let expect_time = c.start + TimeDelta::seconds(60 * (i / 3) as i64);
            assert_eq!(md.event_time, expect_time);
            assert_eq!(md.ingest_time, md.event_time);
            assert_eq!(
                md.record_id,
                format!(
                    "synthetic:7:{}:{}",
                    md.symbol,
                    expect_time.timestamp_micros()
                )
            );
            assert_eq!(md.source, "synthetic:7");
            assert_eq!(md.interval.as_deref(), Some("1m"));
            assert_eq!(md.kind, MarketDataKind::Bar);
            assert_eq!(md.volume, md.volume.round_dp(0));
            assert!(md.close.scale() <= 8);
            md.validate().expect("valid bar");
        }
    }

    #[test]
    fn same_seed_same_output_different_seed_differs() {
        let a: Vec<_> = SyntheticFeed::new(cfg(50)).expect("valid").collect();
        let b: Vec<_> = SyntheticFeed::new(cfg(50)).expect("valid").collect();
        assert_eq!(a, b);
        let c: Vec<_> = SyntheticFeed::new(SyntheticConfig {
            seed: 43,
            ..cfg(50)
        })
        .expect("valid")
        .collect();
        let closes = |v: &[MarketData]| v.iter().map(|m| m.close).collect::<Vec<_>>();
        assert_ne!(closes(&a), closes(&c));
    }

    #[test]
    fn adding_a_symbol_keeps_the_other_paths() {
        let two = SyntheticConfig {
            symbols: vec!["AA".into(), "BB".into()],
            ..cfg(20)
        };
        let three = SyntheticConfig {
            symbols: vec!["AA".into(), "BB".into(), "CC".into()],
            ..cfg(20)
        };
        let pick = |c: SyntheticConfig, s: &str| -> Vec<Decimal> {
            SyntheticFeed::new(c)
                .expect("valid")
                .filter(|m| m.symbol.as_str() == s)
                .map(|m| m.close)
                .collect()
        };
        assert_eq!(pick(two.clone(), "BB"), pick(three, "BB"));
        // ...but the symbols themselves do not move in lockstep.
        assert_ne!(pick(two.clone(), "AA"), pick(two, "BB"));
    }

    #[test]
    fn next_at_stamps_the_given_ingest_time_and_the_feed_ends() {
        let mut feed = SyntheticFeed::new(cfg(1)).expect("valid");
        let now = Utc
            .with_ymd_and_hms(2030, 5, 6, 7, 8, 9)
            .single()
            .expect("time");
        assert_eq!(feed.peek_event_time(), Some(default_start()));
        for _ in 0..3 {
            assert_eq!(feed.next_at(now).map(|m| m.ingest_time), Some(now));
        }
        assert_eq!(feed.peek_event_time(), None);
        assert!(feed.next_at(now).is_none());
        assert!(feed.next().is_none());
    }

    #[test]
    fn statistics_match_the_configured_process() {
        // Without jumps, daily log returns over many bars have the configured volatility and
        // drift (within sampling error), and volume centres on base_volume.
        let c = SyntheticConfig {
            symbols: vec!["X".into()],
            jump_intensity: 0.0,
            volume_return_scale: 0.0,
            drift: 0.1,
            volatility: 0.3,
            ..cfg(20_000)
        };
        let bars: Vec<_> = SyntheticFeed::new(c.clone()).expect("valid").collect();
        let closes: Vec<f64> = bars.iter().filter_map(|m| m.close.to_f64()).collect();
        let rets: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let n = rets.len() as f64;
        let mean = rets.iter().sum::<f64>() / n;
        let var = rets.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let dt = 1.0 / 365.25;
        let ann_vol = (var / dt).sqrt();
        assert!((ann_vol - 0.3).abs() < 0.01, "annualised vol {ann_vol}");
        let ann_mu = mean / dt + var / dt / 2.0;
        // Drift is noisy: sd of the estimate is sigma/sqrt(T) = 0.3/sqrt(54.8) ~ 0.04.
        assert!((ann_mu - 0.1).abs() < 0.15, "annualised drift {ann_mu}");
        let vols: Vec<f64> = bars.iter().filter_map(|m| m.volume.to_f64()).collect();
        let mean_vol = vols.iter().sum::<f64>() / vols.len() as f64;
        assert!(
            (mean_vol / 1_000_000.0 - 1.0).abs() < 0.02,
            "mean volume {mean_vol}"
        );
    }

    #[test]
    fn volume_grows_with_the_move() {
        let c = SyntheticConfig {
            symbols: vec!["X".into()],
            volume_sigma: 0.0,
            volume_return_scale: 2.0,
            ..cfg(2_000)
        };
        let bars: Vec<_> = SyntheticFeed::new(c).expect("valid").collect();
        let mut pairs: Vec<(f64, f64)> = bars
            .windows(2)
            .filter_map(|w| {
                let r = (w[1].close.to_f64()? / w[0].close.to_f64()?).ln().abs();
                Some((r, w[1].volume.to_f64()?))
            })
            .collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let half = pairs.len() / 2;
        let avg = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len() as f64;
        assert!(avg(&pairs[half..]) > avg(&pairs[..half]) * 1.3);
    }

    #[test]
    fn jumps_fatten_the_tails() {
        let base = SyntheticConfig {
            symbols: vec!["X".into()],
            volatility: 0.1,
            ..cfg(5_000)
        };
        let big_moves = |c: SyntheticConfig| {
            let closes: Vec<f64> = SyntheticFeed::new(c)
                .expect("valid")
                .filter_map(|m| m.close.to_f64())
                .collect();
            closes
                .windows(2)
                .filter(|w| (w[1] / w[0]).ln().abs() > 0.05)
                .count()
        };
        let calm = big_moves(SyntheticConfig {
            jump_intensity: 0.0,
            ..base.clone()
        });
        let jumpy = big_moves(SyntheticConfig {
            jump_intensity: 50.0,
            jump_mean: 0.0,
            jump_std: 0.1,
            ..base
        });
        assert_eq!(calm, 0, "a 5 % day is > 9 sigma at 10 % annual vol");
        assert!(jumpy > 100, "{jumpy} big moves with ~680 jumps");
    }

    #[test]
    fn interval_labels() {
        assert_eq!(interval_label(86_400), "1d");
        assert_eq!(interval_label(3_600 * 4), "4h");
        assert_eq!(interval_label(60), "1m");
        assert_eq!(interval_label(90), "90s");
    }

    fn arb_config() -> impl Strategy<Value = SyntheticConfig> {
        (
            (
                any::<u64>(),
                1u64..=366 * 86_400,
                1u64..6,
                1i64..1_000_000_000i64,
                1usize..4,
            ),
            (
                -10.0f64..10.0,
                0.0f64..5.0,
                0.0f64..1_000.0,
                -1.0f64..1.0,
                0.0f64..1.0,
            ),
            (
                0.0f64..=1.0,
                0i64..1_000_000_000_000,
                0.0f64..3.0,
                0.0f64..100.0,
            ),
        )
            .prop_map(
                |(
                    (seed, interval, bars, price_e4, n_sym),
                    (mu, sigma, lam, jm, js),
                    (gap, vol, vs, vr),
                )| {
                    let mut c = SyntheticConfig {
                        symbols: ["A", "B", "C"]
                            .iter()
                            .take(n_sym)
                            .map(|s| s.to_string())
                            .collect(),
                        seed,
                        interval_secs: interval,
                        bars_per_symbol: Some(bars * 10),
                        initial_price: Decimal::new(price_e4, 4),
                        drift: mu,
                        volatility: sigma,
                        jump_intensity: lam,
                        jump_mean: jm,
                        jump_std: js,
                        open_gap_fraction: gap,
                        base_volume: Decimal::from(vol),
                        volume_sigma: vs,
                        volume_return_scale: vr,
                        ..SyntheticConfig::default()
                    };
                    // Keep the expected jumps per bar within what validate() accepts.
                    let per_bar = c.jump_intensity * c.interval_secs as f64 / c.year_secs;
                    if per_bar > 50.0 {
                        c.jump_intensity *= 49.0 / per_bar;
                    }
                    c
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn every_bar_is_valid(c in arb_config()) {
            prop_assert!(c.validate().is_ok(), "{:?}", c.validate());
            let expected = c.bars_per_symbol.unwrap_or(0) as usize * c.symbols.len();
            let feed = SyntheticFeed::new(c).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut last = None;
            let mut n = 0;
            for md in feed {
                n += 1;
                prop_assert!(md.validate().is_ok(), "{:?}: {:?}", md, md.validate());
                prop_assert!(md.low > Decimal::ZERO);
                prop_assert!(md.low <= md.open.min(md.close) && md.open.max(md.close) <= md.high);
                prop_assert!(md.high.scale() <= 8 && md.low.scale() <= 8 && md.volume.scale() == 0);
                if let Some(t) = last { prop_assert!(md.event_time >= t); }
                last = Some(md.event_time);
            }
            prop_assert_eq!(n, expected);
        }
    }
}
