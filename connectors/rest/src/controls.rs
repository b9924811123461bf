//! `/v1/controls/kill-switch`: the operators' stop button. A change is validated, recorded in
//! Postgres (the state in `controls`, the change in `control_events`, one transaction), then
//! published as a `Control` record on `controls` from that record (see [`crate::outbox`]);
//! the trading core reads it next to the order flow and rejects every new order with
//! `RISK_KILL_SWITCH: reason=<reason>` from then on (its consumer waits at most tens of
//! milliseconds for new records, well inside the one-second promise). `GET` and the audit
//! read Postgres, which therefore never disagrees with what is, or is about to be, published.

use crate::auth::{Principal, Scope};
use crate::error::{ApiError, ApiJson, Problem};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tradestream_schemas::{Control, Record};
use utoipa::ToSchema;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/controls/kill-switch",
        get(get_kill_switch).post(set_kill_switch),
    )
}

/// `POST /v1/controls/kill-switch` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchRequest {
    /// true: reject every new order; false: resume.
    pub enabled: bool,
    /// Why (quoted in rejections; 1–500 bytes, one line without control characters).
    #[schema(min_length = 1, max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f]+$")]
    pub reason: String,
}

/// The kill switch's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct KillSwitchState {
    /// Whether new orders are rejected.
    pub enabled: bool,
    /// Why it was last changed.
    pub reason: String,
    /// Who last changed it (`sub`).
    pub actor: String,
    /// When it was last changed (absent: never).
    pub updated_at: Option<DateTime<Utc>>,
}

/// The kill switch's state.
#[utoipa::path(get, path = "/v1/controls/kill-switch", tag = "controls",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Current state", body = KillSwitchState),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_kill_switch(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<KillSwitchState>, ApiError> {
    principal.require(Scope::Admin)?;
    Ok(Json(current(&state).await?))
}

async fn current(state: &AppState) -> Result<KillSwitchState, ApiError> {
    let row = sqlx::query_as::<_, KillSwitchState>(
        "SELECT enabled, reason, actor, updated_at FROM controls WHERE name = $1",
    )
    .bind(Control::KILL_SWITCH)
    .fetch_optional(state.pool())
    .await?;
    Ok(row.unwrap_or(KillSwitchState {
        enabled: false,
        reason: String::new(),
        actor: String::new(),
        updated_at: None,
    }))
}

/// Turn the kill switch on or off.
#[utoipa::path(post, path = "/v1/controls/kill-switch", tag = "controls",
    request_body = KillSwitchRequest,
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Recorded and published to the trading core (or, if Kafka is down, published as soon as it is back); the new state", body = KillSwitchState),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Kafka or Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn set_kill_switch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<KillSwitchRequest>,
) -> Result<Json<KillSwitchState>, ApiError> {
    principal.require(Scope::Admin)?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::invalid("reason", "1 to 500 bytes"));
    }
    let now = Utc::now();
    let control = Control {
        control_id: format!("control:{}:{}", Control::KILL_SWITCH, uuid::Uuid::new_v4()),
        name: Control::KILL_SWITCH.into(),
        enabled: body.enabled,
        reason: reason.clone(),
        actor: principal.subject.clone(),
        issued_time: now,
    };
    // Everything the record must satisfy is checked before anything is written.
    control
        .validate()
        .map_err(|e| ApiError::invalid(e.field, e.reason))?;
    let mut tx = state.pool().begin().await?;
    sqlx::query(
        "INSERT INTO control_events (control_id, name, enabled, reason, actor, issued_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&control.control_id)
    .bind(&control.name)
    .bind(control.enabled)
    .bind(&control.reason)
    .bind(&control.actor)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO controls (name, enabled, reason, actor, control_id, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, reason = EXCLUDED.reason, \
           actor = EXCLUDED.actor, control_id = EXCLUDED.control_id, updated_at = EXCLUDED.updated_at",
    )
    .bind(&control.name)
    .bind(control.enabled)
    .bind(&control.reason)
    .bind(&control.actor)
    .bind(&control.control_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Err(e) = crate::outbox::publish_control(&state, &control).await {
        tracing::warn!(control_id = %control.control_id, error = %e, "kill switch recorded, not published yet; the outbox relay will");
    }
    tracing::warn!(enabled = control.enabled, reason = %control.reason, actor = %control.actor, "kill switch changed");
    Ok(Json(KillSwitchState {
        enabled: control.enabled,
        reason: control.reason,
        actor: control.actor,
        updated_at: Some(now),
    }))
}
