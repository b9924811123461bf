//! Training both models from a time-ordered series of `features` records of one symbol,
//! with an honest held-out evaluation, and writing the model files.
//!
//! - Split: the first `train_fraction` of the records train, the rest test; no shuffling,
//!   so the test period lies strictly after everything the models saw. A label needing the
//!   next bar across the split is dropped.
//! - Direction model: label "up" = next close > this close; inputs standardized with
//!   training statistics; linfa logistic regression with L2 penalty. Test metrics: accuracy,
//!   precision and recall of "up" (at p ≥ 0.5), ROC AUC, the base rate, and the count and
//!   hit rate of the BUY/SELL signals the scorer would emit at the configured thresholds.
//! - Anomaly detector: linfa Gaussian mixture on the standardized training inputs;
//!   severity thresholds are quantiles of the training scores. Evaluation: a deterministic
//!   fraction of test bars gets one input replaced by a value 6–10 training standard
//!   deviations from the training mean (returns in either direction, ranges and volume
//!   z-scores upwards); precision and recall of "flagged" (score above LOW) against
//!   "injected" are reported, plus how often the reported kind names the injected input.
//!
//! This module does file I/O (writing models, reading CSV) and so is not part of the pure
//! core; it is what `tradestream train` calls.

use crate::anomaly::{ANOMALY_ALGORITHM, AnomalyModel, AnomalyParams, Component, SeverityLevels};
use crate::error::{Result, ScorerError};
use crate::inputs::{ANOMALY_INPUTS, ANOMALY_KINDS, SIGNAL_INPUTS, anomaly_inputs, signal_inputs};
use crate::metrics::{Confusion, quantile, roc_auc};
use crate::model::{ModelVersions, Models, TrainingInfo};
use crate::model_store::save_models;
use crate::signal::{SIGNAL_ALGORITHM, SignalModel, SignalParams, decide};
use crate::standardize::Standardizer;
use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use tradestream_schemas::{Features, SignalSide};

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Share of the (time-ordered) records used for training; the rest is the test set.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    /// L2 penalty of the logistic regression.
    #[serde(default = "default_l2_penalty")]
    pub l2_penalty: f64,
    /// Optimizer iterations of the logistic regression.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Mixture components of the anomaly detector.
    #[serde(default = "default_mixture_components")]
    pub mixture_components: usize,
    /// EM restarts of the mixture fit (the best likelihood wins).
    #[serde(default = "default_mixture_runs")]
    pub mixture_runs: u64,
    /// Training-score quantiles for LOW, MEDIUM, HIGH and CRITICAL.
    #[serde(default = "default_quantiles")]
    pub quantiles: [f64; 4],
    /// Share of input dominating a kind (see [`AnomalyParams::dominance`]).
    #[serde(default = "default_dominance")]
    pub dominance: f64,
    /// Share of test bars that get a synthetic anomaly.
    #[serde(default = "default_injection_rate")]
    pub injection_rate: f64,
    /// Seed of the synthetic-anomaly generator (same seed, same report).
    #[serde(default = "default_injection_seed")]
    pub injection_seed: u64,
    /// BUY threshold used to report the hit rate of the signals the scorer would emit.
    #[serde(default = "default_threshold")]
    pub buy_threshold: f64,
    /// SELL threshold (on p(down)) used likewise.
    #[serde(default = "default_threshold")]
    pub sell_threshold: f64,
    /// `model_name` of the direction model.
    #[serde(default = "default_signal_name")]
    pub signal_model_name: String,
    /// Name of the anomaly detector.
    #[serde(default = "default_anomaly_name")]
    pub anomaly_model_name: String,
}

fn default_train_fraction() -> f64 {
    0.7
}
fn default_l2_penalty() -> f64 {
    1.0
}
fn default_max_iterations() -> u64 {
    200
}
fn default_mixture_components() -> usize {
    3
}
fn default_mixture_runs() -> u64 {
    3
}
fn default_quantiles() -> [f64; 4] {
    [0.99, 0.995, 0.999, 0.9999]
}
fn default_dominance() -> f64 {
    0.5
}
fn default_injection_rate() -> f64 {
    0.02
}
fn default_injection_seed() -> u64 {
    20_240_601
}
fn default_threshold() -> f64 {
    0.55
}
fn default_signal_name() -> String {
    "logreg-direction".into()
}
fn default_anomaly_name() -> String {
    "gmm-bar-anomaly".into()
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            train_fraction: default_train_fraction(),
            l2_penalty: default_l2_penalty(),
            max_iterations: default_max_iterations(),
            mixture_components: default_mixture_components(),
            mixture_runs: default_mixture_runs(),
            quantiles: default_quantiles(),
            dominance: default_dominance(),
            injection_rate: default_injection_rate(),
            injection_seed: default_injection_seed(),
            buy_threshold: default_threshold(),
            sell_threshold: default_threshold(),
            signal_model_name: default_signal_name(),
            anomaly_model_name: default_anomaly_name(),
        }
    }
}

impl TrainConfig {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if !(self.train_fraction > 0.0 && self.train_fraction < 1.0) {
            p.push(format!(
                "train_fraction: must be within (0, 1), got {}",
                self.train_fraction
            ));
        }
        if !(self.l2_penalty.is_finite() && self.l2_penalty >= 0.0) {
            p.push(format!(
                "l2_penalty: must be finite and ≥ 0, got {}",
                self.l2_penalty
            ));
        }
        if self.max_iterations == 0 {
            p.push("max_iterations: must be > 0".into());
        }
        if self.mixture_components == 0 {
            p.push("mixture_components: must be > 0".into());
        }
        if self.mixture_runs == 0 {
            p.push("mixture_runs: must be > 0".into());
        }
        if self.quantiles.iter().any(|q| !(0.5..1.0).contains(q))
            || self.quantiles.windows(2).any(|w| w[0] > w[1])
        {
            p.push(format!(
                "quantiles: must be non-decreasing within [0.5, 1), got {:?}",
                self.quantiles
            ));
        }
        if !(self.dominance > 0.0 && self.dominance <= 1.0) {
            p.push(format!(
                "dominance: must be within (0, 1], got {}",
                self.dominance
            ));
        }
        if !(self.injection_rate > 0.0 && self.injection_rate < 1.0) {
            p.push(format!(
                "injection_rate: must be within (0, 1), got {}",
                self.injection_rate
            ));
        }
        for (name, v) in [
            ("buy_threshold", self.buy_threshold),
            ("sell_threshold", self.sell_threshold),
        ] {
            if !(0.5..=1.0).contains(&v) {
                p.push(format!("{name}: must be within [0.5, 1], got {v}"));
            }
        }
        for (name, v) in [
            ("signal_model_name", &self.signal_model_name),
            ("anomaly_model_name", &self.anomaly_model_name),
        ] {
            if v.trim().is_empty() {
                p.push(format!("{name}: must not be empty"));
            }
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// Held-out metrics of the direction model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalMetrics {
    /// Rows fitted on.
    pub train_rows: usize,
    /// Rows evaluated on.
    pub test_rows: usize,
    /// Share of test rows whose next close was higher.
    pub base_rate_up: f64,
    /// Accuracy of "up" at p ≥ 0.5.
    pub accuracy: f64,
    /// Precision of "up" at p ≥ 0.5.
    pub precision: f64,
    /// Recall of "up" at p ≥ 0.5.
    pub recall: f64,
    /// ROC AUC of p(up) (0.5 = no skill).
    pub auc: f64,
    /// BUY signals at the configured threshold.
    pub buy_signals: usize,
    /// Share of those BUYs followed by a higher close.
    pub buy_hit_rate: f64,
    /// SELL signals at the configured threshold.
    pub sell_signals: usize,
    /// Share of those SELLs followed by a lower or equal close.
    pub sell_hit_rate: f64,
}

/// Held-out metrics of the anomaly detector on synthetically injected anomalies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyMetrics {
    /// Rows fitted on.
    pub train_rows: usize,
    /// Test rows scored (injected ones included).
    pub test_rows: usize,
    /// Test rows given a synthetic anomaly.
    pub injected: usize,
    /// Test rows flagged (score above LOW).
    pub flagged: usize,
    /// Injected rows flagged.
    pub detected: usize,
    /// detected / flagged.
    pub precision: f64,
    /// detected / injected.
    pub recall: f64,
    /// Share of untouched test rows flagged (the false-alarm rate on real data).
    pub clean_flag_rate: f64,
    /// Share of detected rows whose kind names the injected input.
    pub kind_accuracy: f64,
    /// The severity thresholds stored in the model.
    pub thresholds: SeverityLevels,
}

/// What [`train`] produced and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Data source description.
    pub source: String,
    /// Features records given.
    pub rows: usize,
    /// Input rows that could not be used at all (e.g. CSV rows the reader refused).
    pub skipped_rows: usize,
    /// Direction model metrics.
    pub signal: SignalMetrics,
    /// Anomaly detector metrics.
    pub anomaly: AnomalyMetrics,
    /// Versions of the trained models.
    pub versions: ModelVersions,
    /// Model files written (empty if none were).
    pub files: Vec<PathBuf>,
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.signal;
        let a = &self.anomaly;
        writeln!(
            f,
            "trained on {} ({} features records, {} skipped input rows)",
            self.source, self.rows, self.skipped_rows
        )?;
        writeln!(
            f,
            "signal model {} (logistic regression, next-bar direction)",
            self.versions.signal
        )?;
        writeln!(
            f,
            "  train rows {}, test rows {} (time-ordered split)",
            s.train_rows, s.test_rows
        )?;
        writeln!(
            f,
            "  test accuracy {:.4} (base rate up {:.4}), precision {:.4}, recall {:.4}, ROC AUC {:.4}",
            s.accuracy, s.base_rate_up, s.precision, s.recall, s.auc
        )?;
        writeln!(
            f,
            "  signals at thresholds: {} BUY (hit rate {:.4}), {} SELL (hit rate {:.4})",
            s.buy_signals, s.buy_hit_rate, s.sell_signals, s.sell_hit_rate
        )?;
        writeln!(
            f,
            "anomaly detector {} (Gaussian mixture over return_1, range_pct, zscore_volume_20)",
            self.versions.anomaly
        )?;
        writeln!(
            f,
            "  train rows {}, test rows {}, injected {}",
            a.train_rows, a.test_rows, a.injected
        )?;
        writeln!(
            f,
            "  flagged {}, detected {}: precision {:.4}, recall {:.4}; clean-bar flag rate {:.4}; kind accuracy {:.4}",
            a.flagged, a.detected, a.precision, a.recall, a.clean_flag_rate, a.kind_accuracy
        )?;
        let t = a.thresholds;
        writeln!(
            f,
            "  thresholds LOW {:.3} MEDIUM {:.3} HIGH {:.3} CRITICAL {:.3}",
            t.low, t.medium, t.high, t.critical
        )?;
        for file in &self.files {
            writeln!(f, "wrote {}", file.display())?;
        }
        Ok(())
    }
}

/// Trained models and their report.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The models.
    pub models: Models,
    /// Held-out metrics.
    pub report: TrainReport,
}

/// Deterministic pseudo-random numbers (SplitMix64) for the synthetic anomalies, so the same
/// seed gives the same evaluation on every machine.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    #[cfg(test)]
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn training_error(what: &str, e: impl fmt::Display) -> ScorerError {
    ScorerError::Training(format!("{what}: {e}"))
}

fn matrix<const D: usize>(rows: &[[f64; D]], s: &Standardizer) -> Result<Array2<f64>> {
    let flat: Vec<f64> = rows.iter().flat_map(|r| s.apply(r)).collect();
    Array2::from_shape_vec((rows.len(), D), flat)
        .map_err(|e| training_error("building the input matrix", e))
}

fn check_series(rows: &[Features]) -> Result<()> {
    for w in rows.windows(2) {
        if w[1].symbol != w[0].symbol {
            return Err(ScorerError::Training(format!(
                "rows mix symbols {} and {} (train one symbol at a time)",
                w[0].symbol, w[1].symbol
            )));
        }
        if w[1].event_time <= w[0].event_time {
            return Err(ScorerError::Training(format!(
                "rows are not in strictly increasing time order at {} ({})",
                w[1].event_time, w[1].record_id
            )));
        }
    }
    Ok(())
}

fn info(
    source: &str,
    train_rows: usize,
    test_rows: usize,
    rows: &[Features],
    metrics: BTreeMap<String, f64>,
) -> TrainingInfo {
    TrainingInfo {
        source: source.to_string(),
        train_rows,
        test_rows,
        first_event_time: rows.first().map(|r| r.event_time.to_rfc3339()),
        last_event_time: rows.last().map(|r| r.event_time.to_rfc3339()),
        metrics,
    }
}

/// Labeled direction-model rows of `rows[range]`: inputs of bar i with "close[i+1] >
/// close[i]", for i whose next bar is also in the range.
fn labeled(rows: &[Features]) -> (Vec<[f64; SIGNAL_INPUTS.len()]>, Vec<bool>) {
    rows.windows(2)
        .filter_map(|w| Some((signal_inputs(&w[0])?, w[1].close > w[0].close)))
        .unzip()
}

fn train_signal(
    train: &[Features],
    test: &[Features],
    source: &str,
    all: &[Features],
    cfg: &TrainConfig,
) -> Result<(SignalModel, SignalMetrics)> {
    let (x_train, y_train) = labeled(train);
    let (x_test, y_test) = labeled(test);
    if x_train.len() < 50 || x_test.len() < 10 {
        return Err(ScorerError::Training(format!(
            "too little warmed-up data for the signal model: {} training and {} test rows (need ≥ 50 and ≥ 10)",
            x_train.len(),
            x_test.len()
        )));
    }
    let standardizer = Standardizer::fit(&x_train, SIGNAL_INPUTS.len());
    let targets: Array1<usize> = y_train.iter().map(|up| usize::from(*up)).collect();
    let dataset = Dataset::new(matrix(&x_train, &standardizer)?, targets);
    let fitted = LogisticRegression::default()
        .alpha(cfg.l2_penalty)
        .max_iterations(cfg.max_iterations)
        .fit(&dataset)
        .map_err(|e| training_error("fitting the logistic regression", e))?;
    // linfa models p(labels().pos); which class that is depends on the release (0.8.1 picks
    // the rarer one), so flip the sign when it is "down": σ(−t) = 1 − σ(t).
    let sign = if fitted.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    let params = SignalParams {
        name: cfg.signal_model_name.clone(),
        algorithm: SIGNAL_ALGORITHM.into(),
        inputs: SIGNAL_INPUTS.iter().map(|s| s.to_string()).collect(),
        standardizer,
        coefficients: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * fitted.intercept(),
    };
    let unversioned = SignalModel::new(params.clone(), None)?;
    let p: Vec<f64> = x_test.iter().map(|r| unversioned.p_up(r)).collect();
    let confusion = Confusion::from_pairs(p.iter().map(|p| *p >= 0.5).zip(y_test.iter().copied()));
    let auc = roc_auc(&p, &y_test)
        .ok_or_else(|| ScorerError::Training("test set has a single class".into()))?;
    let (mut buys, mut buy_hits, mut sells, mut sell_hits) = (0, 0, 0, 0);
    for (p, up) in p.iter().zip(&y_test) {
        match decide(*p, cfg.buy_threshold, cfg.sell_threshold).0 {
            SignalSide::Buy => (buys, buy_hits) = (buys + 1, buy_hits + usize::from(*up)),
            SignalSide::Sell => (sells, sell_hits) = (sells + 1, sell_hits + usize::from(!*up)),
            SignalSide::Hold => {}
        }
    }
    let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let metrics = SignalMetrics {
        train_rows: x_train.len(),
        test_rows: x_test.len(),
        base_rate_up: rate(y_test.iter().filter(|u| **u).count(), y_test.len()),
        accuracy: confusion.accuracy(),
        precision: confusion.precision(),
        recall: confusion.recall(),
        auc,
        buy_signals: buys,
        buy_hit_rate: rate(buy_hits, buys),
        sell_signals: sells,
        sell_hit_rate: rate(sell_hits, sells),
    };
    let recorded = BTreeMap::from([
        ("test_accuracy".to_string(), metrics.accuracy),
        ("test_precision".to_string(), metrics.precision),
        ("test_recall".to_string(), metrics.recall),
        ("test_auc".to_string(), metrics.auc),
        ("test_base_rate_up".to_string(), metrics.base_rate_up),
    ]);
    let model = SignalModel::new(
        params,
        Some(info(source, x_train.len(), x_test.len(), all, recorded)),
    )?;
    Ok((model, metrics))
}

fn fit_mixture(z: Array2<f64>, cfg: &TrainConfig) -> Result<Vec<Component>> {
    let dataset = DatasetBase::from(z);
    let gmm = GaussianMixtureModel::params(cfg.mixture_components)
        .n_runs(cfg.mixture_runs)
        .tolerance(1e-4)
        .reg_covariance(1e-6)
        .max_n_iterations(500)
        .fit(&dataset)
        .map_err(|e| training_error("fitting the Gaussian mixture", e))?;
    let total: f64 = gmm.weights().sum();
    let d = ANOMALY_INPUTS.len();
    Ok((0..gmm.weights().len())
        .map(|k| Component {
            weight: gmm.weights()[k] / total,
            mean: gmm.means().row(k).to_vec(),
            covariance: (0..d)
                .map(|i| (0..d).map(|j| gmm.covariances()[[k, i, j]]).collect())
                .collect(),
        })
        .collect())
}

/// Replaces one input of a deterministic share of `rows` with an extreme value; returns which
/// rows got one and in which input.
fn inject(rows: &mut [[f64; 3]], s: &Standardizer, cfg: &TrainConfig) -> Vec<Option<usize>> {
    let mut rng = SplitMix64::new(cfg.injection_seed);
    rows.iter_mut()
        .map(|row| {
            if rng.next_f64() >= cfg.injection_rate {
                return None;
            }
            let dim = (rng.next_u64() % 3) as usize;
            let sigmas = 6.0 + 4.0 * rng.next_f64();
            let sign = if dim == 0 && rng.next_f64() < 0.5 {
                -1.0
            } else {
                1.0
            };
            row[dim] = s.mean[dim] + sign * sigmas * s.std[dim];
            Some(dim)
        })
        .collect()
}

fn train_anomaly(
    train: &[Features],
    test: &[Features],
    source: &str,
    all: &[Features],
    cfg: &TrainConfig,
) -> Result<(AnomalyModel, AnomalyMetrics)> {
    let x_train: Vec<[f64; 3]> = train.iter().filter_map(anomaly_inputs).collect();
    let mut x_test: Vec<[f64; 3]> = test.iter().filter_map(anomaly_inputs).collect();
    let needed = 20 * cfg.mixture_components.max(1);
    if x_train.len() < needed || x_test.len() < 10 {
        return Err(ScorerError::Training(format!(
            "too little warmed-up data for the anomaly detector: {} training and {} test rows (need ≥ {needed} and ≥ 10)",
            x_train.len(),
            x_test.len()
        )));
    }
    let standardizer = Standardizer::fit(&x_train, 3);
    let components = fit_mixture(matrix(&x_train, &standardizer)?, cfg)?;
    let placeholder = SeverityLevels {
        low: 0.0,
        medium: 0.0,
        high: 0.0,
        critical: 0.0,
    };
    let quantiles = SeverityLevels {
        low: cfg.quantiles[0],
        medium: cfg.quantiles[1],
        high: cfg.quantiles[2],
        critical: cfg.quantiles[3],
    };
    let mut params = AnomalyParams {
        name: cfg.anomaly_model_name.clone(),
        algorithm: ANOMALY_ALGORITHM.into(),
        inputs: ANOMALY_INPUTS.iter().map(|s| s.to_string()).collect(),
        standardizer: standardizer.clone(),
        components,
        quantiles,
        thresholds: placeholder,
        dominance: cfg.dominance,
    };
    let scorer = AnomalyModel::new(params.clone(), None)?;
    let mut scores: Vec<f64> = x_train.iter().map(|r| scorer.score(r)).collect();
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(ScorerError::Training(
            "the mixture gives a training bar a non-finite score".into(),
        ));
    }
    scores.sort_by(f64::total_cmp);
    let q = |p: f64| quantile(&scores, p).unwrap_or(f64::INFINITY);
    params.thresholds = SeverityLevels {
        low: q(quantiles.low),
        medium: q(quantiles.medium),
        high: q(quantiles.high),
        critical: q(quantiles.critical),
    };
    let model = AnomalyModel::new(params.clone(), None)?;

    let injected = inject(&mut x_test, &standardizer, cfg);
    let (mut flagged, mut detected, mut clean_flagged, mut kind_hits) = (0, 0, 0, 0);
    for (row, inj) in x_test.iter().zip(&injected) {
        let a = model.assess(row);
        let flag = a.severity.is_some();
        flagged += usize::from(flag);
        match inj {
            Some(dim) if flag => {
                detected += 1;
                kind_hits += usize::from(a.kind == ANOMALY_KINDS[*dim]);
            }
            None => clean_flagged += usize::from(flag),
            Some(_) => {}
        }
    }
    let n_injected = injected.iter().filter(|i| i.is_some()).count();
    let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let metrics = AnomalyMetrics {
        train_rows: x_train.len(),
        test_rows: x_test.len(),
        injected: n_injected,
        flagged,
        detected,
        precision: rate(detected, flagged),
        recall: rate(detected, n_injected),
        clean_flag_rate: rate(clean_flagged, x_test.len() - n_injected),
        kind_accuracy: rate(kind_hits, detected),
        thresholds: params.thresholds,
    };
    let recorded = BTreeMap::from([
        ("injected_precision".to_string(), metrics.precision),
        ("injected_recall".to_string(), metrics.recall),
        ("clean_flag_rate".to_string(), metrics.clean_flag_rate),
    ]);
    let model = AnomalyModel::new(
        params,
        Some(info(source, x_train.len(), x_test.len(), all, recorded)),
    )?;
    Ok((model, metrics))
}

/// Trains both models on `rows` (one symbol, strictly increasing event times) and evaluates
/// them on the held-out tail. `source` describes the data in the model files and report.
pub fn train(rows: &[Features], source: &str, cfg: &TrainConfig) -> Result<Trained> {
    cfg.validate().map_err(|p| {
        ScorerError::Training(format!("invalid training configuration: {}", p.join("; ")))
    })?;
    check_series(rows)?;
    let split = (rows.len() as f64 * cfg.train_fraction).floor() as usize;
    let (train_rows, test_rows) = rows.split_at(split.min(rows.len()));
    let (signal, signal_metrics) = train_signal(train_rows, test_rows, source, rows, cfg)?;
    let (anomaly, anomaly_metrics) = train_anomaly(train_rows, test_rows, source, rows, cfg)?;
    let models = Models { signal, anomaly };
    let report = TrainReport {
        source: source.to_string(),
        rows: rows.len(),
        skipped_rows: 0,
        signal: signal_metrics,
        anomaly: anomaly_metrics,
        versions: models.versions(),
        files: Vec::new(),
    };
    Ok(Trained { models, report })
}

/// [`train`], then writes `signal-model.json` and `anomaly-model.json` into `out_dir`.
pub fn train_to_dir(
    rows: &[Features],
    source: &str,
    cfg: &TrainConfig,
    out_dir: &Path,
) -> Result<TrainReport> {
    let Trained { models, mut report } = train(rows, source, cfg)?;
    report.files = save_models(&models, out_dir)?;
    Ok(report)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model_store::load_models;
    use crate::signal::sigmoid;
    use chrono::Duration;
    use rust_decimal::Decimal;
    use rust_decimal::prelude::FromPrimitive;
    use tradestream_schemas::{Trend, samples};

    /// `n` daily features records of a synthetic series whose next-bar direction depends on
    /// `zscore_close_20` (p(up) = σ(2z)); every other input is noise.
    pub(crate) fn synthetic_series(n: usize, seed: u64) -> Vec<Features> {
        let mut rng = SplitMix64::new(seed);
        let base = samples::features();
        let mut close = 100.0_f64;
        let mut ret = 0.0;
        let mut out = Vec::with_capacity(n);
        for t in 0..n {
            let z = rng.normal();
            let mut f = base.clone();
            f.record_id = format!("features:synthetic:{t}");
            f.event_time = base.event_time + Duration::days(t as i64);
            f.close = Decimal::from_f64(close)
                .map(|d| d.round_dp(8))
                .expect("finite close");
            f.trend =
                [Trend::Neutral, Trend::Bullish, Trend::Bearish][(rng.next_u64() % 3) as usize];
            let mut v = |name: &str, x: f64| {
                f.values.insert(name.to_string(), x);
            };
            v("return_1", ret);
            v("rsi_14", 50.0 + 10.0 * rng.normal());
            v("macd_hist", close * 0.001 * rng.normal());
            v("bb_percent_b_20", 0.5 + 0.3 * rng.normal());
            v("zscore_close_20", z);
            v("zscore_volume_20", rng.normal());
            v("volatility_20", 0.01 + 0.002 * rng.normal().abs());
            v("range_pct", 0.015 + 0.003 * rng.normal().abs());
            v("atr_14", close * 0.015);
            v("sma_50", close * (1.0 + 0.02 * rng.normal()));
            out.push(f);
            let up = rng.next_f64() < sigmoid(2.0 * z);
            ret = (0.002 + 0.01 * rng.normal().abs()) * if up { 1.0 } else { -1.0 };
            close *= 1.0 + ret;
        }
        out
    }

    #[test]
    fn learns_a_real_signal_and_reports_honest_metrics() {
        let rows = synthetic_series(3000, 1);
        let Trained { models, report } =
            train(&rows, "synthetic", &TrainConfig::default()).expect("trained");
        let s = &report.signal;
        assert_eq!(
            s.train_rows + s.test_rows + 2,
            rows.len(),
            "one label lost at the split, one at the end"
        );
        assert!(s.auc > 0.75, "AUC {}", s.auc);
        assert!(s.accuracy > 0.65, "accuracy {}", s.accuracy);
        assert!((0.0..=1.0).contains(&s.precision) && (0.0..=1.0).contains(&s.recall));
        // The informative input gets by far the largest weight, with the right sign.
        let w = &models.signal.params().coefficients;
        let zi = SIGNAL_INPUTS
            .iter()
            .position(|n| *n == "zscore_close_20")
            .expect("listed");
        assert!(w[zi] > 0.5, "{w:?}");
        assert!(
            w.iter()
                .enumerate()
                .all(|(i, c)| i == zi || c.abs() < w[zi] / 3.0),
            "{w:?}"
        );
        assert!(report.to_string().contains("ROC AUC"));
    }

    #[test]
    fn pure_noise_gives_no_skill() {
        let mut rows = synthetic_series(3000, 2);
        // Scramble the informative input so nothing predicts the direction.
        let mut rng = SplitMix64::new(99);
        for f in &mut rows {
            f.values.insert("zscore_close_20", rng.normal());
        }
        let report = train(&rows, "noise", &TrainConfig::default())
            .expect("trained")
            .report;
        assert!(
            (report.signal.auc - 0.5).abs() < 0.06,
            "AUC {}",
            report.signal.auc
        );
    }

    #[test]
    fn detector_flags_injected_extreme_bars_and_not_normal_ones() {
        let rows = synthetic_series(3000, 3);
        let Trained { models, report } =
            train(&rows, "synthetic", &TrainConfig::default()).expect("trained");
        let a = &report.anomaly;
        assert!(a.injected >= 10, "{a:?}");
        assert!(a.recall >= 0.95, "recall {}", a.recall);
        assert!(a.precision >= 0.5, "precision {}", a.precision);
        assert!(
            a.clean_flag_rate <= 0.03,
            "false alarms {}",
            a.clean_flag_rate
        );
        assert!(a.kind_accuracy >= 0.8, "kind accuracy {}", a.kind_accuracy);

        let d = &models.anomaly;
        let normal = [0.008, 0.016, 0.2];
        assert_eq!(d.assess(&normal).severity, None);
        let crash = d.assess(&[-0.15, 0.017, 0.1]);
        assert!(crash.severity.is_some(), "{crash:?}");
        assert_eq!(crash.kind, "RETURN");
        let volume = d.assess(&[0.004, 0.016, 12.0]);
        assert_eq!((volume.severity.is_some(), volume.kind), (true, "VOLUME"));
        let wide = d.assess(&[0.004, 0.09, 0.0]);
        assert_eq!((wide.severity.is_some(), wide.kind), (true, "RANGE"));
        let t = a.thresholds.as_array();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    }

    #[test]
    fn train_to_dir_writes_loadable_files_with_the_reported_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = synthetic_series(800, 4);
        let report =
            train_to_dir(&rows, "synthetic", &TrainConfig::default(), dir.path()).expect("trained");
        assert_eq!(report.files.len(), 2);
        let loaded = load_models(dir.path()).expect("loadable");
        assert_eq!(loaded.versions(), report.versions);
        let info = loaded.signal.training().expect("provenance stored");
        assert_eq!(info.source, "synthetic");
        assert!(info.metrics.contains_key("test_auc"));
    }

    #[test]
    fn refuses_unordered_mixed_or_short_input() {
        let mut rows = synthetic_series(300, 5);
        rows.swap(10, 11);
        let e = train(&rows, "x", &TrainConfig::default()).expect_err("unordered");
        assert!(e.to_string().contains("time order"), "{e}");
        let rows = synthetic_series(40, 5);
        let e = train(&rows, "x", &TrainConfig::default()).expect_err("short");
        assert!(e.to_string().contains("too little"), "{e}");
        let bad = TrainConfig {
            train_fraction: 1.5,
            quantiles: [0.99, 0.9, 0.999, 0.9999],
            ..TrainConfig::default()
        };
        let problems = bad.validate().expect_err("invalid");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn injection_is_deterministic_and_extreme() {
        let s = Standardizer {
            mean: vec![0.0, 0.02, 0.0],
            std: vec![0.01, 0.005, 1.0],
        };
        let cfg = TrainConfig {
            injection_rate: 0.5,
            ..TrainConfig::default()
        };
        let mut a = vec![[0.0, 0.02, 0.0]; 200];
        let mut b = a.clone();
        let ia = inject(&mut a, &s, &cfg);
        assert_eq!(ia, inject(&mut b, &s, &cfg));
        assert_eq!(a, b);
        let n = ia.iter().filter(|i| i.is_some()).count();
        assert!((70..130).contains(&n), "{n}");
        for (row, dim) in a.iter().zip(&ia) {
            if let Some(d) = dim {
                let z = (row[*d] - s.mean[*d]) / s.std[*d];
                assert!((6.0..=10.0).contains(&z.abs()), "{z}");
            }
        }
    }
}
