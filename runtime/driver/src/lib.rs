//! The in-process driver: sources → features → scorer → trading core in one process, with no
//! Kafka, Postgres or registry. It runs exactly the cores the Kafka runner runs
//! ([`tradestream_schemas::Processor`] implementations, fed the same records), so what it
//! decides is what the live pipeline decides on the same bars (the `parity` end-to-end test
//! checks orders, fills and books against a Kafka run). The backtester is built on it.
//!
//! Each bar goes to features, every features record to the scorer, and the bar and its
//! signals to the trading core, in that order; the trading core's instant barrier then sees
//! each instant complete as soon as its last bar is scored. A record a core refuses with a
//! dead-letter error is noted in [`Run::dead_letters`] (where the Kafka runner would send it
//! to `<topic>.dlq`) and the run goes on; any other error stops the run.

use tradestream_features::FeaturesProcessor;
use tradestream_schemas::{
    AnyRecord, ErrorClass, Fill, MarketData, Order, ProcessError, Processor, Valuation,
};
use tradestream_scorer::Scorer;
use tradestream_trading::TradingCore;

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriverError {
    /// A core failed in a way that is not one bad record (corrupt state, configuration).
    #[error("{processor} failed on {record}: {message}")]
    Core {
        /// The core's name.
        processor: &'static str,
        /// The input's id.
        record: String,
        /// What it said.
        message: String,
    },
}

impl DriverError {
    /// How a caller should react: every driver error ends the run.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Fatal
    }
}

/// A record a core refused, as the Kafka runner would dead-letter it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The core that refused it.
    pub processor: &'static str,
    /// The record's id.
    pub record: String,
    /// Why.
    pub reason: String,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Bars fed.
    pub bars: u64,
    /// Features records.
    pub features: u64,
    /// Trading signals (HOLD included).
    pub signals: u64,
    /// Anomalies.
    pub anomalies: u64,
    /// Every order event, in publishing order.
    pub orders: Vec<Order>,
    /// Every fill, in publishing order.
    pub fills: Vec<Fill>,
    /// Every valuation (each account's value at the end of each instant), in publishing
    /// order: the equity curve.
    pub valuations: Vec<Valuation>,
    /// Records refused.
    pub dead_letters: Vec<DeadLetter>,
}

/// The three cores of a run.
#[derive(Debug)]
pub struct Driver {
    features: FeaturesProcessor,
    scorer: Scorer,
    trading: TradingCore,
}

/// Feeds one record to one core; dead letters are noted, anything else stops the run.
fn feed<P: Processor>(
    core: &mut P,
    input: &AnyRecord,
    dead_letters: &mut Vec<DeadLetter>,
) -> Result<Vec<AnyRecord>, DriverError> {
    // Cores stamp outputs with the processing time; in a replay that is the record's own time.
    match core.process(input, input.event_time()) {
        Ok(out) => Ok(out),
        Err(ProcessError {
            class: ErrorClass::DeadLetter,
            message,
        }) => {
            dead_letters.push(DeadLetter {
                processor: core.name(),
                record: input.id().to_string(),
                reason: message,
            });
            Ok(Vec::new())
        }
        Err(e) => Err(DriverError::Core {
            processor: core.name(),
            record: input.id().to_string(),
            message: e.message,
        }),
    }
}

impl Driver {
    /// A driver over fresh cores (each built from the same configuration the Kafka runner's
    /// would be).
    pub fn new(features: FeaturesProcessor, scorer: Scorer, trading: TradingCore) -> Self {
        Self {
            features,
            scorer,
            trading,
        }
    }

    /// The trading core, for its books after a run.
    pub fn trading(&self) -> &TradingCore {
        &self.trading
    }

    /// Feeds one bar through every core, adding what they published to `run`.
    pub fn push(&mut self, bar: MarketData, run: &mut Run) -> Result<(), DriverError> {
        run.bars += 1;
        let bar = AnyRecord::MarketData(bar);
        let features = feed(&mut self.features, &bar, &mut run.dead_letters)?;
        let mut signals = Vec::new();
        for f in &features {
            run.features += 1;
            for r in feed(&mut self.scorer, f, &mut run.dead_letters)? {
                match r {
                    AnyRecord::Signal(_) => {
                        run.signals += 1;
                        signals.push(r);
                    }
                    AnyRecord::Anomaly(_) => run.anomalies += 1,
                    _ => {}
                }
            }
        }
        for input in std::iter::once(&bar).chain(&signals) {
            for r in feed(&mut self.trading, input, &mut run.dead_letters)? {
                match r {
                    AnyRecord::Order(o) => run.orders.push(o),
                    AnyRecord::Fill(f) => run.fills.push(f),
                    AnyRecord::Valuation(v) => run.valuations.push(v),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Feeds every bar, in order.
    pub fn run(&mut self, bars: impl IntoIterator<Item = MarketData>) -> Result<Run, DriverError> {
        let mut run = Run::default();
        for bar in bars {
            self.push(bar, &mut run)?;
        }
        Ok(run)
    }
}
