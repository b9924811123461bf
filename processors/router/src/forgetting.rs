//! Bounded memory of finished orders, shared by the router and the exchange.
//!
//! Both remember finished orders to recognise inputs about them that arrive again (an
//! upstream processor republishing after a crash). Remembering all of them grows without
//! bound, so each forgets an order once it is neither among the newest `keep` nor within
//! `horizon_hours` of the newest, and then takes any input about an unknown order dated at or
//! before the last one it forgot for such a copy. What "dated" means (end or creation time)
//! and what else must hold before an order may go is each core's own.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Finished orders by time, oldest first, and how far forgetting has gone. Only `through` is
/// serialized: the index is rebuilt from the core's finished orders on restore
/// ([`Self::rebuild`]) rather than stored twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forgetting {
    #[serde(skip)]
    by_time: BTreeSet<(DateTime<Utc>, String)>,
    /// Latest time of a forgotten order.
    through: Option<DateTime<Utc>>,
}

impl Forgetting {
    /// Replaces the index with `finished` (time, id) pairs; `through` is kept.
    pub fn rebuild(&mut self, finished: impl IntoIterator<Item = (DateTime<Utc>, String)>) {
        self.by_time = finished.into_iter().collect();
    }

    /// Notes that `id` finished at `at` (`before`: the time it was noted at already).
    pub fn note(&mut self, id: &str, before: Option<DateTime<Utc>>, at: DateTime<Utc>) {
        if let Some(before) = before {
            self.by_time.remove(&(before, id.to_string()));
        }
        self.by_time.insert((at, id.to_string()));
    }

    /// Latest time of a forgotten order.
    pub fn through(&self) -> Option<DateTime<Utc>> {
        self.through
    }

    /// Sets how far forgetting has gone (a restored state's).
    pub fn set_through(&mut self, through: Option<DateTime<Utc>>) {
        self.through = through;
    }

    /// Whether something dated `at` is at or before the last order forgotten.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.through.is_some_and(|t| at <= t)
    }

    /// Forgets the oldest orders while more than `keep` are remembered and the oldest is
    /// more than `horizon_hours` older than the newest, stopping at the first one
    /// `may_forget` refuses; returns the ids forgotten, oldest first.
    pub fn forget(
        &mut self,
        keep: u32,
        horizon_hours: u32,
        mut may_forget: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let horizon = Duration::hours(i64::from(horizon_hours));
        // A horizon reaching past chrono's range forgets nothing.
        let Some(cutoff) = self
            .by_time
            .last()
            .and_then(|(newest, _)| newest.checked_sub_signed(horizon))
        else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        while self.by_time.len() > keep {
            let Some((at, id)) = self.by_time.first() else {
                break;
            };
            if *at >= cutoff || !may_forget(id) {
                break;
            }
            let at = *at;
            if let Some((_, id)) = self.by_time.pop_first() {
                gone.push(id);
            }
            self.through = Some(self.through.map_or(at, |t| t.max(at)));
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hour(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0)
            .single()
            .unwrap_or_default()
            + Duration::hours(h)
    }

    #[test]
    fn forgets_past_both_horizons_and_stops_where_refused() {
        let mut f = Forgetting::default();
        for h in 0..6 {
            f.note(&format!("o{h}"), None, hour(h));
        }
        // Keep 2, horizon 1 h: o0..o3 are past both (o4 is within an hour of o5).
        assert_eq!(f.forget(2, 1, |id| id != "o2"), vec!["o0", "o1"]);
        assert_eq!(f.through(), Some(hour(1)));
        assert!(f.covers(hour(1)) && !f.covers(hour(2)));
        assert_eq!(f.forget(2, 1, |_| true), vec!["o2", "o3"]);
        assert_eq!(f.through(), Some(hour(3)));
        // A week's horizon forgets nothing of these.
        let mut g = Forgetting::default();
        for h in 0..6 {
            g.note(&format!("o{h}"), None, hour(h));
        }
        assert!(g.forget(2, 168, |_| true).is_empty());
        // Moving an order to a later time moves it in the order of forgetting.
        g.note("o0", Some(hour(0)), hour(10));
        assert_eq!(g.forget(2, 1, |_| true), vec!["o1", "o2", "o3", "o4"]);
        assert_eq!(g.through(), Some(hour(4)));
    }
}
