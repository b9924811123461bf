//! The trading core decides the same orders, fills, marks and books whatever order its
//! inputs arrive in and wherever the runner cuts them into batches (a snapshot and a restore
//! into a fresh core at each cut, as a restart does).
//!
//! Bars and signals arrive in any order. Manual orders, API cancels and kill-switch commands
//! take effect between instants (see `tradestream_trading::core`): before the first instant
//! released after they arrive. Each is aimed at an instant and arrives at a random point
//! after every input of the instants before it and, where the arrival order leaves room,
//! before the last input that completes it; the expected outcome is the in-order run with
//! each of them just before the instant it actually precedes.

use chrono::{Duration, Utc};
use proptest::prelude::*;
use rust_decimal_macros::dec;
use tradestream_schemas::{
    AccountId, AnyRecord, Control, Order, OrderStatus, OrderType, OriginKind, Processor, Side,
    Symbol, TimeInForce,
};
use tradestream_trading::{TradingConfig, TradingCore};

#[path = "support/market.rs"]
mod market;

use market::{Market, Shape, time_of};

const SYMBOLS: usize = 4;
const STEPS: usize = 40;

/// Sequenced bars and their signals, by step.
fn market() -> Vec<Vec<AnyRecord>> {
    // Wide moves and tight brackets: plenty of fills, stops and OCO races.
    let shape = Shape {
        moves: 0.06,
        wicks: 0.02,
        buy: 0.4,
        sell: 0.8,
        stop: 0.02,
        take: 0.02,
    };
    let mut m = Market::new(7, SYMBOLS, shape, "test");
    (0..STEPS)
        .map(|i| {
            let (mut bars, signals) = m.instant(i, i as i64 + 1);
            bars.extend(signals);
            bars
        })
        .collect()
}

fn account() -> AccountId {
    AccountId::new("demo").expect("account")
}

/// A manual NEW order, created between instant `before - 1` and `before`.
fn manual(
    id: &str,
    before: usize,
    side: Side,
    order_type: OrderType,
    limit: Option<rust_decimal::Decimal>,
) -> Order {
    let at = time_of(before - 1) + Duration::hours(1);
    Order {
        event_id: format!("{id}:0"),
        order_id: id.into(),
        sequence: 0,
        client_order_id: None,
        account: account(),
        symbol: Symbol::new("SYM1").expect("symbol"),
        side,
        order_type,
        quantity: dec!(10),
        limit_price: limit,
        stop_price: None,
        time_in_force: TimeInForce::Gtc,
        status: OrderStatus::New,
        filled_quantity: dec!(0),
        origin_kind: OriginKind::Manual,
        origin_id: format!("req:{id}"),
        parent_order_id: None,
        reject_reason: None,
        created_time: at,
        updated_time: at,
    }
}

/// The inputs that take effect between instants: (the instant they precede, the record).
fn between() -> Vec<(usize, AnyRecord)> {
    let market_buy = manual(
        "order:manual:demo:m1",
        5,
        Side::Buy,
        OrderType::Market,
        None,
    );
    // Below the market, inside the router's 10 % price band: it rests until canceled.
    let resting = manual(
        "order:manual:demo:m2",
        8,
        Side::Buy,
        OrderType::Limit,
        Some(dec!(85.5)),
    );
    let mut cancel = resting.clone();
    cancel.sequence = 1;
    cancel.status = OrderStatus::Canceled;
    cancel.event_id = format!("{}:cancel:req-9", resting.order_id);
    cancel.reject_reason = Some("MANUAL_CANCEL: by=test".into());
    cancel.updated_time = time_of(12) + Duration::hours(1);
    let kill = |on: bool, before: usize| Control {
        control_id: format!("control:KILL_SWITCH:{before}"),
        name: Control::KILL_SWITCH.into(),
        enabled: on,
        reason: "desk halt".into(),
        actor: "ops@example.com".into(),
        issued_time: time_of(before),
    };
    vec![
        (5, AnyRecord::Order(market_buy)),
        (8, AnyRecord::Order(resting)),
        (13, AnyRecord::Order(cancel)),
        (20, AnyRecord::Control(kill(true, 20))),
        (26, AnyRecord::Control(kill(false, 26))),
    ]
}

/// One arrival order: the market's records shuffled by `seed`, the between-instant inputs
/// placed as the module documentation says; with each of those, the instant it precedes.
fn arrival(seed: u64) -> (Vec<AnyRecord>, Vec<(usize, AnyRecord)>) {
    let steps = market();
    let mut base: Vec<(usize, AnyRecord)> = steps
        .into_iter()
        .enumerate()
        .flat_map(|(i, records)| records.into_iter().map(move |r| (i + 1, r)))
        .collect();
    let mut rng = seed | 1;
    // Shuffled within a window of three instants' inputs: a live run is late by a few
    // instants, not by the whole history.
    let window = 3 * 2 * SYMBOLS;
    for i in (1..base.len()).rev() {
        let lo = i.saturating_sub(window);
        let j = lo + (market::next(&mut rng) * (i - lo + 1) as f64) as usize;
        base.swap(i, j.min(i));
    }
    // complete[k]: the position of the input that completes instant k (its last input, or a
    // later instant's: instants are released in order).
    let mut complete = vec![0usize; STEPS + 1];
    for (pos, (step, _)) in base.iter().enumerate() {
        complete[*step] = complete[*step].max(pos);
    }
    for k in 1..complete.len() {
        complete[k] = complete[k].max(complete[k - 1]);
    }
    let mut slots: Vec<(usize, usize, AnyRecord)> = Vec::new();
    for (k, record) in between() {
        let lo = if k > 1 { complete[k - 1] + 1 } else { 0 };
        let hi = complete[k].max(lo);
        let at = lo + (market::next(&mut rng) * (hi - lo + 1) as f64) as usize;
        let at = at.min(hi).max(slots.last().map_or(0, |(s, _, _)| *s));
        // Inserted before the input at `at`: every instant completed by an earlier input is
        // released before it arrives.
        let precedes = 1 + (1..=STEPS).filter(|j| complete[*j] < at).count();
        slots.push((at, precedes, record));
    }
    let placed = slots.iter().map(|(_, k, r)| (*k, r.clone())).collect();
    let mut out = Vec::with_capacity(base.len() + slots.len());
    let mut slots = slots.into_iter().peekable();
    for (pos, (_, r)) in base.into_iter().enumerate() {
        while let Some((_, _, record)) = slots.next_if(|(at, _, _)| *at == pos) {
            out.push(record);
        }
        out.push(r);
    }
    out.extend(slots.map(|(_, _, r)| r));
    (out, placed)
}

/// What one run published, in order, and the books it ended with. Records compare by value
/// (a decimal restored from a snapshot may print `103.1` where the original printed
/// `103.10`; on the wire both are the same Avro decimal).
#[derive(Debug, PartialEq)]
struct Outcome {
    published: Vec<AnyRecord>,
    books: Option<tradestream_router::AccountView>,
}

fn run(inputs: &[AnyRecord], cuts: &[usize]) -> Outcome {
    let config = TradingConfig::default();
    let mut core = TradingCore::new(config.clone()).expect("core");
    let now = Utc::now();
    let mut published = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        if cuts.contains(&i) {
            let bytes = core.snapshot().expect("snapshot").expect("stateful");
            core = TradingCore::new(config.clone()).expect("core");
            core.restore(&bytes).expect("restore");
        }
        let out = core.process(input, now).expect("process");
        published.extend(out);
    }
    assert_eq!(
        core.barrier().done(),
        STEPS as i64,
        "every instant processed"
    );
    Outcome {
        published,
        books: core.account(&account()),
    }
}

/// The reference: inputs in step order, each between-instant input just before the inputs
/// of the instant it precedes.
fn in_order(between: &[(usize, AnyRecord)]) -> Outcome {
    let mut inputs = Vec::new();
    for (i, records) in market().into_iter().enumerate() {
        inputs.extend(
            between
                .iter()
                .filter(|(k, _)| *k == i + 1)
                .map(|(_, r)| r.clone()),
        );
        inputs.extend(records);
    }
    inputs.extend(
        between
            .iter()
            .filter(|(k, _)| *k > STEPS)
            .map(|(_, r)| r.clone()),
    );
    run(&inputs, &[])
}

fn reference() -> Outcome {
    in_order(&between())
}

#[test]
fn the_scenario_trades_and_every_between_instant_input_takes_effect() {
    let r = reference();
    let printed: Vec<String> = r.published.iter().map(|p| format!("{p:?}")).collect();
    let text = printed.join("\n");
    let fills = printed.iter().filter(|p| p.starts_with("Fill(")).count();
    let orders = printed.iter().filter(|p| p.starts_with("Order(")).count();
    assert!(
        orders > 50 && fills > 20,
        "{orders} order events, {fills} fills"
    );
    assert!(
        text.contains("order_id: \"order:manual:demo:m1\", sequence: 1"),
        "m1 decided"
    );
    assert!(
        text.contains("fill_id: \"order:manual:demo:m1:fill:0\""),
        "m1 filled at the next instant"
    );
    let m2: Vec<&String> = printed.iter().filter(|p| p.contains("m2")).collect();
    assert!(text.contains("MANUAL_CANCEL"), "m2 canceled: {m2:#?}");
    assert!(
        text.contains("RISK_KILL_SWITCH"),
        "the kill switch rejected signals"
    );
    assert!(r.books.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_arrival_order_and_batch_cuts_give_the_same_outputs_and_books(
        seed in any::<u64>(),
        cuts in proptest::collection::vec(0usize..(STEPS * SYMBOLS * 2 + 5), 0..6),
    ) {
        let (inputs, placed) = arrival(seed);
        let reference = in_order(&placed);
        let outcome = run(&inputs, &cuts);
        prop_assert_eq!(&outcome.books, &reference.books);
        prop_assert_eq!(outcome.published.len(), reference.published.len());
        for (i, (a, b)) in outcome.published.iter().zip(&reference.published).enumerate() {
            prop_assert_eq!(a, b, "output {} differs", i);
        }
    }
}
