//! [`SinkWriter`]: one batch of records from the data topics into Postgres in ONE transaction,
//! idempotently, with the consumed offsets stored in the same transaction.
//!
//! Why a replay never changes anything:
//! * offsets: the stored `consumed_offsets.next_offset` of each (group, topic, partition) is
//!   read `FOR UPDATE`, and records below it are skipped (a crash between commit and the
//!   Kafka offset commit re-delivers them);
//! * ids: every table is keyed by the record's deterministic id and written with
//!   `ON CONFLICT DO NOTHING`, so the same record under a new offset changes nothing either;
//!   only rows actually inserted fire the fill trigger or mark positions.
//!
//! Order of effects: fills (whose trigger moves cash and positions) and marks
//! (`mark_to_market_batch` for the newly stored market data) are applied in batch order, so
//! the books end the same however a stream is cut into batches. Portfolio snapshots are the
//! trading core's valuations (each account's value at the end of each instant, as its books
//! say), stored once per account and instant, so they do not depend on the order the sink
//! reads bars and fills in. The other tables are independent of one another and are written
//! with one multi-row `UNNEST` insert each.
//!
//! Refused records: a record the database refuses with a dead-letter-class error (see
//! `tradestream_postgres::PostgresError::class`) is isolated by bisection under savepoints
//! and returned in [`BatchOutcome::dead_letters`]; the rest of the batch is written.
//! Retryable and fatal errors abort the transaction and are returned.

use crate::error::SinkError;
use crate::order_state::{self, OrderState};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, Transaction};
use std::collections::{BTreeMap, HashMap, HashSet};
use tradestream_postgres::PostgresError;
use tradestream_postgres::portfolio::{
    Mark, liquidity_str, mark_to_market_batch, order_status_str, order_type_str, origin_str,
    time_in_force_str, write_valuations,
};
use tradestream_schemas::{
    AnyRecord, BarClass, ErrorClass, MarketDataKind, Order, OrderStatus, Severity, SignalSide,
    Topic, Trend,
};

/// One consumed record: its topic, partition, offset and decoded value.
pub type BatchItem = (Topic, i32, i64, AnyRecord);

/// A record the database refused; the runner sends it to `<topic>.dlq`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterRecord {
    /// Index of the record in the batch given to the writer.
    pub index: usize,
    /// Source topic.
    pub topic: Topic,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Error class (always [`ErrorClass::DeadLetter`] today).
    pub class: ErrorClass,
    /// Why it was refused (the database's explanation, mapped).
    pub reason: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Rows newly stored per topic (orders: new order events).
    pub written: BTreeMap<Topic, u64>,
    /// Records that changed nothing: offset already consumed, or id already stored.
    pub duplicates: u64,
    /// Records refused by the database, in batch order.
    pub dead_letters: Vec<DeadLetterRecord>,
    /// Positions marked to market.
    pub marks: u64,
    /// Next offset stored per (topic, partition) (never moves backwards).
    pub offsets: Vec<(Topic, i32, i64)>,
}

impl BatchOutcome {
    /// Rows newly stored, all topics together.
    pub fn total_written(&self) -> u64 {
        self.written.values().sum()
    }
}

/// Writes batches to Postgres. Cheap to clone (wraps the pool).
#[derive(Debug, Clone)]
pub struct SinkWriter {
    pool: PgPool,
}

/// A batch written but not committed yet: the runner produces the dead letters to Kafka first,
/// then commits, so a crash in between re-delivers them rather than losing them.
#[derive(Debug)]
pub struct PreparedBatch {
    tx: Transaction<'static, Postgres>,
    outcome: BatchOutcome,
}

impl PreparedBatch {
    /// What the batch did (valid once committed).
    pub fn outcome(&self) -> &BatchOutcome {
        &self.outcome
    }

    /// Commits rows and offsets together.
    pub async fn commit(self) -> Result<BatchOutcome, SinkError> {
        self.tx.commit().await?;
        Ok(self.outcome)
    }

    /// Discards the batch.
    pub async fn rollback(self) -> Result<(), SinkError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// A failure of one attempt to apply a segment of the batch.
enum ApplyError {
    /// A record was refused by a rule checked here (it is known which one).
    Refused { index: usize, reason: String },
    /// The database failed; which record caused it (if any) is found by bisection.
    Database(PostgresError),
}

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(PostgresError::from_sqlx(e))
    }
}

/// Rows stored by one applied segment.
#[derive(Default)]
struct Applied {
    written: BTreeMap<Topic, u64>,
    applied: u64,
    marks: u64,
}

impl SinkWriter {
    /// A writer over `pool` (migrated with `sql/`, including 0020 and 0021).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes `batch` and its offsets in one transaction and commits. See the module docs.
    pub async fn write_batch(
        &self,
        group: &str,
        batch: &[BatchItem],
    ) -> Result<BatchOutcome, SinkError> {
        self.prepare(group, batch, &[]).await?.commit().await
    }

    /// Like [`write_batch`](Self::write_batch) without the commit. `also_consumed` lists
    /// positions (topic, partition, offset) consumed without a record to write (undecodable
    /// records already dead-lettered), so the stored offsets move past them too.
    pub async fn prepare(
        &self,
        group: &str,
        batch: &[BatchItem],
        also_consumed: &[(Topic, i32, i64)],
    ) -> Result<PreparedBatch, SinkError> {
        if group.trim().is_empty() {
            return Err(SinkError::Invariant(
                "consumer group must not be empty".into(),
            ));
        }
        let mut next: BTreeMap<(Topic, i32), i64> = BTreeMap::new();
        let positions = batch
            .iter()
            .map(|(t, p, o, _)| (*t, *p, *o))
            .chain(also_consumed.iter().copied());
        for (topic, partition, offset) in positions {
            if partition < 0 || offset < 0 {
                return Err(SinkError::Invariant(format!(
                    "{topic}: partition {partition} / offset {offset} must be >= 0"
                )));
            }
            let n = next.entry((topic, partition)).or_insert(0);
            *n = (*n).max(offset + 1);
        }
        for (i, (topic, _, _, record)) in batch.iter().enumerate() {
            if record.topic() != *topic {
                return Err(SinkError::Invariant(format!(
                    "batch item {i}: a {} record on topic {topic}",
                    record.topic()
                )));
            }
        }

        let mut tx = self.pool.begin().await?;
        let stored = lock_offsets(&mut tx, group, next.keys()).await?;
        let pending: Vec<usize> = batch
            .iter()
            .enumerate()
            .filter(|(_, (t, p, o, _))| stored.get(&(*t, *p)).is_none_or(|n| o >= n))
            .map(|(i, _)| i)
            .collect();
        let mut outcome = BatchOutcome {
            duplicates: (batch.len() - pending.len()) as u64,
            ..BatchOutcome::default()
        };
        apply_bisecting(&mut tx, batch, pending, &mut outcome).await?;

        let (topics, partitions, offsets): (Vec<&str>, Vec<i32>, Vec<i64>) =
            next.iter().map(|((t, p), n)| (t.name(), *p, *n)).collect();
        sqlx::query(
            "INSERT INTO consumed_offsets (consumer_group, topic, partition, next_offset, updated_at)
             SELECT $1, u.topic, u.partition, u.next_offset, now()
               FROM unnest($2::text[], $3::int4[], $4::int8[]) AS u(topic, partition, next_offset)
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE
                SET next_offset = GREATEST(consumed_offsets.next_offset, EXCLUDED.next_offset),
                    updated_at = now()",
        )
        .bind(group)
        .bind(&topics)
        .bind(&partitions)
        .bind(&offsets)
        .execute(&mut *tx)
        .await?;
        outcome.offsets = next
            .iter()
            .map(|((t, p), n)| {
                (
                    *t,
                    *p,
                    (*n).max(stored.get(&(*t, *p)).copied().unwrap_or(0)),
                )
            })
            .collect();
        Ok(PreparedBatch { tx, outcome })
    }

    /// Next offset stored per (topic, partition) for `group`: where a restarted sink resumes.
    pub async fn stored_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<(Topic, i32), i64>, SinkError> {
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT topic, partition, next_offset FROM consumed_offsets WHERE consumer_group = $1",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(t, p, n)| Topic::from_name(&t).map(|t| ((t, p), n)))
            .collect())
    }
}

/// Creates missing offset rows and locks all of them, so two writers of one group serialise.
async fn lock_offsets<'a>(
    tx: &mut PgConnection,
    group: &str,
    keys: impl Iterator<Item = &'a (Topic, i32)>,
) -> Result<HashMap<(Topic, i32), i64>, SinkError> {
    let (topics, partitions): (Vec<&str>, Vec<i32>) = keys.map(|(t, p)| (t.name(), *p)).unzip();
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query(
        "INSERT INTO consumed_offsets (consumer_group, topic, partition, next_offset)
         SELECT $1, u.topic, u.partition, 0 FROM unnest($2::text[], $3::int4[]) AS u(topic, partition)
         ON CONFLICT (consumer_group, topic, partition) DO NOTHING",
    )
    .bind(group)
    .bind(&topics)
    .bind(&partitions)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT c.topic, c.partition, c.next_offset
           FROM consumed_offsets c
           JOIN unnest($2::text[], $3::int4[]) AS u(topic, partition)
             ON c.topic = u.topic AND c.partition = u.partition
          WHERE c.consumer_group = $1
          ORDER BY c.topic, c.partition
            FOR UPDATE OF c",
    )
    .bind(group)
    .bind(&topics)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, p, n)| Topic::from_name(&t).map(|t| ((t, p), n)))
        .collect())
}

/// Applies `pending` (indices into `batch`, in order) under savepoints. A segment refused for
/// a dead-letter reason is rolled back and split in halves (applied left then right, so batch
/// order is kept) until the refused record stands alone.
async fn apply_bisecting(
    tx: &mut PgConnection,
    batch: &[BatchItem],
    pending: Vec<usize>,
    outcome: &mut BatchOutcome,
) -> Result<(), SinkError> {
    let mut stack = vec![pending];
    let mut dead: Vec<DeadLetterRecord> = Vec::new();
    let dead_letter = |index: usize, reason: String| {
        let (topic, partition, offset, _) = &batch[index];
        DeadLetterRecord {
            index,
            topic: *topic,
            partition: *partition,
            offset: *offset,
            class: ErrorClass::DeadLetter,
            reason,
        }
    };
    while let Some(segment) = stack.pop() {
        if segment.is_empty() {
            continue;
        }
        sqlx::query("SAVEPOINT sink_segment")
            .execute(&mut *tx)
            .await?;
        match apply_segment(tx, batch, &segment).await {
            Ok(applied) => {
                sqlx::query("RELEASE SAVEPOINT sink_segment")
                    .execute(&mut *tx)
                    .await?;
                for (topic, n) in applied.written {
                    *outcome.written.entry(topic).or_insert(0) += n;
                }
                outcome.duplicates += applied.applied;
                outcome.marks += applied.marks;
            }
            Err(failure) => {
                sqlx::query("ROLLBACK TO SAVEPOINT sink_segment")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("RELEASE SAVEPOINT sink_segment")
                    .execute(&mut *tx)
                    .await?;
                match failure {
                    ApplyError::Refused { index, reason } => {
                        dead.push(dead_letter(index, reason));
                        stack.push(segment.into_iter().filter(|i| *i != index).collect());
                    }
                    ApplyError::Database(e) if e.class() == ErrorClass::DeadLetter => {
                        if let [index] = segment[..] {
                            dead.push(dead_letter(index, e.to_string()));
                        } else {
                            let right = segment[segment.len() / 2..].to_vec();
                            let left = segment[..segment.len() / 2].to_vec();
                            stack.push(right);
                            stack.push(left);
                        }
                    }
                    ApplyError::Database(e) => return Err(e.into()),
                }
            }
        }
    }
    dead.sort_by_key(|d| d.index);
    outcome.dead_letters = dead;
    Ok(())
}

/// Applies one segment; returns rows written per topic, and in `applied` the number of
/// records that changed nothing (already stored by id) — the caller adds them to duplicates.
async fn apply_segment(
    tx: &mut PgConnection,
    batch: &[BatchItem],
    segment: &[usize],
) -> Result<Applied, ApplyError> {
    let mut out = Applied::default();
    let records: Vec<(usize, &AnyRecord)> = segment.iter().map(|i| (*i, &batch[*i].3)).collect();

    let new_bars = insert_market_data(tx, &records).await?;
    out.written.insert(Topic::MarketData, new_bars.len() as u64);
    out.written
        .insert(Topic::Features, insert_features(tx, &records).await?);
    out.written
        .insert(Topic::TradingSignals, insert_signals(tx, &records).await?);
    out.written
        .insert(Topic::Anomalies, insert_anomalies(tx, &records).await?);
    out.written
        .insert(Topic::Orders, apply_orders(tx, &records).await?);

    out.written
        .insert(Topic::Valuations, insert_valuations(tx, &records).await?);

    // Fills and marks, in batch order: consecutive runs of each become one statement.
    let mut marked: HashSet<&str> = HashSet::new();
    let mut fills_written = 0;
    let mut run: Vec<Effect<'_>> = Vec::new();
    for (_, record) in &records {
        let effect = match record {
            AnyRecord::Fill(f) => Effect::Fill(f),
            AnyRecord::MarketData(md)
                if new_bars.contains(md.record_id.as_str())
                    && marked.insert(md.record_id.as_str()) =>
            {
                Effect::Bar(md)
            }
            _ => continue,
        };
        if run
            .last()
            .is_some_and(|last| std::mem::discriminant(last) != std::mem::discriminant(&effect))
        {
            fills_written += flush_run(tx, &run, &mut out.marks).await?;
            run.clear();
        }
        run.push(effect);
    }
    fills_written += flush_run(tx, &run, &mut out.marks).await?;
    out.written.insert(Topic::Fills, fills_written);

    out.written.retain(|_, n| *n > 0);
    let written: u64 = out.written.values().sum::<u64>();
    out.applied = (records.len() as u64).saturating_sub(written);
    Ok(out)
}

/// One change to the books, in batch order.
enum Effect<'a> {
    /// A fill.
    Fill(&'a tradestream_schemas::Fill),
    /// A newly stored bar to mark positions at.
    Bar(&'a tradestream_schemas::MarketData),
}

/// Applies a run of effects of one kind; returns the fills newly stored.
async fn flush_run(
    tx: &mut PgConnection,
    run: &[Effect<'_>],
    marks: &mut u64,
) -> Result<u64, ApplyError> {
    match run.first() {
        None => Ok(0),
        Some(Effect::Fill(_)) => insert_fills(tx, run).await,
        Some(Effect::Bar(_)) => {
            *marks += mark_positions(tx, run).await?;
            Ok(0)
        }
    }
}

/// Stores the trading core's valuations as portfolio snapshots (see
/// [`tradestream_postgres::portfolio::write_valuations`]); returns the rows inserted or changed.
async fn insert_valuations(
    tx: &mut PgConnection,
    records: &[(usize, &AnyRecord)],
) -> Result<u64, ApplyError> {
    let valuations: Vec<&tradestream_schemas::Valuation> = records
        .iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::Valuation(v) => Some(v),
            _ => None,
        })
        .collect();
    write_valuations(&mut *tx, &valuations)
        .await
        .map_err(ApplyError::Database)
}

fn kind_str(k: MarketDataKind) -> &'static str {
    match k {
        MarketDataKind::Bar => "BAR",
        MarketDataKind::Tick => "TICK",
    }
}

/// Inserts the segment's market data; returns the ids newly stored.
async fn insert_market_data<'r>(
    tx: &mut PgConnection,
    records: &[(usize, &'r AnyRecord)],
) -> Result<HashSet<&'r str>, ApplyError> {
    let bars: Vec<&tradestream_schemas::MarketData> = records
        .iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::MarketData(md) => Some(md),
            _ => None,
        })
        .collect();
    if bars.is_empty() {
        return Ok(HashSet::new());
    }
    let mut id = Vec::with_capacity(bars.len());
    let mut kind = Vec::with_capacity(bars.len());
    let mut symbol = Vec::with_capacity(bars.len());
    let mut event_time = Vec::with_capacity(bars.len());
    let mut interval = Vec::with_capacity(bars.len());
    let (mut open, mut high, mut low, mut close, mut volume) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut source = Vec::with_capacity(bars.len());
    let mut ingested = Vec::with_capacity(bars.len());
    for b in &bars {
        id.push(b.record_id.as_str());
        kind.push(kind_str(b.kind));
        symbol.push(b.symbol.as_str());
        event_time.push(b.event_time);
        interval.push(b.interval.as_deref());
        open.push(b.open);
        high.push(b.high);
        low.push(b.low);
        close.push(b.close);
        volume.push(b.volume);
        source.push(b.source.as_str());
        ingested.push(b.ingest_time);
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO market_data (record_id, kind, symbol, event_time, interval, open, high, low,
                                  close, volume, source, ingested_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                              $6::numeric[], $7::numeric[], $8::numeric[], $9::numeric[],
                              $10::numeric[], $11::text[], $12::timestamptz[])
         ON CONFLICT (record_id) DO NOTHING
         RETURNING record_id",
    )
    .bind(&id)
    .bind(&kind)
    .bind(&symbol)
    .bind(&event_time)
    .bind(&interval)
    .bind(&open)
    .bind(&high)
    .bind(&low)
    .bind(&close)
    .bind(&volume)
    .bind(&source)
    .bind(&ingested)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<String> = inserted.into_iter().collect();
    Ok(bars
        .iter()
        .map(|b| b.record_id.as_str())
        .filter(|id| inserted.contains(*id))
        .collect())
}

fn bar_class_str(b: BarClass) -> &'static str {
    match b {
        BarClass::RealBull => "REAL_BULL",
        BarClass::RealBear => "REAL_BEAR",
        BarClass::Fake => "FAKE",
    }
}

fn trend_str(t: Trend) -> &'static str {
    match t {
        Trend::Neutral => "NEUTRAL",
        Trend::Bullish => "BULLISH",
        Trend::Bearish => "BEARISH",
    }
}

async fn insert_features(
    tx: &mut PgConnection,
    records: &[(usize, &AnyRecord)],
) -> Result<u64, ApplyError> {
    let rows: Vec<(usize, &tradestream_schemas::Features)> = records
        .iter()
        .filter_map(|(i, r)| match r {
            AnyRecord::Features(f) => Some((*i, f)),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let mut values = Vec::with_capacity(rows.len());
    for (index, f) in &rows {
        values.push(
            serde_json::to_string(&f.values).map_err(|e| ApplyError::Refused {
                index: *index,
                reason: format!("features values are not JSON: {e}"),
            })?,
        );
    }
    let rows: Vec<&tradestream_schemas::Features> = rows.into_iter().map(|(_, f)| f).collect();
    let done = sqlx::query(
        "INSERT INTO features (record_id, source_id, symbol, event_time, close, indicator_values,
                               bar_class, trend, feature_set_version)
         SELECT u.record_id, u.source_id, u.symbol, u.event_time, u.close, u.v::jsonb,
                u.bar_class, u.trend, u.fsv
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::numeric[],
                       $6::text[], $7::text[], $8::text[], $9::text[])
                AS u(record_id, source_id, symbol, event_time, close, v, bar_class, trend, fsv)
         ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(
        rows.iter()
            .map(|f| f.record_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|f| f.source_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|f| f.symbol.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|f| f.event_time).collect::<Vec<_>>())
    .bind(rows.iter().map(|f| f.close).collect::<Vec<_>>())
    .bind(&values)
    .bind(
        rows.iter()
            .map(|f| bar_class_str(f.bar_class))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|f| trend_str(f.trend)).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|f| f.feature_set_version.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

fn signal_side_str(s: SignalSide) -> &'static str {
    match s {
        SignalSide::Buy => "BUY",
        SignalSide::Sell => "SELL",
        SignalSide::Hold => "HOLD",
    }
}

async fn insert_signals(
    tx: &mut PgConnection,
    records: &[(usize, &AnyRecord)],
) -> Result<u64, ApplyError> {
    let rows: Vec<&tradestream_schemas::TradingSignal> = records
        .iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::Signal(s) => Some(s),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO signals (signal_id, source_id, symbol, event_time, side, confidence,
                              model_name, model_version, reference_price, stop_loss,
                              take_profit, reason)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                              $6::float8[], $7::text[], $8::text[], $9::numeric[],
                              $10::numeric[], $11::numeric[], $12::text[])
         ON CONFLICT (signal_id) DO NOTHING",
    )
    .bind(
        rows.iter()
            .map(|s| s.signal_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|s| s.source_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.event_time).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|s| signal_side_str(s.side))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|s| s.confidence).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|s| s.model_name.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|s| s.model_version.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|s| s.reference_price).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.stop_loss).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.take_profit).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
        Severity::Critical => "CRITICAL",
    }
}

async fn insert_anomalies(
    tx: &mut PgConnection,
    records: &[(usize, &AnyRecord)],
) -> Result<u64, ApplyError> {
    let rows: Vec<&tradestream_schemas::Anomaly> = records
        .iter()
        .filter_map(|(_, r)| match r {
            AnyRecord::Anomaly(a) => Some(a),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO anomalies (anomaly_id, source_id, symbol, event_time, kind, score, severity,
                                detector_version)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                              $6::float8[], $7::text[], $8::text[])
         ON CONFLICT (anomaly_id) DO NOTHING",
    )
    .bind(
        rows.iter()
            .map(|a| a.anomaly_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|a| a.source_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|a| a.symbol.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.event_time).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.score).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|a| severity_str(a.severity))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|a| a.detector_version.as_str())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

fn parse_status(s: &str) -> Option<OrderStatus> {
    use OrderStatus::*;
    [
        New,
        Accepted,
        PartiallyFilled,
        Filled,
        Canceled,
        Rejected,
        Expired,
    ]
    .into_iter()
    .find(|st| order_status_str(*st) == s)
}

/// Column arrays of a set of order events, for `UNNEST`.
#[derive(Default)]
struct OrderColumns<'a> {
    event_id: Vec<&'a str>,
    order_id: Vec<&'a str>,
    sequence: Vec<i32>,
    client_order_id: Vec<Option<&'a str>>,
    account: Vec<&'a str>,
    symbol: Vec<&'a str>,
    side: Vec<&'static str>,
    order_type: Vec<&'static str>,
    quantity: Vec<Decimal>,
    limit_price: Vec<Option<Decimal>>,
    stop_price: Vec<Option<Decimal>>,
    tif: Vec<&'static str>,
    status: Vec<&'static str>,
    filled: Vec<Decimal>,
    origin: Vec<&'static str>,
    origin_id: Vec<&'a str>,
    parent: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
    created: Vec<DateTime<Utc>>,
    updated: Vec<DateTime<Utc>>,
}

impl<'a> OrderColumns<'a> {
    fn push(&mut self, o: &'a Order) {
        self.event_id.push(&o.event_id);
        self.order_id.push(&o.order_id);
        self.sequence.push(o.sequence);
        self.client_order_id.push(o.client_order_id.as_deref());
        self.account.push(o.account.as_str());
        self.symbol.push(o.symbol.as_str());
        self.side.push(o.side.as_str());
        self.order_type.push(order_type_str(o.order_type));
        self.quantity.push(o.quantity);
        self.limit_price.push(o.limit_price);
        self.stop_price.push(o.stop_price);
        self.tif.push(time_in_force_str(o.time_in_force));
        self.status.push(order_status_str(o.status));
        self.filled.push(o.filled_quantity);
        self.origin.push(origin_str(o.origin_kind));
        self.origin_id.push(&o.origin_id);
        self.parent.push(o.parent_order_id.as_deref());
        self.reason.push(o.reject_reason.as_deref());
        self.created.push(o.created_time);
        self.updated.push(o.updated_time);
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.event_id)
            .bind(&self.order_id)
            .bind(&self.sequence)
            .bind(&self.client_order_id)
            .bind(&self.account)
            .bind(&self.symbol)
            .bind(&self.side)
            .bind(&self.order_type)
            .bind(&self.quantity)
            .bind(&self.limit_price)
            .bind(&self.stop_price)
            .bind(&self.tif)
            .bind(&self.status)
            .bind(&self.filled)
            .bind(&self.origin)
            .bind(&self.origin_id)
            .bind(&self.parent)
            .bind(&self.reason)
            .bind(&self.created)
            .bind(&self.updated)
    }
}

const ORDER_UNNEST: &str = "unnest($1::text[], $2::text[], $3::int4[], $4::text[], $5::text[],
        $6::text[], $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[],
        $12::text[], $13::text[], $14::numeric[], $15::text[], $16::text[], $17::text[],
        $18::text[], $19::timestamptz[], $20::timestamptz[])
     AS u(event_id, order_id, sequence, client_order_id, account_id, symbol, side, order_type,
          quantity, limit_price, stop_price, time_in_force, status, filled_quantity, origin,
          origin_id, parent_order_id, reject_reason, created_at, updated_at)";

/// Stores every new order event and advances each order's row to its newest legal event.
/// Returns the number of new events.
async fn apply_orders(
    tx: &mut PgConnection,
    records: &[(usize, &AnyRecord)],
) -> Result<u64, ApplyError> {
    let events: Vec<(usize, &Order)> = records
        .iter()
        .filter_map(|(i, r)| match r {
            AnyRecord::Order(o) => Some((*i, o)),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = events.iter().map(|(_, o)| o.order_id.as_str()).collect();
    let rows: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT order_id, status, sequence FROM orders WHERE order_id = ANY($1)
          ORDER BY order_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored: HashMap<String, OrderState> = HashMap::new();
    for (id, status, sequence) in rows {
        let status = parse_status(&status).ok_or_else(|| {
            ApplyError::Database(PostgresError::Database {
                code: "XX000".into(),
                message: format!("orders.status {status:?} of {id:?} is not a known status"),
            })
        })?;
        stored.insert(id, (status, sequence));
    }
    let folded = order_state::fold(&stored, &events).map_err(|bad| ApplyError::Refused {
        index: bad.index,
        reason: bad.reason,
    })?;

    let mut all = OrderColumns::default();
    for (_, o) in &events {
        all.push(o);
    }
    let sql = format!(
        "INSERT INTO order_events (event_id, order_id, sequence, client_order_id, account_id,
                                   symbol, side, order_type, quantity, limit_price, stop_price,
                                   time_in_force, status, filled_quantity, origin, origin_id,
                                   parent_order_id, reject_reason, created_at, updated_at)
         SELECT u.* FROM {ORDER_UNNEST}
         ON CONFLICT (event_id) DO NOTHING"
    );
    let new_events = all
        .bind(sqlx::query(&sql))
        .execute(&mut *tx)
        .await?
        .rows_affected();

    if !folded.winners.is_empty() {
        let by_index: HashMap<usize, &Order> = events.iter().copied().collect();
        let mut winners = OrderColumns::default();
        for o in folded.winners.iter().filter_map(|w| by_index.get(w)) {
            winners.push(o);
        }
        // Ordered by order id, like the FOR UPDATE above, so concurrent writers cannot deadlock.
        let sql = format!(
            "INSERT INTO orders (order_id, client_order_id, account_id, symbol, side, order_type,
                                 quantity, limit_price, stop_price, time_in_force, status,
                                 filled_quantity, origin, origin_id, parent_order_id, sequence,
                                 reject_reason, created_at, updated_at)
             SELECT u.order_id, u.client_order_id, u.account_id, u.symbol, u.side, u.order_type,
                    u.quantity, u.limit_price, u.stop_price, u.time_in_force, u.status,
                    u.filled_quantity, u.origin, u.origin_id, u.parent_order_id, u.sequence,
                    u.reject_reason, u.created_at, u.updated_at
               FROM {ORDER_UNNEST}
              ORDER BY u.order_id
             ON CONFLICT (order_id) DO UPDATE
                SET status = EXCLUDED.status,
                    filled_quantity = EXCLUDED.filled_quantity,
                    reject_reason = EXCLUDED.reject_reason,
                    sequence = EXCLUDED.sequence,
                    updated_at = EXCLUDED.updated_at
              WHERE orders.sequence < EXCLUDED.sequence"
        );
        winners.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
    }
    Ok(new_events)
}

/// Inserts a run of fills in order (the trigger applies each to the books); returns how many
/// were new.
async fn insert_fills(tx: &mut PgConnection, run: &[Effect<'_>]) -> Result<u64, ApplyError> {
    let fills: Vec<&tradestream_schemas::Fill> = run
        .iter()
        .filter_map(|e| match e {
            Effect::Fill(f) => Some(*f),
            Effect::Bar(_) => None,
        })
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO fills (fill_id, order_id, account_id, symbol, side, quantity, price,
                            commission, liquidity, fill_time)
         SELECT u.fill_id, u.order_id, u.account_id, u.symbol, u.side, u.quantity, u.price,
                u.commission, u.liquidity, u.fill_time
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::numeric[], $7::numeric[], $8::numeric[], $9::text[], $10::timestamptz[])
                WITH ORDINALITY
                AS u(fill_id, order_id, account_id, symbol, side, quantity, price, commission,
                     liquidity, fill_time, ord)
          ORDER BY u.ord
         ON CONFLICT (fill_id) DO NOTHING",
    )
    .bind(fills.iter().map(|f| f.fill_id.as_str()).collect::<Vec<_>>())
    .bind(
        fills
            .iter()
            .map(|f| f.order_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(fills.iter().map(|f| f.account.as_str()).collect::<Vec<_>>())
    .bind(fills.iter().map(|f| f.symbol.as_str()).collect::<Vec<_>>())
    .bind(fills.iter().map(|f| f.side.as_str()).collect::<Vec<_>>())
    .bind(fills.iter().map(|f| f.quantity).collect::<Vec<_>>())
    .bind(fills.iter().map(|f| f.price).collect::<Vec<_>>())
    .bind(fills.iter().map(|f| f.commission).collect::<Vec<_>>())
    .bind(
        fills
            .iter()
            .map(|f| liquidity_str(f.liquidity))
            .collect::<Vec<_>>(),
    )
    .bind(fills.iter().map(|f| f.fill_time).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected())
}

/// Marks positions at each bar of a run, in order, with one `mark_to_market_batch` (the effect
/// of one `mark_to_market` per bar, without updating the same rows once per bar); returns the
/// number of positions marked.
async fn mark_positions(tx: &mut PgConnection, run: &[Effect<'_>]) -> Result<u64, ApplyError> {
    let marks: Vec<Mark<'_>> = run
        .iter()
        .filter_map(|e| match e {
            Effect::Bar(md) => Some(Mark {
                symbol: &md.symbol,
                price: md.close,
                at: md.event_time,
            }),
            Effect::Fill(..) => None,
        })
        .collect();
    mark_to_market_batch(&mut *tx, &marks)
        .await
        .map_err(ApplyError::Database)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_sql_spelling() {
        use OrderStatus::*;
        for s in [
            New,
            Accepted,
            PartiallyFilled,
            Filled,
            Canceled,
            Rejected,
            Expired,
        ] {
            assert_eq!(parse_status(order_status_str(s)), Some(s));
        }
        assert_eq!(parse_status("LOST"), None);
    }
}
