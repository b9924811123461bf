//! The state changelog: how a stateful processor survives SIGKILLs and rebalances.
//!
//! Every stateful task (one per input partition for cores keyed by symbol, one for the whole
//! input for cores whose state spans partitions) writes to `<group>.changelog`:
//!
//! - **snapshots** of its state together with the input positions they correspond to,
//!   LZ4-compressed (state is mostly ids, times and prices that repeat their prefixes; the
//!   router's shrinks about fivefold, which keeps it well inside the embedded mock's
//!   per-partition retention and cuts the time a batch waits for it) and split into parts small enough for
//!   any broker's message size limit;
//! - for [`TaskScope::Single`] tasks, a **write-ahead entry per batch** naming the input
//!   records of the batch in the order they were processed and the processing time. It is
//!   acknowledged before the batch's outputs are produced, so a restarted task can replay the
//!   exact interleaving it already published decisions for, instead of re-deciding them with
//!   a different one (the router's buying power depends on whether a fill came before a
//!   signal).
//!
//! Recovery restores the newest complete snapshot into a fresh core and replays the batches
//! past its positions. A single task's snapshot is encoded beside its loop and logged a few
//! batches after the moment it was taken, so those are chosen by input offset, not by where
//! they stand in the log relative to the snapshot. The changelog is written with the same
//! acknowledgement discipline as every output, so it works on any broker, the librdkafka mock
//! included (no transactions needed).
//!
//! [`TaskScope::Single`]: tradestream_schemas::TaskScope::Single

use crate::client::Kafka;
use crate::error::KafkaError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changelog format version; a record of another version is refused rather than misread.
const FORMAT: u8 = 1;

/// [`Body::SnapshotPart::compression`] of LZ4-compressed state.
const LZ4: &str = "lz4";

/// Largest snapshot part: well under every broker's default `message.max.bytes` (1 MB).
pub const PART_BYTES: usize = 512 * 1024;

/// The changelog topic of a consumer group.
pub fn changelog_topic(group_id: &str) -> String {
    format!("{group_id}.changelog")
}

/// An input partition: (topic, partition).
pub type TopicPartition = (String, i32);

/// Consecutive input records of one partition, processed one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Input topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub first: i64,
    /// Number of records (offsets `first..first + count`).
    pub count: u32,
}

/// One changelog record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// [`FORMAT`].
    pub format: u8,
    /// The task: `all` or `<topic>/<partition>`.
    pub task: String,
    /// What it says.
    pub body: Body,
}

/// What a changelog record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// The input of one batch, in processing order, with the time it was processed at.
    Batch {
        /// Processing time (µs since the epoch) the core was given.
        now_micros: i64,
        /// Input records in order.
        runs: Vec<Run>,
    },
    /// Part `index` of `count` of snapshot `id`.
    SnapshotPart {
        /// Snapshot id (unique within the task's writer; parts of one snapshot share it).
        id: String,
        /// Part number.
        index: u32,
        /// Parts in the snapshot.
        count: u32,
        /// Next input offset per partition when the snapshot was taken (first part only).
        positions: Vec<(String, i32, i64)>,
        /// This part of the state bytes (compressed as `compression` says).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// How the state bytes are compressed: `lz4` (size-prepended LZ4 block), or nothing
        /// (snapshots written before compression, still read).
        #[serde(default)]
        compression: Option<String>,
    },
}

impl Entry {
    /// Encodes for the topic.
    pub fn encode(&self) -> Result<Vec<u8>, KafkaError> {
        rmp_serde::to_vec_named(self)
            .map_err(|e| KafkaError::Changelog(format!("encoding a changelog entry: {e}")))
    }

    /// Decodes a changelog record.
    pub fn decode(bytes: &[u8]) -> Result<Self, KafkaError> {
        let entry: Entry = rmp_serde::from_slice(bytes)
            .map_err(|e| KafkaError::Changelog(format!("undecodable changelog entry: {e}")))?;
        if entry.format != FORMAT {
            return Err(KafkaError::Changelog(format!(
                "changelog entry of format {} (this build reads {FORMAT})",
                entry.format
            )));
        }
        Ok(entry)
    }

    /// The entries of one snapshot: state compressed and split into parts, positions on the
    /// first.
    pub fn snapshot(
        task: &str,
        id: String,
        state: &[u8],
        positions: Vec<(String, i32, i64)>,
    ) -> Vec<Entry> {
        let compressed = lz4_flex::block::compress_prepend_size(state);
        let state = compressed.as_slice();
        let chunks: Vec<&[u8]> = if state.is_empty() {
            vec![&[][..]]
        } else {
            state.chunks(PART_BYTES).collect()
        };
        let count = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| Entry {
                format: FORMAT,
                task: task.to_string(),
                body: Body::SnapshotPart {
                    id: id.clone(),
                    index: i as u32,
                    count,
                    positions: if i == 0 {
                        positions.clone()
                    } else {
                        Vec::new()
                    },
                    bytes: c.to_vec(),
                    compression: Some(LZ4.to_string()),
                },
            })
            .collect()
    }

    /// State bytes this entry carries (compressed; 0 for a batch entry).
    pub fn stored_bytes(&self) -> usize {
        match &self.body {
            Body::SnapshotPart { bytes, .. } => bytes.len(),
            Body::Batch { .. } => 0,
        }
    }

    /// A write-ahead entry for a batch.
    pub fn batch(task: &str, now_micros: i64, runs: Vec<Run>) -> Entry {
        Entry {
            format: FORMAT,
            task: task.to_string(),
            body: Body::Batch { now_micros, runs },
        }
    }
}

/// Runs of `records` (topic, partition, offset) in order, merging consecutive offsets.
pub fn runs_of<'a>(records: impl IntoIterator<Item = (&'a str, i32, i64)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (topic, partition, offset) in records {
        if let Some(last) = runs.last_mut()
            && last.topic == topic
            && last.partition == partition
            && last.first + i64::from(last.count) == offset
        {
            last.count += 1;
            continue;
        }
        runs.push(Run {
            topic: topic.to_string(),
            partition,
            first: offset,
            count: 1,
        });
    }
    runs
}

/// Next input offset per partition: (topic, partition, offset).
pub type Positions = Vec<(String, i32, i64)>;

/// A snapshot being reassembled: part count, positions, compression, parts received.
type PartialSnapshot = (u32, Positions, Option<String>, BTreeMap<u32, Vec<u8>>);

/// A task's history as read back from the changelog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskLog {
    /// The newest complete snapshot: state bytes and the positions it was taken at.
    pub snapshot: Option<(Vec<u8>, Positions)>,
    /// Batches past that snapshot's positions, in log order: (processing time µs, runs).
    pub batches: Vec<(i64, Vec<Run>)>,
    /// Whether the changelog held any record of the task at all.
    pub seen: bool,
}

/// Reads `task`'s records from the changelog topic (from the beginning to the current end).
///
/// With `newest_position` (per-partition tasks) the snapshot chosen is the one furthest
/// along; otherwise it is the last written, and batches are those logged after it.
pub async fn read_task(
    kafka: &Kafka,
    topic: &str,
    task: &str,
    newest_position: bool,
) -> Result<TaskLog, KafkaError> {
    let entries = read_all(kafka, topic, Some(task.to_string())).await?;
    assemble(entries, newest_position)
}

/// Folds a task's entries into its newest snapshot (decompressed) and the batches past it;
/// fails on a snapshot whose state does not decompress.
pub fn assemble(entries: Vec<Entry>, newest_position: bool) -> Result<TaskLog, KafkaError> {
    let mut log = TaskLog {
        seen: !entries.is_empty(),
        ..TaskLog::default()
    };
    // Parts being collected per snapshot id.
    let mut parts: HashMap<String, PartialSnapshot> = HashMap::new();
    let mut best_reach: i64 = i64::MIN;
    for entry in entries {
        match entry.body {
            Body::Batch { now_micros, runs } => log.batches.push((now_micros, runs)),
            Body::SnapshotPart {
                id,
                index,
                count,
                positions,
                bytes,
                compression,
            } => {
                let slot = parts
                    .entry(id.clone())
                    .or_insert_with(|| (count, Vec::new(), None, BTreeMap::new()));
                if index == 0 {
                    slot.1 = positions;
                    slot.2 = compression;
                }
                slot.3.insert(index, bytes);
                if slot.3.len() as u32 == slot.0 {
                    let Some((_, positions, compression, chunks)) = parts.remove(&id) else {
                        continue;
                    };
                    let reach: i64 = positions.iter().map(|(_, _, o)| *o).sum();
                    if newest_position && reach < best_reach {
                        continue;
                    }
                    best_reach = reach;
                    let stored: Vec<u8> = chunks.into_values().flatten().collect();
                    let state = match compression.as_deref() {
                        None => stored,
                        Some(LZ4) => {
                            lz4_flex::block::decompress_size_prepended(&stored).map_err(|e| {
                                KafkaError::Changelog(format!(
                                    "snapshot {id} does not decompress: {e}"
                                ))
                            })?
                        }
                        Some(other) => {
                            return Err(KafkaError::Changelog(format!(
                                "snapshot {id} uses compression {other:?}; this build reads lz4"
                            )));
                        }
                    };
                    // The batches the snapshot covers are those before its positions. That
                    // is not the same as those logged before it: a single task encodes its
                    // snapshot beside its loop and logs it a few batches after the moment it
                    // was taken, so the batches in between follow it in state, not in the log.
                    log.batches.retain(|(_, runs)| beyond(runs, &positions));
                    log.snapshot = Some((state, positions));
                }
            }
        }
    }
    Ok(log)
}

/// Whether a logged batch holds a record at or past `positions` (the next offsets a snapshot
/// was taken at): a task's input offsets only grow, so a batch is either wholly covered by the
/// snapshot or wholly after it.
fn beyond(runs: &[Run], positions: &Positions) -> bool {
    runs.iter().any(|r| {
        let next = positions
            .iter()
            .find(|(t, p, _)| *p == r.partition && *t == r.topic)
            .map_or(i64::MIN, |(_, _, o)| *o);
        r.first + i64::from(r.count) > next
    })
}

/// Every entry of the changelog (of `task`, when given), in log order.
pub async fn read_all(
    kafka: &Kafka,
    topic: &str,
    task: Option<String>,
) -> Result<Vec<Entry>, KafkaError> {
    let cc = kafka.client_config();
    let topic = topic.to_string();
    let messages = tokio::task::spawn_blocking(move || {
        let consumer = reader(cc)?;
        // A changelog nobody has written yet does not exist; asking for its watermarks
        // would wait out the whole timeout.
        if !topic_exists(&consumer, &topic, 0) {
            return Ok(Vec::new());
        }
        read_partitions(&consumer, &topic, [0])
    })
    .await
    .map_err(|e| KafkaError::Changelog(format!("reader task failed: {e}")))??;
    let mut out = Vec::new();
    for m in messages {
        let entry = Entry::decode(m.payload().unwrap_or_default())?;
        if task.as_ref().is_none_or(|t| *t == entry.task) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Every entry of the changelog, grouped by task, each task's in log order.
pub async fn read_by_task(
    kafka: &Kafka,
    topic: &str,
) -> Result<HashMap<String, Vec<Entry>>, KafkaError> {
    let mut by_task: HashMap<String, Vec<Entry>> = HashMap::new();
    for entry in read_all(kafka, topic, None).await? {
        by_task.entry(entry.task.clone()).or_default().push(entry);
    }
    Ok(by_task)
}

/// The end offset of the changelog `topic` (0 when nobody has written it yet), asked through
/// a consumer that is already connected: one request, where [`read_all`] first connects a
/// reader of its own (about a tenth of a second).
pub async fn end_offset<C>(consumer: Arc<C>, topic: &str) -> Result<i64, KafkaError>
where
    C: Consumer + Send + Sync + 'static,
{
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        if !topic_exists(consumer.as_ref(), &topic, 0) {
            return Ok(0);
        }
        consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .map(|(_, high)| high)
            .map_err(|e| KafkaError::client(format!("reading {topic} watermarks"), e))
    })
    .await
    .map_err(|e| KafkaError::Changelog(format!("watermark task failed: {e}")))?
}

/// Every record of `partitions` of `topic`, from the oldest kept to the current end; a
/// partition the broker does not know (any more) reads as empty.
fn read_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut ranges = Vec::new();
    for partition in partitions {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((low, high)) => ranges.push((topic.to_string(), partition, low, high)),
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                            | rdkafka::types::RDKafkaErrorCode::UnknownTopic
                            | rdkafka::types::RDKafkaErrorCode::UnknownPartition
                    )
                ) => {}
            Err(e) => return Err(KafkaError::client(format!("reading {topic} watermarks"), e)),
        }
    }
    read_blocking(consumer, ranges)
}

/// How long reading a range may wait for records it knows exist.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `topic` has `partition`, by one metadata request.
fn topic_exists<C: Consumer>(consumer: &C, topic: &str, partition: i32) -> bool {
    match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(md) => md.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_none()
                && t.partitions().iter().any(|p| p.id() == partition)
        }),
        // Let the watermark request report what is wrong.
        Err(_) => true,
    }
}

/// A range of one input partition: (topic, partition, from, to) with `to` exclusive.
pub type Range = (String, i32, i64, i64);

/// A consumer that only reads assigned ranges (no group membership, no commits).
fn reader(mut cc: rdkafka::ClientConfig) -> Result<BaseConsumer, KafkaError> {
    cc.set("group.id", "tradestream-recovery-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10");
    cc.create()
        .map_err(|e| KafkaError::client("creating recovery reader", e))
}

/// Reads every range with one consumer, blocking, in offset order per partition.
fn read_blocking(
    consumer: &BaseConsumer,
    ranges: Vec<Range>,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    // What is still to read per partition: (next wanted, end).
    let mut todo: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    for (topic, partition, from, to) in ranges.into_iter().filter(|r| r.2 < r.3) {
        tpl.add_partition_offset(&topic, partition, Offset::Offset(from))
            .map_err(|e| KafkaError::client("building reader assignment", e))?;
        todo.insert((topic, partition), (from, to));
    }
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| KafkaError::client("assigning the recovery reader", e))?;
    let mut out = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while todo.values().any(|(next, end)| next < end) {
        if Instant::now() > deadline {
            return Err(KafkaError::Changelog(format!(
                "reading (topic, partition) → (next, end) {todo:?}: stuck for {READ_TIMEOUT:?}"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some((next, end)) = todo.get_mut(&(m.topic().to_string(), m.partition()))
                    && m.offset() < *end
                {
                    *next = (*next).max(m.offset() + 1);
                    out.push(m.detach());
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "reading; retrying"),
            None => {}
        }
    }
    Ok(out)
}

/// Reads several input ranges with one consumer (recovery reads every input a replay
/// needs at once: one consumer per batch would cost a connection each). A range that
/// retention already cut is an error: restoring around the gap would be wrong state.
/// Returns the records by (topic, partition, offset).
pub async fn read_ranges(
    kafka: &Kafka,
    ranges: Vec<Range>,
) -> Result<HashMap<(String, i32, i64), OwnedMessage>, KafkaError> {
    let ranges: Vec<Range> = ranges.into_iter().filter(|r| r.2 < r.3).collect();
    if ranges.is_empty() {
        return Ok(HashMap::new());
    }
    let cc = kafka.client_config();
    let messages = tokio::task::spawn_blocking(move || {
        let consumer = reader(cc)?;
        let mut bounded = Vec::with_capacity(ranges.len());
        for (topic, partition, from, to) in ranges {
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .map_err(|e| KafkaError::client(format!("reading {topic} watermarks"), e))?;
            if from < low {
                return Err(KafkaError::Changelog(format!(
                    "{topic}/{partition} offsets {from}..{low} needed to restore state are no \
                     longer in the topic (input retention shorter than the snapshot interval?)"
                )));
            }
            bounded.push((topic, partition, from, to.min(high)));
        }
        read_blocking(&consumer, bounded)
    })
    .await
    .map_err(|e| KafkaError::Changelog(format!("reader task failed: {e}")))??;
    Ok(messages
        .into_iter()
        .map(|m| ((m.topic().to_string(), m.partition(), m.offset()), m))
        .collect())
}

/// Every record of every partition of `topic`, from its oldest kept record to its current
/// end, partition by partition; nothing when the topic does not exist.
pub async fn read_topic(kafka: &Kafka, topic: &str) -> Result<Vec<OwnedMessage>, KafkaError> {
    let cc = kafka.client_config();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = reader(cc)?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| KafkaError::client(format!("reading {topic} metadata"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        read_partitions(&consumer, &topic, partitions)
    })
    .await
    .map_err(|e| KafkaError::Changelog(format!("reader task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_consecutive_offsets_of_one_partition() {
        let runs = runs_of([
            ("a", 0, 5),
            ("a", 0, 6),
            ("b", 1, 2),
            ("a", 0, 7),
            ("a", 1, 8),
            ("a", 1, 9),
        ]);
        let got: Vec<(&str, i32, i64, u32)> = runs
            .iter()
            .map(|r| (r.topic.as_str(), r.partition, r.first, r.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 0, 5, 2),
                ("b", 1, 2, 1),
                ("a", 0, 7, 1),
                ("a", 1, 8, 2)
            ]
        );
    }

    /// Bytes LZ4 cannot shrink, so a snapshot of them needs several parts.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn a_snapshot_is_reassembled_from_its_parts_and_batches_after_it_kept() {
        let state = noise(PART_BYTES * 2 + 10);
        let mut entries = vec![Entry::batch("all", 1, runs_of([("a", 0, 0)]))];
        entries.extend(Entry::snapshot(
            "all",
            "s1".into(),
            &state,
            vec![("a".into(), 0, 1)],
        ));
        entries.push(Entry::batch("all", 2, runs_of([("a", 0, 1)])));
        let encoded: Vec<Vec<u8>> = entries.iter().map(|e| e.encode().expect("enc")).collect();
        let decoded: Vec<Entry> = encoded
            .iter()
            .map(|b| Entry::decode(b).expect("dec"))
            .collect();
        assert_eq!(decoded.len(), 1 + 3 + 1);
        let log = assemble(decoded, false).expect("assembles");
        let (bytes, positions) = log.snapshot.expect("snapshot");
        assert_eq!(bytes, state);
        assert_eq!(positions, vec![("a".to_string(), 0, 1)]);
        assert_eq!(log.batches.len(), 1);
        assert_eq!(log.batches[0].0, 2);
    }

    #[test]
    fn batches_logged_before_a_late_snapshot_but_past_its_positions_are_kept() {
        // Taken after the first batch, logged after the third: the second and third follow
        // it in state, as does a partition the snapshot had not seen.
        let mut entries = vec![
            Entry::batch("all", 1, runs_of([("a", 0, 0), ("a", 0, 1)])),
            Entry::batch("all", 2, runs_of([("a", 0, 2)])),
            Entry::batch("all", 3, runs_of([("b", 0, 0)])),
        ];
        entries.extend(Entry::snapshot(
            "all",
            "late".into(),
            b"after batch 1",
            vec![("a".into(), 0, 2)],
        ));
        entries.push(Entry::batch("all", 4, runs_of([("a", 0, 3)])));
        let log = assemble(entries, false).expect("assembles");
        assert_eq!(log.snapshot.expect("snapshot").0, b"after batch 1");
        let times: Vec<i64> = log.batches.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![2, 3, 4]);
    }

    #[test]
    fn an_incomplete_snapshot_is_ignored() {
        let mut entries = Entry::snapshot("t", "old".into(), b"old", vec![("a".into(), 0, 3)]);
        let mut parts = Entry::snapshot(
            "t",
            "new".into(),
            &noise(PART_BYTES + 1),
            vec![("a".into(), 0, 9)],
        );
        assert_eq!(parts.len(), 2);
        parts.pop();
        entries.extend(parts);
        let log = assemble(entries, true).expect("assembles");
        let (bytes, positions) = log.snapshot.expect("snapshot");
        assert_eq!(bytes, b"old");
        assert_eq!(positions[0].2, 3);
    }

    #[test]
    fn per_partition_recovery_picks_the_snapshot_furthest_along() {
        // Two writers (a revoked member and its successor) may interleave snapshots.
        let mut entries = Entry::snapshot("t", "b".into(), b"far", vec![("a".into(), 0, 90)]);
        entries.extend(Entry::snapshot(
            "t",
            "a".into(),
            b"near",
            vec![("a".into(), 0, 40)],
        ));
        assert_eq!(
            assemble(entries.clone(), true)
                .expect("assembles")
                .snapshot
                .expect("s")
                .0,
            b"far"
        );
        assert_eq!(
            assemble(entries, false)
                .expect("assembles")
                .snapshot
                .expect("s")
                .0,
            b"near"
        );
    }

    #[test]
    fn repetitive_state_is_stored_compressed_and_read_back_whole() {
        // Shaped like a router snapshot: ids and prices sharing long prefixes.
        let state: Vec<u8> = (0..60_000)
            .map(|i| {
                format!(
                    "order:signal:features:synthetic:42:SYM{}:{i}=101.{i};",
                    i % 60
                )
            })
            .collect::<String>()
            .into_bytes();
        let entries = Entry::snapshot("t", "s".into(), &state, vec![("a".into(), 0, 1)]);
        let stored: usize = entries.iter().map(Entry::stored_bytes).sum();
        assert!(
            stored * 3 < state.len(),
            "{} state bytes stored as {stored}",
            state.len()
        );
        let log = assemble(entries, false).expect("assembles");
        assert_eq!(log.snapshot.expect("snapshot").0, state);
    }

    #[test]
    fn an_uncompressed_snapshot_of_an_earlier_build_is_read_as_is() {
        let entry = Entry {
            format: FORMAT,
            task: "t".into(),
            body: Body::SnapshotPart {
                id: "old".into(),
                index: 0,
                count: 1,
                positions: vec![("a".into(), 0, 5)],
                bytes: b"plain state".to_vec(),
                compression: None,
            },
        };
        let log = assemble(vec![entry], false).expect("assembles");
        assert_eq!(log.snapshot.expect("snapshot").0, b"plain state");
    }

    #[test]
    fn a_snapshot_that_does_not_decompress_is_an_error_naming_it() {
        let mut entries = Entry::snapshot("t", "bad".into(), b"some state", Vec::new());
        if let Some(Body::SnapshotPart { bytes, .. }) = entries.first_mut().map(|e| &mut e.body) {
            bytes.truncate(6);
        }
        let e = assemble(entries, false).expect_err("corrupt");
        assert!(e.to_string().contains("bad"), "{e}");
    }

    #[test]
    fn a_record_of_another_format_is_refused() {
        let mut e = Entry::batch("all", 0, Vec::new());
        e.format = 99;
        let bytes = e.encode().expect("enc");
        assert!(Entry::decode(&bytes).is_err());
    }
}
