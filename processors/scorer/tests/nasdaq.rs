//! The scorer on real data: the committed default models (`models/` at the repository root)
//! load with this build and score the NASDAQ Composite daily file end to end through the
//! real features processor; retraining on that file gives the honest held-out figures the
//! docs quote (a next-day direction model on an index has essentially no skill).

use chrono::NaiveDate;
use std::path::{Path, PathBuf};
use tradestream_schemas::{AnyRecord, Processor, Record, Severity, SignalSide};
use tradestream_scorer::{
    ModelHandle, Scorer, ScorerConfig, TrainConfig, features_from_csv, load_models, train_from_csv,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nasdaq() -> PathBuf {
    let p = repo_root().join("../shared/data/nasdaq-daily.csv");
    assert!(
        p.exists(),
        "test data missing: {} (the shared data folder sits beside the checkout)",
        p.display()
    );
    p
}

#[test]
fn committed_models_score_the_nasdaq_file() {
    let models_dir = repo_root().join("models");
    let handle = ModelHandle::load(&models_dir).expect("committed models load with this build");
    let versions = handle.versions();
    let mut scorer = Scorer::new(handle, &ScorerConfig::default()).expect("default config");
    let (rows, skipped) = features_from_csv(&nasdaq(), "^IXIC").expect("features");
    assert_eq!((rows.len(), skipped), (5031, 0));

    let (mut signals, mut anomalies, mut first_signal) = (Vec::new(), Vec::new(), None);
    for (i, f) in rows.iter().enumerate() {
        for out in scorer
            .process(&AnyRecord::Features(f.clone()), f.event_time)
            .expect("scored")
        {
            out.validate().expect("valid output");
            match out {
                AnyRecord::Signal(s) => {
                    first_signal.get_or_insert(i);
                    assert_eq!(s.signal_id, format!("signal:{}", f.record_id));
                    assert_eq!(s.model_version, versions.signal);
                    assert_eq!(s.stop_loss.is_some(), s.side != SignalSide::Hold);
                    signals.push(s);
                }
                AnyRecord::Anomaly(a) => {
                    assert_eq!(a.anomaly_id, format!("anomaly:{}", f.record_id));
                    assert_eq!(a.detector_version, versions.anomaly);
                    anomalies.push(a);
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
    }
    let count = |side| signals.iter().filter(|s| s.side == side).count();
    eprintln!(
        "{} signals ({} BUY, {} SELL, {} HOLD), {} anomalies",
        signals.len(),
        count(SignalSide::Buy),
        count(SignalSide::Sell),
        count(SignalSide::Hold),
        anomalies.len()
    );
    // Signals start once every input has warmed up (sma_50 is the slowest) and then every
    // bar gets one, HOLD included.
    let first = first_signal.expect("signals");
    assert!((49..=60).contains(&first), "first signal at bar {first}");
    assert_eq!(signals.len(), rows.len() - first);
    // About 1% of bars are flagged; the famous days are among them.
    assert!(
        (20..=150).contains(&anomalies.len()),
        "{} anomalies",
        anomalies.len()
    );
    for (day, why) in [
        ((2000, 4, 14), "-9.7% day"),
        ((2001, 1, 3), "+14.2% day"),
        ((2008, 10, 13), "+11.8% day"),
    ] {
        let date = NaiveDate::from_ymd_opt(day.0, day.1, day.2).expect("date");
        let hit = anomalies.iter().find(|a| a.event_time.date_naive() == date);
        let hit = hit.unwrap_or_else(|| panic!("{date} ({why}) not flagged"));
        assert!(hit.severity >= Severity::Medium, "{date}: {hit:?}");
        assert!(hit.score.is_finite() && hit.key() == "^IXIC");
    }
}

#[test]
fn retraining_on_the_nasdaq_file_reports_honest_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report =
        train_from_csv(&nasdaq(), "^IXIC", dir.path(), &TrainConfig::default()).expect("trained");
    let s = &report.signal;
    assert_eq!(report.rows, 5031);
    assert!(s.test_rows > 1400 && s.train_rows > 3400, "{s:?}");
    // No real skill at predicting tomorrow's direction of an index: AUC near one half.
    assert!((0.4..0.6).contains(&s.auc), "AUC {}", s.auc);
    assert!((0.4..0.65).contains(&s.accuracy), "accuracy {}", s.accuracy);
    // Synthetic extreme bars are found, real bars rarely flagged.
    let a = &report.anomaly;
    assert!(a.injected >= 15, "{a:?}");
    assert!(a.recall >= 0.9, "{a:?}");
    assert!(a.clean_flag_rate <= 0.02, "{a:?}");
    let loaded = load_models(dir.path()).expect("written files load");
    assert_eq!(loaded.versions(), report.versions);
}
