//! `GET /v1/stream`: Server-Sent Events of orders (every state change), fills, signals and
//! anomalies as the sink stores them. Each event's `id` is a cursor (insertion time and
//! record id), so a client that reconnects with `Last-Event-ID` resumes exactly after the
//! last event it saw; without one the stream starts with what arrives next.
//!
//! The stream follows Postgres rather than Kafka: events appear once they are durable and
//! queryable (a client can `GET` what it was told about), every API replica serves the same
//! sequence, and no consumer group is needed per connection. Insertion times come from the
//! sink's transactions; with one sink (the supported deployment) they only move forward.

use crate::auth::{Principal, Scope};
use crate::error::{ApiError, Problem};
use crate::model::Cursor;
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/stream", get(stream))
}

/// How often the stream looks for new rows.
const POLL: Duration = Duration::from_millis(250);
/// Rows per poll.
const BATCH: i64 = 500;

#[derive(Debug, sqlx::FromRow)]
struct Row {
    kind: String,
    ingested_at: DateTime<Utc>,
    id: String,
    data: String,
}

/// Live events.
///
/// `event` is `order`, `fill`, `signal` or `anomaly`; `data` the stored row as JSON; `id` the
/// resume cursor. Non-admin tokens see their own account's orders and fills.
#[utoipa::path(get, path = "/v1/stream", tag = "events",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "text/event-stream of events", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let account = principal.read_scope(None)?.map(|a| a.to_string());
    let start = match headers.get("last-event-id") {
        Some(v) => Cursor::decode(v.to_str().unwrap_or("")).map_err(|_| {
            ApiError::bad_request("Last-Event-ID", "not an event id sent by this API")
        })?,
        None => {
            let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(state.pool())
                .await?;
            Cursor {
                at: now,
                id: String::new(),
            }
        }
    };
    let events = futures::stream::unfold(
        (state, start, account, Vec::<Row>::new()),
        |(state, mut cursor, account, mut pending)| async move {
            loop {
                if let Some(row) = pending.pop() {
                    cursor = Cursor {
                        at: row.ingested_at,
                        id: row.id.clone(),
                    };
                    let event = Event::default()
                        .event(row.kind)
                        .id(cursor.encode())
                        .data(row.data);
                    return Some((Ok(event), (state, cursor, account, pending)));
                }
                match poll(&state, &cursor, account.as_deref()).await {
                    Ok(mut rows) if !rows.is_empty() => {
                        rows.reverse();
                        pending = rows;
                    }
                    Ok(_) => tokio::time::sleep(POLL).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream poll failed; retrying");
                        tokio::time::sleep(POLL * 4).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn poll(
    state: &AppState,
    after: &Cursor,
    account: Option<&str>,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as::<_, Row>(
        "SELECT kind, ingested_at, id, data FROM ( \
            SELECT 'order' AS kind, e.ingested_at, e.event_id AS id, e.account_id AS account, row_to_json(e)::text AS data \
              FROM order_events e WHERE (e.ingested_at, e.event_id) > ($1, $2) \
            UNION ALL \
            SELECT 'fill', f.ingested_at, f.fill_id, f.account_id, row_to_json(f)::text \
              FROM fills f WHERE (f.ingested_at, f.fill_id) > ($1, $2) \
            UNION ALL \
            SELECT 'signal', s.ingested_at, s.signal_id, NULL, row_to_json(s)::text \
              FROM signals s WHERE (s.ingested_at, s.signal_id) > ($1, $2) \
            UNION ALL \
            SELECT 'anomaly', a.ingested_at, a.anomaly_id, NULL, row_to_json(a)::text \
              FROM anomalies a WHERE (a.ingested_at, a.anomaly_id) > ($1, $2) \
          ) x \
          WHERE ($3::text IS NULL OR x.account IS NULL OR x.account = $3) \
          ORDER BY ingested_at, id LIMIT $4",
    )
    .bind(after.at)
    .bind(&after.id)
    .bind(account)
    .bind(BATCH)
    .fetch_all(state.pool())
    .await
}
