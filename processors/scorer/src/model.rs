//! Model identity and the shared, hot-swappable model set.
//!
//! A model's `version` is the first 12 hex digits of the SHA-256 of the canonical JSON of
//! its parameters (serde_json of the parameter struct: fixed field order, shortest
//! round-trip float formatting), so it changes when any coefficient, statistic or threshold
//! changes and survives save/load unchanged. Every signal and anomaly names the version
//! that produced it, which makes any output traceable to exact parameters.
//!
//! [`ModelHandle`] is what the pure core holds: an `Arc<RwLock<Arc<Models>>>`. Scoring
//! takes a snapshot (`Arc<Models>`) per record, so a swap never mixes models within one
//! record and the lock is held only for the pointer copy. Loading files and deciding when to
//! swap live in [`crate::model_store`], outside the pure core.

use crate::anomaly::AnomalyModel;
use crate::error::{Result, ScorerError};
use crate::signal::SignalModel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Model file format revision written and accepted by this build.
pub const MODEL_FORMAT: u32 = 1;

/// Version string of parameters: first 12 hex chars of SHA-256 of their canonical JSON.
pub fn version_of<P: Serialize>(params: &P) -> Result<String> {
    let json = serde_json::to_vec(params)
        .map_err(|e| ScorerError::Training(format!("cannot serialize model parameters: {e}")))?;
    let digest = Sha256::digest(&json);
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}

/// What a model was trained on and how it scored on held-out data. Informative only: it is
/// not part of the parameters and does not change the version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// Where the training data came from (file, symbol).
    pub source: String,
    /// Rows the model was fitted on.
    pub train_rows: usize,
    /// Held-out rows it was evaluated on.
    pub test_rows: usize,
    /// Event time of the first training row (RFC 3339).
    pub first_event_time: Option<String>,
    /// Event time of the last row used (RFC 3339).
    pub last_event_time: Option<String>,
    /// Held-out metrics by name.
    pub metrics: BTreeMap<String, f64>,
}

/// On-disk layout of one model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile<P> {
    /// [`MODEL_FORMAT`].
    pub format: u32,
    /// `signal` or `anomaly`, so swapped files are caught.
    pub model: String,
    /// [`version_of`] the parameters.
    pub version: String,
    /// The parameters.
    pub params: P,
    /// Provenance and held-out metrics.
    #[serde(default)]
    pub training: Option<TrainingInfo>,
}

/// The versions of a model set, e.g. for logs after a reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelVersions {
    /// Signal model version.
    pub signal: String,
    /// Anomaly detector version.
    pub anomaly: String,
}

impl fmt::Display for ModelVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "signal {} anomaly {}", self.signal, self.anomaly)
    }
}

/// The models the scorer applies, loaded and validated together.
#[derive(Debug, Clone, PartialEq)]
pub struct Models {
    /// Direction model.
    pub signal: SignalModel,
    /// Anomaly detector.
    pub anomaly: AnomalyModel,
}

impl Models {
    /// Both versions.
    pub fn versions(&self) -> ModelVersions {
        ModelVersions {
            signal: self.signal.version().to_string(),
            anomaly: self.anomaly.version().to_string(),
        }
    }
}

/// Content hashes of the model files last loaded, so reloads skip unchanged files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoadedStamp {
    pub(crate) signal_sha256: Vec<u8>,
    pub(crate) anomaly_sha256: Vec<u8>,
}

/// Shared, atomically swappable models. Clones share the same models.
#[derive(Debug, Clone)]
pub struct ModelHandle {
    current: Arc<RwLock<Arc<Models>>>,
    pub(crate) stamp: Arc<Mutex<Option<LoadedStamp>>>,
}

impl ModelHandle {
    /// A handle serving `models`.
    pub fn new(models: Models) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(models))),
            stamp: Arc::new(Mutex::new(None)),
        }
    }

    /// The models in force now. Hold the snapshot for one record, not longer, so reloads
    /// take effect at the next record.
    pub fn current(&self) -> Arc<Models> {
        // A poisoned lock only means a writer panicked between swaps of a whole `Arc`; the
        // value inside is still a complete model set.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the models for every clone of this handle; returns the new versions.
    pub fn replace(&self, models: Models) -> ModelVersions {
        let versions = models.versions();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(models);
        versions
    }

    /// The versions in force now.
    pub fn versions(&self) -> ModelVersions {
        self.current().versions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct P {
        a: Vec<f64>,
        b: f64,
    }

    #[test]
    fn version_is_twelve_hex_digits_and_tracks_parameters() {
        let v1 = version_of(&P {
            a: vec![1.0, 2.5],
            b: -0.125,
        })
        .expect("serializable");
        assert_eq!(v1.len(), 12);
        assert!(
            v1.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            v1,
            version_of(&P {
                a: vec![1.0, 2.5],
                b: -0.125
            })
            .expect("serializable")
        );
        assert_ne!(
            v1,
            version_of(&P {
                a: vec![1.0, 2.5000000001],
                b: -0.125
            })
            .expect("serializable")
        );
    }
}
