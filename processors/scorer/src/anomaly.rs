//! The bar anomaly detector: a Gaussian mixture (fitted with linfa-clustering, full
//! covariances) over the standardized [`ANOMALY_INPUTS`]. A bar's score is its negative
//! log-likelihood under the mixture; severity thresholds are quantiles of the training
//! scores, so "LOW" means "rarer than 99% of training bars" whatever the instrument.
//!
//! The file stores weights, means and covariances (readable, and what linfa fits); the
//! Cholesky factors the score needs are derived at load, which also proves each covariance
//! positive definite.

use crate::error::{Result, ScorerError};
use crate::inputs::{ANOMALY_INPUTS, ANOMALY_KINDS, JOINT_KIND};
use crate::model::{TrainingInfo, version_of};
use crate::standardize::Standardizer;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;
use tradestream_schemas::Severity;

/// Algorithm tag stored in the file.
pub const ANOMALY_ALGORITHM: &str = "gaussian_mixture_full";

/// One mixture component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Mixing weight (the weights sum to 1).
    pub weight: f64,
    /// Mean in standardized space.
    pub mean: Vec<f64>,
    /// Full covariance matrix in standardized space, row-major.
    pub covariance: Vec<Vec<f64>>,
}

/// Score thresholds (or, in `quantiles`, the training quantiles they came from), one per
/// severity; non-decreasing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityLevels {
    /// LOW and above.
    pub low: f64,
    /// MEDIUM and above.
    pub medium: f64,
    /// HIGH and above.
    pub high: f64,
    /// CRITICAL.
    pub critical: f64,
}

impl SeverityLevels {
    /// The four values in severity order.
    pub fn as_array(&self) -> [f64; 4] {
        [self.low, self.medium, self.high, self.critical]
    }

    fn check(&self, what: &str) -> Result<(), String> {
        let a = self.as_array();
        if a.iter().any(|v| !v.is_finite()) {
            return Err(format!("{what} {a:?} must be finite"));
        }
        if a.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!(
                "{what} {a:?} must be non-decreasing (low ≤ medium ≤ high ≤ critical)"
            ));
        }
        Ok(())
    }
}

/// Parameters of the anomaly detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    /// Detector name.
    pub name: String,
    /// [`ANOMALY_ALGORITHM`].
    pub algorithm: String,
    /// Input names; must equal [`ANOMALY_INPUTS`].
    pub inputs: Vec<String>,
    /// Training-set statistics of the inputs.
    pub standardizer: Standardizer,
    /// Mixture components.
    pub components: Vec<Component>,
    /// Training-score quantiles the thresholds were taken at.
    pub quantiles: SeverityLevels,
    /// Score thresholds: a bar is an anomaly when its score is above `thresholds.low`.
    pub thresholds: SeverityLevels,
    /// A kind names one input when that input's share of the squared standardized
    /// deviation is at least this; otherwise the kind is JOINT.
    pub dominance: f64,
}

/// A mixture component prepared for scoring.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    log_weight: f64,
    mean: Vec<f64>,
    /// Lower-triangular Cholesky factor of the covariance.
    chol: Vec<Vec<f64>>,
    /// −½ (d·ln 2π + ln det Σ).
    log_norm: f64,
}

/// What the detector says about one bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Negative log-likelihood.
    pub score: f64,
    /// Severity if the score is above the LOW threshold.
    pub severity: Option<Severity>,
    /// RETURN, RANGE, VOLUME or JOINT.
    pub kind: &'static str,
}

/// A validated anomaly detector with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyModel {
    params: AnomalyParams,
    version: String,
    prepared: Vec<Prepared>,
    training: Option<TrainingInfo>,
}

/// Lower Cholesky factor of a symmetric positive-definite matrix.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

impl AnomalyParams {
    fn check(&self) -> Result<(), String> {
        let d = ANOMALY_INPUTS.len();
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.algorithm != ANOMALY_ALGORITHM {
            return Err(format!(
                "algorithm {:?} is not {ANOMALY_ALGORITHM:?}",
                self.algorithm
            ));
        }
        if self.inputs.iter().map(String::as_str).ne(ANOMALY_INPUTS) {
            return Err(format!(
                "inputs {:?} differ from this build's {:?}",
                self.inputs, ANOMALY_INPUTS
            ));
        }
        self.standardizer.check(d)?;
        if self.components.is_empty() {
            return Err("no mixture components".into());
        }
        for (k, c) in self.components.iter().enumerate() {
            if !(c.weight.is_finite() && c.weight > 0.0) {
                return Err(format!(
                    "component {k}: weight {} must be finite and > 0",
                    c.weight
                ));
            }
            if c.mean.len() != d || c.mean.iter().any(|v| !v.is_finite()) {
                return Err(format!("component {k}: mean must be {d} finite numbers"));
            }
            if c.covariance.len() != d
                || c.covariance
                    .iter()
                    .any(|r| r.len() != d || r.iter().any(|v| !v.is_finite()))
            {
                return Err(format!(
                    "component {k}: covariance must be {d}×{d} finite numbers"
                ));
            }
        }
        let total: f64 = self.components.iter().map(|c| c.weight).sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(format!("component weights sum to {total}, not 1"));
        }
        self.quantiles.check("quantiles")?;
        if self
            .quantiles
            .as_array()
            .iter()
            .any(|q| !(0.0..1.0).contains(q))
        {
            return Err("quantiles must be within [0, 1)".into());
        }
        self.thresholds.check("thresholds")?;
        if !(self.dominance > 0.0 && self.dominance <= 1.0) {
            return Err(format!(
                "dominance {} must be within (0, 1]",
                self.dominance
            ));
        }
        Ok(())
    }
}

impl AnomalyModel {
    /// Validates `params` (including positive-definite covariances) and computes the version.
    pub fn new(params: AnomalyParams, training: Option<TrainingInfo>) -> Result<Self> {
        params
            .check()
            .map_err(|m| ScorerError::invalid("anomaly", m))?;
        let d = ANOMALY_INPUTS.len() as f64;
        let mut prepared = Vec::with_capacity(params.components.len());
        for (k, c) in params.components.iter().enumerate() {
            let chol = cholesky(&c.covariance).ok_or_else(|| {
                ScorerError::invalid(
                    "anomaly",
                    format!("component {k}: covariance is not positive definite"),
                )
            })?;
            let log_det: f64 = 2.0 * chol.iter().enumerate().map(|(i, r)| r[i].ln()).sum::<f64>();
            prepared.push(Prepared {
                log_weight: c.weight.ln(),
                mean: c.mean.clone(),
                chol,
                log_norm: -0.5 * (d * (2.0 * PI).ln() + log_det),
            });
        }
        let version = version_of(&params)?;
        Ok(Self {
            params,
            version,
            prepared,
            training,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &AnomalyParams {
        &self.params
    }

    /// Version: hash of the parameters.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Provenance, if known.
    pub fn training(&self) -> Option<&TrainingInfo> {
        self.training.as_ref()
    }

    /// Negative log-likelihood of a raw (unstandardized) input row.
    pub fn score(&self, row: &[f64]) -> f64 {
        self.score_standardized(&self.params.standardizer.apply(row))
    }

    fn score_standardized(&self, z: &[f64]) -> f64 {
        let terms: Vec<f64> = self
            .prepared
            .iter()
            .map(|c| {
                // Solve L y = z − μ by forward substitution; the Mahalanobis distance is |y|².
                let n = c.mean.len();
                let mut y = vec![0.0; n];
                for i in 0..n {
                    let s: f64 = (0..i).map(|k| c.chol[i][k] * y[k]).sum();
                    y[i] = (z[i] - c.mean[i] - s) / c.chol[i][i];
                }
                let maha: f64 = y.iter().map(|v| v * v).sum();
                c.log_weight + c.log_norm - 0.5 * maha
            })
            .collect();
        -log_sum_exp(&terms)
    }

    /// Severity of a score: the highest level whose threshold the score is above; `None`
    /// at or below the LOW threshold.
    pub fn severity(&self, score: f64) -> Option<Severity> {
        let t = &self.params.thresholds;
        [
            (t.critical, Severity::Critical),
            (t.high, Severity::High),
            (t.medium, Severity::Medium),
            (t.low, Severity::Low),
        ]
        .into_iter()
        .find(|(th, _)| score > *th)
        .map(|(_, s)| s)
    }

    /// Which input made the bar unusual: the one holding at least `dominance` of the squared
    /// standardized deviation, else JOINT.
    pub fn kind(&self, row: &[f64]) -> &'static str {
        let z = self.params.standardizer.apply(row);
        let sq: Vec<f64> = z.iter().map(|v| v * v).collect();
        let total: f64 = sq.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return JOINT_KIND;
        }
        sq.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .filter(|(_, v)| **v / total >= self.params.dominance)
            .map_or(JOINT_KIND, |(i, _)| ANOMALY_KINDS[i])
    }

    /// Score, severity and kind of a raw input row.
    pub fn assess(&self, row: &[f64]) -> Assessment {
        let score = self.score(row);
        Assessment {
            score,
            severity: self.severity(score),
            kind: self.kind(row),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-component standard normal detector in 3-D with the given thresholds.
    pub(crate) fn standard_normal_params() -> AnomalyParams {
        let eye = vec![
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        AnomalyParams {
            name: "gmm-bar-anomaly".into(),
            algorithm: ANOMALY_ALGORITHM.into(),
            inputs: ANOMALY_INPUTS.iter().map(|s| s.to_string()).collect(),
            standardizer: Standardizer {
                mean: vec![0.0, 0.02, 0.0],
                std: vec![0.01, 0.01, 1.0],
            },
            components: vec![Component {
                weight: 1.0,
                mean: vec![0.0; 3],
                covariance: eye,
            }],
            quantiles: SeverityLevels {
                low: 0.99,
                medium: 0.995,
                high: 0.999,
                critical: 0.9999,
            },
            thresholds: SeverityLevels {
                low: 8.0,
                medium: 10.0,
                high: 15.0,
                critical: 30.0,
            },
            dominance: 0.5,
        }
    }

    #[test]
    fn score_is_the_gaussian_negative_log_likelihood() {
        let m = AnomalyModel::new(standard_normal_params(), None).expect("valid");
        let base = 1.5 * (2.0 * PI).ln();
        assert!((m.score(&[0.0, 0.02, 0.0]) - base).abs() < 1e-12);
        // z = (2, 0, 0) → base + 2.
        assert!((m.score(&[0.02, 0.02, 0.0]) - (base + 2.0)).abs() < 1e-12);
    }

    #[test]
    fn two_component_mixture_matches_a_direct_computation() {
        let mut p = standard_normal_params();
        let diag = |v: f64| vec![vec![v, 0.0, 0.0], vec![0.0, v, 0.0], vec![0.0, 0.0, v]];
        p.components = vec![
            Component {
                weight: 0.25,
                mean: vec![1.0, 0.0, 0.0],
                covariance: diag(4.0),
            },
            Component {
                weight: 0.75,
                mean: vec![0.0; 3],
                covariance: diag(1.0),
            },
        ];
        let m = AnomalyModel::new(p, None).expect("valid");
        let z = [1.0, -1.0, 0.5];
        let pdf = |mu: [f64; 3], var: f64| {
            let maha: f64 = z.iter().zip(mu).map(|(a, b)| (a - b).powi(2) / var).sum();
            (-0.5 * maha).exp() / ((2.0 * PI).powf(1.5) * var.powf(1.5))
        };
        let expected = -(0.25 * pdf([1.0, 0.0, 0.0], 4.0) + 0.75 * pdf([0.0; 3], 1.0)).ln();
        let row = [0.01, 0.01, 0.5]; // standardizes to z
        assert!(
            (m.score(&row) - expected).abs() < 1e-12,
            "{} vs {expected}",
            m.score(&row)
        );
    }

    #[test]
    fn severity_buckets_and_kinds() {
        let m = AnomalyModel::new(standard_normal_params(), None).expect("valid");
        assert_eq!(m.severity(8.0), None);
        assert_eq!(m.severity(8.01), Some(Severity::Low));
        assert_eq!(m.severity(12.0), Some(Severity::Medium));
        assert_eq!(m.severity(20.0), Some(Severity::High));
        assert_eq!(m.severity(31.0), Some(Severity::Critical));
        assert_eq!(m.kind(&[0.08, 0.02, 0.0]), "RETURN");
        assert_eq!(m.kind(&[0.0, 0.1, 1.0]), "RANGE");
        assert_eq!(m.kind(&[0.001, 0.02, 9.0]), "VOLUME");
        assert_eq!(m.kind(&[0.05, 0.07, 5.0]), "JOINT");
        let a = m.assess(&[0.05, 0.02, 0.0]); // z = (5, 0, 0): score ≈ 2.76 + 12.5
        assert_eq!((a.severity, a.kind), (Some(Severity::High), "RETURN"));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let mut p = standard_normal_params();
        p.components[0].covariance[0][0] = -1.0;
        let e = AnomalyModel::new(p, None).expect_err("not positive definite");
        assert!(e.to_string().contains("positive definite"), "{e}");
        let mut p = standard_normal_params();
        p.thresholds.high = 9.0;
        p.thresholds.medium = 11.0;
        assert!(AnomalyModel::new(p, None).is_err());
        let mut p = standard_normal_params();
        p.components[0].weight = 0.5;
        assert!(AnomalyModel::new(p, None).is_err());
        let mut p = standard_normal_params();
        p.inputs[2] = "volume".into();
        assert!(AnomalyModel::new(p, None).is_err());
    }
}
