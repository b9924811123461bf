//! Pure rules for folding order events into the `orders` row (the order's current state).
//!
//! The `orders` topic carries one event per state change with an increasing `sequence`. The row
//! follows the highest sequence seen; an event at or below the stored sequence is stale (a
//! replay, or overtaken) and changes nothing. A newer event must be a legal move of the order
//! state machine ([`OrderStatus::can_transition_to`]) from the stored status, or repeat it (a
//! cancel confirmation after a cancel request); anything else is refused and dead-lettered, so
//! the books never show, say, a FILLED order going back to ACCEPTED.

use std::collections::HashMap;
use tradestream_schemas::{Order, OrderStatus};

/// An order's stored state: status and sequence.
pub(crate) type OrderState = (OrderStatus, i32);

/// What folding a run of events decided.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Folded {
    /// Per order id, the index (into the caller's slice) of the event that becomes the row.
    pub(crate) winners: Vec<usize>,
}

/// An event that may not be applied.
#[derive(Debug, PartialEq)]
pub(crate) struct IllegalEvent {
    /// Index into the caller's slice.
    pub(crate) index: usize,
    /// Why.
    pub(crate) reason: String,
}

/// Folds `events` (in stream order, with the caller's indices) over the `stored` states.
/// Returns the winning event per order, or the first illegal event.
pub(crate) fn fold(
    stored: &HashMap<String, OrderState>,
    events: &[(usize, &Order)],
) -> Result<Folded, IllegalEvent> {
    let mut state: HashMap<&str, (OrderState, Option<usize>)> = HashMap::new();
    let mut order_of_first_sight: Vec<&str> = Vec::new();
    for &(index, event) in events {
        let id = event.order_id.as_str();
        let current = match state.get(id) {
            Some(s) => Some(s.0),
            None => stored.get(id).copied(),
        };
        if let Some((status, sequence)) = current {
            if event.sequence <= sequence {
                continue;
            }
            if status != event.status && !status.can_transition_to(event.status) {
                return Err(IllegalEvent {
                    index,
                    reason: format!(
                        "illegal order transition for {id:?}: {status:?} (sequence {sequence}) -> {:?} (sequence {})",
                        event.status, event.sequence
                    ),
                });
            }
        }
        if !state.contains_key(id) {
            order_of_first_sight.push(id);
        }
        state.insert(id, ((event.status, event.sequence), Some(index)));
    }
    Ok(Folded {
        winners: order_of_first_sight
            .into_iter()
            .filter_map(|id| state.get(id).and_then(|s| s.1))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tradestream_schemas::samples;

    fn event(order_id: &str, sequence: i32, status: OrderStatus) -> Order {
        Order {
            order_id: order_id.into(),
            event_id: format!("{order_id}:{sequence}"),
            sequence,
            status,
            ..samples::order()
        }
    }

    #[test]
    fn newest_legal_event_wins_and_stale_ones_are_ignored() {
        use OrderStatus::*;
        let evs = [
            event("a", 0, New),
            event("a", 1, Accepted),
            event("b", 0, Accepted),
            event("a", 0, New),
            event("a", 2, Filled),
        ];
        let refs: Vec<(usize, &Order)> = evs.iter().enumerate().collect();
        let folded = fold(&HashMap::new(), &refs).expect("legal");
        assert_eq!(folded.winners, vec![4, 2]);

        // Already stored at sequence 2: everything here is stale.
        let stored = HashMap::from([("a".to_string(), (Filled, 2))]);
        let folded = fold(&stored, &refs[..2]).expect("stale is fine");
        assert!(folded.winners.is_empty());
    }

    #[test]
    fn illegal_moves_are_refused_and_repeats_allowed() {
        use OrderStatus::*;
        let stored = HashMap::from([("a".to_string(), (Filled, 2))]);
        let evs = [event("a", 3, Accepted)];
        let refs: Vec<(usize, &Order)> = evs.iter().map(|e| (7, e)).collect();
        let err = fold(&stored, &refs).expect_err("filled cannot be accepted again");
        assert_eq!(err.index, 7);
        assert!(err.reason.contains("Filled"), "{}", err.reason);

        let stored = HashMap::from([("a".to_string(), (Canceled, 2))]);
        let evs = [event("a", 3, Canceled)];
        let refs: Vec<(usize, &Order)> = evs.iter().enumerate().collect();
        assert_eq!(fold(&stored, &refs).map(|f| f.winners), Ok(vec![0]));
    }

    proptest! {
        /// Folding a stream in two parts (the first part's result stored in between) decides
        /// the same final state as folding it at once.
        #[test]
        fn folding_is_batching_invariant(
            steps in proptest::collection::vec((0usize..3, 0i32..6, 0usize..7), 0..30),
            split in 0usize..30,
        ) {
            use OrderStatus::*;
            let statuses = [New, Accepted, PartiallyFilled, Filled, Canceled, Rejected, Expired];
            let evs: Vec<Order> = steps
                .iter()
                .map(|(o, s, st)| event(&format!("o{o}"), *s, statuses[*st]))
                .collect();
            // Apply one by one, dropping illegal events (as the sink dead-letters them).
            let apply = |stored: &mut HashMap<String, OrderState>, evs: &[Order]| {
                let mut pending: Vec<(usize, &Order)> = evs.iter().enumerate().collect();
                loop {
                    match fold(stored, &pending) {
                        Ok(f) => {
                            for w in f.winners {
                                let e = &evs[w];
                                stored.insert(e.order_id.clone(), (e.status, e.sequence));
                            }
                            break;
                        }
                        Err(bad) => pending.retain(|(i, _)| *i != bad.index),
                    }
                }
            };
            let mut once = HashMap::new();
            apply(&mut once, &evs);
            let mut twice = HashMap::new();
            let cut = split.min(evs.len());
            apply(&mut twice, &evs[..cut]);
            apply(&mut twice, &evs[cut..]);
            prop_assert_eq!(once, twice);
        }
    }
}
