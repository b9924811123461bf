//! The API's JSON shapes: request bodies, the resources it returns and cursor pagination.
//! Enums mirror the topic schemas' names (`BUY`, `LIMIT`, `GTC`, ...) so a value reads the
//! same in JSON, Avro and SQL; amounts are decimal strings so no client float rounds money.

use crate::error::ApiError;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use std::str::FromStr;
use tradestream_schemas as schemas;
use utoipa::ToSchema;

macro_rules! api_enum {
    ($(#[$m:meta])* $name:ident => $schema:ty { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        // The spelling is `rename_all` written here, not a per-variant `rename = $s`: utoipa
        // does not see a literal passed through a macro and documented `Buy` for `BUY`
        // (`api_enums_are_documented_as_they_are_sent` keeps the two equal).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vm])* $v),+
        }
        impl From<$name> for $schema {
            fn from(v: $name) -> Self {
                match v { $($name::$v => <$schema>::$v),+ }
            }
        }
        impl From<$schema> for $name {
            fn from(v: $schema) -> Self {
                match v { $(<$schema>::$v => $name::$v),+ }
            }
        }
        impl $name {
            /// The name as in the schemas and SQL.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            /// Parses the SQL/Avro name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
        }
    };
}

api_enum!(
    /// Order side.
    Side => schemas::Side { /// Buy.
        Buy = "BUY", /// Sell.
        Sell = "SELL" }
);
api_enum!(
    /// Order type.
    OrderType => schemas::OrderType { /// At the next available price.
        Market = "MARKET", /// At the limit price or better.
        Limit = "LIMIT", /// A market order once the stop price trades.
        Stop = "STOP", /// A limit order once the stop price trades.
        StopLimit = "STOP_LIMIT" }
);
api_enum!(
    /// Time in force.
    TimeInForce => schemas::TimeInForce { /// Until the end of the trading day.
        Day = "DAY", /// Good till canceled.
        Gtc = "GTC", /// Immediate or cancel.
        Ioc = "IOC" }
);
api_enum!(
    /// Order status.
    OrderStatus => schemas::OrderStatus { /// Submitted, not yet risk-checked.
        New = "NEW", /// Passed risk checks, live at the venue.
        Accepted = "ACCEPTED", /// Partly executed.
        PartiallyFilled = "PARTIALLY_FILLED", /// Fully executed.
        Filled = "FILLED", /// Canceled.
        Canceled = "CANCELED", /// Refused by risk checks (see `reject_reason`).
        Rejected = "REJECTED", /// Time in force ran out.
        Expired = "EXPIRED" }
);

/// Parses an amount from a JSON string (preferred) or number, strictly as the schema's pattern
/// says: 1–15 digits, optionally a point and 1–8 digits; no sign, exponent, separator or
/// space. Anything else (`"1_000"`, `"1e3"`, 40 decimal places) is refused, not rounded.
pub(crate) fn decimal_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(serde_json::Number),
    }
    let raw = Option::<Raw>::deserialize(d)?;
    let text = match raw {
        None => return Ok(None),
        Some(Raw::S(s)) => s,
        Some(Raw::N(n)) => n.to_string(),
    };
    strict_decimal(&text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "not a decimal like \"101.25\" (1-15 digits, at most 8 decimal places): {text:?}"
        ))
    })
}

/// `^[0-9]{1,15}(\.[0-9]{1,8})?$`, as a decimal.
fn strict_decimal(text: &str) -> Option<Decimal> {
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let ok = match text.split_once('.') {
        Some((whole, fraction)) => digits(whole, 15) && digits(fraction, 8),
        None => digits(text, 15),
    };
    if ok {
        Decimal::from_str(text).ok()
    } else {
        None
    }
}

/// Checks an amount: positive, at most 8 decimal places, fits decimal(28, 8).
pub(crate) fn amount(field: &str, v: Decimal) -> Result<Decimal, ApiError> {
    if v <= Decimal::ZERO {
        return Err(ApiError::invalid(field, format!("must be > 0, got {v}")));
    }
    let v = v.normalize();
    if v.scale() > 8 {
        return Err(ApiError::invalid(
            field,
            format!("at most 8 decimal places, got {v}"),
        ));
    }
    if v >= Decimal::from(10u64.pow(15)) {
        return Err(ApiError::invalid(field, format!("must be < 1e15, got {v}")));
    }
    Ok(v)
}

/// `POST /v1/orders` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "symbol": "AAPL", "side": "BUY", "type": "LIMIT", "quantity": "10",
    "limit_price": "101.25", "time_in_force": "GTC"
}))]
pub struct NewOrder {
    /// Account to trade; defaults to the token's account (only admins may name another).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
    /// Instrument symbol, e.g. `AAPL` or `^IXIC` (upper-cased).
    #[schema(pattern = "^[A-Za-z0-9.\\-_^=/]{1,32}$", example = "AAPL")]
    pub symbol: String,
    /// BUY or SELL.
    pub side: Side,
    /// Order type.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Quantity (decimal string, > 0, multiple of the router's lot size).
    #[serde(deserialize_with = "decimal_any")]
    #[schema(value_type = String, example = "10", pattern = "^[0-9]{1,15}(\\.[0-9]{1,8})?$")]
    pub quantity: Option<Decimal>,
    /// Limit price: required for LIMIT and STOP_LIMIT, refused otherwise.
    #[serde(default, deserialize_with = "decimal_any")]
    #[schema(value_type = Option<String>, example = "101.25", pattern = "^[0-9]{1,15}(\\.[0-9]{1,8})?$")]
    pub limit_price: Option<Decimal>,
    /// Stop price: required for STOP and STOP_LIMIT, refused otherwise.
    #[serde(default, deserialize_with = "decimal_any")]
    #[schema(value_type = Option<String>, pattern = "^[0-9]{1,15}(\\.[0-9]{1,8})?$")]
    pub stop_price: Option<Decimal>,
    /// Time in force (default DAY).
    #[serde(default)]
    pub time_in_force: Option<TimeInForce>,
    /// Your id for the order, unique per account (1–64 of `A-Z a-z 0-9 . _ : -`); the order id
    /// is derived from it.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,64}$")]
    pub client_order_id: Option<String>,
}

/// An order's current state (as stored by the sink).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    /// Order id.
    pub order_id: String,
    /// Client order id.
    pub client_order_id: Option<String>,
    /// Account.
    pub account: String,
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Type.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Quantity.
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Limit price.
    #[schema(value_type = Option<String>)]
    pub limit_price: Option<Decimal>,
    /// Stop price.
    #[schema(value_type = Option<String>)]
    pub stop_price: Option<Decimal>,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Status.
    pub status: OrderStatus,
    /// Cumulative filled quantity.
    #[schema(value_type = String)]
    pub filled_quantity: Decimal,
    /// SIGNAL, MANUAL or BRACKET.
    pub origin: String,
    /// Bracket parent.
    pub parent_order_id: Option<String>,
    /// Rejection or cancel reason (`CATEGORY_CONDITION: key=value`).
    pub reject_reason: Option<String>,
    /// Event sequence of this state.
    pub sequence: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of this state.
    pub updated_at: DateTime<Utc>,
}

impl OrderView {
    /// The view of an order record.
    pub fn from_record(o: &schemas::Order) -> Self {
        Self {
            order_id: o.order_id.clone(),
            client_order_id: o.client_order_id.clone(),
            account: o.account.to_string(),
            symbol: o.symbol.to_string(),
            side: o.side.into(),
            order_type: o.order_type.into(),
            quantity: o.quantity,
            limit_price: o.limit_price,
            stop_price: o.stop_price,
            time_in_force: o.time_in_force.into(),
            status: o.status.into(),
            filled_quantity: o.filled_quantity,
            origin: tradestream_postgres::portfolio::origin_str(o.origin_kind).into(),
            parent_order_id: o.parent_order_id.clone(),
            reject_reason: o.reject_reason.clone(),
            sequence: o.sequence,
            created_at: o.created_time,
            updated_at: o.updated_time,
        }
    }
}

/// A page of results.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Common list parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Account (default: the token's; admins: every account when absent).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub account: Option<String>,
    /// Symbol filter.
    #[param(pattern = "^[A-Za-z0-9.\\-_^=/]{1,32}$")]
    pub symbol: Option<String>,
    /// Status filter (orders only).
    pub status: Option<OrderStatus>,
    /// Inclusive lower bound of the time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound of the time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page's `next_cursor`.
    #[param(min_length = 2, max_length = 1024, pattern = "^([0-9a-f]{2})+$")]
    pub cursor: Option<String>,
}

/// Default page size.
pub const DEFAULT_PAGE: u32 = 100;

/// A position in a time-ordered listing: (time, id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the last item returned.
    pub at: DateTime<Utc>,
    /// Id of the last item returned (breaks ties).
    pub id: String,
}

impl Cursor {
    /// Opaque text (hex of `micros|id`).
    pub fn encode(&self) -> String {
        let raw = format!("{}|{}", self.at.timestamp_micros(), self.id);
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`Cursor::encode`]'s output: 400 for text that is not hex pairs (what the
    /// document's pattern says), 422 for hex that is not a cursor this API returned.
    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let hex_pairs = (2..=1024).contains(&text.len())
            && text.len().is_multiple_of(2)
            && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_pairs {
            return Err(ApiError::bad_request(
                "cursor",
                "2 to 1024 hex digits, in pairs",
            ));
        }
        let bad = || ApiError::invalid("cursor", "not a cursor returned by this API");
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let (micros, id) = raw.split_once('|').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        if id.contains('\0') || crate::input::check_time("cursor", at).is_err() {
            return Err(bad());
        }
        Ok(Self {
            at,
            id: id.to_string(),
        })
    }
}

impl ListQuery {
    /// Page size within 1..=max.
    pub fn page_size(&self, max: u32) -> Result<i64, ApiError> {
        page_size(self.limit, max)
    }

    /// The decoded cursor.
    pub fn cursor(&self) -> Result<Option<Cursor>, ApiError> {
        cursor(self.cursor.as_deref())
    }

    /// The canonical symbol filter.
    pub fn symbol(&self) -> Result<Option<String>, ApiError> {
        symbol_filter(self.symbol.as_deref())
    }

    /// The account filter as an id.
    pub fn account(&self) -> Result<Option<schemas::AccountId>, ApiError> {
        account_filter(self.account.as_deref())
    }

    /// `from` < `to` when both are given.
    pub fn check_range(&self) -> Result<(), ApiError> {
        check_range(self.from, self.to)
    }
}

/// Page size within 1..=max (default [`DEFAULT_PAGE`]).
pub fn page_size(limit: Option<u32>, max: u32) -> Result<i64, ApiError> {
    match limit {
        None => Ok(i64::from(DEFAULT_PAGE.min(max))),
        Some(n) if n >= 1 && n <= max => Ok(i64::from(n)),
        Some(n) => Err(ApiError::invalid(
            "limit",
            format!("must be within 1..={max}, got {n}"),
        )),
    }
}

/// Decodes an optional cursor.
pub fn cursor(text: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    text.map(Cursor::decode).transpose()
}

/// Canonicalizes an optional symbol filter.
pub fn symbol_filter(symbol: Option<&str>) -> Result<Option<String>, ApiError> {
    symbol
        .map(|s| {
            schemas::Symbol::canonical(s)
                .map(|s| s.to_string())
                .map_err(|e| ApiError::invalid("symbol", e.to_string()))
        })
        .transpose()
}

/// Validates an optional account filter.
pub fn account_filter(account: Option<&str>) -> Result<Option<schemas::AccountId>, ApiError> {
    account
        .map(|a| {
            schemas::AccountId::new(a).map_err(|e| ApiError::invalid("account", e.to_string()))
        })
        .transpose()
}

/// Each within the years 0001–9999, and `from` < `to` when both are given.
pub fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    if let Some(f) = from {
        crate::input::check_time("from", f)?;
    }
    if let Some(t) = to {
        crate::input::check_time("to", t)?;
    }
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        return Err(ApiError::invalid("from", "must be before `to`"));
    }
    Ok(())
}

/// Splits `rows` (fetched with `limit + 1`) into a page, deriving the next cursor from the
/// last item kept.
pub fn page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|r| key(r).encode())
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_400() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            id: "order:manual:demo:x|y".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).ok(), Some(c.clone()));
        let nul = Cursor {
            at: c.at,
            id: "a\0b".into(),
        };
        let ancient = Cursor {
            at: "-5000-01-01T00:00:00Z".parse().unwrap_or_default(),
            id: "x".into(),
        };
        for bad in ["zz", "abc", ""] {
            assert!(matches!(
                Cursor::decode(bad),
                Err(ApiError::BadRequest { .. })
            ));
        }
        for unknown in ["7c", "00", &nul.encode(), &ancient.encode()] {
            assert!(
                matches!(Cursor::decode(unknown), Err(ApiError::Unprocessable { .. })),
                "{unknown}"
            );
        }
    }

    #[test]
    fn amounts_are_checked() {
        assert!(amount("quantity", Decimal::ZERO).is_err());
        assert!(amount("quantity", Decimal::new(1, 9)).is_err());
        assert_eq!(
            amount("quantity", Decimal::new(1500, 3)).ok(),
            Some(Decimal::new(15, 1))
        );
    }

    #[test]
    fn amounts_are_parsed_strictly() {
        for good in [
            "1",
            "10",
            "101.25",
            "0.00000001",
            "999999999999999.99999999",
        ] {
            assert!(strict_decimal(good).is_some(), "{good}");
        }
        let forty = format!("1.{}", "1".repeat(40));
        for bad in [
            "1_000",
            "1e3",
            " 1",
            "1 ",
            "+1",
            "-1",
            ".5",
            "5.",
            "1.123456789",
            "",
            "NaN",
            "1000000000000000",
            &forty,
        ] {
            assert!(strict_decimal(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn orders_accept_decimal_strings_and_numbers() {
        let o: NewOrder = serde_json::from_str(
            r#"{"symbol":"aapl","side":"BUY","type":"LIMIT","quantity":"10","limit_price":101.5}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.quantity, Some(Decimal::from(10)));
        assert_eq!(o.limit_price, Some(Decimal::new(1015, 1)));
        assert!(
            serde_json::from_str::<NewOrder>(
                r#"{"symbol":"A","side":"BUY","type":"MARKET","quantity":"1","extra":1}"#
            )
            .is_err()
        );
    }
}
