//! The API's writes to Kafka go through Postgres first (a transactional outbox): a manual
//! order (`api_order_requests`) or a kill-switch change (`control_events`) is recorded with
//! the exact record to publish, committed, then published, then marked published. A failure
//! between any two steps leaves a row that is either published already or still to be: the
//! request handler publishes it at once, and [`run_relay`] publishes whatever is left (a
//! broker that was down, a process killed after the commit). So nothing reaches Kafka
//! without its Postgres record, and nothing recorded is lost. A record published twice (the
//! relay and a handler racing) is the same record under the same id, which the trading core
//! recognises.

use crate::error::ApiError;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tradestream_schemas::{AnyRecord, Control, Order};

/// How often the relay looks for unpublished records.
pub const RELAY_EVERY: Duration = Duration::from_secs(1);

/// Publishes a recorded manual order and marks it published.
pub async fn publish_order(state: &AppState, order: &Order) -> Result<(), ApiError> {
    publish_and_mark(
        state,
        AnyRecord::Order(order.clone()),
        "UPDATE api_order_requests SET published_at = now() \
         WHERE order_id = $1 AND published_at IS NULL",
        &order.order_id,
    )
    .await
}

/// Publishes a recorded control change and marks it published.
pub async fn publish_control(state: &AppState, control: &Control) -> Result<(), ApiError> {
    publish_and_mark(
        state,
        AnyRecord::Control(control.clone()),
        "UPDATE control_events SET published_at = now() \
         WHERE control_id = $1 AND published_at IS NULL",
        &control.control_id,
    )
    .await
}

/// Publishes `record`, then runs `mark` (an UPDATE of its outbox row, keyed by `$1 = id`).
async fn publish_and_mark(
    state: &AppState,
    record: AnyRecord,
    mark: &'static str,
    id: &str,
) -> Result<(), ApiError> {
    state.publisher().publish(&record).await?;
    sqlx::query(mark).bind(id).execute(state.pool()).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ControlRow {
    control_id: String,
    name: String,
    enabled: bool,
    reason: String,
    actor: String,
    issued_at: DateTime<Utc>,
}

/// Publishes every recorded order and control not published yet, oldest first; returns how
/// many it published.
pub async fn publish_pending(state: &AppState) -> Result<u64, ApiError> {
    let mut published = 0;
    let orders: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT order_id, record FROM api_order_requests \
         WHERE published_at IS NULL ORDER BY created_at, order_id LIMIT 500",
    )
    .fetch_all(state.pool())
    .await?;
    for (order_id, record) in orders {
        let order: Order = serde_json::from_value(record).map_err(|e| {
            ApiError::Internal(format!("api_order_requests {order_id}: record: {e}"))
        })?;
        publish_order(state, &order).await?;
        published += 1;
    }
    let controls: Vec<ControlRow> = sqlx::query_as(
        "SELECT control_id, name, enabled, reason, actor, issued_at FROM control_events \
         WHERE published_at IS NULL ORDER BY issued_at, control_id LIMIT 500",
    )
    .fetch_all(state.pool())
    .await?;
    for c in controls {
        let control = Control {
            control_id: c.control_id,
            name: c.name,
            enabled: c.enabled,
            reason: c.reason,
            actor: c.actor,
            issued_time: c.issued_at,
        };
        publish_control(state, &control).await?;
        published += 1;
    }
    Ok(published)
}

/// Runs [`publish_pending`] every [`RELAY_EVERY`] until `shutdown` completes; a failure is
/// logged and retried on the next round.
pub async fn run_relay(state: AppState, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(RELAY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = every.tick() => match publish_pending(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(published = n, "outbox: published recorded writes"),
                Err(e) => tracing::warn!(error = %e, "outbox: publishing recorded writes failed; retrying"),
            },
        }
    }
}
