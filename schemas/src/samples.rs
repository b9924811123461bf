//! Valid example records of every type, for tests, docs and the contract checks in other
//! crates. Deterministic: the same call returns the same record.

use crate::feature_values::FeatureValues;
use crate::ids::{AccountId, Symbol};
use crate::records::*;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;

use std::str::FromStr;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 12, 31, 14, 30, 0)
        .single()
        .unwrap_or_default()
}

fn dec(literal: &str) -> Decimal {
    Decimal::from_str(literal).unwrap_or_else(|_| unreachable!("valid literal {literal}"))
}

fn sym() -> Symbol {
    Symbol::new("^IXIC").unwrap_or_else(|_| unreachable!("valid literal"))
}

fn account() -> AccountId {
    AccountId::new("demo").unwrap_or_else(|_| unreachable!("valid literal"))
}

/// A daily bar.
pub fn market_data() -> MarketData {
    MarketData {
        record_id: "csv:nasdaq-daily.csv:^IXIC:2018-12-31".into(),
        symbol: sym(),
        event_time: t0(),
        kind: MarketDataKind::Bar,
        interval: Some("1d".into()),
        open: dec("6586.92"),
        high: dec("6642.2"),
        low: dec("6575.549805"),
        close: dec("6635.279785"),
        volume: dec("2105450000"),
        source: "csv:nasdaq-daily.csv".into(),
        ingest_time: t0(),
        step: 0,
        step_bars: 0,
    }
}

/// Features for [`market_data`].
pub fn features() -> Features {
    let mut values = FeatureValues::new();
    values.insert("sma_20", 6_700.5);
    values.insert("rsi_14", 41.25);
    Features {
        record_id: "features:csv:nasdaq-daily.csv:^IXIC:2018-12-31".into(),
        source_id: market_data().record_id,
        symbol: sym(),
        event_time: t0(),
        close: dec("6635.279785"),
        values,
        bar_class: BarClass::RealBull,
        trend: Trend::Neutral,
        feature_set_version: "fs-1".into(),
        step: 0,
    }
}

/// A buy signal.
pub fn trading_signal() -> TradingSignal {
    TradingSignal {
        signal_id: "signal:1".into(),
        source_id: features().record_id,
        symbol: sym(),
        event_time: t0(),
        side: SignalSide::Buy,
        confidence: 0.62,
        model_name: "logreg-direction".into(),
        model_version: "abc123".into(),
        reference_price: dec("6635.279785"),
        stop_loss: Some(dec("6500")),
        take_profit: None,
        reason: "p(up)=0.62".into(),
        step: 0,
    }
}

/// A volume anomaly.
pub fn anomaly() -> Anomaly {
    Anomaly {
        anomaly_id: "anomaly:1".into(),
        source_id: features().record_id,
        symbol: sym(),
        event_time: t0(),
        kind: "VOLUME".into(),
        score: 14.5,
        severity: Severity::High,
        detector_version: "gmm-1".into(),
    }
}

/// An accepted limit order.
pub fn order() -> Order {
    Order {
        event_id: "order:1:1".into(),
        order_id: "order:1".into(),
        sequence: 1,
        client_order_id: Some("my-1".into()),
        account: account(),
        symbol: sym(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        quantity: dec("1.5"),
        limit_price: Some(dec("6600")),
        stop_price: None,
        time_in_force: TimeInForce::Gtc,
        status: OrderStatus::Accepted,
        filled_quantity: Decimal::ZERO,
        origin_kind: OriginKind::Manual,
        origin_id: "req-1".into(),
        parent_order_id: None,
        reject_reason: None,
        created_time: t0(),
        updated_time: t0(),
    }
}

/// A fill of [`order`].
pub fn fill() -> Fill {
    Fill {
        fill_id: "order:1:fill:0".into(),
        order_id: "order:1".into(),
        account: account(),
        symbol: sym(),
        side: Side::Buy,
        quantity: dec("1.5"),
        price: dec("6599.99"),
        commission: dec("1"),
        liquidity: Liquidity::Maker,
        fill_time: t0(),
    }
}

/// The kill switch turned on.
pub fn control() -> Control {
    Control {
        control_id: "control:KILL_SWITCH:req-1".into(),
        name: Control::KILL_SWITCH.into(),
        enabled: true,
        reason: "desk halt".into(),
        actor: "ops@example.com".into(),
        issued_time: t0(),
    }
}

/// An account's value at step 3, with more decimal places than the `decimal` fields hold.
pub fn valuation() -> Valuation {
    Valuation::new(
        account(),
        (3, t0(), None),
        dec("990098.50000001"),
        dec("9899.98500000001"),
    )
}

/// A dead letter for an undecodable market-data record.
pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        source_topic: "market_data".into(),
        source_partition: 2,
        source_offset: 42,
        key: Some(b"AAPL".to_vec()),
        payload: Some(vec![1, 2, 3]),
        error_class: "dead_letter".into(),
        error_message: "not Confluent-framed Avro".into(),
        processor: "features".into(),
        failed_time: t0(),
    }
}
