//! Evaluation figures of a scored, labelled sample: AUC ROC, average
//! precision, and the false-positive rate and recall at a score threshold.

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
    fn rates() {
        let (fpr, recall) = rates_at(&[80, 10, 90, 20], &[true, false, true, true], 75);
        assert_eq!(fpr, 0.0);
        assert!((recall - 2.0 / 3.0).abs() < 1e-12);
    }
}
