//! Runner glue of the ingest processor: publishes a source's records to `market_data`, paced
//! or as fast as possible, and its refusals to `market_data.dlq` with the reason in headers.
//! Every record is acknowledged (acks=all) before `publish` returns.

use crate::csv_replay::RowError;
use chrono::{DateTime, Utc};
use futures_lite_free::collect_deliveries;
use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};
use tradestream_kafka::changelog::read_topic;
use tradestream_kafka::dlq::DeadLetterInfo;
use tradestream_kafka::rdkafka::Message;
use tradestream_kafka::rdkafka::producer::DeliveryFuture;
use tradestream_kafka::runner::enqueue;
use tradestream_kafka::{Kafka, KafkaError, Metrics};
use tradestream_schemas::{Codec, ErrorClass, MarketData, Record, SchemaError, Topic};

/// The ingest processor's error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Encoding failed (registry down or refused the schema).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// A source could not be read at all (names the file or setting).
    #[error("{0}")]
    Source(String),
}

impl IngestError {
    /// How the caller should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            IngestError::Kafka(e) => e.class(),
            IngestError::Schema(e) => e.class(),
            IngestError::Source(_) => ErrorClass::Fatal,
        }
    }
}

/// One item from a source: a record, or a refusal to dead-letter.
pub type SourceItem = Result<MarketData, RowError>;

/// What a source already has on `market_data` and `market_data.dlq`, so that a restarted
/// ingest publishes only the rest (see [`AlreadyPublished::remaining`]).
///
/// Why the topics and not a checkpoint of our own: a record carries its ingest time, so a
/// second copy would be a *different* record under the same id. Whatever reached the broker
/// before a crash is exactly what the topic holds, acknowledged or not, so reading the topic
/// is the one checkpoint that cannot lag behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlreadyPublished {
    ids: HashSet<String>,
    /// Ingest refusals on the dead-letter topic: (line, raw row).
    refusals: HashSet<(i64, Vec<u8>)>,
}

impl AlreadyPublished {
    /// Reads both topics for what `items` would publish. Only records keyed by one of their
    /// symbols are decoded (the key of a market-data record is its symbol), so other
    /// sources' data costs little.
    pub async fn read(
        kafka: &Kafka,
        codec: &Codec,
        items: &[SourceItem],
    ) -> Result<Self, IngestError> {
        let symbols: HashSet<&str> = items
            .iter()
            .filter_map(|i| i.as_ref().ok().map(|md| md.symbol.as_str()))
            .collect();
        let mut out = Self::default();
        for msg in read_topic(kafka, Topic::MarketData.name()).await? {
            let ours = msg
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .is_some_and(|k| symbols.contains(k));
            if !ours {
                continue;
            }
            // A record that does not decode is not one of ours to skip.
            if let Ok(md) = codec
                .decode::<MarketData>(msg.payload().unwrap_or_default())
                .await
            {
                out.ids.insert(md.record_id);
            }
        }
        for msg in read_topic(kafka, &Topic::MarketData.dlq()).await? {
            if msg.key() != Some(INGEST_KEY.as_bytes()) {
                continue;
            }
            if let Ok(dl) = codec
                .decode_dead_letter(msg.payload().unwrap_or_default())
                .await
                && dl.processor == INGEST_KEY
                && let Some(raw) = dl.payload
            {
                out.refusals.insert((dl.source_offset, raw));
            }
        }
        Ok(out)
    }

    /// The items of `items` not yet on the topics, in order, and how many were skipped.
    pub fn remaining(&self, items: Vec<SourceItem>) -> (Vec<SourceItem>, u64) {
        let before = items.len();
        let rest: Vec<SourceItem> = items
            .into_iter()
            .filter(|item| match item {
                Ok(md) => !self.ids.contains(&md.record_id),
                Err(row) => !self.refusals.contains(&(
                    i64::try_from(row.line).unwrap_or(-1),
                    row.raw.clone().into_bytes(),
                )),
            })
            .collect();
        let skipped = (before - rest.len()) as u64;
        (rest, skipped)
    }
}

/// Key of the dead letters ingest publishes.
const INGEST_KEY: &str = "ingest";

/// How fast to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// No waiting.
    AsFastAsPossible,
    /// Event time runs this many times faster than real time (1.0 = real time).
    Speedup(f64),
    /// A fixed rate.
    RecordsPerSecond(f64),
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Records published to `market_data`.
    pub published: u64,
    /// Refusals published to `market_data.dlq`.
    pub dead_lettered: u64,
}

/// Merges several sources into one stream ordered by event time (refusals stay where they
/// were read, ahead of later records).
pub fn merge_by_event_time(sources: Vec<Vec<SourceItem>>) -> Vec<SourceItem> {
    let mut all: Vec<(Option<DateTime<Utc>>, usize, SourceItem)> = Vec::new();
    let mut seq = 0usize;
    for source in sources {
        let mut last = None;
        for item in source {
            if let Ok(md) = &item {
                last = Some(md.event_time);
            }
            all.push((last, seq, item));
            seq += 1;
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    all.into_iter().map(|(_, _, item)| item).collect()
}

/// Numbers the market instants (steps) of a stream in publishing order: every run of bars
/// with one event time is a step, numbered from 1 without gaps, each bar told how many bars
/// its step has (`step`, `step_bars`). The trading core processes sequenced bars a step at a
/// time (see docs/operations.md), which is what makes its decisions independent of timing.
/// Call it on the whole source, before skipping what a previous run already published, so a
/// resumed ingest numbers the rest exactly as the first run did. Refusals take no step.
pub fn number_steps<'a>(bars: impl IntoIterator<Item = &'a mut MarketData>) {
    let mut steps: Vec<Vec<&'a mut MarketData>> = Vec::new();
    for bar in bars {
        match steps.last_mut() {
            Some(step) if step[0].event_time == bar.event_time => step.push(bar),
            _ => steps.push(vec![bar]),
        }
    }
    for (i, step) in steps.into_iter().enumerate() {
        let size = i32::try_from(step.len()).unwrap_or(i32::MAX);
        for bar in step {
            bar.step = i as i64 + 1;
            bar.step_bars = size;
        }
    }
}

/// [`number_steps`] over a source's items.
pub fn number_item_steps(items: &mut [SourceItem]) {
    number_steps(items.iter_mut().filter_map(|i| i.as_mut().ok()));
}

/// Publishes `items` in order; stops early (after acknowledging what was sent) when
/// `shutdown` resolves.
pub async fn publish(
    kafka: &Kafka,
    codec: &Codec,
    metrics: &Metrics,
    items: impl IntoIterator<Item = SourceItem>,
    pace: Pace,
    shutdown: impl Future<Output = ()>,
    mut progress: impl FnMut(PublishStats),
) -> Result<PublishStats, IngestError> {
    let producer = kafka.producer()?;
    let mut stats = PublishStats::default();
    let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(1024);
    let started = Instant::now();
    let mut first_event: Option<DateTime<Utc>> = None;
    let dlq = Topic::MarketData.dlq();
    tokio::pin!(shutdown);
    for (i, item) in items.into_iter().enumerate() {
        if futures_lite_free::is_ready(&mut shutdown).await {
            break;
        }
        match item {
            Ok(md) => {
                if let Some(wait) = delay(pace, i, &md, &mut first_event, started) {
                    tokio::time::sleep(wait).await;
                }
                let bytes = codec.encode(&md).await?;
                pending.push(
                    enqueue(&producer, Topic::MarketData.name(), md.key(), &bytes, None).await?,
                );
                stats.published += 1;
            }
            Err(row) => {
                let info = DeadLetterInfo {
                    topic: Topic::MarketData.name().into(),
                    partition: -1,
                    offset: i64::try_from(row.line).unwrap_or(-1),
                    error_class: ErrorClass::DeadLetter.as_str().into(),
                    message: row.to_string(),
                    processor: "ingest".into(),
                };
                let envelope = info.envelope(None, Some(row.raw.clone().into_bytes()), Utc::now());
                let bytes = codec.encode_dead_letter(&envelope).await?;
                pending.push(
                    enqueue(&producer, &dlq, INGEST_KEY, &bytes, Some(info.headers())).await?,
                );
                tracing::warn!(line = row.line, reason = %row.reason, "market data refused");
                stats.dead_lettered += 1;
            }
        }
        if pending.len() >= 1024 {
            collect_deliveries(std::mem::take(&mut pending)).await?;
            record(metrics, &mut stats, &mut progress);
        }
    }
    collect_deliveries(pending).await?;
    record(metrics, &mut stats, &mut progress);
    Ok(stats)
}

fn record(metrics: &Metrics, stats: &mut PublishStats, progress: &mut impl FnMut(PublishStats)) {
    // Counters are set from the running totals once per acknowledged chunk, not per record.
    let out = metrics
        .records_out
        .with_label_values(&["ingest", Topic::MarketData.name()]);
    out.inc_by(stats.published.saturating_sub(out.get()));
    let dead = metrics.dead_lettered.with_label_values(&[
        "ingest",
        Topic::MarketData.name(),
        "dead_letter",
    ]);
    dead.inc_by(stats.dead_lettered.saturating_sub(dead.get()));
    progress(*stats);
}

fn delay(
    pace: Pace,
    index: usize,
    md: &MarketData,
    first: &mut Option<DateTime<Utc>>,
    started: Instant,
) -> Option<Duration> {
    let due = match pace {
        Pace::AsFastAsPossible => return None,
        Pace::RecordsPerSecond(rate) if rate > 0.0 => Duration::from_secs_f64(index as f64 / rate),
        Pace::Speedup(speedup) if speedup > 0.0 => {
            let first = *first.get_or_insert(md.event_time);
            let event_offset = (md.event_time - first).to_std().unwrap_or_default();
            event_offset.div_f64(speedup)
        }
        _ => return None,
    };
    due.checked_sub(started.elapsed())
}

/// Small future helpers kept local so the crate needs no extra dependency.
mod futures_lite_free {
    use super::{DeliveryFuture, IngestError, KafkaError};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Whether `fut` has completed, without waiting.
    pub(super) async fn is_ready<F: Future<Output = ()>>(fut: &mut Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx: &mut Context<'_>| Poll::Ready(fut.as_mut().poll(cx).is_ready()))
            .await
    }

    /// Waits for every delivery; the first failure is the error.
    pub(super) async fn collect_deliveries(
        pending: Vec<DeliveryFuture>,
    ) -> Result<(), IngestError> {
        for d in pending {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(KafkaError::client("delivering market data", e).into());
                }
                Err(_) => return Err(KafkaError::Mock("producer dropped a delivery".into()).into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_source_skips_exactly_what_the_topics_hold() {
        let items = vec![
            bar("AAA", 1),
            Err(RowError {
                line: 3,
                reason: "high < low".into(),
                raw: "x,y".into(),
            }),
            bar("AAA", 2),
            bar("BBB", 1),
            Err(RowError {
                line: 9,
                reason: "NaN".into(),
                raw: "z".into(),
            }),
        ];
        let id = |i: usize| match &items[i] {
            Ok(md) => md.record_id.clone(),
            Err(_) => unreachable!(),
        };
        let published = AlreadyPublished {
            ids: [id(0), id(3)].into_iter().collect(),
            // Same line, other row: another file's refusal, not this one.
            refusals: [(3, b"x,y".to_vec()), (9, b"other".to_vec())]
                .into_iter()
                .collect(),
        };
        let (rest, skipped) = published.remaining(items.clone());
        assert_eq!(skipped, 3);
        assert_eq!(rest, vec![items[2].clone(), items[4].clone()]);
        assert_eq!(
            AlreadyPublished::default().remaining(items.clone()).0,
            items
        );
    }

    fn bar(symbol: &str, day: u32) -> SourceItem {
        let mut md = tradestream_schemas::samples::market_data();
        md.symbol = tradestream_schemas::Symbol::new(symbol).unwrap_or_else(|_| unreachable!());
        md.event_time = chrono::TimeZone::with_ymd_and_hms(&Utc, 2020, 1, day, 0, 0, 0)
            .single()
            .unwrap_or_default();
        md.record_id = format!("test:{symbol}:{day}");
        Ok(md)
    }

    #[test]
    fn steps_group_bars_of_one_instant_and_skip_refusals() {
        let mut items = vec![bar("A", 1), bar("B", 1), bar("A", 2), bar("B", 3)];
        items.insert(
            2,
            Err(RowError {
                line: 9,
                raw: "x".into(),
                reason: "bad".into(),
            }),
        );
        number_item_steps(&mut items);
        let steps: Vec<(i64, i32)> = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|m| (m.step, m.step_bars))
            .collect();
        assert_eq!(steps, vec![(1, 2), (1, 2), (2, 1), (3, 1)]);
    }

    #[test]
    fn merge_orders_by_event_time_and_keeps_refusals() {
        let a = vec![bar("A", 1), bar("A", 3)];
        let b = vec![
            bar("B", 2),
            Err(RowError {
                line: 3,
                reason: "bad".into(),
                raw: String::new(),
            }),
            bar("B", 4),
        ];
        let merged = merge_by_event_time(vec![a, b]);
        let days: Vec<String> = merged
            .iter()
            .map(|i| match i {
                Ok(md) => format!("{}{}", md.symbol, md.event_time.format("%d")),
                Err(_) => "err".into(),
            })
            .collect();
        assert_eq!(days, ["A01", "B02", "err", "A03", "B04"]);
    }

    #[test]
    fn pacing() {
        let started = Instant::now();
        let md = match bar("A", 1) {
            Ok(m) => m,
            Err(_) => unreachable!(),
        };
        assert_eq!(
            delay(Pace::AsFastAsPossible, 10, &md, &mut None, started),
            None
        );
        let d =
            delay(Pace::RecordsPerSecond(10.0), 10, &md, &mut None, started).unwrap_or_default();
        assert!(
            d > Duration::from_millis(900) && d <= Duration::from_secs(1),
            "{d:?}"
        );
    }
}
