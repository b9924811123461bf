//! Model files on disk: loading with validation, atomic saving, and the change check behind
//! hot reload. This is the scorer's only file I/O and sits outside the pure core: the core
//! ([`crate::Scorer`]) only reads the [`ModelHandle`] that this module fills.
//!
//! Layout: a model directory holds [`SIGNAL_MODEL_FILE`] and [`ANOMALY_MODEL_FILE`], each
//! a [`ModelFile`] in JSON. Every load checks the format revision, the model kind, the
//! parameters (input list equal to this build's, finite numbers, sizes, positive-definite
//! covariances, ordered thresholds) and that the stored version is the hash of the stored
//! parameters; any failure names the file.
//!
//! Writers should replace files atomically (write a temporary file, then rename), as
//! [`save_models`] does, so a reload never sees half a file. If it does anyway, the reload
//! fails with an error, keeps the old models and tries again at the next poll.

use crate::anomaly::{AnomalyModel, AnomalyParams};
use crate::error::{Result, ScorerError};
use crate::model::{
    LoadedStamp, MODEL_FORMAT, ModelFile, ModelHandle, ModelVersions, Models, TrainingInfo,
};
use crate::signal::{SignalModel, SignalParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

/// File name of the direction model inside a model directory.
pub const SIGNAL_MODEL_FILE: &str = "signal-model.json";
/// File name of the anomaly detector inside a model directory.
pub const ANOMALY_MODEL_FILE: &str = "anomaly-model.json";

const SIGNAL_KIND: &str = "signal";
const ANOMALY_KIND: &str = "anomaly";

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ScorerError::Io {
        context: "reading model file",
        path: path.to_path_buf(),
        source,
    })
}

fn file_error(path: &Path, message: impl Into<String>) -> ScorerError {
    ScorerError::ModelFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Parses and validates a model file's bytes; errors name `path`.
fn parse<P, M>(
    path: &Path,
    bytes: &[u8],
    kind: &str,
    build: impl FnOnce(P, Option<TrainingInfo>) -> Result<M>,
    version: impl FnOnce(&M) -> String,
) -> Result<M>
where
    P: DeserializeOwned,
{
    // Envelope first, so a swapped or newer file gets a precise error rather than a serde
    // complaint about parameter fields.
    let file: ModelFile<serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| file_error(path, format!("not a valid {kind} model file: {e}")))?;
    if file.format != MODEL_FORMAT {
        return Err(file_error(
            path,
            format!(
                "format {} is not supported (this build reads {MODEL_FORMAT})",
                file.format
            ),
        ));
    }
    if file.model != kind {
        return Err(file_error(
            path,
            format!("holds a {:?} model, expected {kind:?}", file.model),
        ));
    }
    let params: P = serde_json::from_value(file.params)
        .map_err(|e| file_error(path, format!("not a valid {kind} model file: params: {e}")))?;
    let model = build(params, file.training).map_err(|e| match e {
        ScorerError::InvalidModel { message, .. } => file_error(path, message),
        other => other,
    })?;
    let computed = version(&model);
    if computed != file.version {
        return Err(file_error(
            path,
            format!(
                "version {:?} does not match its parameters (hash {computed}); the file was edited by hand or \
                 corrupted: re-save it with the trainer",
                file.version
            ),
        ));
    }
    Ok(model)
}

fn parse_signal(path: &Path, bytes: &[u8]) -> Result<SignalModel> {
    parse::<SignalParams, _>(path, bytes, SIGNAL_KIND, SignalModel::new, |m| {
        m.version().to_string()
    })
}

fn parse_anomaly(path: &Path, bytes: &[u8]) -> Result<AnomalyModel> {
    parse::<AnomalyParams, _>(path, bytes, ANOMALY_KIND, AnomalyModel::new, |m| {
        m.version().to_string()
    })
}

/// Loads and validates a direction model file.
pub fn load_signal_model(path: &Path) -> Result<SignalModel> {
    parse_signal(path, &read(path)?)
}

/// Loads and validates an anomaly detector file.
pub fn load_anomaly_model(path: &Path) -> Result<AnomalyModel> {
    parse_anomaly(path, &read(path)?)
}

/// Loads both models from `dir`.
pub fn load_models(dir: &Path) -> Result<Models> {
    Ok(load_models_with_stamp(dir)?.0)
}

fn load_models_with_stamp(dir: &Path) -> Result<(Models, LoadedStamp)> {
    let (sp, ap) = (dir.join(SIGNAL_MODEL_FILE), dir.join(ANOMALY_MODEL_FILE));
    let (sb, ab) = (read(&sp)?, read(&ap)?);
    let models = Models {
        signal: parse_signal(&sp, &sb)?,
        anomaly: parse_anomaly(&ap, &ab)?,
    };
    Ok((models, stamp_of(&sb, &ab)))
}

fn stamp_of(signal: &[u8], anomaly: &[u8]) -> LoadedStamp {
    LoadedStamp {
        signal_sha256: Sha256::digest(signal).to_vec(),
        anomaly_sha256: Sha256::digest(anomaly).to_vec(),
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename, so
/// readers see the old or the new file, never a partial one.
fn write_atomically<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| file_error(path, format!("cannot serialize: {e}")))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, &json).map_err(|source| ScorerError::Io {
        context: "writing",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ScorerError::Io {
        context: "replacing",
        path: path.to_path_buf(),
        source,
    })
}

/// Saves a direction model to `path`.
pub fn save_signal_model(model: &SignalModel, path: &Path) -> Result<()> {
    let file = ModelFile {
        format: MODEL_FORMAT,
        model: SIGNAL_KIND.to_string(),
        version: model.version().to_string(),
        params: model.params().clone(),
        training: model.training().cloned(),
    };
    write_atomically(path, &file)
}

/// Saves an anomaly detector to `path`.
pub fn save_anomaly_model(model: &AnomalyModel, path: &Path) -> Result<()> {
    let file = ModelFile {
        format: MODEL_FORMAT,
        model: ANOMALY_KIND.to_string(),
        version: model.version().to_string(),
        params: model.params().clone(),
        training: model.training().cloned(),
    };
    write_atomically(path, &file)
}

/// Saves both models into `dir` (created if missing); returns the files written.
pub fn save_models(models: &Models, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| ScorerError::Io {
        context: "creating model directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let (sp, ap) = (dir.join(SIGNAL_MODEL_FILE), dir.join(ANOMALY_MODEL_FILE));
    save_signal_model(&models.signal, &sp)?;
    save_anomaly_model(&models.anomaly, &ap)?;
    Ok(vec![sp, ap])
}

impl ModelHandle {
    /// A handle serving the models in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let (models, stamp) = load_models_with_stamp(dir)?;
        let handle = Self::new(models);
        *handle.stamp.lock().unwrap_or_else(PoisonError::into_inner) = Some(stamp);
        Ok(handle)
    }

    /// Checks `dir` and swaps in its models if the files changed since they were last
    /// loaded. Returns the new versions when the models in force changed, `None` when the
    /// files are unchanged (or changed only outside the parameters, e.g. reformatted).
    ///
    /// The check hashes the contents of both files (a few kilobytes) rather than trusting
    /// modification times, whose granularity can hide a quick rewrite. On any error the
    /// previous models stay in force and the next call tries again; the runner should log
    /// the error (it names the file) and carry on. Called periodically by the runner every
    /// `reload_interval_secs`; it does blocking file I/O, so call it off async workers.
    pub fn reload_if_changed(&self, dir: &Path) -> Result<Option<ModelVersions>> {
        let (sp, ap) = (dir.join(SIGNAL_MODEL_FILE), dir.join(ANOMALY_MODEL_FILE));
        let (sb, ab) = (read(&sp)?, read(&ap)?);
        let stamp = stamp_of(&sb, &ab);
        let mut seen = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        let models = Models {
            signal: parse_signal(&sp, &sb)?,
            anomaly: parse_anomaly(&ap, &ab)?,
        };
        *seen = Some(stamp);
        if models.versions() == self.versions() {
            return Ok(None);
        }
        Ok(Some(self.replace(models)))
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use crate::inputs::SIGNAL_INPUTS;
    use crate::signal::{SIGNAL_ALGORITHM, SignalParams};
    use crate::standardize::Standardizer;

    /// Valid direction-model parameters with the given intercept.
    pub(crate) fn signal_params(intercept: f64) -> SignalParams {
        SignalParams {
            name: "logreg-direction".into(),
            algorithm: SIGNAL_ALGORITHM.into(),
            inputs: SIGNAL_INPUTS.iter().map(|s| s.to_string()).collect(),
            standardizer: Standardizer {
                mean: vec![0.0; 11],
                std: vec![1.0; 11],
            },
            coefficients: vec![0.1, -0.2, 0.3, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            intercept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::signal_params;
    use super::*;
    use crate::anomaly::tests::standard_normal_params;

    fn models(intercept: f64) -> Models {
        Models {
            signal: SignalModel::new(signal_params(intercept), Some(TrainingInfo::default()))
                .expect("valid"),
            anomaly: AnomalyModel::new(standard_normal_params(), None).expect("valid"),
        }
    }

    #[test]
    fn versions_survive_save_and_load_and_follow_coefficients() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = models(0.01);
        let written = save_models(&m, dir.path()).expect("saved");
        assert_eq!(written.len(), 2);
        let loaded = load_models(dir.path()).expect("loaded");
        assert_eq!(loaded.versions(), m.versions());
        assert_eq!(loaded, m);
        // Saving the loaded models again gives the same bytes (stable canonical form).
        let first = std::fs::read(dir.path().join(SIGNAL_MODEL_FILE)).expect("read");
        save_models(&loaded, dir.path()).expect("saved again");
        assert_eq!(
            std::fs::read(dir.path().join(SIGNAL_MODEL_FILE)).expect("read"),
            first
        );

        let mut p = signal_params(0.01);
        p.coefficients[2] += 1e-9;
        let changed = SignalModel::new(p, None).expect("valid");
        assert_ne!(changed.version(), m.signal.version());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = models(0.0);
        save_models(&m, dir.path()).expect("saved");
        let sp = dir.path().join(SIGNAL_MODEL_FILE);
        let ap = dir.path().join(ANOMALY_MODEL_FILE);
        let original = std::fs::read_to_string(&sp).expect("read");
        let expect_err = |what: &str, path: &Path, needle: &str| {
            let e = load_models(dir.path()).expect_err(what);
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{what}: {msg}");
            assert!(msg.contains(needle), "{what}: {msg}");
        };

        std::fs::write(&sp, "{ not json").expect("write");
        expect_err("malformed", &sp, "not a valid signal model file");

        std::fs::write(&sp, original.replace("\"rsi_14_centered\"", "\"rsi_14\"")).expect("write");
        expect_err("input list", &sp, "differ from this build");

        let tampered = original.replacen("\"intercept\": 0.0", "\"intercept\": 0.5", 1);
        assert_ne!(tampered, original);
        std::fs::write(&sp, tampered).expect("write");
        expect_err("hand edit", &sp, "does not match its parameters");

        std::fs::write(
            &sp,
            original.replacen("\"intercept\": 0.0", "\"intercept\": 1e999", 1),
        )
        .expect("write");
        expect_err("non-finite", &sp, "not a valid signal model file");

        std::fs::write(&sp, &original).expect("write");
        std::fs::copy(&sp, &ap).expect("copy");
        expect_err("swapped file", &ap, "expected \"anomaly\"");

        std::fs::remove_file(&ap).expect("remove");
        expect_err("missing", &ap, "reading model file");
    }

    #[test]
    fn reload_picks_up_new_files_only_when_they_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        save_models(&models(0.0), dir.path()).expect("saved");
        let handle = ModelHandle::load(dir.path()).expect("loaded");
        let before = handle.versions();
        assert_eq!(
            handle.reload_if_changed(dir.path()).expect("unchanged"),
            None
        );

        // A broken file keeps the old models in force.
        std::fs::write(dir.path().join(SIGNAL_MODEL_FILE), "{").expect("write");
        assert!(handle.reload_if_changed(dir.path()).is_err());
        assert_eq!(handle.versions(), before);

        let next = models(0.25);
        save_models(&next, dir.path()).expect("saved");
        let reloaded = handle.reload_if_changed(dir.path()).expect("reloaded");
        assert_eq!(reloaded, Some(next.versions()));
        assert_ne!(next.versions().signal, before.signal);
        assert_eq!(next.versions().anomaly, before.anomaly);
        assert_eq!(handle.versions(), next.versions());
        assert_eq!(
            handle.reload_if_changed(dir.path()).expect("unchanged"),
            None
        );
    }
}
