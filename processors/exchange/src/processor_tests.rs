//! Venue behaviour tests: every order type and time in force, slippage direction,
//! commissions, no look-ahead, bracket OCO, partial fills, cancels, cash accounts' sells cut
//! to the books, snapshots and redelivery, and properties over random bars and orders.

use super::*;
use crate::config::DaySession;
use chrono::{Duration, TimeZone};
use proptest::prelude::*;
use rust_decimal_macros::dec;
use std::ops::{Deref, DerefMut};
use tradestream_schemas::{AccountId, Liquidity, MarketDataKind, OrderType, ProcessError, Side};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn at(day: u32, minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, day, 14, 0, 0)
        .single()
        .unwrap_or_default()
        + Duration::minutes(minute)
}

fn sym() -> Symbol {
    Symbol::new("AAPL").unwrap_or_else(|_| unreachable!("valid"))
}

fn bar(
    time: DateTime<Utc>,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
) -> AnyRecord {
    AnyRecord::MarketData(MarketData {
        record_id: format!("test:AAPL:{}", time.timestamp()),
        symbol: sym(),
        event_time: time,
        kind: MarketDataKind::Bar,
        interval: Some("1m".into()),
        open,
        high,
        low,
        close,
        volume: dec!(100),
        source: "test".into(),
        ingest_time: time,
        step: 0,
        step_bars: 0,
    })
}

/// A flat bar at `p`.
fn flat(time: DateTime<Utc>, p: Decimal) -> AnyRecord {
    bar(time, p, p, p, p)
}

fn order(
    id: &str,
    side: Side,
    order_type: OrderType,
    qty: Decimal,
    price: Option<Decimal>,
    created: DateTime<Utc>,
) -> Order {
    Order {
        event_id: format!("{id}:0"),
        order_id: id.into(),
        sequence: 0,
        client_order_id: None,
        account: demo(),
        symbol: sym(),
        side,
        order_type,
        quantity: qty,
        limit_price: if matches!(order_type, OrderType::Limit) {
            price
        } else {
            None
        },
        stop_price: if matches!(order_type, OrderType::Stop) {
            price
        } else {
            None
        },
        time_in_force: TimeInForce::Gtc,
        status: OrderStatus::Accepted,
        filled_quantity: Decimal::ZERO,
        origin_kind: OriginKind::Signal,
        origin_id: "s".into(),
        parent_order_id: None,
        reject_reason: None,
        created_time: created,
        updated_time: created,
    }
}

fn child(parent: &Order, suffix: &str, order_type: OrderType, price: Decimal) -> Order {
    let mut c = order(
        &format!("{}:{suffix}", parent.order_id),
        Side::Sell,
        order_type,
        parent.quantity,
        Some(price),
        parent.created_time,
    );
    c.origin_kind = OriginKind::Bracket;
    c.parent_order_id = Some(parent.order_id.clone());
    c
}

fn demo() -> AccountId {
    AccountId::new("demo").unwrap_or_else(|_| unreachable!("valid"))
}

impl Holdings for BTreeMap<(AccountId, Symbol), Decimal> {
    fn held(&self, account: &AccountId, symbol: &Symbol) -> Decimal {
        self.get(&(account.clone(), symbol.clone()))
            .copied()
            .unwrap_or_default()
    }
}

/// The venue with the books a test desk keeps from the venue's fills (in the pipeline the
/// trading core passes the router's books), driven one record at a time as the trading core
/// drives it.
#[derive(Debug, Clone)]
struct Desk {
    ex: ExchangeProcessor,
    books: BTreeMap<(AccountId, Symbol), Decimal>,
}

impl Deref for Desk {
    type Target = ExchangeProcessor;
    fn deref(&self) -> &ExchangeProcessor {
        &self.ex
    }
}

impl DerefMut for Desk {
    fn deref_mut(&mut self) -> &mut ExchangeProcessor {
        &mut self.ex
    }
}

impl Desk {
    /// An order or a bar; the venue's fills move the desk's books.
    fn process(
        &mut self,
        input: &AnyRecord,
        _now: DateTime<Utc>,
    ) -> Result<Vec<AnyRecord>, ProcessError> {
        let out = match input {
            AnyRecord::Order(o) => self.ex.on_order(o)?,
            AnyRecord::MarketData(m) => {
                m.validate().map_err(ExchangeError::from)?;
                self.ex.on_market_data(m, &self.books)?
            }
            other => {
                return Err(ProcessError::dead_letter(format!(
                    "the venue does not read {}",
                    other.topic()
                )));
            }
        };
        for r in &out {
            if let AnyRecord::Fill(f) = r {
                let signed = match f.side {
                    Side::Buy => f.quantity,
                    Side::Sell => -f.quantity,
                };
                *self
                    .books
                    .entry((f.account.clone(), f.symbol.clone()))
                    .or_default() += signed;
            }
        }
        Ok(out)
    }

    /// The venue's snapshot and the desk's books.
    fn snapshot(&self) -> Result<Option<Vec<u8>>, ProcessError> {
        let books: Vec<(&AccountId, &Symbol, &Decimal)> =
            self.books.iter().map(|((a, s), q)| (a, s, q)).collect();
        let bytes = serde_json::to_vec(&(self.ex.snapshot_bytes()?, books))
            .map_err(|e| ProcessError::fatal(e.to_string()))?;
        Ok(Some(bytes))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), ProcessError> {
        let (venue, books): (Vec<u8>, Vec<(AccountId, Symbol, Decimal)>) =
            serde_json::from_slice(bytes).map_err(|e| ProcessError::fatal(e.to_string()))?;
        self.ex.restore_bytes(&venue)?;
        self.books = books.into_iter().map(|(a, s, q)| ((a, s), q)).collect();
        Ok(())
    }
}

/// A venue where `demo` is a margin account (most tests sell without holding first).
fn venue(f: impl FnOnce(&mut ExchangeConfig)) -> Result<Desk, ExchangeError> {
    let mut c = ExchangeConfig::default();
    c.short_accounts.insert(demo());
    f(&mut c);
    Ok(Desk {
        ex: ExchangeProcessor::new(c)?,
        books: BTreeMap::new(),
    })
}

#[derive(Debug, Default, PartialEq)]
struct Out {
    fills: Vec<Fill>,
    orders: Vec<Order>,
}

fn feed(ex: &mut Desk, inputs: &[AnyRecord]) -> Result<Out, ProcessError> {
    let mut out = Out::default();
    let mut batches = Vec::new();
    for i in inputs {
        batches.push(ex.process(i, Utc::now())?);
    }
    for batch in batches {
        for r in batch {
            match r {
                AnyRecord::Fill(f) => out.fills.push(f),
                AnyRecord::Order(o) => out.orders.push(o),
                other => return Err(ProcessError::fatal(format!("unexpected output {other:?}"))),
            }
        }
    }
    Ok(out)
}

fn states(out: &Out) -> Vec<(String, i32, OrderStatus)> {
    out.orders
        .iter()
        .map(|o| (o.order_id.clone(), o.sequence, o.status))
        .collect()
}

#[test]
fn market_orders_fill_at_the_next_open_with_slippage() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(order("b", Side::Buy, OrderType::Market, dec!(10), None, t0)),
            AnyRecord::Order(order(
                "s",
                Side::Sell,
                OrderType::Market,
                dec!(10),
                None,
                t0,
            )),
            bar(t0, dec!(90), dec!(90), dec!(90), dec!(90)),
            bar(at(4, 1), dec!(100), dec!(102), dec!(98), dec!(101)),
        ],
    )?;
    let prices: Vec<(&str, Decimal, Liquidity)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.price, f.liquidity))
        .collect();
    // The bar at the orders' own time never fills them; buys pay up, sells receive less.
    assert_eq!(
        prices,
        vec![
            ("b", dec!(100.01), Liquidity::Taker),
            ("s", dec!(99.99), Liquidity::Taker)
        ]
    );
    assert_eq!(out.fills[0].fill_id, "b:fill:0");
    assert_eq!(out.fills[0].fill_time, at(4, 1));
    // 10 × 100.01 × 1 bp = 0.10001 < minimum 1
    assert_eq!(out.fills[0].commission, dec!(1));
    assert_eq!(
        states(&out),
        vec![
            ("b".into(), 1, OrderStatus::Filled),
            ("s".into(), 1, OrderStatus::Filled)
        ]
    );
    assert_eq!(
        (
            out.orders[0].filled_quantity,
            out.orders[0].event_id.as_str()
        ),
        (dec!(10), "b:1")
    );
    for o in &out.orders {
        o.validate()?;
    }
    Ok(())
}

#[test]
fn commission_above_the_minimum() -> TestResult {
    let mut ex = venue(|c| {
        c.slippage_bps = dec!(0);
        c.commission_per_share = dec!(0.005);
    })?;
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(order(
                "b",
                Side::Buy,
                OrderType::Market,
                dec!(1000),
                None,
                at(4, 0),
            )),
            flat(at(4, 1), dec!(123.45)),
        ],
    )?;
    // 1000 × 0.005 + 1000 × 123.45 × 1 bp = 5 + 12.345
    assert_eq!(out.fills[0].commission, dec!(17.345));
    Ok(())
}

#[test]
fn no_look_ahead_even_when_the_bar_arrives_first() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let out = feed(
        &mut ex,
        &[
            flat(t0, dec!(100)),
            AnyRecord::Order(order("b", Side::Buy, OrderType::Market, dec!(1), None, t0)),
        ],
    )?;
    assert!(out.fills.is_empty());
    let out = feed(&mut ex, &[flat(at(4, 1), dec!(101))])?;
    assert_eq!(out.fills[0].price, dec!(101.0101));
    Ok(())
}

#[test]
fn limits_rest_then_fill_as_maker() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(order(
                "b",
                Side::Buy,
                OrderType::Limit,
                dec!(5),
                Some(dec!(97)),
                t0,
            )),
            AnyRecord::Order(order(
                "s",
                Side::Sell,
                OrderType::Limit,
                dec!(5),
                Some(dec!(99)),
                t0,
            )),
            bar(at(4, 1), dec!(100), dec!(101), dec!(98), dec!(99)),
            bar(at(4, 2), dec!(99), dec!(99.5), dec!(96), dec!(96)),
        ],
    )?;
    let fills: Vec<(&str, Decimal, Liquidity, DateTime<Utc>)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.price, f.liquidity, f.fill_time))
        .collect();
    assert_eq!(
        fills,
        vec![
            // The sell crossed on its first bar: the open (better than its limit), taker.
            ("s", dec!(100), Liquidity::Taker, at(4, 1)),
            // The buy rested one bar, then the low went through its limit.
            ("b", dec!(97), Liquidity::Maker, at(4, 2)),
        ]
    );
    Ok(())
}

#[test]
fn stops_trigger_then_fill_with_slippage() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let mut sl = order("sl", Side::Sell, OrderType::StopLimit, dec!(1), None, t0);
    sl.stop_price = Some(dec!(97));
    sl.limit_price = Some(dec!(96.5));
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(order(
                "bs",
                Side::Buy,
                OrderType::Stop,
                dec!(1),
                Some(dec!(103)),
                t0,
            )),
            AnyRecord::Order(order(
                "ss",
                Side::Sell,
                OrderType::Stop,
                dec!(1),
                Some(dec!(97)),
                t0,
            )),
            AnyRecord::Order(sl),
            bar(at(4, 1), dec!(100), dec!(102), dec!(98), dec!(101)),
            bar(at(4, 2), dec!(101), dec!(104), dec!(100), dec!(103)),
            // Gaps down through the stop: the stop sells at the open; the stop-limit triggers
            // but 95 is below its limit, so it rests as a limit.
            bar(at(4, 3), dec!(95), dec!(96), dec!(94), dec!(95)),
            bar(at(4, 4), dec!(95), dec!(97), dec!(95), dec!(96)),
        ],
    )?;
    let fills: Vec<(&str, Decimal, DateTime<Utc>)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.price, f.fill_time))
        .collect();
    assert_eq!(
        fills,
        vec![
            ("bs", dec!(103.0103), at(4, 2)),
            ("ss", dec!(94.9905), at(4, 3)),
            ("sl", dec!(96.5), at(4, 4))
        ]
    );
    Ok(())
}

#[test]
fn time_in_force() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let mut ioc = order(
        "ioc",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(90)),
        t0,
    );
    ioc.time_in_force = TimeInForce::Ioc;
    let mut day = order(
        "day",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(90)),
        t0,
    );
    day.time_in_force = TimeInForce::Day;
    let gtc = order(
        "gtc",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(90)),
        t0,
    );
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(ioc),
            AnyRecord::Order(day),
            AnyRecord::Order(gtc),
            flat(at(4, 1), dec!(100)),
            flat(at(4, 500), dec!(100)), // still 4 March
            flat(at(5, 0), dec!(100)),
            flat(at(6, 0), dec!(89)),
        ],
    )?;
    assert_eq!(
        states(&out),
        vec![
            ("ioc".into(), 1, OrderStatus::Canceled),
            ("day".into(), 1, OrderStatus::Expired),
            ("gtc".into(), 1, OrderStatus::Filled),
        ]
    );
    assert_eq!(out.orders[1].updated_time, at(5, 0));
    assert_eq!(
        out.orders[0].reject_reason.as_deref(),
        Some("IOC_UNFILLED: filled=0")
    );
    Ok(())
}

#[test]
fn day_orders_placed_after_the_last_bar_work_the_next_session() -> TestResult {
    // Daily bars: a signal on day 4's bar makes a DAY order that first can trade on day 5.
    let daily = |day| flat(at(day, 0), dec!(100));
    let market = |id: &str| {
        let mut o = order(id, Side::Buy, OrderType::Market, dec!(1), None, at(4, 0));
        o.time_in_force = TimeInForce::Day;
        AnyRecord::Order(o)
    };
    let mut limit = order(
        "l",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(90)),
        at(4, 0),
    );
    limit.time_in_force = TimeInForce::Day;
    let inputs = [
        daily(4),
        market("m"),
        AnyRecord::Order(limit),
        daily(5),
        daily(6),
    ];
    let out = feed(&mut venue(|_| {})?, &inputs)?;
    assert_eq!(out.fills.len(), 1);
    assert_eq!(out.fills[0].fill_time, at(5, 0));
    assert_eq!(
        states(&out),
        vec![
            ("m".into(), 1, OrderStatus::Filled),
            ("l".into(), 1, OrderStatus::Expired)
        ]
    );
    assert_eq!(out.orders[1].updated_time, at(6, 0));
    // The literal rule: expired at the first bar of a later day.
    let out = feed(
        &mut venue(|c| c.day_session = DaySession::Created)?,
        &[daily(4), market("m"), daily(5)],
    )?;
    assert!(out.fills.is_empty());
    assert_eq!(states(&out), vec![("m".into(), 1, OrderStatus::Expired)]);
    Ok(())
}

#[test]
fn bracket_children_wait_for_the_parent_then_cancel_each_other() -> TestResult {
    let mut ex = venue(|c| c.slippage_bps = dec!(0))?;
    let t0 = at(4, 0);
    let parent = order(
        "p",
        Side::Buy,
        OrderType::Limit,
        dec!(10),
        Some(dec!(99)),
        t0,
    );
    let sl = child(&parent, "sl", OrderType::Stop, dec!(95));
    let tp = child(&parent, "tp", OrderType::Limit, dec!(105));
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(parent),
            AnyRecord::Order(sl),
            AnyRecord::Order(tp),
            // Would trigger the take-profit, but the parent has not filled: nothing happens.
            bar(at(4, 1), dec!(106), dec!(107), dec!(105), dec!(106)),
            // Fills the parent; the same bar also touches the stop, but children only trade on
            // later bars.
            bar(at(4, 2), dec!(100), dec!(100), dec!(94), dec!(96)),
            bar(at(4, 3), dec!(104), dec!(106), dec!(103), dec!(105)),
            bar(at(4, 4), dec!(90), dec!(91), dec!(89), dec!(90)),
        ],
    )?;
    let fills: Vec<(&str, Decimal)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.price))
        .collect();
    assert_eq!(fills, vec![("p", dec!(99)), ("p:tp", dec!(105))]);
    assert_eq!(
        states(&out),
        vec![
            ("p".into(), 1, OrderStatus::Filled),
            ("p:tp".into(), 1, OrderStatus::Filled),
            ("p:sl".into(), 1, OrderStatus::Canceled)
        ]
    );
    assert_eq!(
        out.orders[2].reject_reason.as_deref(),
        Some("OCO_SIBLING_FILLED: order_id=p:tp")
    );
    assert!(ex.held_orders().is_empty());
    Ok(())
}

#[test]
fn canceled_parent_cancels_waiting_children() -> TestResult {
    let mut ex = venue(|_| {})?;
    let t0 = at(4, 0);
    let parent = order(
        "p",
        Side::Buy,
        OrderType::Limit,
        dec!(10),
        Some(dec!(50)),
        t0,
    );
    let sl = child(&parent, "sl", OrderType::Stop, dec!(45));
    let mut cancel = parent.clone();
    cancel.sequence = 1;
    cancel.event_id = "p:1".into();
    cancel.status = OrderStatus::Canceled;
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(parent.clone()),
            AnyRecord::Order(sl),
            AnyRecord::Order(cancel.clone()),
        ],
    )?;
    assert_eq!(
        states(&out),
        vec![
            ("p".into(), 2, OrderStatus::Canceled),
            ("p:sl".into(), 1, OrderStatus::Canceled)
        ]
    );
    // A cancel for an order no longer held is ignored; so is a child arriving late, which is
    // canceled at once because its parent can never fill.
    assert!(
        feed(&mut ex, &[AnyRecord::Order(cancel)])?
            .orders
            .is_empty()
    );
    let late = child(&parent, "tp", OrderType::Limit, dec!(60));
    assert_eq!(
        states(&feed(&mut ex, &[AnyRecord::Order(late)])?),
        vec![("p:tp".into(), 1, OrderStatus::Canceled)]
    );
    Ok(())
}

#[test]
fn partial_fills_by_participation() -> TestResult {
    let mut ex = venue(|c| c.max_participation_pct = Some(dec!(10)))?;
    let out = feed(
        &mut ex,
        &[
            AnyRecord::Order(order(
                "b",
                Side::Buy,
                OrderType::Market,
                dec!(25),
                None,
                at(4, 0),
            )),
            flat(at(4, 1), dec!(100)),
            flat(at(4, 2), dec!(100)),
            flat(at(4, 3), dec!(100)),
            flat(at(4, 4), dec!(100)),
        ],
    )?;
    let fills: Vec<(&str, Decimal)> = out
        .fills
        .iter()
        .map(|f| (f.fill_id.as_str(), f.quantity))
        .collect();
    assert_eq!(
        fills,
        vec![
            ("b:fill:0", dec!(10)),
            ("b:fill:1", dec!(10)),
            ("b:fill:2", dec!(5))
        ]
    );
    let s: Vec<(i32, OrderStatus, Decimal)> = out
        .orders
        .iter()
        .map(|o| (o.sequence, o.status, o.filled_quantity))
        .collect();
    assert_eq!(
        s,
        vec![
            (1, OrderStatus::PartiallyFilled, dec!(10)),
            (2, OrderStatus::PartiallyFilled, dec!(20)),
            (3, OrderStatus::Filled, dec!(25))
        ]
    );
    Ok(())
}

/// A cash account: a protective stop and the router's closing sell for the same shares
/// (decided before the router saw the stop's fill) work on the same bar. The stop, created
/// first, fills; the venue refuses to sell shares that are gone, and so a naked sell too.
#[test]
fn cash_accounts_never_sell_what_they_do_not_hold() -> TestResult {
    let mut ex = venue(|c| c.short_accounts.clear())?;
    let t0 = at(4, 0);
    let buy = order("p", Side::Buy, OrderType::Market, dec!(10), None, t0);
    let sl = child(&buy, "sl", OrderType::Stop, dec!(97));
    let close = order("c", Side::Sell, OrderType::Market, dec!(10), None, at(4, 1));
    let naked = order("n", Side::Sell, OrderType::Market, dec!(5), None, t0);
    let out = feed(
        &mut ex,
        &[
            flat(t0, dec!(100)),
            AnyRecord::Order(naked),
            AnyRecord::Order(buy),
            AnyRecord::Order(sl),
            flat(at(4, 1), dec!(100)),
            AnyRecord::Order(close),
            bar(at(4, 2), dec!(100), dec!(100), dec!(95), dec!(96)),
            flat(at(4, 3), dec!(96)),
        ],
    )?;
    let fills: Vec<(&str, Decimal)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.quantity))
        .collect();
    assert_eq!(fills, [("p", dec!(10)), ("p:sl", dec!(10))], "{out:?}");
    let canceled: Vec<(&str, Option<&str>)> = out
        .orders
        .iter()
        .filter(|o| o.status == OrderStatus::Canceled)
        .map(|o| (o.order_id.as_str(), o.reject_reason.as_deref()))
        .collect();
    assert_eq!(
        canceled,
        [
            ("n", Some("VENUE_NO_POSITION: held=0")),
            ("c", Some("VENUE_NO_POSITION: held=0")),
        ]
    );
    assert_eq!(ex.books.get(&(demo(), sym())), Some(&dec!(0)));
    Ok(())
}

/// A cash account selling more than it holds gets what it holds, and the rest is canceled.
#[test]
fn cash_account_sells_are_cut_to_the_position() -> TestResult {
    let mut ex = venue(|c| c.short_accounts.clear())?;
    let t0 = at(4, 0);
    let out = feed(
        &mut ex,
        &[
            flat(t0, dec!(100)),
            AnyRecord::Order(order("b", Side::Buy, OrderType::Market, dec!(4), None, t0)),
            AnyRecord::Order(order(
                "s",
                Side::Sell,
                OrderType::Market,
                dec!(10),
                None,
                t0,
            )),
            flat(at(4, 1), dec!(100)),
        ],
    )?;
    let fills: Vec<(&str, Decimal)> = out
        .fills
        .iter()
        .map(|f| (f.order_id.as_str(), f.quantity))
        .collect();
    assert_eq!(fills, [("b", dec!(4)), ("s", dec!(4))]);
    let s: Vec<(OrderStatus, Decimal, Option<&str>)> = out
        .orders
        .iter()
        .filter(|o| o.order_id == "s")
        .map(|o| (o.status, o.filled_quantity, o.reject_reason.as_deref()))
        .collect();
    assert_eq!(
        s,
        [
            (OrderStatus::PartiallyFilled, dec!(4), None),
            (
                OrderStatus::Canceled,
                dec!(4),
                Some("VENUE_NO_POSITION: held=4, filled=4")
            ),
        ]
    );
    Ok(())
}

/// Hourly market orders, each filled by the bar a minute after it: `n` finished orders
/// created an hour apart.
fn hourly_fills(ex: &mut Desk, n: i64) -> Result<Out, ProcessError> {
    let mut inputs = Vec::new();
    for i in 0..n {
        let created = at(4, i * 60);
        inputs.push(AnyRecord::Order(order(
            &format!("o{i}"),
            Side::Buy,
            OrderType::Market,
            dec!(1),
            None,
            created,
        )));
        inputs.push(flat(created + Duration::minutes(1), dec!(100)));
    }
    feed(ex, &inputs)
}

#[test]
fn finished_orders_are_forgotten_past_both_horizons() -> TestResult {
    let mut ex = venue(|c| {
        c.dedup_orders = 2;
        c.dedup_horizon_hours = 1;
    })?;
    let out = hourly_fills(&mut ex, 6)?;
    assert_eq!(out.fills.len(), 6);
    // Created at hours 0..5: the newest two (4, 5) are kept; hour 4 is also within the
    // one-hour horizon of hour 5, so nothing else is.
    let kept: Vec<&str> = ex.finished.keys().map(String::as_str).collect();
    assert_eq!(kept, vec!["o4", "o5"]);
    assert_eq!(ex.forgetting.through(), Some(at(4, 180)));
    assert!(ex.oco_done.is_empty());

    // A copy of a forgotten order (created at or before the last one forgotten) is dropped,
    // not held again; a copy of a kept one is recognised as ever.
    let again = feed(
        &mut ex,
        &[
            AnyRecord::Order(order(
                "o0",
                Side::Buy,
                OrderType::Market,
                dec!(1),
                None,
                at(4, 0),
            )),
            AnyRecord::Order(order(
                "o3",
                Side::Buy,
                OrderType::Market,
                dec!(1),
                None,
                at(4, 180),
            )),
            AnyRecord::Order(order(
                "o5",
                Side::Buy,
                OrderType::Market,
                dec!(1),
                None,
                at(4, 300),
            )),
        ],
    )?;
    assert_eq!(again, Out::default());

    // A restored venue forgets and drops alike.
    let mut restored = venue(|c| {
        c.dedup_orders = 2;
        c.dedup_horizon_hours = 1;
    })?;
    restored.restore_bytes(&ex.snapshot_bytes()?)?;
    assert_eq!(restored.forgetting, ex.forgetting);
    let copy = AnyRecord::Order(order(
        "o1",
        Side::Buy,
        OrderType::Market,
        dec!(1),
        None,
        at(4, 60),
    ));
    assert_eq!(feed(&mut restored, &[copy])?, Out::default());

    // A new order after the forgotten ones trades as usual.
    let new = feed(
        &mut restored,
        &[
            AnyRecord::Order(order(
                "o6",
                Side::Buy,
                OrderType::Market,
                dec!(1),
                None,
                at(4, 360),
            )),
            flat(at(4, 361), dec!(100)),
        ],
    )?;
    assert_eq!(new.fills.len(), 1);
    let kept: Vec<&str> = restored.finished.keys().map(String::as_str).collect();
    assert_eq!(kept, vec!["o5", "o6"]);
    Ok(())
}

#[test]
fn the_default_horizon_keeps_a_week_of_orders() -> TestResult {
    let mut ex = venue(|c| c.dedup_orders = 2)?;
    hourly_fills(&mut ex, 6)?;
    // Beyond the count, but all within 168 hours of the newest: nothing is forgotten.
    assert_eq!(ex.finished.len(), 6);
    assert_eq!(ex.forgetting.through(), None);
    Ok(())
}

#[test]
fn bad_records_are_dead_lettered() -> TestResult {
    let mut ex = venue(|_| {})?;
    let mut o = order("x", Side::Buy, OrderType::Limit, dec!(1), None, at(4, 0));
    o.limit_price = None;
    let e = ex
        .process(&AnyRecord::Order(o), at(4, 0))
        .err()
        .ok_or("expected an error")?;
    assert_eq!(e.class, tradestream_schemas::ErrorClass::DeadLetter);
    let mut c = order(
        "y",
        Side::Sell,
        OrderType::Stop,
        dec!(1),
        Some(dec!(1)),
        at(4, 0),
    );
    c.origin_kind = OriginKind::Bracket;
    assert!(ex.process(&AnyRecord::Order(c), at(4, 0)).is_err());
    Ok(())
}

#[derive(Debug, Clone)]
struct Spec {
    side: bool,
    kind: u8,
    tif: u8,
    qty: u32,
    offset: i32,
    created: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        0..4u8,
        0..3u8,
        1..50u32,
        -10..10i32,
        0..20usize,
    )
        .prop_map(|(side, kind, tif, qty, offset, created)| Spec {
            side,
            kind,
            tif,
            qty,
            offset,
            created,
        })
}

fn bars_strategy() -> impl Strategy<Value = Vec<(u32, u32, u32, u32, u32)>> {
    prop::collection::vec((80..120u32, 0..5u32, 0..5u32, 0..100u32, 0..200u32), 20..30)
}

/// Bars and orders drawn by the property tests, and the inputs fed to the venue.
struct RandomSession {
    bars: Vec<MarketData>,
    /// (bar created on, order).
    orders: Vec<(usize, Order)>,
    /// Each order arrives right after the bar it was created on.
    live: Vec<AnyRecord>,
}

fn random_session(specs: &[Spec], raw: &[(u32, u32, u32, u32, u32)]) -> RandomSession {
    let bars: Vec<MarketData> = raw
        .iter()
        .enumerate()
        .map(|(i, (o, up, down, close_pct, vol))| {
            let open = Decimal::from(*o);
            let high = open + Decimal::from(*up);
            let low = open - Decimal::from(*down);
            let close = low + (high - low) * Decimal::from(*close_pct) / dec!(100);
            MarketData {
                record_id: format!("b{i}"),
                symbol: sym(),
                event_time: at(4, 0) + Duration::hours(3 * i as i64),
                kind: MarketDataKind::Bar,
                interval: Some("3h".into()),
                open,
                high,
                low,
                close,
                volume: Decimal::from(*vol),
                source: "p".into(),
                ingest_time: at(4, 0),
                step: 0,
                step_bars: 0,
            }
        })
        .collect();
    let orders: Vec<(usize, Order)> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let created = s.created.min(bars.len() - 1);
            let side = if s.side { Side::Buy } else { Side::Sell };
            let kind = [
                OrderType::Market,
                OrderType::Limit,
                OrderType::Stop,
                OrderType::StopLimit,
            ][s.kind as usize];
            let px = (bars[created].close + Decimal::from(s.offset)).max(dec!(1));
            let mut o = order(
                &format!("o{i}"),
                side,
                kind,
                Decimal::from(s.qty),
                None,
                bars[created].event_time,
            );
            match kind {
                OrderType::Limit => o.limit_price = Some(px),
                OrderType::Stop => o.stop_price = Some(px),
                OrderType::StopLimit => {
                    o.stop_price = Some(px);
                    o.limit_price = Some(px + Decimal::from(s.offset.signum()));
                }
                OrderType::Market => {}
            }
            o.time_in_force =
                [TimeInForce::Gtc, TimeInForce::Day, TimeInForce::Ioc][s.tif as usize];
            (created, o)
        })
        .collect();
    let mut live = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        live.push(AnyRecord::MarketData(b.clone()));
        for (created, o) in &orders {
            if *created == i {
                live.push(AnyRecord::Order(o.clone()));
            }
        }
    }
    RandomSession { bars, orders, live }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Stopping after any number of records, snapshotting and restoring into a fresh venue
    /// gives exactly the outputs of an uninterrupted run, on random orders and bars.
    #[test]
    fn resuming_random_sessions_is_exact(specs in prop::collection::vec(spec(), 1..12), raw in bars_strategy(), participation in any::<bool>(), k in 0..80usize) {
        let inputs = random_session(&specs, &raw).live;
        let k = k.min(inputs.len());
        let config = |c: &mut ExchangeConfig| {
            if participation { c.max_participation_pct = Some(dec!(25)); }
        };
        let fail = |e: ProcessError| TestCaseError::fail(e.message);
        let new = || venue(config).map_err(|e| TestCaseError::fail(e.to_string()));
        let whole = run_all(&mut new()?, &inputs).map_err(fail)?;
        let mut first = new()?;
        let mut out = run_all(&mut first, &inputs[..k]).map_err(fail)?;
        let bytes = first.snapshot().map_err(fail)?.ok_or_else(|| TestCaseError::fail("stateless"))?;
        let mut second = new()?;
        second.restore(&bytes).map_err(fail)?;
        out.extend(run_all(&mut second, &inputs[k..]).map_err(fail)?);
        prop_assert_eq!(out, whole);
    }

    /// Fills never exceed the order's quantity, trade only on bars after the order was
    /// created, and (without slippage) lie within the filling bar's [low, high].
    #[test]
    fn fills_are_bounded(specs in prop::collection::vec(spec(), 1..12), raw in bars_strategy(), participation in any::<bool>()) {
        let RandomSession { bars, orders, live } = random_session(&specs, &raw);
        let config = |c: &mut ExchangeConfig| {
            c.slippage_bps = dec!(0);
            if participation { c.max_participation_pct = Some(dec!(25)); }
        };
        let a = feed(&mut venue(config).map_err(|e| TestCaseError::fail(e.to_string()))?, &live).map_err(|e| TestCaseError::fail(e.message))?;
        for (_, o) in &orders {
            let total: Decimal = a.fills.iter().filter(|f| f.order_id == o.order_id).map(|f| f.quantity).sum();
            prop_assert!(total <= o.quantity, "{} filled {total} of {}", o.order_id, o.quantity);
        }
        for f in &a.fills {
            let o = orders.iter().find(|(_, o)| o.order_id == f.order_id).map(|(_, o)| o);
            let bar = bars.iter().find(|b| b.event_time == f.fill_time);
            let (Some(o), Some(bar)) = (o, bar) else { return Err(TestCaseError::fail("fill without order or bar")) };
            prop_assert!(f.fill_time > o.created_time, "look-ahead fill {f:?}");
            prop_assert!(bar.low <= f.price && f.price <= bar.high, "{} outside [{}, {}]", f.price, bar.low, bar.high);
        }
    }
}

// ---- snapshots and redelivery ----

/// Records every input fed to a venue, echoing its order updates back (it reads `orders`,
/// its own output topic, as the pipeline does).
struct Driver {
    ex: Desk,
    inputs: Vec<AnyRecord>,
}

impl Driver {
    fn push(&mut self, input: AnyRecord) -> Result<(), ProcessError> {
        let out = self.ex.process(&input, at(4, 0))?;
        self.inputs.push(input);
        for r in out {
            if let AnyRecord::Order(o) = r {
                let echo = AnyRecord::Order(o);
                self.ex.process(&echo, at(4, 0))?;
                self.inputs.push(echo);
            }
        }
        Ok(())
    }
}

fn scenario_config(c: &mut ExchangeConfig) {
    c.short_accounts.insert(demo());
    c.max_participation_pct = Some(dec!(50));
}

fn cash() -> AccountId {
    AccountId::new("cash").unwrap_or_else(|_| unreachable!("valid"))
}

/// A session and a half at the venue: a bracket filled in parts whose take-profit arrives
/// after the parent filled, a resting limit, IOC, DAY expiry at the day change, a cancel
/// request, a cash account's sells cut to its holdings, and the stop winning the OCO race.
fn scenario() -> Result<Vec<AnyRecord>, Box<dyn std::error::Error>> {
    let mut d = Driver {
        ex: venue(scenario_config)?,
        inputs: Vec::new(),
    };
    let range = |m: i64, o: Decimal, h: Decimal, l: Decimal, c: Decimal| bar(at(4, m), o, h, l, c);
    let accepted = |o: Order| AnyRecord::Order(o);
    d.push(flat(at(4, 0), dec!(100)))?;
    let parent = order("p", Side::Buy, OrderType::Market, dec!(80), None, at(4, 0));
    d.push(accepted(parent.clone()))?;
    d.push(accepted(child(&parent, "sl", OrderType::Stop, dec!(95))))?;
    let mut cash_buy = order("cb", Side::Buy, OrderType::Market, dec!(6), None, at(4, 0));
    cash_buy.account = cash();
    d.push(accepted(cash_buy))?;
    d.push(range(1, dec!(100), dec!(101), dec!(99), dec!(100)))?;
    d.push(range(2, dec!(101), dec!(102), dec!(100), dec!(101)))?;
    d.push(accepted(order(
        "l",
        Side::Sell,
        OrderType::Limit,
        dec!(20),
        Some(dec!(103)),
        at(4, 2),
    )))?;
    d.push(accepted(child(&parent, "tp", OrderType::Limit, dec!(106))))?;
    d.push(range(3, dec!(102), dec!(104), dec!(101), dec!(103)))?;
    let mut ioc = order(
        "i",
        Side::Buy,
        OrderType::Limit,
        dec!(10),
        Some(dec!(90)),
        at(4, 3),
    );
    ioc.time_in_force = TimeInForce::Ioc;
    d.push(accepted(ioc))?;
    let mut day = order(
        "d",
        Side::Buy,
        OrderType::Limit,
        dec!(5),
        Some(dec!(80)),
        at(4, 3),
    );
    day.time_in_force = TimeInForce::Day;
    d.push(accepted(day))?;
    let resting = order(
        "c",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(50)),
        at(4, 3),
    );
    d.push(accepted(resting.clone()))?;
    d.push(range(4, dec!(103), dec!(103), dec!(101), dec!(102)))?;
    let mut cancel = resting;
    cancel.status = OrderStatus::Canceled;
    cancel.event_id = "c:cancel:test".into();
    cancel.reject_reason = Some("CANCEL_REQUESTED".into());
    d.push(AnyRecord::Order(cancel))?;
    let mut cash_sell = order(
        "cs",
        Side::Sell,
        OrderType::Market,
        dec!(10),
        None,
        at(4, 4),
    );
    cash_sell.account = cash();
    d.push(accepted(cash_sell))?;
    d.push(range(5, dec!(97), dec!(98), dec!(94), dec!(95)))?;
    let mut cash_again = order(
        "cs2",
        Side::Sell,
        OrderType::Market,
        dec!(1),
        None,
        at(4, 5),
    );
    cash_again.account = cash();
    d.push(accepted(cash_again))?;
    for m in 6..9 {
        d.push(range(m, dec!(95), dec!(96), dec!(94), dec!(95)))?;
    }
    d.push(flat(at(5, 0), dec!(96)))?;
    d.push(flat(at(5, 1), dec!(97)))?;
    Ok(d.inputs)
}

fn run_all(ex: &mut Desk, inputs: &[AnyRecord]) -> Result<Vec<AnyRecord>, ProcessError> {
    let mut out = Vec::new();
    for i in inputs {
        out.extend(ex.process(i, at(4, 0))?);
    }
    Ok(out)
}

fn snapshot_of(ex: &Desk) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    ex.snapshot()?.ok_or_else(|| "the venue is stateful".into())
}

#[test]
fn the_scenario_covers_the_venue() -> TestResult {
    let inputs = scenario()?;
    let mut ex = venue(scenario_config)?;
    let out = run_all(&mut ex, &inputs)?;
    let reasons: Vec<String> = out
        .iter()
        .filter_map(|r| match r {
            AnyRecord::Order(o) => Some(format!(
                "{} {} {}",
                o.order_id,
                status_name(o.status),
                o.reject_reason.clone().unwrap_or_default()
            )),
            _ => None,
        })
        .collect();
    for wanted in [
        "p PARTIALLY_FILLED",
        "p FILLED",
        "p:sl FILLED",
        "p:tp CANCELED OCO_SIBLING_FILLED",
        "l FILLED",
        "i CANCELED IOC_UNFILLED",
        "d EXPIRED",
        "c CANCELED",
        "cs PARTIALLY_FILLED",
        "cs2 CANCELED VENUE_NO_POSITION",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(wanted)),
            "{wanted} missing from {reasons:#?}"
        );
    }
    eprintln!(
        "exchange snapshot after the scenario ({} inputs): {} bytes",
        inputs.len(),
        snapshot_of(&ex)?.len()
    );
    Ok(())
}

#[test]
fn snapshot_restore_continues_exactly() -> TestResult {
    let inputs = scenario()?;
    let whole = run_all(&mut venue(scenario_config)?, &inputs)?;
    assert!(!whole.is_empty());
    for k in 0..=inputs.len() {
        let mut first = venue(scenario_config)?;
        let mut out = run_all(&mut first, &inputs[..k])?;
        let bytes = snapshot_of(&first)?;
        let mut second = venue(scenario_config)?;
        second.restore(&bytes)?;
        assert_eq!(
            snapshot_of(&second)?,
            bytes,
            "snapshot→restore→snapshot at {k}"
        );
        out.extend(run_all(&mut second, &inputs[k..])?);
        assert_eq!(out, whole, "resumed after {k} inputs");
    }
    Ok(())
}

#[test]
fn every_input_redelivered_changes_nothing() -> TestResult {
    let inputs = scenario()?;
    let mut ex = venue(scenario_config)?;
    for (i, input) in inputs.iter().enumerate() {
        ex.process(input, at(4, 0))?;
        let before = snapshot_of(&ex)?;
        for old in &inputs[..=i] {
            let out = ex.process(old, at(4, 0))?;
            assert!(
                out.is_empty(),
                "redelivered {} after {i}: {out:?}",
                old.id()
            );
            assert_eq!(
                snapshot_of(&ex)?,
                before,
                "redelivered {} after {i}",
                old.id()
            );
        }
    }
    Ok(())
}

#[test]
fn unusable_snapshots_are_fatal_and_change_nothing() -> TestResult {
    let inputs = scenario()?;
    let mut ex = venue(scenario_config)?;
    run_all(&mut ex, &inputs)?;
    let good = ex.snapshot_bytes()?;
    let mut target = venue(scenario_config)?;
    run_all(&mut target, &inputs[..3])?;
    let before = target.snapshot_bytes()?;
    let mut wrong_version = good.clone();
    wrong_version[0] = SNAPSHOT_FORMAT + 1;
    for (name, bytes, words) in [
        ("empty", &[][..], "empty"),
        ("version", &wrong_version[..], "format version"),
        ("truncated", &good[..good.len() / 2], "corrupt"),
        ("garbage", &[SNAPSHOT_FORMAT, 0xc1][..], "corrupt"),
    ] {
        let e = ProcessError::from(target.ex.restore_bytes(bytes).expect_err(name));
        assert_eq!(e.class, tradestream_schemas::ErrorClass::Fatal, "{name}");
        assert!(e.message.contains(words), "{name}: {e}");
        assert_eq!(target.snapshot_bytes()?, before, "{name}");
    }
    Ok(())
}

/// The venue keeps no bars: after 60 symbols × 1000 bars and no orders its snapshot is a
/// few bytes (printed with --nocapture).
#[test]
fn snapshot_size_with_sixty_symbols() -> TestResult {
    let mut ex = venue(|_| {})?;
    for i in 0..1000 {
        for s in 0..60 {
            let AnyRecord::MarketData(mut b) = flat(at(4, i), Decimal::from(100 + (i + s) % 50))
            else {
                unreachable!("a bar")
            };
            b.symbol = Symbol::new(format!("S{s:02}")).unwrap_or_else(|_| unreachable!("valid"));
            b.record_id = format!("md:{}:{i}", b.symbol);
            ex.process(&AnyRecord::MarketData(b), at(4, 0))?;
        }
    }
    let bytes = ex.snapshot_bytes()?;
    eprintln!(
        "exchange snapshot: 60 symbols x 1000 bars = {} bytes",
        bytes.len()
    );
    assert!(bytes.len() < 100, "{}", bytes.len());
    Ok(())
}
