//! Held-out evaluation metrics, computed here rather than pulled from a library so their
//! exact definitions are on the page: accuracy, precision and recall of the positive class,
//! ROC AUC as the Mann–Whitney rank statistic (ties get average ranks), and quantiles.

/// Counts of a binary classifier's outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Confusion {
    /// Predicted positive, was positive.
    pub tp: usize,
    /// Predicted positive, was negative.
    pub fp: usize,
    /// Predicted negative, was negative.
    pub tn: usize,
    /// Predicted negative, was positive.
    pub fn_: usize,
}

impl Confusion {
    /// Tallies (predicted, actual) pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Self::default();
        for (pred, actual) in pairs {
            match (pred, actual) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// All outcomes.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// (tp + tn) / total; 0 when empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }

    /// tp / (tp + fp); 0 when nothing was predicted positive.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// tp / (tp + fn); 0 when there were no positives.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// ROC AUC of `scores` for binary `labels`: the probability that a random positive scores
/// above a random negative (ties count one half), computed from the rank sum of the
/// positives. `None` when either class is absent or the lengths differ.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() {
        return None;
    }
    let pos = labels.iter().filter(|l| **l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg_rank = (i + j + 2) as f64 / 2.0;
        rank_sum_pos += idx[i..=j].iter().filter(|k| labels[**k]).count() as f64 * avg_rank;
        i = j + 1;
    }
    let (p, n) = (pos as f64, neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// The `q` quantile (0 ≤ q ≤ 1) of `sorted` (ascending) by linear interpolation between
/// closest ranks; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi.min(last)] - sorted[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn auc_of_a_known_tiny_example() {
        // Positives 0.8, 0.4; negatives 0.6, 0.2, 0.4 (one tie with a positive).
        // Pairs (pos > neg): 0.8 beats all three (3); 0.4 beats 0.2 (1), ties 0.4 (½) → 4.5/6.
        let scores = [0.8, 0.6, 0.4, 0.2, 0.4];
        let labels = [true, false, true, false, false];
        assert_eq!(roc_auc(&scores, &labels), Some(0.75));
        assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[true, false]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5], &[true, false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1], &[true, false]), None);
    }

    #[test]
    fn confusion_metrics() {
        let c = Confusion::from_pairs([
            (true, true),
            (true, false),
            (false, false),
            (false, true),
            (true, true),
        ]);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (2, 1, 1, 1));
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Confusion::default().precision(), 0.0);
    }

    #[test]
    fn quantiles() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&xs, 0.5), Some(3.0));
        assert_eq!(quantile(&xs, 0.9), Some(4.6));
        assert_eq!(quantile(&xs, 1.0), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    proptest! {
        /// The rank statistic equals the direct pair count.
        #[test]
        fn auc_equals_pairwise_count(data in prop::collection::vec((0u8..6, any::<bool>()), 2..40)) {
            let scores: Vec<f64> = data.iter().map(|(s, _)| f64::from(*s)).collect();
            let labels: Vec<bool> = data.iter().map(|(_, l)| *l).collect();
            let mut wins = 0.0;
            let mut pairs = 0.0;
            for (i, li) in labels.iter().enumerate() {
                for (j, lj) in labels.iter().enumerate() {
                    if *li && !*lj {
                        pairs += 1.0;
                        wins += if scores[i] > scores[j] { 1.0 } else if scores[i] == scores[j] { 0.5 } else { 0.0 };
                    }
                }
            }
            let expected = if pairs > 0.0 { Some(wins / pairs) } else { None };
            match (roc_auc(&scores, &labels), expected) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-12),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
    }
}
