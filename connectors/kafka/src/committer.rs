//! Input offsets committed beside the loop, for a single stateful task (the trading core).
//!
//! Why: such a task takes its next batch only once this one's outputs are acknowledged, and
//! a synchronous commit after that took 1.1 – 1.2 ms of every batch on the embedded broker,
//! the largest of its own costs (docs/benchmarks.md). Yet for such a task the committed
//! offsets are only where reading resumes: its changelog says which inputs it applied (every
//! batch is logged before its outputs exist), and a restarted task skips every input below
//! the positions it restored. A commit that trails a few batches behind therefore costs a restart only a few
//! records read again and skipped, never a record lost or decided twice.
//!
//! Committing each batch asynchronously (`CommitMode::Async`) was tried and made the
//! pipeline slower: one commit request per batch. Here at most one commit is in flight, at
//! most one starts per [`COMMIT_EVERY`], each with the newest offsets offered, and
//! [`Committer::close`] commits the last ones before a clean stop returns. Offsets are
//! offered only once the batch's outputs are acknowledged, so a commit never covers an
//! output that is not durable.

use crate::error::KafkaError;
use rdkafka::consumer::StreamConsumer;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The shortest time between the starts of two commits: a fiftieth of a second of input is
/// what a crash may read again; a commit per batch would be several hundred a second.
pub(crate) const COMMIT_EVERY: Duration = Duration::from_millis(20);

/// Next offsets to commit, by topic and partition.
type Offsets = Vec<(String, i32, i64)>;

/// Commits offered offsets in the background, merging the offers that arrive meanwhile.
pub(crate) struct Committer {
    offers: Mutex<Option<mpsc::UnboundedSender<Offsets>>>,
    task: Mutex<Option<JoinHandle<Result<(), KafkaError>>>>,
}

impl Committer {
    /// Starts committing for `consumer`'s group.
    pub(crate) fn start(consumer: Arc<StreamConsumer>, every: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(commit_loop(consumer, rx, every));
        Self {
            offers: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues a batch's next offsets (its outputs are acknowledged). Fails with the error
    /// that stopped the committer, if it stopped.
    pub(crate) async fn offer(&self, offsets: Offsets) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let sent = self
            .offers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|tx| tx.send(offsets).is_ok());
        if sent {
            return Ok(());
        }
        self.close().await?;
        Err(KafkaError::Committer(
            "it stopped before the run did".into(),
        ))
    }

    /// Commits what was offered and not committed yet, then stops.
    pub(crate) async fn close(&self) -> Result<(), KafkaError> {
        drop(
            self.offers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match task {
            Some(task) => task
                .await
                .map_err(|e| KafkaError::Committer(format!("its task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Waits for an offer, lets `every` pass since the last commit started, merges everything
/// offered by then and commits it; until the offers end and all of them are committed.
async fn commit_loop(
    consumer: Arc<StreamConsumer>,
    mut offers: mpsc::UnboundedReceiver<Offsets>,
    every: Duration,
) -> Result<(), KafkaError> {
    let mut last: Option<tokio::time::Instant> = None;
    while let Some(first) = offers.recv().await {
        if let Some(last) = last {
            tokio::time::sleep_until(last + every).await;
        }
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        merge(&mut next, first);
        while let Ok(more) = offers.try_recv() {
            merge(&mut next, more);
        }
        last = Some(tokio::time::Instant::now());
        let offsets = next.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        crate::runner::commit_with_retry(&consumer, offsets).await?;
    }
    Ok(())
}

/// Keeps the furthest offset per partition.
fn merge(into: &mut BTreeMap<(String, i32), i64>, offsets: Offsets) {
    for (topic, partition, next) in offsets {
        let at = into.entry((topic, partition)).or_insert(next);
        *at = (*at).max(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_furthest_offset_of_each_partition() {
        let mut at = BTreeMap::new();
        merge(&mut at, vec![("a".into(), 0, 5), ("a".into(), 1, 3)]);
        merge(&mut at, vec![("a".into(), 0, 9), ("b".into(), 0, 1)]);
        merge(&mut at, vec![("a".into(), 1, 2)]);
        let got: Vec<_> = at.into_iter().collect();
        assert_eq!(
            got,
            vec![
                (("a".to_string(), 0), 9),
                (("a".to_string(), 1), 3),
                (("b".to_string(), 0), 1),
            ]
        );
    }
}
