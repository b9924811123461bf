//! The scorer's pure core: one `features` record in, at most one trading signal and one
//! anomaly out. No I/O and no clock: models come from the shared [`ModelHandle`] (a
//! snapshot per record, so a hot reload applies from the next record on) and ids derive
//! from the input record, so replays reproduce outputs exactly.

use crate::config::ScorerConfig;
use crate::error::Result;
use crate::inputs::{anomaly_inputs, signal_inputs};
use crate::model::{ModelHandle, Models};
use crate::signal::{bracket, decide};
use chrono::{DateTime, Utc};
use tradestream_schemas::{
    Anomaly, AnyRecord, Features, ProcessError, Processor, Record, SignalSide, TaskScope, Topic,
    TradingSignal, Trend,
};

/// Processor name: consumer group suffix, metric label, DLQ header.
pub const PROCESSOR_NAME: &str = "scorer";
/// Prefix of signal ids: `signal:<features record id>`.
pub const SIGNAL_ID_PREFIX: &str = "signal:";
/// Prefix of anomaly ids: `anomaly:<features record id>`.
pub const ANOMALY_ID_PREFIX: &str = "anomaly:";

/// What the scorer made of one features record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scored {
    /// The signal (BUY, SELL or HOLD); `None` while the signal inputs are warming up.
    pub signal: Option<TradingSignal>,
    /// The anomaly, when the bar scored above the LOW threshold.
    pub anomaly: Option<Anomaly>,
}

/// The scorer core.
#[derive(Debug, Clone)]
pub struct Scorer {
    models: ModelHandle,
    buy_threshold: f64,
    sell_threshold: f64,
    stop_loss_atr: f64,
    take_profit_atr: f64,
}

fn trend_name(t: Trend) -> &'static str {
    match t {
        Trend::Neutral => "NEUTRAL",
        Trend::Bullish => "BULLISH",
        Trend::Bearish => "BEARISH",
    }
}

impl Scorer {
    /// A scorer applying the models behind `models` with `config`'s thresholds.
    pub fn new(models: ModelHandle, config: &ScorerConfig) -> Result<Self> {
        config.checked()?;
        Ok(Self {
            models,
            buy_threshold: config.buy_threshold,
            sell_threshold: config.sell_threshold,
            stop_loss_atr: config.stop_loss_atr,
            take_profit_atr: config.take_profit_atr,
        })
    }

    /// The model handle (shared with the reload loop).
    pub fn models(&self) -> &ModelHandle {
        &self.models
    }

    /// Scores one features record with the models in force now.
    pub fn score(&self, f: &Features) -> Scored {
        let models = self.models.current();
        Scored {
            signal: self.signal(&models, f),
            anomaly: Self::anomaly(&models, f),
        }
    }

    fn signal(&self, models: &Models, f: &Features) -> Option<TradingSignal> {
        let p_up = signal_inputs(f)
            .map(|row| models.signal.p_up(&row))
            .filter(|p| p.is_finite());
        let (side, confidence, (stop_loss, take_profit), reason) = match p_up {
            Some(p_up) => {
                let (side, confidence) = decide(p_up, self.buy_threshold, self.sell_threshold);
                let atr = f.values.get("atr_14").copied();
                let levels = bracket(side, f.close, atr, self.stop_loss_atr, self.take_profit_atr);
                let mut reason = format!("p_up={p_up:.3}");
                if let Some(rsi) = f.values.get("rsi_14") {
                    reason.push_str(&format!(" rsi_14={rsi:.1}"));
                }
                reason.push_str(&format!(" trend={}", trend_name(f.trend)));
                (side, confidence, levels, reason)
            }
            // A sequenced bar always gets a signal, HOLD while the model has no input: the
            // trading core processes an instant once it holds one signal per bar of the instant.
            None if f.step > 0 => (
                SignalSide::Hold,
                0.0,
                (None, None),
                "warming up: the model's inputs are not all defined yet".to_string(),
            ),
            None => return None,
        };
        Some(TradingSignal {
            signal_id: format!("{SIGNAL_ID_PREFIX}{}", f.record_id),
            source_id: f.record_id.clone(),
            symbol: f.symbol.clone(),
            event_time: f.event_time,
            side,
            confidence,
            model_name: models.signal.name().to_string(),
            model_version: models.signal.version().to_string(),
            reference_price: f.close,
            stop_loss,
            take_profit,
            reason,
            step: f.step,
        })
    }

    fn anomaly(models: &Models, f: &Features) -> Option<Anomaly> {
        let row = anomaly_inputs(f)?;
        let a = models.anomaly.assess(&row);
        let severity = a.severity.filter(|_| a.score.is_finite())?;
        Some(Anomaly {
            anomaly_id: format!("{ANOMALY_ID_PREFIX}{}", f.record_id),
            source_id: f.record_id.clone(),
            symbol: f.symbol.clone(),
            event_time: f.event_time,
            kind: a.kind.to_string(),
            score: a.score,
            severity,
            detector_version: models.anomaly.version().to_string(),
        })
    }
}

impl Processor for Scorer {
    fn name(&self) -> &'static str {
        PROCESSOR_NAME
    }

    fn inputs(&self) -> &'static [Topic] {
        &[Topic::Features]
    }

    /// Outputs the signal first, then the anomaly. A record that is not a valid `Features`
    /// is dead-lettered; `now` is unused (every output time is the bar's event time).
    fn process(
        &mut self,
        input: &AnyRecord,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError> {
        let AnyRecord::Features(f) = input else {
            return Err(ProcessError::dead_letter(format!(
                "scorer reads {} records only, got one from {}",
                Features::NAME,
                input.topic()
            )));
        };
        f.validate()
            .map_err(|e| ProcessError::dead_letter(e.to_string()))?;
        let Scored { signal, anomaly } = self.score(f);
        Ok(signal
            .map(AnyRecord::from)
            .into_iter()
            .chain(anomaly.map(AnyRecord::from))
            .collect())
    }

    /// Each record is scored on its own (the model is configuration, not state), so copies
    /// can split the input by partition and have nothing to snapshot: the default
    /// `snapshot` (None) applies, and a redelivered `features` record is re-scored into the
    /// same signal ids, which the router drops as already known.
    fn scope(&self) -> TaskScope {
        TaskScope::PerPartition
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::AnomalyModel;
    use crate::anomaly::tests::standard_normal_params;
    use crate::inputs::tests::warm_features;
    use crate::model::TrainingInfo;
    use crate::model_store::{save_models, tests_support::signal_params};
    use crate::signal::SignalModel;
    use rust_decimal_macros::dec;
    use tradestream_schemas::{Severity, SignalSide, samples};

    fn models(intercept: f64) -> Models {
        Models {
            signal: SignalModel::new(signal_params(intercept), Some(TrainingInfo::default()))
                .expect("valid"),
            anomaly: AnomalyModel::new(standard_normal_params(), None).expect("valid"),
        }
    }

    fn scorer(intercept: f64) -> Scorer {
        Scorer::new(
            ModelHandle::new(models(intercept)),
            &ScorerConfig::default(),
        )
        .expect("valid config")
    }

    #[test]
    fn reads_what_the_pipeline_watches_it_read() {
        assert_eq!(
            tradestream_schemas::topics::data_inputs(scorer(0.0).inputs()),
            tradestream_schemas::topics::stage_inputs("scorer").expect("listed")
        );
    }

    fn zero_coefficients(intercept: f64) -> Models {
        let mut p = signal_params(intercept);
        p.coefficients = vec![0.0; p.coefficients.len()];
        Models {
            signal: SignalModel::new(p, None).expect("valid"),
            anomaly: AnomalyModel::new(standard_normal_params(), None).expect("valid"),
        }
    }

    #[test]
    fn buy_signal_carries_ids_versions_levels_and_reason() {
        // p_up = σ(1) ≈ 0.731 regardless of inputs.
        let m = zero_coefficients(1.0);
        let version = m.signal.version().to_string();
        let mut s = Scorer::new(ModelHandle::new(m), &ScorerConfig::default()).expect("valid");
        let f = warm_features("100", &[("atr_14", 1.5), ("rsi_14", 41.24)], Trend::Bullish);
        let out = s
            .process(&AnyRecord::Features(f.clone()), f.event_time)
            .expect("processed");
        let [AnyRecord::Signal(sig)] = out.as_slice() else {
            panic!("one signal expected, got {out:?}")
        };
        assert_eq!(sig.signal_id, format!("signal:{}", f.record_id));
        assert_eq!(sig.source_id, f.record_id);
        assert_eq!(sig.side, SignalSide::Buy);
        assert!((sig.confidence - 0.731_058_578_630_004_9).abs() < 1e-12);
        assert_eq!(sig.model_name, "logreg-direction");
        assert_eq!(sig.model_version, version);
        assert_eq!(sig.reference_price, dec!(100));
        assert_eq!(
            (sig.stop_loss, sig.take_profit),
            (Some(dec!(97)), Some(dec!(104.5)))
        );
        assert_eq!(sig.reason, "p_up=0.731 rsi_14=41.2 trend=BULLISH");
        assert_eq!(sig.validate(), Ok(()));
    }

    #[test]
    fn a_sequenced_bar_always_gets_a_signal_hold_while_warming_up() {
        let mut s = scorer(0.0);
        let mut cold = samples::features();
        cold.values = Default::default();
        let out = s
            .process(&AnyRecord::Features(cold.clone()), cold.event_time)
            .expect("processed");
        assert!(out.is_empty(), "unsequenced: no signal without inputs");
        cold.step = 7;
        let out = s
            .process(&AnyRecord::Features(cold.clone()), cold.event_time)
            .expect("processed");
        let [AnyRecord::Signal(sig)] = out.as_slice() else {
            panic!("one signal expected, got {out:?}")
        };
        assert_eq!(
            (sig.side, sig.confidence, sig.step),
            (SignalSide::Hold, 0.0, 7)
        );
        assert_eq!(sig.signal_id, format!("signal:{}", cold.record_id));
        assert_eq!(sig.validate(), Ok(()));
        let mut warm = warm_features("100", &[("atr_14", 1.5)], Trend::Bullish);
        warm.step = 8;
        let out = s
            .process(&AnyRecord::Features(warm.clone()), warm.event_time)
            .expect("processed");
        assert!(
            matches!(out.as_slice(), [AnyRecord::Signal(sig), ..] if sig.step == 8),
            "a warm signal carries its step: {out:?}"
        );
    }

    #[test]
    fn sell_and_hold_signals() {
        let s = Scorer::new(
            ModelHandle::new(zero_coefficients(-1.0)),
            &ScorerConfig::default(),
        )
        .expect("valid");
        let f = warm_features("100", &[("atr_14", 1.5)], Trend::Bearish);
        let sig = s.score(&f).signal.expect("signal");
        assert_eq!(sig.side, SignalSide::Sell);
        assert!((sig.confidence - 0.731_058_578_630_004_9).abs() < 1e-12);
        assert_eq!(
            (sig.stop_loss, sig.take_profit),
            (Some(dec!(103)), Some(dec!(95.5)))
        );

        let s = Scorer::new(
            ModelHandle::new(zero_coefficients(0.1)),
            &ScorerConfig::default(),
        )
        .expect("valid");
        let sig = s.score(&f).signal.expect("HOLD signals are published");
        assert_eq!(sig.side, SignalSide::Hold);
        assert!((sig.confidence - 0.524_979_187_478_939_7).abs() < 1e-12);
        assert_eq!((sig.stop_loss, sig.take_profit), (None, None));
    }

    #[test]
    fn warming_up_records_emit_nothing() {
        let mut s = scorer(0.0);
        let f = samples::features(); // sma_20 and rsi_14 only
        assert_eq!(
            s.process(&AnyRecord::Features(f.clone()), f.event_time)
                .expect("ok"),
            vec![]
        );
    }

    #[test]
    fn extreme_bars_also_raise_an_anomaly() {
        let mut s = scorer(0.0);
        // return_1 = 0.09 → z = 9 under the test detector: score ≈ 43, above CRITICAL (30).
        let f = warm_features(
            "100",
            &[
                ("return_1", 0.09),
                ("range_pct", 0.02),
                ("zscore_volume_20", 0.0),
            ],
            Trend::Neutral,
        );
        let out = s
            .process(&AnyRecord::Features(f.clone()), f.event_time)
            .expect("processed");
        assert_eq!(out.len(), 2);
        let AnyRecord::Anomaly(a) = &out[1] else {
            panic!("anomaly second, got {out:?}")
        };
        assert_eq!(a.anomaly_id, format!("anomaly:{}", f.record_id));
        assert_eq!(
            (a.kind.as_str(), a.severity),
            ("RETURN", Severity::Critical)
        );
        assert_eq!(a.detector_version, s.models().versions().anomaly);
        let normal = warm_features(
            "100",
            &[
                ("return_1", 0.001),
                ("range_pct", 0.021),
                ("zscore_volume_20", 0.2),
            ],
            Trend::Neutral,
        );
        assert!(s.score(&normal).anomaly.is_none());
    }

    #[test]
    fn bad_input_is_dead_lettered() {
        let mut s = scorer(0.0);
        let e = s.process(
            &AnyRecord::MarketData(samples::market_data()),
            samples::market_data().event_time,
        );
        assert_eq!(
            e.map_err(|e| e.class),
            Err(tradestream_schemas::ErrorClass::DeadLetter)
        );
        let mut f = warm_features("100", &[], Trend::Neutral);
        f.values.insert("rsi_14", f64::NAN);
        assert!(
            s.process(&AnyRecord::Features(f), samples::market_data().event_time)
                .is_err()
        );
        assert_eq!(s.name(), "scorer");
        assert_eq!(s.inputs(), &[Topic::Features]);
    }

    #[test]
    fn stateless_per_partition() {
        let mut s = scorer(0.0);
        assert_eq!(s.scope(), TaskScope::PerPartition);
        assert_eq!(s.snapshot(), Ok(None));
        let f = warm_features("100", &[], Trend::Neutral);
        let first = s.process(&AnyRecord::Features(f.clone()), f.event_time);
        // Scoring a record again gives the same records: nothing carried over.
        assert_eq!(
            s.process(&AnyRecord::Features(f.clone()), f.event_time),
            first
        );
        assert!(s.restore(&[1]).is_err());
    }

    #[test]
    fn invalid_config_is_refused() {
        let cfg = ScorerConfig {
            buy_threshold: 0.3,
            ..ScorerConfig::default()
        };
        assert!(Scorer::new(ModelHandle::new(models(0.0)), &cfg).is_err());
    }

    #[test]
    fn hot_reload_changes_the_version_on_the_next_signal() {
        let dir = tempfile::tempdir().expect("tempdir");
        save_models(&zero_coefficients(1.0), dir.path()).expect("saved");
        let handle = ModelHandle::load(dir.path()).expect("loaded");
        let mut s = Scorer::new(handle.clone(), &ScorerConfig::default()).expect("valid");
        let f = warm_features("100", &[], Trend::Neutral);
        let first = s.score(&f).signal.expect("signal");
        assert_eq!(first.side, SignalSide::Buy);

        let next = zero_coefficients(-1.0);
        save_models(&next, dir.path()).expect("saved");
        let versions = handle
            .reload_if_changed(dir.path())
            .expect("reload")
            .expect("changed");
        assert_eq!(versions.signal, next.signal.version());

        let out = s
            .process(&AnyRecord::Features(f.clone()), f.event_time)
            .expect("processed");
        let Some(AnyRecord::Signal(second)) = out.first() else {
            panic!("signal expected")
        };
        assert_eq!(second.model_version, next.signal.version());
        assert_ne!(second.model_version, first.model_version);
        assert_eq!(second.side, SignalSide::Sell);
    }
}
