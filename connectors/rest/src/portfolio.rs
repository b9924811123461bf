//! Portfolio and history: positions, cash and value, performance statistics (the SQL
//! `get_portfolio_stats`), fills, signals and anomalies. Everything is read from the tables
//! the sink and the database triggers keep exact; nothing here computes money in Rust except
//! sums of stored decimals.

use crate::auth::{Principal, Scope};
use crate::error::{ApiError, ApiQuery, Problem};
use crate::model::{
    Cursor, Page, account_filter, check_range, cursor, page, page_size, symbol_filter,
};
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/positions", get(positions))
        .route("/v1/portfolio", get(portfolio))
        .route("/v1/portfolio/stats", get(stats))
        .route("/v1/fills", get(fills))
        .route("/v1/signals", get(signals))
        .route("/v1/anomalies", get(anomalies))
}

/// Filters of `/v1/positions`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PositionQuery {
    /// Account (default: the token's; admins: every account when absent).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
    /// Symbol filter.
    #[param(pattern = "^[A-Za-z0-9.\\-_^=/]{1,32}$")]
    pub symbol: Option<String>,
    /// Include flat positions (quantity 0; default false).
    pub include_flat: Option<bool>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Cursor from `next_cursor`.
    #[param(min_length = 2, max_length = 1024, pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

/// One position.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PositionView {
    /// Account.
    #[sqlx(rename = "account_id")]
    pub account: String,
    /// Symbol.
    pub symbol: String,
    /// Signed quantity (short is negative).
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Average entry price.
    #[schema(value_type = String)]
    pub avg_price: Decimal,
    /// Last mark.
    #[schema(value_type = Option<String>)]
    pub current_price: Option<Decimal>,
    /// quantity × current price.
    #[schema(value_type = Option<String>)]
    pub market_value: Option<Decimal>,
    /// Realized P&L.
    #[schema(value_type = String)]
    pub realized_pnl: Decimal,
    /// Unrealized P&L at the last mark.
    #[schema(value_type = String)]
    pub unrealized_pnl: Decimal,
    /// Commission paid on this symbol.
    #[schema(value_type = String)]
    pub commission: Decimal,
    /// Event time of the last fill or mark.
    pub updated_at: DateTime<Utc>,
}

/// List positions.
#[utoipa::path(get, path = "/v1/positions", tag = "portfolio", params(PositionQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "A page of positions by account and symbol", body = Page<PositionView>),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn positions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PositionQuery>,
) -> Result<Json<Page<PositionView>>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let account = principal.read_scope(account_filter(q.account.as_deref())?.as_ref())?;
    let limit = page_size(q.limit, state.config().max_page_size)?;
    let after = cursor(q.cursor.as_deref())?;
    let (after_account, after_symbol) = match &after {
        Some(c) => {
            let (a, s) =
                c.id.split_once('/')
                    .ok_or_else(|| ApiError::bad_request("cursor", "not a positions cursor"))?;
            (Some(a.to_string()), Some(s.to_string()))
        }
        None => (None, None),
    };
    let rows = sqlx::query_as::<_, PositionView>(
        "SELECT account_id, symbol, quantity, avg_price, current_price, \
                quantity * current_price AS market_value, realized_pnl, unrealized_pnl, \
                commission, updated_at \
           FROM positions \
          WHERE ($1::text IS NULL OR account_id = $1) \
            AND ($2::text IS NULL OR symbol = $2) \
            AND ($3 OR quantity <> 0) \
            AND ($4::text IS NULL OR (account_id, symbol) > ($4, $5)) \
          ORDER BY account_id, symbol LIMIT $6",
    )
    .bind(account.as_ref().map(|a| a.as_str()))
    .bind(symbol_filter(q.symbol.as_deref())?)
    .bind(q.include_flat.unwrap_or(false))
    .bind(after_account)
    .bind(after_symbol)
    .bind(limit + 1)
    .fetch_all(state.pool())
    .await?;
    Ok(Json(page(rows, limit, |p| Cursor {
        at: DateTime::<Utc>::UNIX_EPOCH,
        id: format!("{}/{}", p.account, p.symbol),
    })))
}

/// Account selector of `/v1/portfolio`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountQuery {
    /// Account (default: the token's; required for admin tokens without one).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
}

/// An account's cash, value and P&L.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortfolioView {
    /// Account.
    pub account: String,
    /// Starting capital.
    #[schema(value_type = String)]
    pub initial_capital: Decimal,
    /// Cash.
    #[schema(value_type = String)]
    pub cash: Decimal,
    /// Cash plus positions at their last marks.
    #[schema(value_type = String)]
    pub total_value: Decimal,
    /// total_value − cash.
    #[schema(value_type = String)]
    pub positions_value: Decimal,
    /// total_value − initial_capital.
    #[schema(value_type = String)]
    pub total_pnl: Decimal,
    /// Σ realized P&L of the positions.
    #[schema(value_type = String)]
    pub realized_pnl: Decimal,
    /// Σ unrealized P&L of the positions.
    #[schema(value_type = String)]
    pub unrealized_pnl: Decimal,
    /// total_pnl / initial_capital, 8 decimal places.
    #[schema(value_type = String)]
    pub total_return: Decimal,
    /// Open positions (non-zero quantity).
    pub open_positions: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct PortfolioRow {
    account_id: String,
    initial_capital: Decimal,
    cash: Decimal,
    total_value: Decimal,
    realized_pnl: Decimal,
    unrealized_pnl: Decimal,
    open_positions: i64,
    updated_at: DateTime<Utc>,
}

/// An account's cash, value and P&L.
#[utoipa::path(get, path = "/v1/portfolio", tag = "portfolio", params(AccountQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "The account's portfolio", body = PortfolioView),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn portfolio(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Json<PortfolioView>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let account = principal.account_for(account_filter(q.account.as_deref())?.as_ref())?;
    let row = sqlx::query_as::<_, PortfolioRow>(
        "SELECT a.account_id, a.initial_capital, a.cash, a.total_value, \
                COALESCE(sum(p.realized_pnl), 0) AS realized_pnl, \
                COALESCE(sum(p.unrealized_pnl), 0) AS unrealized_pnl, \
                count(p.symbol) FILTER (WHERE p.quantity <> 0) AS open_positions, \
                greatest(a.updated_at, max(p.updated_at)) AS updated_at \
           FROM accounts a LEFT JOIN positions p ON p.account_id = a.account_id \
          WHERE a.account_id = $1 \
          GROUP BY a.account_id",
    )
    .bind(account.as_str())
    .fetch_optional(state.pool())
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no account {account}")))?;
    let total_pnl = row.total_value - row.initial_capital;
    let total_return = total_pnl
        .checked_div(row.initial_capital)
        .unwrap_or_default()
        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    Ok(Json(PortfolioView {
        account: row.account_id,
        initial_capital: row.initial_capital,
        cash: row.cash,
        total_value: row.total_value,
        positions_value: row.total_value - row.cash,
        total_pnl,
        realized_pnl: row.realized_pnl,
        unrealized_pnl: row.unrealized_pnl,
        total_return,
        open_positions: row.open_positions,
        updated_at: row.updated_at,
    }))
}

/// Window of `/v1/portfolio/stats`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Account (default: the token's; admins: every account summed when absent).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
    /// Start of the window (RFC 3339; default: the beginning).
    pub from: Option<DateTime<Utc>>,
    /// End of the window (RFC 3339; default: now).
    pub to: Option<DateTime<Utc>>,
}

/// Performance over a window (from the SQL function `get_portfolio_stats`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct StatsView {
    /// end/start − 1 over the daily series.
    #[schema(value_type = Option<String>)]
    pub total_return: Option<Decimal>,
    /// Annualized Sharpe ratio of daily returns (risk-free 0).
    pub sharpe: Option<f64>,
    /// Largest peak-to-trough fall, a positive fraction.
    #[schema(value_type = Option<String>)]
    pub max_drawdown: Option<Decimal>,
    /// Annualized volatility of daily returns.
    pub volatility: Option<f64>,
    /// Snapshots in the window.
    pub snapshots: i64,
    /// First daily value.
    #[schema(value_type = Option<String>)]
    pub start_value: Option<Decimal>,
    /// Last daily value.
    #[schema(value_type = Option<String>)]
    pub end_value: Option<Decimal>,
}

/// Performance statistics.
#[utoipa::path(get, path = "/v1/portfolio/stats", tag = "portfolio", params(StatsQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "Statistics over the window", body = StatsView),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid window or account", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<StatsView>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let account = principal.read_scope(account_filter(q.account.as_deref())?.as_ref())?;
    check_range(q.from, q.to)?;
    let from = q.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let to = q.to.unwrap_or_else(Utc::now);
    let row = sqlx::query_as::<_, StatsView>(
        "SELECT total_return, sharpe, max_drawdown, volatility, snapshots, start_value, end_value \
           FROM get_portfolio_stats($1, $2, $3)",
    )
    .bind(from)
    .bind(to)
    .bind(account.as_ref().map(|a| a.as_str()))
    .fetch_one(state.pool())
    .await?;
    Ok(Json(row))
}

/// Filters of `/v1/fills`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FillQuery {
    /// Account (default: the token's; admins: every account when absent).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
    /// Symbol filter.
    #[param(pattern = "^[A-Za-z0-9.\\-_^=/]{1,32}$")]
    pub symbol: Option<String>,
    /// Only the fills of this order.
    #[param(min_length = 1, max_length = 255)]
    pub order_id: Option<String>,
    /// Inclusive lower bound of the fill time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound of the fill time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Cursor from `next_cursor`.
    #[param(min_length = 2, max_length = 1024, pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

/// One execution.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct FillView {
    /// Fill id.
    pub fill_id: String,
    /// Order filled.
    pub order_id: String,
    /// Account.
    #[sqlx(rename = "account_id")]
    pub account: String,
    /// Symbol.
    pub symbol: String,
    /// BUY or SELL.
    pub side: String,
    /// Executed quantity.
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Price.
    #[schema(value_type = String)]
    pub price: Decimal,
    /// Commission.
    #[schema(value_type = String)]
    pub commission: Decimal,
    /// MAKER or TAKER.
    pub liquidity: String,
    /// Execution time.
    pub fill_time: DateTime<Utc>,
}

/// List fills, newest first.
#[utoipa::path(get, path = "/v1/fills", tag = "history", params(FillQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "A page of fills", body = Page<FillView>),
        (status = 400, description = "Malformed query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn fills(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<FillQuery>,
) -> Result<Json<Page<FillView>>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let account = principal.read_scope(account_filter(q.account.as_deref())?.as_ref())?;
    let limit = page_size(q.limit, state.config().max_page_size)?;
    let after = cursor(q.cursor.as_deref())?;
    check_range(q.from, q.to)?;
    if q.order_id
        .as_ref()
        .is_some_and(|id| !(1..=255).contains(&id.len()))
    {
        return Err(ApiError::invalid("order_id", "1 to 255 bytes"));
    }
    let rows = sqlx::query_as::<_, FillView>(
        "SELECT fill_id, order_id, account_id, symbol, side, quantity, price, commission, \
                liquidity, fill_time \
           FROM fills \
          WHERE ($1::text IS NULL OR account_id = $1) \
            AND ($2::text IS NULL OR symbol = $2) \
            AND ($3::text IS NULL OR order_id = $3) \
            AND ($4::timestamptz IS NULL OR fill_time >= $4) \
            AND ($5::timestamptz IS NULL OR fill_time < $5) \
            AND ($6::timestamptz IS NULL OR (fill_time, fill_id) < ($6, $7)) \
          ORDER BY fill_time DESC, fill_id DESC LIMIT $8",
    )
    .bind(account.as_ref().map(|a| a.as_str()))
    .bind(symbol_filter(q.symbol.as_deref())?)
    .bind(q.order_id.as_deref())
    .bind(q.from)
    .bind(q.to)
    .bind(after.as_ref().map(|c| c.at))
    .bind(after.as_ref().map(|c| c.id.clone()))
    .bind(limit + 1)
    .fetch_all(state.pool())
    .await?;
    Ok(Json(page(rows, limit, |f| Cursor {
        at: f.fill_time,
        id: f.fill_id.clone(),
    })))
}

/// Filters of `/v1/signals` and `/v1/anomalies` (market-wide: not per account).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MarketQuery {
    /// Symbol filter.
    #[param(pattern = "^[A-Za-z0-9.\\-_^=/]{1,32}$")]
    pub symbol: Option<String>,
    /// Inclusive lower bound of the event time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound of the event time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Cursor from `next_cursor`.
    #[param(min_length = 2, max_length = 1024, pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

/// A model signal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct SignalView {
    /// Signal id.
    pub signal_id: String,
    /// Symbol.
    pub symbol: String,
    /// Bar event time.
    pub event_time: DateTime<Utc>,
    /// BUY, SELL or HOLD.
    pub side: String,
    /// Model confidence in [0, 1].
    pub confidence: f64,
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// Reference price.
    #[schema(value_type = Option<String>)]
    pub reference_price: Option<Decimal>,
    /// Stop-loss.
    #[schema(value_type = Option<String>)]
    pub stop_loss: Option<Decimal>,
    /// Take-profit.
    #[schema(value_type = Option<String>)]
    pub take_profit: Option<Decimal>,
    /// Why.
    pub reason: String,
}

/// List model signals, newest first.
#[utoipa::path(get, path = "/v1/signals", tag = "history", params(MarketQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "A page of signals", body = Page<SignalView>),
        (status = 400, description = "Malformed query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn signals(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<MarketQuery>,
) -> Result<Json<Page<SignalView>>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let limit = page_size(q.limit, state.config().max_page_size)?;
    let after = cursor(q.cursor.as_deref())?;
    check_range(q.from, q.to)?;
    let rows = sqlx::query_as::<_, SignalView>(
        "SELECT signal_id, symbol, event_time, side, confidence, model_name, model_version, \
                reference_price, stop_loss, take_profit, reason \
           FROM signals \
          WHERE ($1::text IS NULL OR symbol = $1) \
            AND ($2::timestamptz IS NULL OR event_time >= $2) \
            AND ($3::timestamptz IS NULL OR event_time < $3) \
            AND ($4::timestamptz IS NULL OR (event_time, signal_id) < ($4, $5)) \
          ORDER BY event_time DESC, signal_id DESC LIMIT $6",
    )
    .bind(symbol_filter(q.symbol.as_deref())?)
    .bind(q.from)
    .bind(q.to)
    .bind(after.as_ref().map(|c| c.at))
    .bind(after.as_ref().map(|c| c.id.clone()))
    .bind(limit + 1)
    .fetch_all(state.pool())
    .await?;
    Ok(Json(page(rows, limit, |s| Cursor {
        at: s.event_time,
        id: s.signal_id.clone(),
    })))
}

/// A detected anomaly.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct AnomalyView {
    /// Anomaly id.
    pub anomaly_id: String,
    /// Symbol.
    pub symbol: String,
    /// Bar event time.
    pub event_time: DateTime<Utc>,
    /// RETURN, RANGE, VOLUME or JOINT.
    pub kind: String,
    /// Score (higher is more unusual).
    pub score: f64,
    /// LOW, MEDIUM, HIGH or CRITICAL.
    pub severity: String,
    /// Detector version.
    pub detector_version: String,
}

/// List anomalies, newest first.
#[utoipa::path(get, path = "/v1/anomalies", tag = "history", params(MarketQuery),
    security(("bearer" = ["portfolio:read"])),
    responses(
        (status = 200, description = "A page of anomalies", body = Page<AnomalyView>),
        (status = 400, description = "Malformed query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn anomalies(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<MarketQuery>,
) -> Result<Json<Page<AnomalyView>>, ApiError> {
    principal.require(Scope::PortfolioRead)?;
    let limit = page_size(q.limit, state.config().max_page_size)?;
    let after = cursor(q.cursor.as_deref())?;
    check_range(q.from, q.to)?;
    let rows = sqlx::query_as::<_, AnomalyView>(
        "SELECT anomaly_id, symbol, event_time, kind, score, severity, detector_version \
           FROM anomalies \
          WHERE ($1::text IS NULL OR symbol = $1) \
            AND ($2::timestamptz IS NULL OR event_time >= $2) \
            AND ($3::timestamptz IS NULL OR event_time < $3) \
            AND ($4::timestamptz IS NULL OR (event_time, anomaly_id) < ($4, $5)) \
          ORDER BY event_time DESC, anomaly_id DESC LIMIT $6",
    )
    .bind(symbol_filter(q.symbol.as_deref())?)
    .bind(q.from)
    .bind(q.to)
    .bind(after.as_ref().map(|c| c.at))
    .bind(after.as_ref().map(|c| c.id.clone()))
    .bind(limit + 1)
    .fetch_all(state.pool())
    .await?;
    Ok(Json(page(rows, limit, |a| Cursor {
        at: a.event_time,
        id: a.anomaly_id.clone(),
    })))
}
