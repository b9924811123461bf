//! Incremental building blocks of the indicators: a fixed-size window with O(1) sum, mean and
//! variance, and the two recursive smoothers TA-Lib uses (EMA and Wilder's).
//!
//! They allocate only when created, so a symbol's steady-state update allocates nothing.
//! Running sums in floating point lose precision two ways: an outlier leaving the window
//! cancels against what remains, and `Σx² − (Σx)²/n` cancels when the values sit far from
//! zero. The window therefore keeps compensated (Neumaier) sums of the values relative to a
//! reference close to their mean, and recomputes them exactly from its buffer once every
//! `period` pushes, or sooner when the mean has drifted far from the reference compared with
//! the spread: the accuracy of a from-scratch two-pass computation at O(1) amortized cost.
//! A run counter of equal trailing values makes a constant window's variance exactly zero,
//! which is what decides whether z-scores and %b are defined.

/// A drift of the mean from the reference beyond `sqrt(DRIFT_LIMIT)` standard deviations
/// triggers a recomputation: the variance then keeps about `eps·DRIFT_LIMIT` relative error.
const DRIFT_LIMIT: f64 = 1e4;

use serde::{Deserialize, Serialize};

/// A compensated running sum (Neumaier): exact enough that adding and later removing a huge
/// term leaves the small ones intact.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        self.compensation += if self.sum.abs() >= x.abs() {
            (self.sum - t) + x
        } else {
            (x - t) + self.sum
        };
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// The last `period` values of a series, with O(1) statistics over them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Window {
    buf: Box<[f64]>,
    /// Next slot to write; the oldest value once the window is full.
    head: usize,
    len: usize,
    /// Reference value the sums are taken relative to (the mean at the last recomputation).
    shift: f64,
    /// Σ (x − shift).
    s1: CompensatedSum,
    /// Σ (x − shift)².
    s2: CompensatedSum,
    since_rebase: usize,
    /// How many of the newest values are equal to the newest one (at most `period`).
    equal_run: usize,
}

impl Window {
    /// A window of `period` values; `period` ≥ 1 (guaranteed by `FeaturesConfig::validate`).
    pub(crate) fn new(period: usize) -> Self {
        Self {
            buf: vec![0.0; period.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
            shift: 0.0,
            s1: CompensatedSum::default(),
            s2: CompensatedSum::default(),
            since_rebase: 0,
            equal_run: 0,
        }
    }

    /// Appends `x`, dropping the oldest value once full.
    pub(crate) fn push(&mut self, x: f64) {
        let cap = self.buf.len();
        if self.len == 0 {
            self.shift = x;
        }
        self.equal_run = if self.len > 0 && x == self.last() {
            (self.equal_run + 1).min(cap)
        } else {
            1
        };
        if self.len == cap {
            let d = self.buf[self.head] - self.shift;
            self.s1.add(-d);
            self.s2.add(-(d * d));
        } else {
            self.len += 1;
        }
        self.buf[self.head] = x;
        self.head += 1;
        if self.head == cap {
            self.head = 0;
        }
        let d = x - self.shift;
        self.s1.add(d);
        self.s2.add(d * d);
        self.since_rebase += 1;
        if self.since_rebase >= cap || self.drifted() {
            self.rebase();
        }
    }

    /// Whether the mean moved so far from `shift` that `s2 − s1²/n` cancels badly.
    fn drifted(&self) -> bool {
        if self.is_constant() {
            return false;
        }
        let n = self.len as f64;
        let offset = self.s1.value() / n;
        offset * offset > DRIFT_LIMIT * (self.s2.value() / n - offset * offset).max(0.0)
    }

    /// Recomputes the sums exactly (two passes), relative to the current mean.
    fn rebase(&mut self) {
        let values = &self.buf[..self.len];
        let shift = values.iter().sum::<f64>() / self.len as f64;
        let (mut s1, mut s2) = (CompensatedSum::default(), CompensatedSum::default());
        for &v in values {
            let d = v - shift;
            s1.add(d);
            s2.add(d * d);
        }
        self.shift = shift;
        self.s1 = s1;
        self.s2 = s2;
        self.since_rebase = 0;
    }

    /// Whether restored state `self` has the shape of `fresh` (same period) and consistent
    /// cursors, so a corrupt snapshot can never index out of bounds.
    pub(crate) fn same_shape(&self, fresh: &Window) -> bool {
        let cap = self.buf.len();
        cap == fresh.buf.len() && self.head < cap && self.len <= cap && self.equal_run <= cap
    }

    /// Whether the window holds `period` values.
    pub(crate) fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// The newest value (0 when empty).
    pub(crate) fn last(&self) -> f64 {
        let cap = self.buf.len();
        self.buf[(self.head + cap - 1) % cap]
    }

    /// Whether every value held is equal (true when empty).
    pub(crate) fn is_constant(&self) -> bool {
        self.equal_run >= self.len
    }

    /// Σ x.
    pub(crate) fn sum(&self) -> f64 {
        if self.is_constant() {
            return self.last() * self.len as f64;
        }
        self.s1.value() + self.shift * self.len as f64
    }

    /// Arithmetic mean (NaN when empty).
    pub(crate) fn mean(&self) -> f64 {
        if self.is_constant() {
            return self.last();
        }
        self.shift + self.s1.value() / self.len as f64
    }

    /// Σ (x − mean)², never negative, exactly 0 for a constant window.
    fn sum_sq_dev(&self) -> f64 {
        if self.is_constant() {
            return 0.0;
        }
        let s1 = self.s1.value();
        (self.s2.value() - s1 * s1 / self.len as f64).max(0.0)
    }

    /// Population standard deviation (divides by n).
    pub(crate) fn stddev_population(&self) -> f64 {
        (self.sum_sq_dev() / self.len as f64).sqrt()
    }

    /// Sample standard deviation (divides by n − 1; NaN below two values).
    pub(crate) fn stddev_sample(&self) -> f64 {
        (self.sum_sq_dev() / (self.len as f64 - 1.0)).sqrt()
    }
}

/// How a recursive smoother folds in a new value once seeded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Smoothing {
    /// `prev + k·(x − prev)`, k = 2/(n+1) (TA-Lib `EMA`).
    Exponential { k: f64 },
    /// `(prev·(n−1) + x)/n` (Wilder; TA-Lib `RSI`, `ATR`).
    Wilder,
}

/// A TA-Lib-style recursive average: its first value is the simple mean of the first
/// `period` inputs, after which each input is folded in recursively.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Smoother {
    period: usize,
    smoothing: Smoothing,
    count: usize,
    seed_sum: f64,
    value: Option<f64>,
}

impl Smoother {
    /// An EMA of `period` (≥ 1).
    pub(crate) fn ema(period: usize) -> Self {
        Self::new(
            period,
            Smoothing::Exponential {
                k: 2.0 / (period as f64 + 1.0),
            },
        )
    }

    /// A Wilder average of `period` (≥ 1).
    pub(crate) fn wilder(period: usize) -> Self {
        Self::new(period, Smoothing::Wilder)
    }

    fn new(period: usize, smoothing: Smoothing) -> Self {
        Self {
            period: period.max(1),
            smoothing,
            count: 0,
            seed_sum: 0.0,
            value: None,
        }
    }

    /// Whether restored state `self` is the same kind of average as `fresh` (period and
    /// smoothing constant), with a seed count within its period.
    pub(crate) fn same_shape(&self, fresh: &Smoother) -> bool {
        let same_smoothing = match (self.smoothing, fresh.smoothing) {
            (Smoothing::Exponential { k: a }, Smoothing::Exponential { k: b }) => {
                a.to_bits() == b.to_bits()
            }
            (Smoothing::Wilder, Smoothing::Wilder) => true,
            _ => false,
        };
        same_smoothing && self.period == fresh.period && self.count <= self.period
    }

    /// Folds in `x`; returns the average once `period` inputs have been seen.
    pub(crate) fn push(&mut self, x: f64) -> Option<f64> {
        self.value = match self.value {
            Some(prev) => Some(match self.smoothing {
                Smoothing::Exponential { k } => (x - prev) * k + prev,
                Smoothing::Wilder => {
                    let n = self.period as f64;
                    (prev * (n - 1.0) + x) / n
                }
            }),
            None => {
                self.count += 1;
                self.seed_sum += x;
                (self.count == self.period).then(|| self.seed_sum / self.period as f64)
            }
        };
        self.value
    }

    /// Starts the recursion from `seed` instead of the mean of the first inputs (TA-Lib's
    /// MACD seeds its fast EMA where the slow one starts).
    pub(crate) fn seed(&mut self, seed: f64) {
        self.value = Some(seed);
    }

    /// The current average, once seeded.
    pub(crate) fn value(&self) -> Option<f64> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, scale: f64) -> bool {
        (a - b).abs() <= 1e-9 * scale.max(f64::MIN_POSITIVE)
    }

    fn naive(xs: &[f64]) -> (f64, f64, f64, f64) {
        let n = xs.len() as f64;
        let sum: f64 = xs.iter().sum();
        let mean = sum / n;
        let ss: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
        (sum, mean, (ss / n).sqrt(), (ss / (n - 1.0)).sqrt())
    }

    #[test]
    fn window_basics() {
        let mut w = Window::new(3);
        assert!(w.is_constant());
        for x in [1.0, 2.0] {
            w.push(x);
        }
        assert!(!w.is_full());
        w.push(3.0);
        assert!(w.is_full());
        assert_eq!(w.mean(), 2.0);
        assert_eq!(w.sum(), 6.0);
        assert!((w.stddev_population() - (2.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert!((w.stddev_sample() - 1.0).abs() < 1e-15);
        w.push(4.0);
        assert_eq!(w.last(), 4.0);
        assert_eq!(w.mean(), 3.0);
    }

    #[test]
    fn a_window_that_becomes_constant_has_exactly_zero_spread() {
        let mut w = Window::new(4);
        for x in [0.1, 1e9, 0.3, 7.7, 0.1, 0.1, 0.1] {
            w.push(x);
        }
        assert_ne!(w.stddev_population(), 0.0);
        w.push(0.1);
        assert_eq!(w.stddev_population(), 0.0);
        assert_eq!(w.mean(), 0.1);
        assert_eq!(w.sum(), 0.4);
    }

    #[test]
    fn smoothers_seed_with_the_simple_mean() {
        let mut e = Smoother::ema(3);
        assert_eq!(e.push(1.0), None);
        assert_eq!(e.push(2.0), None);
        assert_eq!(e.push(3.0), Some(2.0));
        assert_eq!(e.push(4.0), Some(3.0)); // 2 + 0.5·(4 − 2)
        let mut w = Smoother::wilder(2);
        assert_eq!(w.push(2.0), None);
        assert_eq!(w.push(4.0), Some(3.0));
        assert_eq!(w.push(7.0), Some(5.0)); // (3·1 + 7)/2
        assert_eq!(w.value(), Some(5.0));
    }

    #[test]
    fn snapshots_keep_every_f64_bit_including_nan() {
        let mut w = Window::new(3);
        for x in [f64::NAN, -0.0, 1e-300, f64::INFINITY] {
            w.push(x);
        }
        let bytes = rmp_serde::to_vec_named(&w).expect("encode");
        let back: Window = rmp_serde::from_slice(&bytes).expect("decode");
        let bits = |w: &Window| w.buf.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&w));
        assert!(back.shift.is_nan() == w.shift.is_nan());
        assert_eq!(rmp_serde::to_vec_named(&back).expect("encode"), bytes);
    }

    proptest! {
        /// Incremental sum, mean and standard deviations equal a from-scratch recomputation
        /// over the same window after every push, across several rebase cycles.
        #[test]
        fn window_matches_naive_recomputation(
            period in 1usize..30,
            xs in prop::collection::vec(prop_oneof![
                1e-3f64..1e5,
                Just(100.0),
                0.0f64..1.0,
            ], 1..200),
        ) {
            let mut w = Window::new(period);
            for (i, &x) in xs.iter().enumerate() {
                w.push(x);
                let lo = (i + 1).saturating_sub(period);
                let slice = &xs[lo..=i];
                let (sum, mean, pop, sample) = naive(slice);
                let scale = slice.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                prop_assert!(close(w.sum(), sum, scale * slice.len() as f64), "sum {} vs {}", w.sum(), sum);
                prop_assert!(close(w.mean(), mean, scale), "mean {} vs {}", w.mean(), mean);
                prop_assert!(close(w.stddev_population(), pop, scale), "pop {} vs {}", w.stddev_population(), pop);
                if slice.len() > 1 {
                    prop_assert!(close(w.stddev_sample(), sample, scale), "sample {} vs {}", w.stddev_sample(), sample);
                }
                let constant = slice.iter().all(|v| *v == slice[0]);
                prop_assert_eq!(w.is_constant(), constant);
                if constant {
                    prop_assert_eq!(w.stddev_population(), 0.0);
                }
            }
        }
    }
}
