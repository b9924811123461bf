//! The router and the exchange in lockstep decide the same orders and fills whatever order
//! their inputs arrive in.
//!
//! A small bus stands in for Kafka: every topic has partitions (records keyed as in the
//! pipeline), each core reads its input topics' partitions in order, and a seeded scheduler
//! picks which partition of which core delivers next. Sequenced bars and one signal per bar
//! (as ingest and the scorer publish them) are all on the bus from the start, so the cores
//! can run far apart; every order, fill and mark goes back on the bus to its readers. Each
//! schedule must end with the same orders, fills and books. The same schedules without
//! lockstep must not (otherwise the first assertion would prove nothing).

use chrono::Utc;
use std::collections::{BTreeMap, VecDeque};
use tradestream_exchange::{ExchangeConfig, ExchangeProcessor};
use tradestream_router::{RouterConfig, RouterProcessor};
use tradestream_schemas::{AccountId, AnyRecord, LockstepStatus, Processor, Topic};

#[path = "support/market.rs"]
mod market;

use market::{Market, Shape, next};

const SYMBOLS: usize = 5;
const STEPS: usize = 80;
const PARTITIONS: usize = 3;

/// Sequenced bars and their signals, as ingest, features and the scorer publish them.
fn market(seed: u64) -> Vec<AnyRecord> {
    // Wide moves and tight brackets: plenty of fills, stops and OCO races.
    let shape = Shape {
        moves: 0.06,
        wicks: 0.02,
        buy: 0.4,
        sell: 0.8,
        stop: 0.02,
        take: 0.02,
    };
    let mut m = Market::new(seed, SYMBOLS, shape, "test");
    let mut out = Vec::new();
    for i in 0..STEPS {
        let (bars, signals) = m.instant(i, i as i64 + 1);
        out.extend(bars);
        out.extend(signals);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Core {
    Router,
    Exchange,
}

/// What one schedule produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    orders: BTreeMap<String, String>,
    fills: BTreeMap<String, String>,
    /// Both cores' marks by id: each must be the same in every schedule too (a restart
    /// republishes them under the same ids).
    marks: BTreeMap<String, String>,
    books: String,
    /// What each core reports to the runner's lockstep gauges at the end (router, exchange).
    status: (Option<LockstepStatus>, Option<LockstepStatus>),
}

fn partition(key: &str) -> usize {
    key.bytes().map(usize::from).sum::<usize>() % PARTITIONS
}

fn run(schedule_seed: u64, lockstep: bool) -> Outcome {
    let router_cfg = RouterConfig {
        lockstep,
        ..RouterConfig::default()
    };
    let venue_cfg = ExchangeConfig {
        lockstep,
        ..ExchangeConfig::default()
    };
    let mut router = RouterProcessor::new(router_cfg).expect("router");
    let mut venue = ExchangeProcessor::new(venue_cfg).expect("exchange");
    let mut queues: BTreeMap<(Core, Topic, usize), VecDeque<AnyRecord>> = BTreeMap::new();
    let mut orders = BTreeMap::new();
    let mut fills = BTreeMap::new();
    let mut marks = BTreeMap::new();
    let router_inputs = router.inputs();
    let venue_inputs = venue.inputs();
    let publish = |queues: &mut BTreeMap<(Core, Topic, usize), VecDeque<AnyRecord>>,
                   r: AnyRecord| {
        let topic = r.topic();
        let p = partition(r.key());
        if router_inputs.contains(&topic) {
            queues
                .entry((Core::Router, topic, p))
                .or_default()
                .push_back(r.clone());
        }
        if venue_inputs.contains(&topic) {
            queues
                .entry((Core::Exchange, topic, p))
                .or_default()
                .push_back(r);
        }
    };
    // The feed is published a few records at a time, between deliveries: so a step's bars
    // reach the exchange sometimes before the router's mark of the step before, sometimes
    // after, and in any grouping.
    let mut feed: VecDeque<AnyRecord> = market(7).into();
    let mut rng = schedule_seed | 1;
    let now = Utc::now();
    loop {
        let ready: Vec<(Core, Topic, usize)> = queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if ready.is_empty() && feed.is_empty() {
            break;
        }
        if ready.is_empty() || (!feed.is_empty() && next(&mut rng) < 0.3) {
            let n = 1 + (next(&mut rng) * 6.0) as usize;
            for r in feed.drain(..n.min(feed.len())) {
                publish(&mut queues, r);
            }
            continue;
        }
        // Favour one queue for a while, as a consumer drains a fetch.
        let pick = ready[(next(&mut rng) * ready.len() as f64) as usize % ready.len()];
        let burst = 1 + (next(&mut rng) * 8.0) as usize;
        for _ in 0..burst {
            let Some(input) = queues.get_mut(&pick).and_then(VecDeque::pop_front) else {
                break;
            };
            let out = match pick.0 {
                Core::Router => router.process(&input, now),
                Core::Exchange => venue.process(&input, now),
            }
            .unwrap_or_default();
            for r in out {
                let text = format!("{r:?}");
                match &r {
                    AnyRecord::Order(o) => {
                        if let Some(before) = orders.insert(o.event_id.clone(), text.clone()) {
                            assert_eq!(before, text, "two different records under one id");
                        }
                    }
                    AnyRecord::Fill(f) => {
                        if let Some(before) = fills.insert(f.fill_id.clone(), text.clone()) {
                            assert_eq!(before, text, "two different records under one id");
                        }
                    }
                    AnyRecord::Progress(p) => {
                        if let Some(before) = marks.insert(p.record_id.clone(), text.clone()) {
                            assert_eq!(before, text, "two different records under one id");
                        }
                    }
                    _ => {}
                }
                publish(&mut queues, r);
            }
        }
    }
    let account = AccountId::new("demo").expect("account");
    Outcome {
        orders,
        fills,
        marks,
        books: format!("{:?}", router.account(&account)),
        status: (router.lockstep(), venue.lockstep()),
    }
}

#[test]
fn any_arrival_order_gives_the_same_orders_fills_and_books() {
    let first = run(1, true);
    assert!(first.books.starts_with("Some("), "{}", first.books);
    println!(
        "{} order events, {} fills; books {}",
        first.orders.len(),
        first.fills.len(),
        first.books
    );
    assert!(
        first.orders.len() > 50 && first.fills.len() > 20,
        "the scenario trades: {} order events, {} fills",
        first.orders.len(),
        first.fills.len()
    );
    // Every step finished by both, nothing left waiting: what the gauges show once the feed
    // is drained.
    let done = LockstepStatus {
        done: STEPS as i64,
        held: 0,
    };
    assert_eq!(first.status, (Some(done), Some(done)));
    for seed in 2..10 {
        let other = run(seed * 0x9E37_79B9, true);
        assert_eq!(
            first.orders.keys().collect::<Vec<_>>(),
            other.orders.keys().collect::<Vec<_>>(),
            "schedule {seed}: other order events"
        );
        let differing: Vec<&String> = first
            .marks
            .iter()
            .filter(|(id, text)| other.marks.get(*id) != Some(*text))
            .map(|(id, _)| id)
            .collect();
        assert!(
            differing.is_empty(),
            "schedule {seed}: marks differ: {differing:?}"
        );
        assert_eq!(first, other, "schedule {seed}: other contents or books");
    }
}

#[test]
fn without_lockstep_arrival_order_changes_decisions() {
    let first = run(1, false);
    assert_eq!(
        first.status,
        (None, None),
        "no lockstep, no lockstep gauges"
    );
    let differ = (2..10).any(|seed| run(seed * 0x9E37_79B9, false) != first);
    assert!(differ, "every schedule decided alike without lockstep");
}
