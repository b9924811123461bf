//! Kafka consumer offsets kept in Postgres (`consumed_offsets`), written in the same transaction
//! as the rows derived from the consumed records, so after a crash a sink resumes exactly where
//! its last committed transaction ended: nothing lost, nothing applied twice.

use crate::error::Result;
use sqlx::PgExecutor;
use std::collections::BTreeMap;

/// Records that `group` has durably processed `topic`/`partition` up to `next_offset`
/// (exclusive). The stored offset never moves backwards, so a replayed batch after a
/// rebalance cannot rewind it; [`reset_offsets`] is the deliberate way back.
pub async fn store_offset<'e, E: PgExecutor<'e>>(
    executor: E,
    group: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO consumed_offsets (consumer_group, topic, partition, next_offset, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (consumer_group, topic, partition) DO UPDATE
            SET next_offset = GREATEST(consumed_offsets.next_offset, EXCLUDED.next_offset),
                updated_at = now()",
    )
    .bind(group)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(executor)
    .await?;
    Ok(())
}

/// Next offset to consume per partition of `topic` for `group` (partitions never stored are
/// absent: start them from the consumer's reset policy).
pub async fn load_offsets<'e, E: PgExecutor<'e>>(
    executor: E,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM consumed_offsets
          WHERE consumer_group = $1 AND topic = $2 ORDER BY partition",
    )
    .bind(group)
    .bind(topic)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Forgets the stored offsets of `group` on `topic` (replay from the reset policy). Returns the
/// number of partitions forgotten.
pub async fn reset_offsets<'e, E: PgExecutor<'e>>(
    executor: E,
    group: &str,
    topic: &str,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM consumed_offsets WHERE consumer_group = $1 AND topic = $2")
        .bind(group)
        .bind(topic)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}
