//! Router behaviour tests: sizing through the processor, every pre-trade check at and just
//! past its limit, the kill switches, trading hours, the order state machine, determinism,
//! and a property test that accepted orders never break position, notional, exposure or
//! buying-power limits.

use super::*;
use crate::config::{RiskLimits, TradingHours};
use chrono::{NaiveTime, TimeZone};
use proptest::prelude::*;
use rust_decimal_macros::dec;
use tradestream_schemas::{ErrorClass, MarketDataKind, TimeInForce};

type TestError = Box<dyn std::error::Error>;
type TestResult = Result<(), TestError>;

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap_or_else(|_| unreachable!("valid symbol"))
}
fn demo() -> AccountId {
    AccountId::new("demo").unwrap_or_else(|_| unreachable!("valid account"))
}
fn at(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, day, h, m, s)
        .single()
        .unwrap_or_default()
}
fn t0() -> DateTime<Utc> {
    at(4, 14, 0, 0)
}

fn bar(symbol: &str, time: DateTime<Utc>, close: Decimal) -> AnyRecord {
    AnyRecord::MarketData(MarketData {
        record_id: format!("test:{symbol}:{}", time.timestamp()),
        symbol: sym(symbol),
        event_time: time,
        kind: MarketDataKind::Bar,
        interval: Some("1m".into()),
        open: close,
        high: close,
        low: close,
        close,
        volume: dec!(1000),
        source: "test".into(),
        ingest_time: time,
        step: 0,
        step_bars: 0,
    })
}

#[allow(clippy::too_many_arguments)]
fn signal(
    id: &str,
    symbol: &str,
    side: SignalSide,
    conf: f64,
    price: Decimal,
    sl: Option<Decimal>,
    tp: Option<Decimal>,
    time: DateTime<Utc>,
) -> AnyRecord {
    AnyRecord::Signal(TradingSignal {
        signal_id: id.into(),
        source_id: format!("features:{id}"),
        symbol: sym(symbol),
        event_time: time,
        side,
        confidence: conf,
        model_name: "m".into(),
        model_version: "1".into(),
        reference_price: price,
        stop_loss: sl,
        take_profit: tp,
        reason: "test".into(),
        step: 0,
    })
}

fn manual_order(
    id: &str,
    symbol: &str,
    side: Side,
    order_type: OrderType,
    qty: Decimal,
    price: Option<Decimal>,
    time: DateTime<Utc>,
) -> Order {
    let order_id = format!("order:manual:demo:{id}");
    Order {
        event_id: format!("{order_id}:0"),
        order_id,
        sequence: 0,
        client_order_id: Some(id.into()),
        account: demo(),
        symbol: sym(symbol),
        side,
        order_type,
        quantity: qty,
        limit_price: if matches!(order_type, OrderType::Limit | OrderType::StopLimit) {
            price
        } else {
            None
        },
        stop_price: if matches!(order_type, OrderType::Stop | OrderType::StopLimit) {
            price
        } else {
            None
        },
        time_in_force: TimeInForce::Day,
        status: OrderStatus::New,
        filled_quantity: Decimal::ZERO,
        origin_kind: OriginKind::Manual,
        origin_id: id.into(),
        parent_order_id: None,
        reject_reason: None,
        created_time: time,
        updated_time: time,
    }
}

fn limit(
    id: &str,
    symbol: &str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    time: DateTime<Utc>,
) -> AnyRecord {
    AnyRecord::Order(manual_order(
        id,
        symbol,
        side,
        OrderType::Limit,
        qty,
        Some(price),
        time,
    ))
}

fn fill(
    order_id: &str,
    n: u32,
    symbol: &str,
    side: Side,
    qty: Decimal,
    price: Decimal,
    time: DateTime<Utc>,
) -> AnyRecord {
    AnyRecord::Fill(Fill {
        fill_id: format!("{order_id}:fill:{n}"),
        order_id: order_id.into(),
        account: demo(),
        symbol: sym(symbol),
        side,
        quantity: qty,
        price,
        commission: Decimal::ZERO,
        liquidity: tradestream_schemas::Liquidity::Taker,
        fill_time: time,
    })
}

fn router(f: impl FnOnce(&mut RouterConfig)) -> Result<RouterProcessor, RouterError> {
    let mut c = RouterConfig::default();
    if let Some(a) = c.accounts.get_mut(&demo()) {
        a.initial_capital = dec!(100000);
        a.commission_bps = Decimal::ZERO;
        a.commission_min = Decimal::ZERO;
        a.limits = RiskLimits {
            max_orders_per_second: None,
            price_band_pct: None,
            ..RiskLimits::default()
        };
    }
    f(&mut c);
    RouterProcessor::new(c)
}

fn limits(f: impl FnOnce(&mut RiskLimits)) -> impl FnOnce(&mut RouterConfig) {
    move |c: &mut RouterConfig| {
        if let Some(a) = c.accounts.get_mut(&demo()) {
            f(&mut a.limits);
        }
    }
}

fn run(r: &mut RouterProcessor, input: AnyRecord) -> Result<Vec<Order>, ProcessError> {
    Ok(r.process(&input, t0())?
        .into_iter()
        .filter_map(|o| match o {
            AnyRecord::Order(o) => Some(o),
            _ => None,
        })
        .collect())
}

/// The single order a request produced, with its status and reason.
fn one(
    r: &mut RouterProcessor,
    input: AnyRecord,
) -> Result<(OrderStatus, String), Box<dyn std::error::Error>> {
    let out = run(r, input)?;
    let [o] = out.as_slice() else {
        return Err(format!("expected one order, got {out:?}").into());
    };
    Ok((o.status, o.reject_reason.clone().unwrap_or_default()))
}

fn accepted(r: &mut RouterProcessor, input: AnyRecord) -> TestResult {
    let (status, reason) = one(r, input)?;
    assert_eq!(status, OrderStatus::Accepted, "{reason}");
    Ok(())
}

fn rejected(
    r: &mut RouterProcessor,
    input: AnyRecord,
) -> Result<String, Box<dyn std::error::Error>> {
    let (status, reason) = one(r, input)?;
    assert_eq!(status, OrderStatus::Rejected);
    Ok(reason)
}

#[test]
fn signal_orders_are_sized_and_bracketed() -> TestResult {
    let mut r = router(|_| {})?;
    // 100000 × 1 % × 1.0 / (100 − 95) = 200
    let out = run(
        &mut r,
        signal(
            "signal:a",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(100),
            Some(dec!(95)),
            Some(dec!(110)),
            t0(),
        ),
    )?;
    assert_eq!(out.len(), 3);
    let (entry, sl, tp) = (&out[0], &out[1], &out[2]);
    assert_eq!(
        (entry.order_id.as_str(), entry.event_id.as_str()),
        ("order:signal:a", "order:signal:a:0")
    );
    assert_eq!(
        (entry.status, entry.side, entry.order_type, entry.quantity),
        (
            OrderStatus::Accepted,
            Side::Buy,
            OrderType::Market,
            dec!(200)
        )
    );
    assert_eq!(
        (
            entry.time_in_force,
            entry.origin_kind,
            entry.origin_id.as_str()
        ),
        (TimeInForce::Day, OriginKind::Signal, "signal:a")
    );
    assert_eq!(
        (
            sl.order_id.as_str(),
            sl.order_type,
            sl.side,
            sl.stop_price,
            sl.quantity
        ),
        (
            "order:signal:a:sl",
            OrderType::Stop,
            Side::Sell,
            Some(dec!(95)),
            dec!(200)
        )
    );
    assert_eq!(
        (tp.order_id.as_str(), tp.order_type, tp.limit_price),
        ("order:signal:a:tp", OrderType::Limit, Some(dec!(110)))
    );
    assert_eq!(sl.parent_order_id.as_deref(), Some("order:signal:a"));
    assert_eq!(
        (sl.origin_kind, sl.sequence, sl.status),
        (OriginKind::Bracket, 0, OrderStatus::Accepted)
    );
    for o in &out {
        o.validate()?;
    }
    // Replaying the signal makes nothing new.
    assert!(
        run(
            &mut r,
            signal(
                "signal:a",
                "AAPL",
                SignalSide::Buy,
                1.0,
                dec!(100),
                Some(dec!(95)),
                None,
                t0()
            )
        )?
        .is_empty()
    );
    Ok(())
}

#[test]
fn confidence_fallback_stop_hold_and_zero_size() -> TestResult {
    let mut r = router(|_| {})?;
    assert!(
        run(
            &mut r,
            signal(
                "s1",
                "AAPL",
                SignalSide::Hold,
                0.9,
                dec!(100),
                None,
                None,
                t0()
            )
        )?
        .is_empty()
    );
    assert!(
        run(
            &mut r,
            signal(
                "s2",
                "AAPL",
                SignalSide::Buy,
                0.54,
                dec!(100),
                None,
                None,
                t0()
            )
        )?
        .is_empty()
    );
    // (0.775 − 0.55)/0.45 = 0.5; fallback distance 2 % of 100 = 2 → 100000 × 1 % × 0.5 / 2 = 250
    let out = run(
        &mut r,
        signal(
            "s3",
            "AAPL",
            SignalSide::Buy,
            0.775,
            dec!(100),
            Some(dec!(101)),
            None,
            t0(),
        ),
    )?;
    assert_eq!(
        out.len(),
        1,
        "a stop above a long entry is ignored, so no bracket"
    );
    assert_eq!(out[0].quantity, dec!(250));
    let reason = rejected(
        &mut r,
        signal(
            "s4",
            "AAPL",
            SignalSide::Buy,
            0.55,
            dec!(100),
            None,
            None,
            t0(),
        ),
    )?;
    assert_eq!(reason, "VALIDATION_QUANTITY: quantity=0, lot_size=1");
    Ok(())
}

#[test]
fn fractional_lots() -> TestResult {
    let mut r = router(|c| c.lot_size = dec!(0.001))?;
    let out = run(
        &mut r,
        signal(
            "s",
            "BTC-USD",
            SignalSide::Buy,
            1.0,
            dec!(30000),
            Some(dec!(29000)),
            None,
            t0(),
        ),
    )?;
    // 1000 / 1000 = 1; with 1/3 scaling use a distance of 3000: 1000 / 3000 = 0.333
    assert_eq!(out[0].quantity, dec!(1));
    let out = run(
        &mut r,
        signal(
            "s2",
            "ETH-USD",
            SignalSide::Buy,
            1.0,
            dec!(3000),
            Some(dec!(0.5)),
            None,
            t0(),
        ),
    )?;
    assert_eq!(out[0].quantity, dec!(0.333));
    let reason = rejected(
        &mut r,
        limit("x", "AAPL", Side::Buy, dec!(0.0015), dec!(10), t0()),
    )?;
    assert_eq!(
        reason,
        "VALIDATION_QUANTITY: quantity=0.0015, lot_size=0.001"
    );
    Ok(())
}

#[test]
fn sell_signals_close_longs_and_short_only_when_allowed() -> TestResult {
    let mut r = router(|_| {})?;
    // Flat and no shorting: nothing to do.
    assert!(
        run(
            &mut r,
            signal(
                "s0",
                "AAPL",
                SignalSide::Sell,
                0.9,
                dec!(100),
                None,
                None,
                t0()
            )
        )?
        .is_empty()
    );
    let out = run(
        &mut r,
        signal(
            "s1",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(100),
            Some(dec!(95)),
            Some(dec!(120)),
            t0(),
        ),
    )?;
    assert_eq!(out.len(), 3);
    run(
        &mut r,
        fill("order:s1", 0, "AAPL", Side::Buy, dec!(200), dec!(100), t0()),
    )?;
    let out = run(
        &mut r,
        signal(
            "s2",
            "AAPL",
            SignalSide::Sell,
            1.0,
            dec!(100),
            Some(dec!(105)),
            None,
            at(4, 15, 0, 0),
        ),
    )?;
    // The protective children are canceled, then the whole position is sold (no short).
    // Cancel requests keep the last known sequence and carry their own event id, so they
    // can never collide with the venue's next event for the same order.
    let ids: Vec<(&str, &str, OrderStatus, i32)> = out
        .iter()
        .map(|o| {
            (
                o.order_id.as_str(),
                o.event_id.as_str(),
                o.status,
                o.sequence,
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            (
                "order:s1:sl",
                "order:s1:sl:cancel:order:s2",
                OrderStatus::Canceled,
                0
            ),
            (
                "order:s1:tp",
                "order:s1:tp:cancel:order:s2",
                OrderStatus::Canceled,
                0
            ),
            ("order:s2", "order:s2:0", OrderStatus::Accepted, 0),
        ]
    );
    assert_eq!((out[2].side, out[2].quantity), (Side::Sell, dec!(200)));
    // The position is already being closed: another SELL has nothing left to do.
    assert!(
        run(
            &mut r,
            signal(
                "s2b",
                "AAPL",
                SignalSide::Sell,
                1.0,
                dec!(100),
                None,
                None,
                at(4, 15, 1, 0)
            )
        )?
        .is_empty()
    );

    let mut r = router(|c| {
        if let Some(a) = c.accounts.get_mut(&demo()) {
            a.allow_short = true;
        }
    })?;
    run(
        &mut r,
        fill("order:x", 0, "AAPL", Side::Buy, dec!(50), dec!(100), t0()),
    )?;
    let out = run(
        &mut r,
        signal(
            "s3",
            "AAPL",
            SignalSide::Sell,
            1.0,
            dec!(100),
            Some(dec!(105)),
            None,
            t0(),
        ),
    )?;
    // 50 to close + 100000.. equity 100000 × 1 % / 5 = 200 short, with a BUY stop above.
    assert_eq!((out[0].side, out[0].quantity), (Side::Sell, dec!(250)));
    assert_eq!(
        (
            out[1].side,
            out[1].order_type,
            out[1].quantity,
            out[1].stop_price
        ),
        (Side::Buy, OrderType::Stop, dec!(200), Some(dec!(105)))
    );
    Ok(())
}

#[test]
fn max_position_qty() -> TestResult {
    let mut r = router(limits(|l| l.max_position_qty = Some(dec!(100))))?;
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(60), dec!(10), t0()),
    )?;
    // Pending orders count: 60 pending + 40 = 100 is at the limit.
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(40), dec!(10), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("c", "AAPL", Side::Buy, dec!(1), dec!(10), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_MAX_POSITION_QTY: symbol=AAPL, limit=100, resulting=101"
    );
    Ok(())
}

#[test]
fn max_position_notional_and_order_notional() -> TestResult {
    let mut r = router(limits(|l| l.max_position_notional = Some(dec!(10000))))?;
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(100), dec!(100), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(100), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_MAX_POSITION_NOTIONAL: symbol=AAPL, limit=10000.00, resulting=10100.00"
    );

    let mut r = router(limits(|l| l.max_order_notional = Some(dec!(10000))))?;
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(100), dec!(100), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(100), dec!(100.01), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_MAX_ORDER_NOTIONAL: notional=10001.00, limit=10000.00"
    );
    Ok(())
}

#[test]
fn max_gross_exposure() -> TestResult {
    let mut r = router(limits(|l| l.max_gross_exposure = Some(dec!(10000))))?;
    run(
        &mut r,
        fill("order:x", 0, "AAPL", Side::Buy, dec!(50), dec!(100), t0()),
    )?;
    run(&mut r, bar("AAPL", t0(), dec!(100)))?;
    accepted(
        &mut r,
        limit("a", "MSFT", Side::Buy, dec!(50), dec!(100), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("b", "MSFT", Side::Buy, dec!(1), dec!(100), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_MAX_GROSS_EXPOSURE: limit=10000.00, resulting=10100.00"
    );
    // Reducing exposure is always allowed.
    accepted(
        &mut r,
        limit("c", "AAPL", Side::Sell, dec!(10), dec!(100), t0()),
    )?;
    Ok(())
}

#[test]
fn max_open_orders_counts_bracket_children() -> TestResult {
    let mut r = router(limits(|l| l.max_open_orders = Some(4)))?;
    assert_eq!(
        run(
            &mut r,
            signal(
                "s",
                "AAPL",
                SignalSide::Buy,
                1.0,
                dec!(100),
                Some(dec!(95)),
                Some(dec!(110)),
                t0()
            )
        )?
        .len(),
        3
    );
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(1), dec!(100), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(100), t0()),
    )?;
    assert_eq!(reason, "RISK_MAX_OPEN_ORDERS: limit=4, resulting=5");
    // The exchange finishing one frees a slot.
    let mut done = manual_order(
        "a",
        "AAPL",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(100)),
        t0(),
    );
    done = event(done, 2, OrderStatus::Canceled, t0());
    run(&mut r, AnyRecord::Order(done))?;
    accepted(
        &mut r,
        limit("c", "AAPL", Side::Buy, dec!(1), dec!(100), t0()),
    )?;
    Ok(())
}

#[test]
fn orders_per_second_window_uses_event_time() -> TestResult {
    let mut r = router(limits(|l| l.max_orders_per_second = Some(2)))?;
    let ms = |n: i64| t0() + Duration::milliseconds(n);
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(1), dec!(10), ms(0)),
    )?;
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(10), ms(500)),
    )?;
    let reason = rejected(
        &mut r,
        limit("c", "AAPL", Side::Buy, dec!(1), dec!(10), ms(999)),
    )?;
    assert_eq!(reason, "RISK_MAX_ORDERS_PER_SECOND: limit=2, count=2");
    accepted(
        &mut r,
        limit("d", "AAPL", Side::Buy, dec!(1), dec!(10), ms(1000)),
    )?;
    Ok(())
}

/// Signals can run ahead of market data (after a restart each topic's backlog drains at its
/// own pace). A signal carries its bar's close, so the decision is the one the router makes
/// when the bar arrives first, as it does in an undisturbed run; the late bar changes nothing.
#[test]
fn a_signal_ahead_of_its_bar_is_decided_as_if_the_bar_came_first() -> TestResult {
    let build = || router(limits(|l| l.price_band_pct = Some(dec!(10))));
    let t1 = t0() + Duration::days(1);
    let buy = || {
        signal(
            "s",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(150),
            Some(dec!(140)),
            None,
            t1,
        )
    };
    let mut bar_first = build()?;
    run(&mut bar_first, bar("AAPL", t0(), dec!(100)))?;
    run(&mut bar_first, bar("AAPL", t1, dec!(150)))?;
    let expected = run(&mut bar_first, buy())?;
    assert_eq!(
        expected.first().map(|o| o.status),
        Some(OrderStatus::Accepted)
    );

    let mut signal_first = build()?;
    run(&mut signal_first, bar("AAPL", t0(), dec!(100)))?;
    // Without the signal's own close the last known one (100) would put 150 outside the band.
    assert_eq!(run(&mut signal_first, buy())?, expected);
    assert!(run(&mut signal_first, bar("AAPL", t1, dec!(150)))?.is_empty());
    assert_eq!(
        signal_first.snapshot_bytes()?,
        bar_first.snapshot_bytes()?,
        "same state whichever came first"
    );
    Ok(())
}

#[test]
fn price_band_against_last_close() -> TestResult {
    let mut r = router(limits(|l| l.price_band_pct = Some(dec!(10))))?;
    // No market data yet: nothing to compare with.
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(1), dec!(500), t0()),
    )?;
    run(&mut r, bar("AAPL", t0(), dec!(100)))?;
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(110), t0()),
    )?;
    accepted(
        &mut r,
        limit("c", "AAPL", Side::Buy, dec!(1), dec!(90), t0()),
    )?;
    let reason = rejected(
        &mut r,
        limit("d", "AAPL", Side::Buy, dec!(1), dec!(110.01), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_PRICE_BAND: price=110.01, last=100, band_pct=10"
    );
    let reason = rejected(
        &mut r,
        signal(
            "s",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(89),
            None,
            None,
            t0(),
        ),
    )?;
    assert!(reason.starts_with("RISK_PRICE_BAND: price=89,"), "{reason}");
    Ok(())
}

#[test]
fn decisions_use_prices_known_at_their_event_time() -> TestResult {
    // Market data runs ahead of the signals (a fast replay): the price band and sizing of a
    // signal at day 1 must use day 1's close, not the later, very different day 3 close.
    let mut r = router(limits(|l| l.price_band_pct = Some(dec!(10))))?;
    run(&mut r, bar("AAPL", at(1, 0, 0, 0), dec!(100)))?;
    run(&mut r, bar("AAPL", at(2, 0, 0, 0), dec!(150)))?;
    run(&mut r, bar("AAPL", at(3, 0, 0, 0), dec!(300)))?;
    accepted(
        &mut r,
        signal(
            "early",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(100),
            None,
            None,
            at(1, 0, 0, 0),
        ),
    )?;
    let reason = rejected(
        &mut r,
        signal(
            "late",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(100),
            None,
            None,
            at(3, 0, 0, 0),
        ),
    )?;
    assert!(
        reason.starts_with("RISK_PRICE_BAND: price=100, last=300"),
        "{reason}"
    );
    // Outside a decision the latest close is reported.
    assert_eq!(r.mark_prices().get(&sym("AAPL")).copied(), Some(dec!(300)));
    Ok(())
}

#[test]
fn buying_power_is_the_sql_rule() -> TestResult {
    let set = |capital: Decimal| {
        move |c: &mut RouterConfig| {
            if let Some(a) = c.accounts.get_mut(&demo()) {
                a.initial_capital = capital;
                a.commission_min = dec!(1);
                a.commission_bps = dec!(1);
            }
        }
    };
    // 100 × 100 = 10000, commission max(1, 10000 × 1 bp = 1) = 1
    let mut r = router(set(dec!(10001)))?;
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(100), dec!(100), t0()),
    )?;
    // Cash is now reserved by the pending buy.
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(1), t0()),
    )?;
    assert_eq!(reason, "RISK_BUYING_POWER: required=2.00, available=0.00");
    let mut r = router(set(dec!(10000.99)))?;
    let reason = rejected(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(100), dec!(100), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_BUYING_POWER: required=10001.00, available=10000.99"
    );
    let reason = rejected(
        &mut r,
        limit("s", "AAPL", Side::Sell, dec!(1), dec!(100), t0()),
    )?;
    assert_eq!(
        reason,
        "RISK_INSUFFICIENT_POSITION: symbol=AAPL, side=SELL, quantity=1, held=0"
    );
    Ok(())
}

#[test]
fn manual_validation() -> TestResult {
    let mut r = router(|_| {})?;
    let reason = rejected(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(0), dec!(10), t0()),
    )?;
    assert_eq!(reason, "VALIDATION_QUANTITY: quantity=0, lot_size=1");
    let reason = rejected(
        &mut r,
        AnyRecord::Order(manual_order(
            "b",
            "AAPL",
            Side::Buy,
            OrderType::Market,
            dec!(1),
            None,
            t0(),
        )),
    )?;
    assert_eq!(
        reason,
        "VALIDATION_PRICE: symbol=AAPL, reason=no_market_data"
    );
    let mut o = manual_order(
        "c",
        "AAPL",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(1)),
        t0(),
    );
    o.limit_price = None;
    let reason = rejected(&mut r, AnyRecord::Order(o))?;
    assert!(
        reason.starts_with("VALIDATION_ORDER: field=limit_price"),
        "{reason}"
    );
    let mut o = manual_order(
        "d",
        "AAPL",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(1)),
        t0(),
    );
    o.account = AccountId::new("other")?;
    assert_eq!(
        rejected(&mut r, AnyRecord::Order(o))?,
        "VALIDATION_ACCOUNT: account=other"
    );
    // The answer to a manual order is the next event of the same order.
    let out = run(
        &mut r,
        limit("e", "AAPL", Side::Buy, dec!(1), dec!(10), t0()),
    )?;
    assert_eq!(
        (out[0].sequence, out[0].event_id.as_str()),
        (1, "order:manual:demo:e:1")
    );
    // A NEW order that is not manual is not a request the router answers.
    let mut o = manual_order(
        "f",
        "AAPL",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(1)),
        t0(),
    );
    o.origin_kind = OriginKind::Signal;
    let e = r
        .process(&AnyRecord::Order(o), t0())
        .err()
        .ok_or("expected an error")?;
    assert_eq!(e.class, ErrorClass::DeadLetter);
    Ok(())
}

#[test]
fn kill_switch_stops_every_order() -> TestResult {
    let mut r = router(|_| {})?;
    r.set_kill_switch(true, "manual");
    assert_eq!(r.kill_switch(), Some("manual"));
    assert_eq!(
        rejected(
            &mut r,
            limit("a", "AAPL", Side::Buy, dec!(1), dec!(10), t0())
        )?,
        "RISK_KILL_SWITCH: reason=manual"
    );
    let reason = rejected(
        &mut r,
        signal(
            "s",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(10),
            None,
            None,
            t0(),
        ),
    )?;
    assert_eq!(reason, "RISK_KILL_SWITCH: reason=manual");
    r.set_kill_switch(false, "");
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(10), t0()),
    )?;
    let mut r = router(|c| c.kill_switch = true)?;
    assert_eq!(
        rejected(
            &mut r,
            limit("a", "AAPL", Side::Buy, dec!(1), dec!(10), t0())
        )?,
        "RISK_KILL_SWITCH: reason=config"
    );
    Ok(())
}

fn control(id: &str, enabled: bool, reason: &str) -> AnyRecord {
    AnyRecord::Control(Control {
        control_id: format!("control:KILL_SWITCH:{id}"),
        name: Control::KILL_SWITCH.into(),
        enabled,
        reason: reason.into(),
        actor: "ops".into(),
        issued_time: t0(),
    })
}

#[test]
fn kill_switch_controls_from_the_topic() -> TestResult {
    let mut r = router(|_| {})?;
    assert!(r.inputs().contains(&Topic::Controls));
    assert!(run(&mut r, control("1", true, "desk halt"))?.is_empty());
    assert_eq!(r.kill_switch(), Some("desk halt"));
    assert_eq!(
        rejected(
            &mut r,
            AnyRecord::Order(manual_order(
                "m1",
                "AAPL",
                Side::Buy,
                OrderType::Limit,
                dec!(1),
                Some(dec!(10)),
                t0()
            ))
        )?,
        "RISK_KILL_SWITCH: reason=desk halt"
    );
    assert!(run(&mut r, control("2", false, "resume"))?.is_empty());
    assert_eq!(r.kill_switch(), None);
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(10), t0()),
    )?;
    // Unknown or malformed commands are dead-lettered, and change nothing.
    let AnyRecord::Control(mut bad) = control("3", true, "x") else {
        unreachable!()
    };
    bad.name = "SELF_DESTRUCT".into();
    let e = r
        .process(&AnyRecord::Control(bad), t0())
        .expect_err("unknown control");
    assert_eq!(e.class, ErrorClass::DeadLetter);
    assert_eq!(r.kill_switch(), None);
    Ok(())
}

#[test]
fn daily_loss_halts_new_risk_until_the_next_day() -> TestResult {
    let mut r = router(limits(|l| l.daily_loss_limit = Some(dec!(1000))))?;
    run(
        &mut r,
        fill(
            "order:x",
            0,
            "AAPL",
            Side::Buy,
            dec!(100),
            dec!(100),
            at(4, 14, 0, 0),
        ),
    )?;
    run(&mut r, bar("AAPL", at(4, 14, 1, 0), dec!(90)))?;
    // −1000 is at the limit, not below it.
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(1), dec!(90), at(4, 14, 2, 0)),
    )?;
    run(&mut r, bar("AAPL", at(4, 14, 3, 0), dec!(89.99)))?;
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(90), at(4, 14, 4, 0)),
    )?;
    assert_eq!(reason, "RISK_DAILY_LOSS: pnl=-1001.00, limit=1000.00");
    // Reducing is still allowed; recovering within the day does not lift the halt.
    accepted(
        &mut r,
        limit("c", "AAPL", Side::Sell, dec!(50), dec!(90), at(4, 14, 5, 0)),
    )?;
    run(&mut r, bar("AAPL", at(4, 15, 0, 0), dec!(100)))?;
    assert!(
        rejected(
            &mut r,
            limit("d", "AAPL", Side::Buy, dec!(1), dec!(100), at(4, 15, 1, 0))
        )?
        .starts_with("RISK_DAILY_LOSS")
    );
    // The next session day starts afresh.
    run(&mut r, bar("AAPL", at(5, 14, 0, 0), dec!(100)))?;
    accepted(
        &mut r,
        limit("e", "AAPL", Side::Buy, dec!(1), dec!(100), at(5, 14, 1, 0)),
    )?;
    Ok(())
}

#[test]
fn drawdown_kill_switch_until_reset() -> TestResult {
    let mut r = router(limits(|l| l.max_drawdown_pct = Some(dec!(10))))?;
    run(
        &mut r,
        fill("order:x", 0, "AAPL", Side::Buy, dec!(1000), dec!(100), t0()),
    )?;
    run(&mut r, bar("AAPL", at(4, 14, 1, 0), dec!(110)))?; // peak 110000
    run(&mut r, bar("AAPL", at(4, 14, 2, 0), dec!(99)))?; // 99000 = peak × 0.9: at the limit
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Sell, dec!(1), dec!(99), at(4, 14, 3, 0)),
    )?;
    run(&mut r, bar("AAPL", at(4, 14, 4, 0), dec!(98.9)))?;
    // Equity 98900 − … the pending sell reserves nothing; equity below 99000 → halted.
    let reason = rejected(
        &mut r,
        limit("b", "AAPL", Side::Sell, dec!(1), dec!(99), at(4, 14, 5, 0)),
    )?;
    assert_eq!(
        reason,
        "RISK_MAX_DRAWDOWN: equity=98900.00, peak=110000.00, limit_pct=10"
    );
    run(&mut r, bar("AAPL", at(6, 14, 0, 0), dec!(120)))?;
    assert!(
        rejected(
            &mut r,
            limit("c", "AAPL", Side::Buy, dec!(1), dec!(120), at(6, 14, 1, 0))
        )?
        .starts_with("RISK_MAX_DRAWDOWN")
    );
    assert!(r.reset_drawdown(&demo()));
    accepted(
        &mut r,
        limit("d", "AAPL", Side::Sell, dec!(1), dec!(120), at(6, 14, 2, 0)),
    )?;
    Ok(())
}

#[test]
fn trading_hours_use_event_time() -> TestResult {
    let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
    let mut r = router(limits(|l| {
        l.trading_hours = Some(TradingHours {
            start: hm(13, 30),
            end: hm(20, 0),
        })
    }))?;
    let reason = rejected(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(1), dec!(10), at(4, 23, 10, 0)),
    )?;
    assert_eq!(
        reason,
        "RISK_TRADING_HOURS: time=23:10:00, start=13:30:00, end=20:00:00"
    );
    accepted(
        &mut r,
        limit("b", "AAPL", Side::Buy, dec!(1), dec!(10), at(4, 13, 30, 0)),
    )?;
    assert!(
        rejected(
            &mut r,
            limit("c", "AAPL", Side::Buy, dec!(1), dec!(10), at(4, 20, 0, 0))
        )?
        .starts_with("RISK_TRADING_HOURS")
    );
    let reason = rejected(
        &mut r,
        signal(
            "s",
            "AAPL",
            SignalSide::Buy,
            1.0,
            dec!(10),
            None,
            None,
            at(4, 23, 10, 0),
        ),
    )?;
    assert!(reason.starts_with("RISK_TRADING_HOURS: time=23:10:00"));
    Ok(())
}

#[test]
fn illegal_transitions_are_refused() -> TestResult {
    let mut r = router(|_| {})?;
    accepted(
        &mut r,
        limit("a", "AAPL", Side::Buy, dec!(10), dec!(10), t0()),
    )?;
    let base = manual_order(
        "a",
        "AAPL",
        Side::Buy,
        OrderType::Limit,
        dec!(10),
        Some(dec!(10)),
        t0(),
    );
    // Our own ACCEPTED echoed back is a duplicate.
    assert!(
        run(
            &mut r,
            AnyRecord::Order(event(base.clone(), 1, OrderStatus::Accepted, t0()))
        )?
        .is_empty()
    );
    let mut partial = event(base.clone(), 2, OrderStatus::PartiallyFilled, t0());
    partial.filled_quantity = dec!(4);
    assert!(run(&mut r, AnyRecord::Order(partial))?.is_empty());
    let e = r
        .process(
            &AnyRecord::Order(event(base.clone(), 3, OrderStatus::Accepted, t0())),
            t0(),
        )
        .err()
        .ok_or("expected refusal")?;
    assert_eq!(e.class, ErrorClass::DeadLetter);
    assert!(
        e.message.contains("PARTIALLY_FILLED -> ACCEPTED"),
        "{}",
        e.message
    );
    let mut filled = event(base.clone(), 3, OrderStatus::Filled, t0());
    filled.filled_quantity = dec!(10);
    assert!(run(&mut r, AnyRecord::Order(filled))?.is_empty());
    let e = r
        .process(
            &AnyRecord::Order(event(base.clone(), 4, OrderStatus::Expired, t0())),
            t0(),
        )
        .err()
        .ok_or("expected refusal")?;
    assert!(e.message.contains("FILLED -> EXPIRED"), "{}", e.message);
    // A cancel request for a finished order is a no-op, not an error.
    assert!(
        run(
            &mut r,
            AnyRecord::Order(event(base, 4, OrderStatus::Canceled, t0()))
        )?
        .is_empty()
    );
    assert!(r.account(&demo()).ok_or("account")?.open_orders.is_empty());
    Ok(())
}

#[test]
fn same_inputs_same_outputs() -> TestResult {
    let inputs = vec![
        bar("AAPL", at(4, 14, 0, 0), dec!(100)),
        signal(
            "s1",
            "AAPL",
            SignalSide::Buy,
            0.8,
            dec!(100),
            Some(dec!(97)),
            Some(dec!(106)),
            at(4, 14, 0, 0),
        ),
        fill(
            "order:s1",
            0,
            "AAPL",
            Side::Buy,
            dec!(100),
            dec!(100.1),
            at(4, 14, 1, 0),
        ),
        bar("AAPL", at(4, 14, 1, 0), dec!(101)),
        limit(
            "m1",
            "AAPL",
            Side::Sell,
            dec!(10),
            dec!(105),
            at(4, 14, 2, 0),
        ),
        signal(
            "s2",
            "AAPL",
            SignalSide::Sell,
            0.9,
            dec!(101),
            None,
            None,
            at(4, 14, 3, 0),
        ),
    ];
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut r = router(|_| {})?;
        let mut all = Vec::new();
        for i in &inputs {
            all.extend(r.process(i, Utc::now())?);
        }
        outs.push(all);
    }
    assert!(!outs[0].is_empty());
    assert_eq!(outs[0], outs[1]);
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Signal {
        sym: usize,
        buy: bool,
        conf: f64,
        price: u32,
        stop_pct: u32,
    },
    Mark {
        sym: usize,
        price: u32,
    },
    FillOldest,
    Manual {
        sym: usize,
        buy: bool,
        qty: u32,
        price: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, any::<bool>(), 0.5..1.0f64, 50..150u32, 0..10u32).prop_map(
            |(sym, buy, conf, price, stop_pct)| Op::Signal {
                sym,
                buy,
                conf,
                price,
                stop_pct
            }
        ),
        (0..3usize, 50..150u32).prop_map(|(sym, price)| Op::Mark { sym, price }),
        Just(Op::FillOldest),
        (0..3usize, any::<bool>(), 1..400u32, 50..150u32).prop_map(|(sym, buy, qty, price)| {
            Op::Manual {
                sym,
                buy,
                qty,
                price,
            }
        }),
    ]
}

const SYMS: [&str; 3] = ["AAPL", "MSFT", "NVDA"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Accepted orders never take a position past its quantity or notional limit, gross
    /// exposure past its limit, cash below zero, or (without shorting) a position below zero,
    /// counting every pending order as filled.
    #[test]
    fn accepted_orders_respect_limits(ops in prop::collection::vec(op(), 1..80), allow_short in any::<bool>()) {
        let (max_qty, max_notional, max_gross) = (dec!(500), dec!(40000), dec!(60000));
        let mut r = router(|c| {
            if let Some(a) = c.accounts.get_mut(&demo()) {
                a.initial_capital = dec!(50000);
                a.allow_short = allow_short;
                a.commission_min = dec!(1);
                a.commission_bps = dec!(2);
                a.limits.max_position_qty = Some(max_qty);
                a.limits.max_position_notional = Some(max_notional);
                a.limits.max_gross_exposure = Some(max_gross);
                a.limits.max_open_orders = None;
            }
        }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let commission = r.config().accounts[&demo()].commission();
        // Live non-bracket orders the test must fill: (order, price).
        let mut pending: Vec<(Order, Decimal)> = Vec::new();
        let mut marks: BTreeMap<Symbol, Decimal> = BTreeMap::new();
        for s in SYMS {
            r.process(&bar(s, t0() - Duration::minutes(1), dec!(100)), t0()).map_err(|e| TestCaseError::fail(e.message))?;
            marks.insert(sym(s), dec!(100));
        }
        for (i, op) in ops.into_iter().enumerate() {
            let t = t0() + Duration::minutes(i as i64);
            let (input, price) = match op {
                Op::Signal { sym: s, buy, conf, price, stop_pct } => {
                    let p = Decimal::from(price);
                    let dist = p * Decimal::from(stop_pct + 1) / dec!(100);
                    let (side, sl) = if buy { (SignalSide::Buy, p - dist) } else { (SignalSide::Sell, p + dist) };
                    // A signal's reference price is its bar's close: the router marks with it.
                    marks.insert(sym(SYMS[s]), p);
                    (signal(&format!("s{i}"), SYMS[s], side, conf, p, Some(sl), None, t), p)
                }
                Op::Mark { sym: s, price } => {
                    marks.insert(sym(SYMS[s]), Decimal::from(price));
                    (bar(SYMS[s], t, Decimal::from(price)), Decimal::ZERO)
                }
                Op::FillOldest => {
                    if pending.is_empty() { continue; }
                    let (o, p) = pending.remove(0);
                    let c = commission.estimate(o.quantity, p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut f = fill(&o.order_id, 0, o.symbol.as_str(), o.side, o.quantity, p, t);
                    if let AnyRecord::Fill(f) = &mut f { f.commission = c; }
                    (f, Decimal::ZERO)
                }
                Op::Manual { sym: s, buy, qty, price } => {
                    let side = if buy { Side::Buy } else { Side::Sell };
                    let p = Decimal::from(price);
                    (limit(&format!("m{i}"), SYMS[s], side, Decimal::from(qty), p, t), p)
                }
            };
            let out = r.process(&input, t).map_err(|e| TestCaseError::fail(e.message))?;
            let view = r.account(&demo()).ok_or_else(|| TestCaseError::fail("account"))?;
            for rec in out {
                let AnyRecord::Order(o) = rec else { continue };
                if o.status != OrderStatus::Accepted || o.origin_kind == OriginKind::Bracket { continue; }
                pending.push((o.clone(), price));
                // Positions with every pending order filled, without and with this one.
                let worst = |s: &Symbol, with_this: bool| {
                    let pos = view.book.quantity(s);
                    let (b, sl) = pending.iter()
                        .filter(|(p, _)| &p.symbol == s && (with_this || p.order_id != o.order_id))
                        .fold((Decimal::ZERO, Decimal::ZERO), |(b, sl), (p, _)| match p.side {
                            Side::Buy => (b + p.quantity, sl),
                            Side::Sell => (b, sl + p.quantity),
                        });
                    let directional = match o.side { Side::Buy => (pos + b).abs(), Side::Sell => (pos - sl).abs() };
                    (directional, (pos + b).abs().max((pos - sl).abs()))
                };
                let (directional, _) = worst(&o.symbol, true);
                if directional > view.book.quantity(&o.symbol).abs() {
                    prop_assert!(directional <= max_qty, "position {directional} > {max_qty}");
                    prop_assert!(directional * price <= max_notional, "notional {} > {max_notional}", directional * price);
                }
                if worst(&o.symbol, true).1 > worst(&o.symbol, false).1 {
                    let mut syms: Vec<Symbol> = view.book.positions.keys().cloned().collect();
                    syms.extend(pending.iter().map(|(o, _)| o.symbol.clone()));
                    syms.sort();
                    syms.dedup();
                    let gross: Decimal = syms.iter().map(|s| {
                        let m = if s == &o.symbol { price } else {
                            marks.get(s).copied()
                                .or_else(|| view.book.positions.get(s).map(|p| p.avg_price))
                                .or_else(|| pending.iter().find(|(o, _)| &o.symbol == s).map(|(_, p)| *p))
                                .unwrap_or_default()
                        };
                        worst(s, true).1 * m
                    }).sum();
                    prop_assert!(gross <= max_gross, "gross {gross} > {max_gross}");
                }
            }
            // Cash never goes negative, even with every pending buy filled.
            let reserved: Decimal = pending.iter().filter(|(o, _)| o.side == Side::Buy)
                .map(|(o, p)| o.quantity * p + commission.estimate(o.quantity, *p).unwrap_or_default()).sum();
            prop_assert!(view.book.cash - reserved >= Decimal::ZERO, "cash {} reserved {reserved}", view.book.cash);
            if !allow_short {
                for (s, p) in &view.book.positions {
                    prop_assert!(p.quantity >= Decimal::ZERO, "short {s} {}", p.quantity);
                }
            }
        }
    }
}

// ---- snapshots and redelivery ----

/// Feeds a router and records every input and its outputs, so a scenario can answer the
/// router's own orders (echoes, venue updates, fills) the way the pipeline does.
struct Driver {
    router: RouterProcessor,
    inputs: Vec<AnyRecord>,
    outputs: Vec<Vec<AnyRecord>>,
}

impl Driver {
    fn push(&mut self, input: AnyRecord) -> Result<Vec<Order>, ProcessError> {
        let out = self.router.process(&input, t0())?;
        self.inputs.push(input);
        self.outputs.push(out.clone());
        let orders: Vec<Order> = out
            .into_iter()
            .filter_map(|r| match r {
                AnyRecord::Order(o) => Some(o),
                _ => None,
            })
            .collect();
        // The router reads `orders` too: its own decisions come back to it.
        for o in &orders {
            let echo = AnyRecord::Order(o.clone());
            let out = self.router.process(&echo, t0())?;
            self.inputs.push(echo);
            self.outputs.push(out);
        }
        Ok(orders)
    }

    /// The venue fills `qty` of `o` at `price`: a fill, then the order's next state.
    fn venue_fill(
        &mut self,
        o: &mut Order,
        qty: Decimal,
        price: Decimal,
        time: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let n = o.sequence.max(0) as u32;
        let mut f = fill(&o.order_id, n, o.symbol.as_str(), o.side, qty, price, time);
        if let AnyRecord::Fill(f) = &mut f {
            f.account = o.account.clone();
        }
        self.push(f)?;
        o.filled_quantity += qty;
        let status = if o.filled_quantity >= o.quantity {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        self.venue_update(o, status, time)
    }

    /// The venue publishes the order's next state.
    fn venue_update(
        &mut self,
        o: &mut Order,
        status: OrderStatus,
        time: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        *o = event(o.clone(), o.sequence + 1, status, time);
        self.push(AnyRecord::Order(o.clone()))?;
        Ok(())
    }
}

fn find(orders: &[Order], id: &str) -> Result<Order, Box<dyn std::error::Error>> {
    orders
        .iter()
        .find(|o| o.order_id == id)
        .cloned()
        .ok_or_else(|| format!("no {id} in {orders:?}").into())
}

fn scenario_config(c: &mut RouterConfig) {
    if let Some(a) = c.accounts.get_mut(&demo()) {
        a.commission_min = dec!(1);
        a.limits.max_orders_per_second = Some(3);
        a.limits.daily_loss_limit = Some(dec!(300));
        a.limits.max_drawdown_pct = Some(dec!(50));
        a.limits.price_band_pct = Some(dec!(30));
    }
}

/// Inputs in order, and the outputs of each in an uninterrupted run.
type Recorded = (Vec<AnyRecord>, Vec<Vec<AnyRecord>>);

/// Two session days of trading: kill switch on and off, a bracketed signal filled in two
/// parts, manual orders filled and canceled, a loss that trips the daily limit, a closing
/// signal that cancels the bracket children, a burst against the rate limit, and the next
/// day's reset. Returns the inputs in order and the outputs of an uninterrupted run.
fn scenario() -> Result<Recorded, Box<dyn std::error::Error>> {
    let mut d = Driver {
        router: router(scenario_config)?,
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    let buy = SignalSide::Buy;
    d.push(bar("AAPL", at(4, 14, 0, 0), dec!(100)))?;
    d.push(bar("MSFT", at(4, 14, 0, 0), dec!(50)))?;
    d.push(control("on", true, "desk halt"))?;
    let halted = d.push(signal(
        "s0",
        "AAPL",
        buy,
        0.9,
        dec!(100),
        None,
        None,
        at(4, 14, 0, 1),
    ))?;
    assert_eq!(halted[0].status, OrderStatus::Rejected);
    d.push(control("off", false, "resume"))?;
    let s1 = d.push(signal(
        "s1",
        "AAPL",
        buy,
        0.8,
        dec!(100),
        Some(dec!(97)),
        Some(dec!(106)),
        at(4, 14, 0, 2),
    ))?;
    let mut parent = find(&s1, "order:s1")?;
    let mut sl = find(&s1, "order:s1:sl")?;
    let mut tp = find(&s1, "order:s1:tp")?;
    let half = (parent.quantity / dec!(2)).floor();
    d.venue_fill(&mut parent, half, dec!(100.1), at(4, 14, 1, 0))?;
    d.push(bar("AAPL", at(4, 14, 1, 0), dec!(101)))?;
    let rest = parent.quantity - parent.filled_quantity;
    d.venue_fill(&mut parent, rest, dec!(100.2), at(4, 14, 1, 30))?;
    let m1 = d.push(limit(
        "m1",
        "MSFT",
        Side::Buy,
        dec!(10),
        dec!(50),
        at(4, 14, 2, 0),
    ))?;
    let mut m1 = find(&m1, "order:manual:demo:m1")?;
    d.venue_fill(&mut m1, dec!(10), dec!(50), at(4, 14, 2, 10))?;
    let m2 = d.push(limit(
        "m2",
        "MSFT",
        Side::Sell,
        dec!(5),
        dec!(55),
        at(4, 14, 2, 20),
    ))?;
    let mut m2 = find(&m2, "order:manual:demo:m2")?;
    d.venue_update(&mut m2, OrderStatus::Canceled, at(4, 14, 2, 30))?;
    // A loss past the daily limit: new risk is refused, reductions are not.
    d.push(bar("AAPL", at(4, 14, 3, 0), dec!(98)))?;
    let refused = d.push(limit(
        "m3",
        "MSFT",
        Side::Buy,
        dec!(1),
        dec!(50),
        at(4, 14, 3, 5),
    ))?;
    assert_eq!(refused[0].status, OrderStatus::Rejected, "{refused:?}");
    let close = d.push(signal(
        "s2",
        "AAPL",
        SignalSide::Sell,
        0.9,
        dec!(98),
        None,
        None,
        at(4, 14, 3, 10),
    ))?;
    let mut closing = find(&close, "order:s2")?;
    assert!(
        close.iter().any(|o| o.event_id.contains(":cancel:")),
        "{close:?}"
    );
    d.venue_update(&mut sl, OrderStatus::Canceled, at(4, 14, 3, 11))?;
    d.venue_update(&mut tp, OrderStatus::Canceled, at(4, 14, 3, 11))?;
    let q = closing.quantity;
    d.venue_fill(&mut closing, q, dec!(98), at(4, 14, 3, 20))?;
    // The next session day: the daily halt clears; a burst meets the rate limit.
    d.push(bar("AAPL", at(5, 14, 0, 0), dec!(99)))?;
    d.push(bar("MSFT", at(5, 14, 0, 0), dec!(51)))?;
    let mut rate_limited = 0;
    for i in 0..5 {
        let out = d.push(limit(
            &format!("r{i}"),
            "MSFT",
            Side::Buy,
            dec!(1),
            dec!(51),
            at(5, 14, 0, 1),
        ))?;
        if out[0]
            .reject_reason
            .as_deref()
            .is_some_and(|r| r.contains("RISK_MAX_ORDERS_PER_SECOND"))
        {
            rate_limited += 1;
        }
    }
    assert_eq!(rate_limited, 2);
    d.push(signal(
        "s3",
        "MSFT",
        buy,
        0.7,
        dec!(51),
        None,
        Some(dec!(56)),
        at(5, 14, 5, 0),
    ))?;
    d.push(bar("MSFT", at(5, 14, 6, 0), dec!(52)))?;
    Ok((d.inputs, d.outputs))
}

fn snapshot_of(r: &RouterProcessor) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    r.snapshot()?.ok_or_else(|| "the router is stateful".into())
}

/// Snapshots a router configured by `config` after every prefix of the scenario, restores
/// it into a fresh one and checks that the rest of the run is unchanged.
fn resumes_exactly_everywhere(config: &dyn Fn(&mut RouterConfig)) -> TestResult {
    let (inputs, whole) = scenario()?;
    assert!(inputs.len() > 40, "{}", inputs.len());
    let whole: Vec<AnyRecord> = whole.into_iter().flatten().collect();
    let end = {
        let mut r = router(config)?;
        for i in &inputs {
            r.process(i, t0())?;
        }
        snapshot_of(&r)?
    };
    for k in 0..=inputs.len() {
        let mut first = router(config)?;
        let mut out = Vec::new();
        for i in &inputs[..k] {
            out.extend(first.process(i, t0())?);
        }
        let bytes = snapshot_of(&first)?;
        let mut second = router(config)?;
        second.restore(&bytes)?;
        assert_eq!(
            snapshot_of(&second)?,
            bytes,
            "snapshot→restore→snapshot at {k}"
        );
        for i in &inputs[k..] {
            out.extend(second.process(i, t0())?);
        }
        assert_eq!(out, whole, "resumed after {k} inputs");
        assert_eq!(
            snapshot_of(&second)?,
            end,
            "state at the end, resumed after {k}"
        );
    }
    Ok(())
}

#[test]
fn snapshot_restore_continues_exactly() -> TestResult {
    resumes_exactly_everywhere(&scenario_config)?;
    let (inputs, _) = scenario()?;
    let mut r = router(scenario_config)?;
    for i in &inputs {
        r.process(i, t0())?;
    }
    eprintln!(
        "router snapshot after the scenario ({} inputs): {} bytes",
        inputs.len(),
        snapshot_of(&r)?.len()
    );
    assert_eq!(r.scope(), TaskScope::Single);
    Ok(())
}

/// Runs the scenario through a router configured by `config`, delivering every earlier
/// input again after each one and checking that the copies change nothing; returns the
/// router and the outputs of each input's first delivery.
fn redeliveries_change_nothing(
    config: &dyn Fn(&mut RouterConfig),
) -> Result<(RouterProcessor, Vec<Vec<AnyRecord>>), TestError> {
    let (inputs, _) = scenario()?;
    let mut r = router(config)?;
    let mut outputs = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        outputs.push(r.process(input, t0())?);
        let before = snapshot_of(&r)?;
        for old in &inputs[..=i] {
            let out = r.process(old, t0())?;
            assert!(
                out.is_empty(),
                "redelivered {} after {i}: {out:?}",
                old.id()
            );
            assert_eq!(
                snapshot_of(&r)?,
                before,
                "redelivered {} after {i}",
                old.id()
            );
        }
    }
    Ok((r, outputs))
}

#[test]
fn every_input_redelivered_changes_nothing() -> TestResult {
    redeliveries_change_nothing(&scenario_config)?;
    Ok(())
}

#[test]
fn a_redelivered_control_cannot_undo_a_later_one() -> TestResult {
    let mut r = router(|_| {})?;
    let on = control("1", true, "halt");
    run(&mut r, on.clone())?;
    run(&mut r, control("2", false, "resume"))?;
    run(&mut r, on)?;
    assert_eq!(r.kill_switch(), None);
    Ok(())
}

#[test]
fn the_latest_bar_redelivered_is_not_a_new_mark() -> TestResult {
    let mut r = router(|_| {})?;
    let b = bar("AAPL", t0(), dec!(100));
    run(&mut r, b.clone())?;
    let before = snapshot_of(&r)?;
    run(&mut r, b)?;
    assert_eq!(snapshot_of(&r)?, before);
    // A correction at the same instant still moves the mark.
    run(&mut r, bar("AAPL", t0(), dec!(101)))?;
    assert_eq!(r.mark_prices().get(&sym("AAPL")), Some(&dec!(101)));
    Ok(())
}

#[test]
fn unusable_snapshots_are_fatal_and_change_nothing() -> TestResult {
    let (inputs, _) = scenario()?;
    let mut r = router(scenario_config)?;
    for i in &inputs {
        r.process(i, t0())?;
    }
    let good = snapshot_of(&r)?;
    let mut target = router(scenario_config)?;
    target.process(&inputs[0], t0())?;
    let before = snapshot_of(&target)?;
    let mut wrong_version = good.clone();
    wrong_version[0] = SNAPSHOT_FORMAT + 1;
    for (name, bytes, words) in [
        ("empty", &[][..], "empty"),
        ("version", &wrong_version[..], "format version"),
        ("truncated", &good[..good.len() / 2], "corrupt"),
        ("garbage", &[SNAPSHOT_FORMAT, 0xc1, 0x07][..], "corrupt"),
    ] {
        let e = target.restore(bytes).expect_err(name);
        assert_eq!(e.class, ErrorClass::Fatal, "{name}");
        assert!(e.message.contains(words), "{name}: {e}");
        assert_eq!(snapshot_of(&target)?, before, "{name}");
    }
    // Other accounts than configured: the books would be misattributed.
    let mut other = router(|c| {
        if let Some(a) = c.accounts.remove(&demo()) {
            c.accounts.insert(
                AccountId::new("other").unwrap_or_else(|_| unreachable!("valid account")),
                a,
            );
        }
        c.default_account = AccountId::new("other").unwrap_or_else(|_| unreachable!("valid"));
    })?;
    let e = other.restore(&good).expect_err("accounts differ");
    assert_eq!(e.class, ErrorClass::Fatal);
    assert!(
        e.message.contains("demo") && e.message.contains("other"),
        "{e}"
    );
    Ok(())
}

/// Measures the snapshot of a router that has seen 60 symbols × 1000 bars (printed with
/// --nocapture): the per-symbol mark history (up to 8192 closes) dominates it.
#[test]
fn snapshot_size_with_sixty_symbols() -> TestResult {
    let mut r = router(|_| {})?;
    for i in 0..1000 {
        for s in 0..60 {
            let close = Decimal::from(100 + (i * 7 + s) % 50) + dec!(0.25);
            r.process(
                &bar(&format!("S{s:02}"), t0() + Duration::minutes(i), close),
                t0(),
            )?;
        }
    }
    let bytes = snapshot_of(&r)?;
    eprintln!(
        "router snapshot: 60 symbols x 1000 bars = {} bytes ({} per bar kept)",
        bytes.len(),
        bytes.len() / 60_000
    );
    assert!(bytes.len() < 60 * 1000 * 64, "{}", bytes.len());
    Ok(())
}

// ---- forgetting finished orders ----

/// Forgets aggressively: at most `keep` finished orders older than the newest one.
fn forgetful(keep: u32) -> impl Fn(&mut RouterConfig) {
    move |c: &mut RouterConfig| {
        scenario_config(c);
        c.dedup_orders = keep;
        c.dedup_horizon_hours = 0;
    }
}

#[test]
fn forgetting_changes_no_decision_and_copies_of_forgotten_orders_are_dropped() -> TestResult {
    let (inputs, whole) = scenario()?;
    // Forgotten or not, every earlier input delivered again changes nothing.
    let (r, out) = redeliveries_change_nothing(&forgetful(1))?;
    assert_eq!(
        out, whole,
        "the same decisions as a router that forgets nothing"
    );
    assert!(
        r.finished.len() <= 3,
        "still remembers {:?}",
        r.finished.keys().collect::<Vec<_>>()
    );
    assert!(r.forgetting.through().is_some(), "nothing was forgotten");
    let full = {
        let mut full = router(scenario_config)?;
        for input in &inputs {
            full.process(input, t0())?;
        }
        full
    };
    assert_eq!(r.account(&demo()), full.account(&demo()));
    assert!(full.finished.len() > r.finished.len() + 5);
    Ok(())
}

#[test]
fn a_forgetting_router_resumes_exactly_from_any_snapshot() -> TestResult {
    resumes_exactly_everywhere(&forgetful(1))
}

#[test]
fn an_order_is_remembered_until_its_fills_arrive() -> TestResult {
    let mut d = Driver {
        router: router(forgetful(1))?,
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    d.push(bar("MSFT", at(4, 14, 0, 0), dec!(50)))?;
    let first = d.push(limit(
        "a",
        "MSFT",
        Side::Buy,
        dec!(10),
        dec!(50),
        at(4, 14, 0, 1),
    ))?;
    let mut a = find(&first, "order:manual:demo:a")?;
    // The venue's FILLED event overtakes the fill (two topics).
    a.filled_quantity = dec!(10);
    d.venue_update(&mut a, OrderStatus::Filled, at(4, 14, 1, 0))?;
    // Later orders finish; `a` is past both horizons but still owed a fill.
    for (i, minute) in [(1, 2), (2, 3), (3, 4)] {
        let out = d.push(limit(
            &format!("b{i}"),
            "MSFT",
            Side::Buy,
            dec!(1),
            dec!(49),
            at(4, 14, minute, 0),
        ))?;
        let mut b = find(&out, &format!("order:manual:demo:b{i}"))?;
        assert_eq!(b.status, OrderStatus::Accepted, "{b:?}");
        d.venue_update(&mut b, OrderStatus::Canceled, at(4, 14, minute, 30))?;
    }
    assert!(d.router.finished.contains_key("order:manual:demo:a"));
    let cash_before = d.router.account(&demo()).map(|v| v.book.cash);
    let a_fill = fill(
        "order:manual:demo:a",
        0,
        "MSFT",
        Side::Buy,
        dec!(10),
        dec!(50),
        at(4, 14, 1, 0),
    );
    d.push(a_fill.clone())?;
    let view = d.router.account(&demo()).ok_or("no account")?;
    assert_eq!(
        Some(view.book.cash + dec!(500)),
        cash_before,
        "the fill was applied"
    );
    assert_eq!(view.book.quantity(&sym("MSFT")), dec!(10));
    // The next finish forgets it; a copy of its fill is then dropped, not applied twice.
    let out = d.push(limit(
        "c",
        "MSFT",
        Side::Buy,
        dec!(1),
        dec!(49),
        at(4, 14, 6, 0),
    ))?;
    let mut c = find(&out, "order:manual:demo:c")?;
    assert_eq!(c.status, OrderStatus::Accepted, "{c:?}");
    d.venue_update(&mut c, OrderStatus::Canceled, at(4, 14, 6, 30))?;
    assert!(!d.router.finished.contains_key("order:manual:demo:a"));
    let before = snapshot_of(&d.router)?;
    run(&mut d.router, a_fill)?;
    assert_eq!(snapshot_of(&d.router)?, before);
    Ok(())
}

#[test]
fn orders_within_the_horizon_are_all_remembered() -> TestResult {
    let mut r = router(|c| {
        c.dedup_orders = 1;
        c.dedup_horizon_hours = 1;
    })?;
    r.process(&bar("MSFT", at(4, 14, 0, 0), dec!(50)), t0())?;
    // Rejected at once (no such account): each finishes where it is decided.
    let mut bad = manual_order(
        "x0",
        "MSFT",
        Side::Buy,
        OrderType::Limit,
        dec!(1),
        Some(dec!(50)),
        at(4, 14, 0, 0),
    );
    bad.account = AccountId::new("nobody")?;
    for minute in 0..50 {
        let mut o = bad.clone();
        o.order_id = format!("order:manual:nobody:x{minute}");
        o.created_time = at(4, 14, minute, 0);
        o.updated_time = o.created_time;
        r.process(&AnyRecord::Order(o), t0())?;
    }
    assert_eq!(r.finished.len(), 50, "all within an hour of the newest");
    let mut o = bad.clone();
    o.order_id = "order:manual:nobody:late".into();
    o.created_time = at(4, 16, 0, 0);
    o.updated_time = o.created_time;
    r.process(&AnyRecord::Order(o), t0())?;
    assert_eq!(
        r.finished.len(),
        1,
        "{:?}",
        r.finished.keys().collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_horizon_past_the_calendar_forgets_nothing() -> TestResult {
    let mut r = router(|c| {
        c.dedup_orders = 1;
        c.dedup_horizon_hours = u32::MAX;
    })?;
    r.process(&bar("MSFT", at(4, 14, 0, 0), dec!(50)), t0())?;
    for i in 0..3 {
        rejected(
            &mut r,
            limit(
                &format!("z{i}"),
                "MSFT",
                Side::Buy,
                dec!(0.5),
                dec!(50),
                at(4, 14, i, 0),
            ),
        )?;
    }
    assert_eq!(r.finished.len(), 3);
    Ok(())
}
