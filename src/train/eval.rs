//! Evaluation figures of a scored, labelled sample: AUC ROC, average
//! precision, the false-positive rate and recall at a score threshold, card
//! precision@k (the fraud-detection handbook's definition) and a
//! calibration table.

/// Area under the ROC curve of `scores` against `labels` (ties count half).
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let pos = labels.iter().filter(|l| **l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Sum of positive ranks, with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision (area under the precision-recall curve, step-wise, as
/// scikit-learn computes it; tied scores form one step).
pub fn average_precision(scores: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|l| **l).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            if labels[k] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
        }
        let recall = tp / pos;
        let precision = tp / (tp + fp);
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        i = j + 1;
    }
    ap
}

/// Share of negatives and of positives with a score at or above `threshold`:
/// (false-positive rate, recall).
pub fn rates_at(scores: &[u32], labels: &[bool], threshold: u32) -> (f64, f64) {
    let (mut fp, mut neg, mut tp, mut pos) = (0u64, 0u64, 0u64, 0u64);
    for (s, l) in scores.iter().zip(labels) {
        let hit = *s >= threshold;
        if *l {
            pos += 1;
            tp += u64::from(hit);
        } else {
            neg += 1;
            fp += u64::from(hit);
        }
    }
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    (ratio(fp, neg), ratio(tp, pos))
}

/// One scored payment, as card precision needs it.
#[derive(Debug, Clone, Copy)]
pub struct CardScore<'a> {
    /// Day index of the payment (e.g. days since the epoch).
    pub day: i64,
    /// The card (the handbook takes the customer as the card).
    pub card: &'a str,
    /// The payment's score.
    pub score: f64,
    /// Whether the payment is fraudulent.
    pub fraud: bool,
}

/// Card precision@k as the fraud-detection handbook defines it: each day,
/// rank the cards not yet detected by their highest score that day, take
/// the top `k`, and count the share that had a fraudulent payment that day;
/// cards found that way are left out of later days. The mean over the days.
pub fn card_precision_at_k(rows: &[CardScore<'_>], k: usize) -> f64 {
    use std::collections::{BTreeMap, HashMap, HashSet};
    let mut days: BTreeMap<i64, HashMap<&str, (f64, bool)>> = BTreeMap::new();
    for r in rows {
        let e = days
            .entry(r.day)
            .or_default()
            .entry(r.card)
            .or_insert((f64::NEG_INFINITY, false));
        e.0 = e.0.max(r.score);
        e.1 |= r.fraud;
    }
    let mut detected: HashSet<&str> = HashSet::new();
    let mut precisions = Vec::with_capacity(days.len());
    for cards in days.values() {
        let mut ranked: Vec<(&str, f64, bool)> = cards
            .iter()
            .filter(|(c, _)| !detected.contains(*c))
            .map(|(c, (s, f))| (*c, *s, *f))
            .collect();
        // Highest score first; ties by card so that the result is deterministic.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let top = &ranked[..ranked.len().min(k)];
        let found: Vec<&str> = top.iter().filter(|r| r.2).map(|r| r.0).collect();
        precisions.push(found.len() as f64 / k as f64);
        detected.extend(found);
    }
    if precisions.is_empty() {
        f64::NAN
    } else {
        precisions.iter().sum::<f64>() / precisions.len() as f64
    }
}

/// One row of a calibration table: payments whose predicted probability
/// falls in `[low, high)`, their mean prediction and their fraud rate.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin.
    pub low: f64,
    /// Upper edge of the bin.
    pub high: f64,
    /// Payments in the bin.
    pub payments: usize,
    /// Mean predicted probability.
    pub mean_predicted: f64,
    /// Observed fraud rate.
    pub fraud_rate: f64,
}

/// Calibration table over bins with the given upper edges (the last one
/// should be above 1).
pub fn calibration_table(probs: &[f64], labels: &[bool], edges: &[f64]) -> Vec<CalibrationBin> {
    let mut low = 0.0;
    let mut out = Vec::with_capacity(edges.len());
    for &high in edges {
        let (mut n, mut sum, mut pos) = (0usize, 0.0, 0usize);
        for (p, l) in probs.iter().zip(labels) {
            if *p >= low && *p < high {
                n += 1;
                sum += p;
                pos += usize::from(*l);
            }
        }
        if n > 0 {
            out.push(CalibrationBin {
                low,
                high: high.min(1.0),
                payments: n,
                mean_predicted: sum / n as f64,
                fraud_rate: pos as f64 / n as f64,
            });
        }
        low = high;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_cases() {
        assert_eq!(
            auc_roc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            1.0
        );
        assert_eq!(
            auc_roc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            0.0
        );
        assert_eq!(auc_roc(&[0.5, 0.5], &[false, true]), 0.5);
        // sklearn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.75
        assert!(
            (auc_roc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]) - 0.75).abs() < 1e-12
        );
    }

    #[test]
    fn ap_matches_scikit_learn() {
        // sklearn: average_precision_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.8333…
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert!((ap - 0.833_333_333_333_333_4).abs() < 1e-12, "{ap}");
    }

    #[test]
    fn card_precision_follows_the_handbook() {
        let row = |day, card, score, fraud| CardScore {
            day,
            card,
            score,
            fraud,
        };
        let rows = [
            // Day 0: a (fraud) ranks first, b second; top 2 → 1 of 2.
            row(0, "a", 0.9, true),
            row(0, "a", 0.1, false),
            row(0, "b", 0.8, false),
            row(0, "c", 0.2, true),
            // Day 1: a was detected and is left out; c (fraud) and b → 1 of 2.
            row(1, "a", 0.99, true),
            row(1, "c", 0.7, true),
            row(1, "b", 0.6, false),
        ];
        assert!((card_precision_at_k(&rows, 2) - 0.5).abs() < 1e-12);
        // k larger than the cards of a day still divides by k.
        assert!((card_precision_at_k(&rows[..4], 4) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn calibration_bins() {
        let t = calibration_table(
            &[0.05, 0.5, 0.6, 0.95],
            &[false, true, false, true],
            &[0.1, 0.9, 1.1],
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t[1].payments, 2);
        assert!((t[1].fraud_rate - 0.5).abs() < 1e-12);
        assert!((t[1].mean_predicted - 0.55).abs() < 1e-12);
        assert_eq!(t[2].high, 1.0);
    }

    #[test]
    fn rates() {
        let (fpr, recall) = rates_at(&[80, 10, 90, 20], &[true, false, true, true], 75);
        assert_eq!(fpr, 0.0);
        assert!((recall - 2.0 / 3.0).abs() < 1e-12);
    }
}
