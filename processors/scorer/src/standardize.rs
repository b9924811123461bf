//! Per-column standardization (z = (x − mean) / std) with statistics taken from the
//! training set only and stored in the model file, so live scoring applies exactly the
//! transformation the model was fitted on and test data never leaks into it.

use serde::{Deserialize, Serialize};

/// Columns whose spread is below this are treated as constant (std stored as 1), so a
/// one-hot input that never fired in training cannot blow up to ±∞.
const MIN_STD: f64 = 1e-12;

/// Mean and standard deviation of each input column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardizer {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column population standard deviations (1 for constant columns).
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Statistics of `rows` (each of `width` columns). An empty input gives mean 0, std 1.
    pub fn fit<R: AsRef<[f64]>>(rows: &[R], width: usize) -> Self {
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; width];
        for r in rows {
            for (m, x) in mean.iter_mut().zip(r.as_ref()) {
                *m += x / n;
            }
        }
        let mut var = vec![0.0; width];
        for r in rows {
            for ((v, x), m) in var.iter_mut().zip(r.as_ref()).zip(&mean) {
                *v += (x - m).powi(2) / n;
            }
        }
        let std = var
            .into_iter()
            .map(|v| if v.sqrt() > MIN_STD { v.sqrt() } else { 1.0 })
            .collect();
        Self { mean, std }
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Standardizes one row.
    pub fn apply(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((x, m), s)| (x - m) / s)
            .collect()
    }

    /// Checks sizes and that every number is finite and every std positive.
    pub fn check(&self, width: usize) -> Result<(), String> {
        if self.mean.len() != width || self.std.len() != width {
            return Err(format!(
                "standardizer has {} means and {} stds, expected {width} each",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("standardizer mean {m} is not finite"));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!("standardizer std {s} must be finite and > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let rows = [[1.0, 10.0, 5.0], [3.0, 10.0, 7.0]];
        let s = Standardizer::fit(&rows, 3);
        assert_eq!(s.mean, vec![2.0, 10.0, 6.0]);
        assert_eq!(s.std, vec![1.0, 1.0, 1.0], "constant column gets std 1");
        assert_eq!(s.apply(&[3.0, 12.0, 8.0]), vec![1.0, 2.0, 2.0]);
        let s = Standardizer::fit(&[[0.0], [4.0]], 1);
        assert_eq!((s.mean[0], s.std[0]), (2.0, 2.0));
        assert_eq!(s.check(1), Ok(()));
        assert!(s.check(2).is_err());
        assert!(
            Standardizer {
                mean: vec![0.0],
                std: vec![0.0]
            }
            .check(1)
            .is_err()
        );
        assert!(
            Standardizer {
                mean: vec![f64::NAN],
                std: vec![1.0]
            }
            .check(1)
            .is_err()
        );
    }

    proptest! {
        /// Standardized training columns have mean 0 and (unless constant) std 1.
        #[test]
        fn training_columns_become_zero_mean_unit_std(
            rows in prop::collection::vec(prop::array::uniform2(-1e3f64..1e3), 2..60)
        ) {
            let s = Standardizer::fit(&rows, 2);
            let z: Vec<Vec<f64>> = rows.iter().map(|r| s.apply(r)).collect();
            let n = z.len() as f64;
            for c in 0..2 {
                let mean = z.iter().map(|r| r[c]).sum::<f64>() / n;
                let var = z.iter().map(|r| (r[c] - mean).powi(2)).sum::<f64>() / n;
                prop_assert!(mean.abs() < 1e-9);
                prop_assert!(var < 1e-18 || (var - 1.0).abs() < 1e-6, "var {}", var);
            }
        }
    }
}
