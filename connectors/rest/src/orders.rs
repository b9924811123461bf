//! `/v1/orders`: manual orders in, order state out.
//!
//! A manual order is recorded in `api_order_requests` (the record of intent: the exact NEW
//! event), then published on `orders` from that record (see [`crate::outbox`]), so the router
//! puts it through the same risk checks as a model signal and the venue and the sink take it
//! from there. Its id is derived from the account and the client order id (or the request
//! id); the record's unique keys make one `Idempotency-Key` or client order id one order,
//! however many requests race. Reads come from the `orders` table the sink keeps.

use crate::auth::{Principal, Scope};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use crate::model::{
    Cursor, ListQuery, NewOrder, OrderStatus, OrderType, OrderView, Page, Side, TimeInForce,
    amount, page,
};
use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tradestream_schemas::{AccountId, AnyRecord, Order, OriginKind, Symbol};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", get(list_orders).post(place_order))
        .route("/v1/orders/{order_id}", get(get_order))
        .route("/v1/orders/{order_id}/cancel", post(cancel_order))
}

/// Header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct OrderRow {
    order_id: String,
    client_order_id: Option<String>,
    account_id: String,
    symbol: String,
    side: String,
    order_type: String,
    quantity: Decimal,
    limit_price: Option<Decimal>,
    stop_price: Option<Decimal>,
    time_in_force: String,
    status: String,
    filled_quantity: Decimal,
    origin: String,
    origin_id: Option<String>,
    parent_order_id: Option<String>,
    sequence: i32,
    reject_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const ORDER_COLUMNS: &str = "order_id, client_order_id, account_id, symbol, side, order_type, \
    quantity, limit_price, stop_price, time_in_force, status, filled_quantity, origin, origin_id, \
    parent_order_id, sequence, reject_reason, created_at, updated_at";

impl OrderRow {
    fn view(&self) -> Result<OrderView, ApiError> {
        let bad = |what: &str, v: &str| {
            ApiError::Internal(format!("orders row {}: {what} {v:?}", self.order_id))
        };
        Ok(OrderView {
            order_id: self.order_id.clone(),
            client_order_id: self.client_order_id.clone(),
            account: self.account_id.clone(),
            symbol: self.symbol.clone(),
            side: Side::parse(&self.side).ok_or_else(|| bad("side", &self.side))?,
            order_type: OrderType::parse(&self.order_type)
                .ok_or_else(|| bad("order_type", &self.order_type))?,
            quantity: self.quantity,
            limit_price: self.limit_price,
            stop_price: self.stop_price,
            time_in_force: TimeInForce::parse(&self.time_in_force)
                .ok_or_else(|| bad("time_in_force", &self.time_in_force))?,
            status: OrderStatus::parse(&self.status).ok_or_else(|| bad("status", &self.status))?,
            filled_quantity: self.filled_quantity,
            origin: self.origin.clone(),
            parent_order_id: self.parent_order_id.clone(),
            reject_reason: self.reject_reason.clone(),
            sequence: self.sequence,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }

    /// The order record of this row's state (for a cancel request).
    fn record(&self) -> Result<Order, ApiError> {
        let v = self.view()?;
        let origin_kind = match self.origin.as_str() {
            "SIGNAL" => OriginKind::Signal,
            "BRACKET" => OriginKind::Bracket,
            _ => OriginKind::Manual,
        };
        Ok(Order {
            event_id: format!("{}:{}", self.order_id, self.sequence),
            order_id: self.order_id.clone(),
            sequence: self.sequence,
            client_order_id: self.client_order_id.clone(),
            account: AccountId::new(&self.account_id)
                .map_err(|e| ApiError::Internal(format!("orders row account: {e}")))?,
            symbol: Symbol::new(&self.symbol)
                .map_err(|e| ApiError::Internal(format!("orders row symbol: {e}")))?,
            side: v.side.into(),
            order_type: v.order_type.into(),
            quantity: self.quantity,
            limit_price: self.limit_price,
            stop_price: self.stop_price,
            time_in_force: v.time_in_force.into(),
            status: v.status.into(),
            filled_quantity: self.filled_quantity,
            origin_kind,
            origin_id: self.origin_id.clone().unwrap_or_default(),
            parent_order_id: self.parent_order_id.clone(),
            reject_reason: self.reject_reason.clone(),
            created_time: self.created_at,
            updated_time: self.updated_at,
        })
    }
}

pub(crate) async fn load_order(
    state: &AppState,
    order_id: &str,
) -> Result<Option<OrderRow>, ApiError> {
    Ok(sqlx::query_as::<_, OrderRow>(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1"
    ))
    .bind(order_id)
    .fetch_optional(state.pool())
    .await?)
}

fn valid_client_order_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Checks a request and builds the NEW order event (everything but ids and times).
pub(crate) fn validate_new_order(
    body: &NewOrder,
    account: AccountId,
) -> Result<ValidOrder, ApiError> {
    let symbol =
        Symbol::canonical(&body.symbol).map_err(|e| ApiError::invalid("symbol", e.to_string()))?;
    let quantity = amount(
        "quantity",
        body.quantity
            .ok_or_else(|| ApiError::invalid("quantity", "required"))?,
    )?;
    let needs_limit = matches!(body.order_type, OrderType::Limit | OrderType::StopLimit);
    let needs_stop = matches!(body.order_type, OrderType::Stop | OrderType::StopLimit);
    let limit_price = match (needs_limit, body.limit_price) {
        (true, None) => {
            return Err(ApiError::invalid(
                "limit_price",
                format!("required for {} orders", body.order_type.as_str()),
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "limit_price",
                format!("not allowed for {} orders", body.order_type.as_str()),
            ));
        }
        (_, p) => p.map(|p| amount("limit_price", p)).transpose()?,
    };
    let stop_price = match (needs_stop, body.stop_price) {
        (true, None) => {
            return Err(ApiError::invalid(
                "stop_price",
                format!("required for {} orders", body.order_type.as_str()),
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "stop_price",
                format!("not allowed for {} orders", body.order_type.as_str()),
            ));
        }
        (_, p) => p.map(|p| amount("stop_price", p)).transpose()?,
    };
    if let Some(id) = &body.client_order_id
        && !valid_client_order_id(id)
    {
        return Err(ApiError::invalid(
            "client_order_id",
            "1 to 64 characters of A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(ValidOrder {
        account,
        symbol,
        side: body.side,
        order_type: body.order_type,
        quantity,
        limit_price,
        stop_price,
        time_in_force: body.time_in_force.unwrap_or(TimeInForce::Day),
        client_order_id: body.client_order_id.clone(),
    })
}

/// A checked manual order request.
#[derive(Debug, Clone)]
pub(crate) struct ValidOrder {
    account: AccountId,
    symbol: Symbol,
    side: Side,
    order_type: OrderType,
    quantity: Decimal,
    limit_price: Option<Decimal>,
    stop_price: Option<Decimal>,
    time_in_force: TimeInForce,
    client_order_id: Option<String>,
}

impl ValidOrder {
    /// The NEW event: order id `order:manual:<account>:<client order id or request id>`.
    pub(crate) fn event(&self, request_id: &str, now: DateTime<Utc>) -> Order {
        let tail = self.client_order_id.as_deref().unwrap_or(request_id);
        let order_id = format!("order:manual:{}:{tail}", self.account);
        Order {
            event_id: format!("{order_id}:0"),
            order_id,
            sequence: 0,
            client_order_id: self.client_order_id.clone(),
            account: self.account.clone(),
            symbol: self.symbol.clone(),
            side: self.side.into(),
            order_type: self.order_type.into(),
            quantity: self.quantity,
            limit_price: self.limit_price,
            stop_price: self.stop_price,
            time_in_force: self.time_in_force.into(),
            status: tradestream_schemas::OrderStatus::New,
            filled_quantity: Decimal::ZERO,
            origin_kind: OriginKind::Manual,
            origin_id: request_id.to_string(),
            parent_order_id: None,
            reject_reason: None,
            created_time: now,
            updated_time: now,
        }
    }
}

/// The `Idempotency-Key` header, as documented.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // read from the headers; this type only documents it
struct IdempotencyHeader {
    /// Retries with the same key (per account) return the first answer; the same key with
    /// another body is 422.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

/// The idempotency key of a request: 1–255 visible ASCII characters (no spaces), as
/// [`IdempotencyHeader`] documents.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key",
                "1 to 255 visible ASCII characters, no spaces",
            )
        })?;
    Ok(Some(key.to_string()))
}

/// A recorded manual order (`api_order_requests`).
#[derive(Debug, sqlx::FromRow)]
struct Recorded {
    order_id: String,
    idempotency_key: Option<String>,
    request_hash: String,
    record: serde_json::Value,
}

impl Recorded {
    fn order(&self) -> Result<Order, ApiError> {
        serde_json::from_value(self.record.clone()).map_err(|e| {
            ApiError::Internal(format!("api_order_requests {}: record: {e}", self.order_id))
        })
    }
}

/// The first answer to a request again: the recorded order, `Idempotent-Replayed: true`.
fn replay(order: &Order) -> Result<Response, ApiError> {
    let mut response = accepted(
        &OrderView::from_record(order),
        &location_of(&order.order_id),
    )?;
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

fn location_of(order_id: &str) -> String {
    format!("/v1/orders/{order_id}")
}

/// Place a manual order.
///
/// The order is published on `orders` as NEW and goes through the router's risk checks; poll
/// `Location` for ACCEPTED/REJECTED and fills. With `Idempotency-Key`, a retry returns the
/// first response (header `Idempotent-Replayed: true`).
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body = NewOrder,
    params(IdempotencyHeader),
    security(("bearer" = ["orders:write"])),
    responses(
        (status = 202, description = "Submitted (status NEW)", body = OrderView,
            headers(("Location" = String, description = "URL of the order"))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "client_order_id already used", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (named in `field`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Kafka or Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn place_order(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewOrder>,
) -> Result<Response, ApiError> {
    principal.require(Scope::OrdersWrite)?;
    let requested = body
        .account
        .as_deref()
        .map(|a| AccountId::new(a).map_err(|e| ApiError::invalid("account", e.to_string())))
        .transpose()?;
    let account = principal.account_for(requested.as_ref())?;
    let order = validate_new_order(&body, account.clone())?;
    let key = idempotency_key(&headers)?;
    let hash = {
        let canonical = serde_json::to_vec(&body)
            .map_err(|e| ApiError::Internal(format!("hashing the request: {e}")))?;
        let mut h = Sha256::new();
        h.update(b"POST /v1/orders\n");
        h.update(account.as_str().as_bytes());
        h.update(b"\n");
        h.update(&canonical);
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    // Derived from the account and the key, so racing first attempts name the same order.
    let request_id = match &key {
        Some(k) => uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{account}\n{k}").as_bytes(),
        )
        .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    // An instrument the system knows: one configured (`TRADESTREAM_API_INSTRUMENTS`) or one
    // whose market data the sink has stored (each symbol's last mark, `symbol_marks`). An
    // order for anything else would rest forever.
    let configured = state
        .config()
        .instruments
        .iter()
        .any(|s| Symbol::canonical(s).is_ok_and(|s| s == order.symbol));
    let known = configured
        || sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM symbol_marks WHERE symbol = $1)",
        )
        .bind(order.symbol.as_str())
        .fetch_one(state.pool())
        .await?;
    if !known {
        return Err(ApiError::invalid(
            "symbol",
            format!(
                "unknown instrument {}: no market data has been stored for it",
                order.symbol
            ),
        ));
    }
    // Microseconds, as the record carries them: the answer, the record and a replay agree.
    let now = Utc::now();
    let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let event = order.event(&request_id, now);
    let record = serde_json::to_value(&event)
        .map_err(|e| ApiError::Internal(format!("serializing the order: {e}")))?;
    // The record of intent first: whoever inserts it places the order; every other request
    // with its key or client order id finds it and gets the same answer or a refusal.
    let inserted = sqlx::query(
        "INSERT INTO api_order_requests \
           (order_id, account_id, client_order_id, idempotency_key, request_hash, record) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&event.order_id)
    .bind(account.as_str())
    .bind(&order.client_order_id)
    .bind(&key)
    .bind(&hash)
    .bind(&record)
    .execute(state.pool())
    .await?
    .rows_affected();
    if inserted == 0 {
        return earlier_request(&state, &account, key.as_deref(), &hash, &event).await;
    }
    tracing::info!(order_id = %event.order_id, account = %account, subject = %principal.subject, "manual order recorded");
    if let Err(e) = crate::outbox::publish_order(&state, &event).await {
        // Recorded: the relay publishes it when Kafka takes it again.
        tracing::warn!(order_id = %event.order_id, error = %e, "manual order not published yet; the outbox relay will");
    }
    accepted(
        &OrderView::from_record(&event),
        &location_of(&event.order_id),
    )
}

/// The answer to a request whose order id, key or client order id is already recorded: the
/// same answer again for the same key and body, 422 for the key with another body, 409 for a
/// client order id already used.
async fn earlier_request(
    state: &AppState,
    account: &AccountId,
    key: Option<&str>,
    hash: &str,
    event: &Order,
) -> Result<Response, ApiError> {
    let rows: Vec<Recorded> = sqlx::query_as(
        "SELECT order_id, idempotency_key, request_hash, record FROM api_order_requests \
         WHERE order_id = $1 OR (account_id = $2 AND (idempotency_key = $3 OR client_order_id = $4))",
    )
    .bind(&event.order_id)
    .bind(account.as_str())
    .bind(key)
    .bind(&event.client_order_id)
    .fetch_all(state.pool())
    .await?;
    if let Some(same_key) = rows
        .iter()
        .find(|r| key.is_some() && r.idempotency_key.as_deref() == key)
    {
        if same_key.request_hash != hash {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "already used for a different request",
            ));
        }
        return replay(&same_key.order()?);
    }
    match rows.first() {
        Some(r) => Err(ApiError::Conflict(format!(
            "client_order_id {:?} is already used by order {}",
            event.client_order_id.as_deref().unwrap_or_default(),
            r.order_id
        ))),
        // Gone between the insert and the read: cannot happen (rows are never deleted), but
        // retryable if it did.
        None => Err(ApiError::Unavailable(
            "the order's record changed while it was read".into(),
        )),
    }
}

fn accepted(view: &OrderView, location: &str) -> Result<Response, ApiError> {
    let mut response = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    let location = HeaderValue::from_str(location)
        .map_err(|e| ApiError::Internal(format!("location header: {e}")))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// Get an order's current state.
#[utoipa::path(
    get,
    path = "/v1/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "Order id")),
    security(("bearer" = ["orders:read"])),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order visible to the token (another account's answers alike; a new one: the sink stores it shortly after it is placed)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_order(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiPath(order_id): ApiPath<String>,
) -> Result<axum::Json<OrderView>, ApiError> {
    principal.require(Scope::OrdersRead)?;
    let row = owned_order(&state, &principal, &order_id).await?;
    Ok(axum::Json(row.view()?))
}

async fn owned_order(
    state: &AppState,
    principal: &Principal,
    order_id: &str,
) -> Result<OrderRow, ApiError> {
    // Another account's order answers exactly like a missing one, so ids cannot be probed.
    let missing = || ApiError::NotFound(format!("no order {order_id:?}"));
    let row = load_order(state, order_id).await?.ok_or_else(missing)?;
    let owner = AccountId::new(&row.account_id)
        .map_err(|e| ApiError::Internal(format!("orders row account: {e}")))?;
    principal.account_for(Some(&owner)).map_err(|_| missing())?;
    Ok(row)
}

/// List orders, newest first.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(ListQuery),
    security(("bearer" = ["orders:read"])),
    responses(
        (status = 200, description = "A page of orders", body = Page<OrderView>),
        (status = 400, description = "Malformed query or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope or another account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_orders(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<Page<OrderView>>, ApiError> {
    principal.require(Scope::OrdersRead)?;
    let account = principal.read_scope(q.account()?.as_ref())?;
    let limit = q.page_size(state.config().max_page_size)?;
    let cursor = q.cursor()?;
    q.check_range()?;
    let symbol = q.symbol()?;
    let rows = sqlx::query_as::<_, OrderRow>(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders \
         WHERE ($1::text IS NULL OR account_id = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR symbol = $3) \
           AND ($4::timestamptz IS NULL OR created_at >= $4) \
           AND ($5::timestamptz IS NULL OR created_at < $5) \
           AND ($6::timestamptz IS NULL OR (created_at, order_id) < ($6, $7)) \
         ORDER BY created_at DESC, order_id DESC LIMIT $8"
    ))
    .bind(account.as_ref().map(AccountId::as_str))
    .bind(q.status.map(OrderStatus::as_str))
    .bind(symbol)
    .bind(q.from)
    .bind(q.to)
    .bind(cursor.as_ref().map(|c| c.at))
    .bind(cursor.as_ref().map(|c| c.id.clone()))
    .bind(limit + 1)
    .fetch_all(state.pool())
    .await?;
    let rows = rows
        .iter()
        .map(OrderRow::view)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(page(rows, limit, |o| Cursor {
        at: o.created_at,
        id: o.order_id.clone(),
    })))
}

/// Cancel a resting order.
///
/// Publishes a cancel request (status CANCELED at the order's last known sequence); the venue
/// confirms with its own CANCELED event, after which `GET` shows the order canceled. An order
/// that already filled before the request reaches the venue stays filled.
#[utoipa::path(
    post,
    path = "/v1/orders/{order_id}/cancel",
    tag = "orders",
    params(("order_id" = String, Path, description = "Order id")),
    security(("bearer" = ["orders:write"])),
    responses(
        (status = 202, description = "Cancel requested; the order as last known", body = OrderView),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order visible to the token (another account's answers alike)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is already finished", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Kafka or Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel_order(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
    ApiPath(order_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    principal.require(Scope::OrdersWrite)?;
    let row = owned_order(&state, &principal, &order_id).await?;
    let view = row.view()?;
    let status: tradestream_schemas::OrderStatus = view.status.into();
    if status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "order {order_id} is already {}",
            view.status.as_str()
        )));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let cancel = row.record()?.cancel_request(
        &request_id,
        format!("MANUAL_CANCEL: by={}", principal.subject),
        Utc::now().max(row.updated_at),
    );
    state
        .publisher()
        .publish(&AnyRecord::Order(cancel.clone()))
        .await?;
    tracing::info!(order_id = %order_id, subject = %principal.subject, "cancel requested");
    accepted(&view, &location_of(&order_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountId {
        AccountId::new("demo").unwrap_or_else(|_| unreachable!())
    }

    fn body(json: &str) -> NewOrder {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn validation_names_the_field() {
        for (json, field) in [
            (
                r#"{"symbol":"","side":"BUY","type":"MARKET","quantity":"1"}"#,
                "symbol",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"0"}"#,
                "quantity",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"LIMIT","quantity":"1"}"#,
                "limit_price",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"1","limit_price":"1"}"#,
                "limit_price",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"STOP","quantity":"1"}"#,
                "stop_price",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"LIMIT","quantity":"1","limit_price":"0"}"#,
                "limit_price",
            ),
            (
                r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"1","client_order_id":"a b"}"#,
                "client_order_id",
            ),
        ] {
            match validate_new_order(&body(json), account()) {
                Err(ApiError::Unprocessable { field: f, .. }) => assert_eq!(f, field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_new_event_follows_the_contract() {
        let v = validate_new_order(
            &body(r#"{"symbol":"aapl","side":"BUY","type":"LIMIT","quantity":"10","limit_price":"101.5","client_order_id":"c-1"}"#),
            account(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let now = Utc::now();
        let o = v.event("req-1", now);
        assert_eq!(o.order_id, "order:manual:demo:c-1");
        assert_eq!(o.event_id, "order:manual:demo:c-1:0");
        assert_eq!(o.sequence, 0);
        assert_eq!(o.status, tradestream_schemas::OrderStatus::New);
        assert_eq!(o.origin_kind, OriginKind::Manual);
        assert_eq!(o.symbol.as_str(), "AAPL");
        assert_eq!(o.time_in_force, tradestream_schemas::TimeInForce::Day);
        assert!(tradestream_schemas::Record::validate(&o).is_ok());
        let v = validate_new_order(
            &body(r#"{"symbol":"A","side":"SELL","type":"MARKET","quantity":"1"}"#),
            account(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.event("req-9", now).order_id, "order:manual:demo:req-9");
    }
}
