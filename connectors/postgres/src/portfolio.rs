//! Typed async wrappers over the portfolio tables (`sql/0001_schema.sql`) and SQL functions
//! (`sql/0002_books.sql`), for the sink processor and the REST API. All money and quantities
//! are `Decimal`, all times `DateTime<Utc>`; the accounting itself lives in the database
//! triggers, not here.
//!
//! Every function takes any executor (`&PgPool`, `&mut PgConnection`, `&mut *transaction`), so a
//! caller can group writes with its consumed offsets in one transaction.

use crate::error::Result;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgExecutor;
use tradestream_schemas::{
    AccountId, Fill, Liquidity, Order, OrderStatus, OrderType, OriginKind, Side, Symbol,
    TimeInForce, Valuation,
};

/// A new account: cash starts at `initial_capital`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAccount {
    /// Account id.
    pub account_id: AccountId,
    /// Display name.
    pub name: String,
    /// Starting cash; returns are measured against it. Must be > 0.
    pub initial_capital: Decimal,
    /// Whether the account may sell what it does not hold.
    pub allow_short: bool,
    /// Commission per share traded.
    pub commission_per_share: Decimal,
    /// Commission in basis points of the traded value.
    pub commission_bps: Decimal,
    /// Minimum commission per order.
    pub commission_min: Decimal,
}

impl NewAccount {
    /// A long-only account without commissions.
    pub fn new(account_id: AccountId, name: impl Into<String>, initial_capital: Decimal) -> Self {
        Self {
            account_id,
            name: name.into(),
            initial_capital,
            allow_short: false,
            commission_per_share: Decimal::ZERO,
            commission_bps: Decimal::ZERO,
            commission_min: Decimal::ZERO,
        }
    }
}

/// A row of `accounts`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Account {
    /// Account id.
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    /// Display name.
    pub name: String,
    /// Starting cash.
    pub initial_capital: Decimal,
    /// Cash now (fills move it).
    pub cash: Decimal,
    /// Cash plus the marked value of all positions.
    pub total_value: Decimal,
    /// Whether short selling is allowed.
    pub allow_short: bool,
    /// Commission per share traded.
    pub commission_per_share: Decimal,
    /// Commission in basis points of traded value.
    pub commission_bps: Decimal,
    /// Minimum commission per order.
    pub commission_min: Decimal,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A row of `positions`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Position {
    /// Account id.
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    /// Symbol.
    #[sqlx(try_from = "String")]
    pub symbol: Symbol,
    /// Signed quantity: negative is short.
    pub quantity: Decimal,
    /// Average entry price of the open quantity (8 dp; 0 when flat).
    pub avg_price: Decimal,
    /// P&L realized by reducing the position.
    pub realized_pnl: Decimal,
    /// Commission paid on this symbol.
    pub commission: Decimal,
    /// Last mark (or fill price before the first mark).
    pub current_price: Option<Decimal>,
    /// `quantity × (current_price − avg_price)`.
    pub unrealized_pnl: Decimal,
    /// Event time of the last fill or mark.
    pub updated_at: DateTime<Utc>,
}

/// A row of `calculate_position_pnl`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PositionPnl {
    /// Account id.
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    /// Symbol.
    #[sqlx(try_from = "String")]
    pub symbol: Symbol,
    /// Signed quantity.
    pub quantity: Decimal,
    /// Average entry price.
    pub avg_price: Decimal,
    /// Current mark.
    pub current_price: Option<Decimal>,
    /// `quantity × (current_price − avg_price)`.
    pub unrealized_pnl: Option<Decimal>,
}

/// The row of `get_portfolio_stats`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PortfolioStats {
    /// `end_value / start_value − 1`, 8 dp.
    pub total_return: Option<Decimal>,
    /// Annualised Sharpe ratio of daily returns (risk-free 0).
    pub sharpe: Option<f64>,
    /// Largest peak-to-trough fall as a positive fraction, 8 dp.
    pub max_drawdown: Option<Decimal>,
    /// Annualised standard deviation of daily returns.
    pub volatility: Option<f64>,
    /// Snapshots in the window.
    pub snapshots: i64,
    /// Value on the first day of the window.
    pub start_value: Option<Decimal>,
    /// Value on the last day of the window.
    pub end_value: Option<Decimal>,
}

/// A row of `portfolio_snapshots`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PortfolioSnapshot {
    /// Insertion order.
    pub snapshot_id: i64,
    /// Account id.
    #[sqlx(try_from = "String")]
    pub account_id: AccountId,
    /// Event time of the instant valued.
    pub snapshot_time: DateTime<Utc>,
    /// Cash plus positions value.
    pub total_value: Decimal,
    /// Cash.
    pub cash: Decimal,
    /// Σ quantity × current price.
    pub positions_value: Decimal,
    /// `total_value − initial_capital`.
    pub total_pnl: Decimal,
    /// `total_pnl / initial_capital`, 8 dp.
    pub total_return: Decimal,
}

/// SQL spelling of an order type.
pub fn order_type_str(t: OrderType) -> &'static str {
    match t {
        OrderType::Market => "MARKET",
        OrderType::Limit => "LIMIT",
        OrderType::Stop => "STOP",
        OrderType::StopLimit => "STOP_LIMIT",
    }
}

/// SQL spelling of a time in force.
pub fn time_in_force_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Day => "DAY",
        TimeInForce::Gtc => "GTC",
        TimeInForce::Ioc => "IOC",
    }
}

/// SQL spelling of an order status.
pub fn order_status_str(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::New => "NEW",
        OrderStatus::Accepted => "ACCEPTED",
        OrderStatus::PartiallyFilled => "PARTIALLY_FILLED",
        OrderStatus::Filled => "FILLED",
        OrderStatus::Canceled => "CANCELED",
        OrderStatus::Rejected => "REJECTED",
        OrderStatus::Expired => "EXPIRED",
    }
}

/// SQL spelling of an order origin.
pub fn origin_str(o: OriginKind) -> &'static str {
    match o {
        OriginKind::Signal => "SIGNAL",
        OriginKind::Manual => "MANUAL",
        OriginKind::Bracket => "BRACKET",
    }
}

/// SQL spelling of a liquidity flag.
pub fn liquidity_str(l: Liquidity) -> &'static str {
    match l {
        Liquidity::Maker => "MAKER",
        Liquidity::Taker => "TAKER",
    }
}

const ACCOUNT_COLUMNS: &str = "account_id, name, initial_capital, cash, total_value, allow_short, \
     commission_per_share, commission_bps, commission_min, created_at, updated_at";

/// Creates an account with cash = total value = initial capital.
/// A second account with the same id is [`PostgresError::Duplicate`](crate::PostgresError::Duplicate).
pub async fn create_account<'e, E: PgExecutor<'e>>(
    executor: E,
    account: &NewAccount,
) -> Result<Account> {
    let sql = format!(
        "INSERT INTO accounts (account_id, name, initial_capital, allow_short,
                               commission_per_share, commission_bps, commission_min)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {ACCOUNT_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(account.account_id.as_str())
        .bind(&account.name)
        .bind(account.initial_capital)
        .bind(account.allow_short)
        .bind(account.commission_per_share)
        .bind(account.commission_bps)
        .bind(account.commission_min)
        .fetch_one(executor)
        .await?)
}

/// The account, if it exists.
pub async fn account<'e, E: PgExecutor<'e>>(
    executor: E,
    account_id: &AccountId,
) -> Result<Option<Account>> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(account_id.as_str())
        .fetch_optional(executor)
        .await?)
}

/// The account's positions (flat ones included), by symbol.
pub async fn positions<'e, E: PgExecutor<'e>>(
    executor: E,
    account_id: &AccountId,
) -> Result<Vec<Position>> {
    Ok(sqlx::query_as(
        "SELECT account_id, symbol, quantity, avg_price, realized_pnl, commission,
                current_price, unrealized_pnl, updated_at
           FROM positions WHERE account_id = $1 ORDER BY symbol",
    )
    .bind(account_id.as_str())
    .fetch_all(executor)
    .await?)
}

/// Stores an order event: inserts the order, or advances the stored state when `order.sequence`
/// is newer than the stored one. Returns whether anything changed (false for a replayed or
/// stale event). Refusals: [`InvalidOrder`](crate::PostgresError::InvalidOrder),
/// [`UnknownAccount`](crate::PostgresError::UnknownAccount), and
/// [`Duplicate`](crate::PostgresError::Duplicate) for a client order id already used by
/// another order of the account.
pub async fn insert_order<'e, E: PgExecutor<'e>>(executor: E, order: &Order) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO orders (order_id, client_order_id, account_id, symbol, side, order_type,
                             quantity, limit_price, stop_price, time_in_force, status,
                             filled_quantity, origin, origin_id, parent_order_id, sequence,
                             reject_reason, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (order_id) DO UPDATE
            SET status = EXCLUDED.status,
                filled_quantity = EXCLUDED.filled_quantity,
                reject_reason = EXCLUDED.reject_reason,
                sequence = EXCLUDED.sequence,
                updated_at = EXCLUDED.updated_at
          WHERE orders.sequence < EXCLUDED.sequence",
    )
    .bind(&order.order_id)
    .bind(&order.client_order_id)
    .bind(order.account.as_str())
    .bind(order.symbol.as_str())
    .bind(order.side.as_str())
    .bind(order_type_str(order.order_type))
    .bind(order.quantity)
    .bind(order.limit_price)
    .bind(order.stop_price)
    .bind(time_in_force_str(order.time_in_force))
    .bind(order_status_str(order.status))
    .bind(order.filled_quantity)
    .bind(origin_str(order.origin_kind))
    .bind(&order.origin_id)
    .bind(&order.parent_order_id)
    .bind(order.sequence)
    .bind(&order.reject_reason)
    .bind(order.created_time)
    .bind(order.updated_time)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores a fill; its trigger moves the account's cash and position. Idempotent by `fill_id`:
/// returns false (and changes nothing) when the fill was stored before. Refusals:
/// [`UnknownAccount`](crate::PostgresError::UnknownAccount) and
/// [`InvalidData`](crate::PostgresError::InvalidData) for a non-positive quantity or price.
pub async fn insert_fill<'e, E: PgExecutor<'e>>(executor: E, fill: &Fill) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO fills (fill_id, order_id, account_id, symbol, side, quantity, price,
                            commission, liquidity, fill_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (fill_id) DO NOTHING",
    )
    .bind(&fill.fill_id)
    .bind(&fill.order_id)
    .bind(fill.account.as_str())
    .bind(fill.symbol.as_str())
    .bind(fill.side.as_str())
    .bind(fill.quantity)
    .bind(fill.price)
    .bind(fill.commission)
    .bind(liquidity_str(fill.liquidity))
    .bind(fill.fill_time)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Whether the account can afford the order (`check_available_funds`). `price` is needed for
/// a BUY (use the expected execution price); a SELL only checks the held quantity unless the
/// account may short.
pub async fn check_available_funds<'e, E: PgExecutor<'e>>(
    executor: E,
    account_id: &AccountId,
    symbol: &Symbol,
    side: Side,
    quantity: Decimal,
    price: Option<Decimal>,
) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT check_available_funds($1, $2, $3, $4, $5)")
            .bind(account_id.as_str())
            .bind(symbol.as_str())
            .bind(side.as_str())
            .bind(quantity)
            .bind(price)
            .fetch_one(executor)
            .await?,
    )
}

/// Like [`check_available_funds`] but fails with
/// [`InsufficientFunds`](crate::PostgresError::InsufficientFunds) instead of returning false.
pub async fn require_available_funds<'e, E: PgExecutor<'e>>(
    executor: E,
    account_id: &AccountId,
    symbol: &Symbol,
    side: Side,
    quantity: Decimal,
    price: Option<Decimal>,
) -> Result<()> {
    sqlx::query("SELECT require_available_funds($1, $2, $3, $4, $5)")
        .bind(account_id.as_str())
        .bind(symbol.as_str())
        .bind(side.as_str())
        .bind(quantity)
        .bind(price)
        .execute(executor)
        .await?;
    Ok(())
}

/// Marks every position in `symbol` at `price` as of event time `at`; returns how many
/// positions were updated (their accounts are revalued; no portfolio snapshot is written).
pub async fn mark_to_market<'e, E: PgExecutor<'e>>(
    executor: E,
    symbol: &Symbol,
    price: Decimal,
    at: DateTime<Utc>,
) -> Result<u32> {
    let n: i32 = sqlx::query_scalar("SELECT mark_to_market($1, $2, $3)")
        .bind(symbol.as_str())
        .bind(price)
        .bind(at)
        .fetch_one(executor)
        .await?;
    Ok(n.unsigned_abs())
}

/// One mark of [`mark_to_market_batch`]: a symbol's price at an event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark<'a> {
    /// The symbol marked.
    pub symbol: &'a Symbol,
    /// Its price (a close).
    pub price: Decimal,
    /// Event time of the price.
    pub at: DateTime<Utc>,
}

/// Marks positions at each of `marks` in order, leaving each position and account exactly as
/// one [`mark_to_market`] per mark would, in a few set-based statements instead of one update
/// of the same rows per mark. Writes no portfolio snapshot (those are the trading core's
/// valuations, `write_valuations`). Returns the number of position marks.
pub async fn mark_to_market_batch<'e, E: PgExecutor<'e>>(
    executor: E,
    marks: &[Mark<'_>],
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT mark_to_market_batch($1, $2, $3)")
        .bind(marks.iter().map(|m| m.symbol.as_str()).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.price).collect::<Vec<_>>())
        .bind(marks.iter().map(|m| m.at).collect::<Vec<_>>())
        .fetch_one(executor)
        .await?;
    Ok(n.unsigned_abs())
}

/// Stores the trading core's valuations as portfolio snapshots (`write_valuations`): one row
/// per account and instant, P&L and return from the account's initial capital; the last of
/// several for one account and time wins, one read again changes nothing. An unknown account
/// is refused (TS002, [`crate::PostgresError`] class dead-letter). Returns the rows inserted
/// or changed.
pub async fn write_valuations<'e, E: PgExecutor<'e>>(
    executor: E,
    valuations: &[&Valuation],
) -> Result<u64> {
    if valuations.is_empty() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT write_valuations($1, $2, $3, $4, $5)")
        .bind(
            valuations
                .iter()
                .map(|v| v.account.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(valuations.iter().map(|v| v.event_time).collect::<Vec<_>>())
        .bind(valuations.iter().map(|v| v.cash).collect::<Vec<_>>())
        .bind(
            valuations
                .iter()
                .map(|v| v.positions_value)
                .collect::<Vec<_>>(),
        )
        .bind(valuations.iter().map(|v| v.total_value).collect::<Vec<_>>())
        .fetch_one(executor)
        .await?;
    Ok(n.unsigned_abs())
}

/// Unrealized P&L of every position in `symbol` at its current mark, by account.
pub async fn calculate_position_pnl<'e, E: PgExecutor<'e>>(
    executor: E,
    symbol: &Symbol,
) -> Result<Vec<PositionPnl>> {
    Ok(sqlx::query_as(
        "SELECT account_id, symbol, quantity, avg_price, current_price, unrealized_pnl
           FROM calculate_position_pnl($1)",
    )
    .bind(symbol.as_str())
    .fetch_all(executor)
    .await?)
}

/// Performance statistics over `[start, end]` for one account or, with `None`, all accounts
/// summed (`get_portfolio_stats`).
pub async fn get_portfolio_stats<'e, E: PgExecutor<'e>>(
    executor: E,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    account_id: Option<&AccountId>,
) -> Result<PortfolioStats> {
    Ok(sqlx::query_as(
        "SELECT total_return, sharpe, max_drawdown, volatility, snapshots, start_value, end_value
           FROM get_portfolio_stats($1, $2, $3)",
    )
    .bind(start)
    .bind(end)
    .bind(account_id.map(AccountId::as_str))
    .fetch_one(executor)
    .await?)
}

/// The account's snapshots in `[start, end]`, oldest first.
pub async fn snapshots<'e, E: PgExecutor<'e>>(
    executor: E,
    account_id: &AccountId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<PortfolioSnapshot>> {
    Ok(sqlx::query_as(
        "SELECT snapshot_id, account_id, snapshot_time, total_value, cash, positions_value,
                total_pnl, total_return
           FROM portfolio_snapshots
          WHERE account_id = $1 AND snapshot_time >= $2 AND snapshot_time <= $3
          ORDER BY snapshot_time, snapshot_id",
    )
    .bind(account_id.as_str())
    .bind(start)
    .bind(end)
    .fetch_all(executor)
    .await?)
}
