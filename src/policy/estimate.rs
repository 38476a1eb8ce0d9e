//! The estimator: from each payment's true score, whether it was let
//! through, the probability that it was, and its label, the recall,
//! false-positive rate, precision and block rate of any threshold on the
//! true score, with intervals, beside the naive figures and the counts.
//!
//! # The population and what is seen of it
//!
//! The population is the payments of the window that the model's policy
//! decided ([`DecidedBy::Model`]); payments decided by a list and payments
//! not assessed are counted apart. The decision log gives every one of them
//! its true score, so the number of payments at or above any threshold (and
//! so the block rate) is known exactly. What is not known is which blocked
//! payments were fraudulent: a blocked payment is never charged, never
//! disputed. Labels are used for allowed payments (reported decision not
//! `block`) only; a label on a blocked payment is counted and left out.
//!
//! # The estimator: inverse propensity weights, self-normalised per cell
//!
//! Whether a payment is let through depends only on its true score (and
//! the decision settings), through the holdout draw, with the probability
//! its record carries (`allowed_propensity`). Payments are grouped into
//! cells of equal propensity on the same side of the threshold. Within a
//! cell every payment had the same chance of being let through,
//! independently of whether it was fraudulent, so the allowed ones are a
//! simple random sample of the cell and the cell's fraud count is estimated
//! as `payments × frauds seen / payments seen`: inverse propensity weighting
//! with the weight `payments / payments seen` (about `1 / propensity`)
//! normalised within the cell, which is unbiased given the number seen and
//! steadier than weighting by `1 / propensity` itself. Recall, false-positive
//! rate and precision are ratios of these cell totals.
//!
//! # The intervals: the cells' finite-population posterior
//!
//! The question is about the payments that happened, a finite population,
//! and only the fraud status of the unseen (blocked) payments is uncertain.
//! Each interval is taken from draws of the unseen part: per cell, a fraud
//! share from its Jeffreys posterior `Beta(frauds + ½, non-frauds + ½)`,
//! then the unseen payments' frauds as a binomial draw at that share; the
//! figure is computed for each draw and the interval is the central
//! `confidence` share of the draws (2,000 by default, a fixed seed, so the
//! same input gives the same interval). Why this rather than a variance
//! formula or a bootstrap over payments:
//!
//! - A cell whose payments were all let through contributes no
//!   uncertainty, as it should; a bootstrap over payments would add the
//!   variation of a new sample of payments, which the question does not ask.
//! - The cells above the block threshold are seen only through the holdout,
//!   often a few dozen payments; a delta-method interval there is symmetric
//!   around a skewed estimate and collapses to a point when no fraud (or
//!   only fraud) was seen. Jeffreys intervals keep near their nominal
//!   coverage down to a handful of samples and never leave 0–1.
//! - A cell with payments but none of them let through (no holdout, or none
//!   drawn there) says nothing about its fraud share: the figure is then
//!   not identified. Its value is `None`, and its interval is the widest
//!   the data allow: the lower end with those cells at the share that
//!   lowers the figure most (0 or 1), the upper end at the share that raises
//!   it most.
//!
//! The coverage was checked by simulation (`policy::coverage`; 1,000
//! synthetic populations per setting through the default policy: 4,000
//! payments with a 5% or 20% holdout, 20,000 with 1% or 5%), the 95%
//! intervals held the truth in 94–96% of cases for each of recall,
//! false-positive rate and precision (93.6–97.3% per threshold of 65, 75
//! and 85).
//!
//! Threshold 0 puts every payment at or above it (recall and
//! false-positive rate exactly 1, block rate 1); threshold 100 puts none
//! there (recall, false-positive rate and block rate 0, precision not
//! defined: `None` with interval 0–1).

use super::interval::{normal_quantile, quantile, unseen_frauds, wilson};
use crate::decision::DecidedBy;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// Draws behind each interval unless [`Query::draws`] says otherwise.
pub const DEFAULT_DRAWS: usize = 2000;
/// Seed of the draws unless [`Query::seed`] says otherwise.
pub const DEFAULT_SEED: u64 = 0x7269_736b_5f70_6f6c;
/// The confidence of the intervals unless a request says otherwise.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;

/// One payment as the estimator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When it was attempted (ms since the epoch).
    pub ts_ms: i64,
    /// What decided it: only the model's policy puts it in the population.
    pub decided_by: DecidedBy,
    /// The model's score.
    pub true_score: u32,
    /// Whether it was let through (reported decision not `block`).
    pub allowed: bool,
    /// The probability, over the holdout draw, that it is let through given
    /// its true score.
    pub allowed_propensity: f64,
    /// Whether it fell in the holdout.
    pub holdout: bool,
    /// Whether a label arrived for it.
    pub labelled: bool,
    /// Whether it counts as fraudulent (its latest label is a fraud report).
    pub fraud: bool,
}

/// What to estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Thresholds on the true score (0–100; a payment is at or above `t`
    /// when its score is `>= t`).
    pub thresholds: Vec<u32>,
    /// Payments attempted at or after this time (ms), if given.
    pub from_ms: Option<i64>,
    /// Payments attempted before this time (ms), if given.
    pub to_ms: Option<i64>,
    /// The time the labels are known up to (ms), if given: with
    /// `min_label_age_ms`, payments attempted later than
    /// `as_of_ms - min_label_age_ms` are left out, their labels may be yet
    /// to come.
    pub as_of_ms: Option<i64>,
    /// How old a payment must be at `as_of_ms` to count (ms, at least 0).
    pub min_label_age_ms: i64,
    /// The share of draws each interval covers (strictly between 0 and 1).
    pub confidence: f64,
    /// Draws behind each interval (at least 100).
    pub draws: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl Query {
    /// A query of `thresholds` over all payments, with the default
    /// confidence, draws and seed.
    pub fn new(thresholds: Vec<u32>) -> Self {
        Query {
            thresholds,
            from_ms: None,
            to_ms: None,
            as_of_ms: None,
            min_label_age_ms: 0,
            confidence: DEFAULT_CONFIDENCE,
            draws: DEFAULT_DRAWS,
            seed: DEFAULT_SEED,
        }
    }

    /// The end (ms, exclusive) of the payments counted: `to_ms`, brought
    /// forward to just after `as_of_ms - min_label_age_ms` when that is
    /// earlier.
    pub fn end_ms(&self) -> Option<i64> {
        let labelled = self
            .as_of_ms
            .map(|a| a.saturating_sub(self.min_label_age_ms).saturating_add(1));
        match (self.to_ms, labelled) {
            (Some(t), Some(l)) => Some(t.min(l)),
            (t, l) => t.or(l),
        }
    }

    /// Whether a payment attempted at `ts_ms` is counted.
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| ts_ms >= f) && self.end_ms().is_none_or(|e| ts_ms < e)
    }
}

/// A figure with its interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    /// The point estimate; `None` when the data cannot tell (no payment
    /// seen where one is needed, or nothing to divide by).
    pub value: Option<f64>,
    /// Lower end of the interval.
    pub lower: f64,
    /// Upper end of the interval.
    pub upper: f64,
}

impl Estimate {
    /// A figure known exactly.
    pub fn exact(value: f64) -> Self {
        Estimate {
            value: Some(value),
            lower: value,
            upper: value,
        }
    }

    /// A figure the data say nothing about.
    pub fn unknown() -> Self {
        Estimate {
            value: None,
            lower: 0.0,
            upper: 1.0,
        }
    }

    /// Whether `x` lies within the interval.
    pub fn covers(&self, x: f64) -> bool {
        self.lower <= x && x <= self.upper
    }

    /// The interval with `value` as its point estimate, widened to hold it
    /// (a cell where no fraud was seen estimates none, while a draw's lower
    /// end may be above 0: as Jeffreys intervals do at 0 successes, the
    /// interval then starts at the estimate).
    fn with_value(self, value: Option<f64>) -> Self {
        match value {
            Some(v) => Estimate {
                value: Some(v),
                lower: self.lower.min(v),
                upper: self.upper.max(v),
            },
            None => Estimate {
                value: None,
                ..self
            },
        }
    }
}

/// The figures of one threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PolicyEstimate {
    /// The threshold on the true score.
    pub threshold: u32,
    /// Share of fraudulent payments with true score at or above it.
    pub recall: Estimate,
    /// Share of legitimate payments with true score at or above it.
    pub false_positive_rate: Estimate,
    /// Share of payments at or above it that are fraudulent.
    pub precision: Estimate,
    /// Share of payments at or above it (known exactly).
    pub block_rate: Estimate,
    /// Recall among the allowed, labelled payments, unweighted (Wilson interval).
    pub naive_recall: Estimate,
    /// False-positive rate among the allowed payments, unweighted (Wilson interval).
    pub naive_false_positive_rate: Estimate,
    /// Precision among the allowed payments, unweighted (Wilson interval).
    pub naive_precision: Estimate,
    /// Payments at or above the threshold.
    pub at_or_above: u64,
    /// Of those, the ones let through, whose labels are seen.
    pub at_or_above_seen: u64,
}

/// The counts behind every threshold's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Payments of the window decided by the model's policy: the population.
    pub payments: u64,
    /// Of those, the ones in the holdout.
    pub holdout_payments: u64,
    /// Of those, the ones let through (their labels are used).
    pub allowed: u64,
    /// Allowed payments labelled fraudulent.
    pub observed_frauds: u64,
    /// Blocked payments that carry a label anyway: left out.
    pub blocked_labelled: u64,
    /// Payments of the window decided by a list: left out.
    pub decided_by_list: u64,
    /// Payments of the window not assessed: left out.
    pub not_assessed: u64,
    /// Payments of the window whose scoring failed (allowed, failing open): left out.
    pub scoring_failed: u64,
}

/// Everything estimated for a query.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// The window's start (ms), if any.
    pub from_ms: Option<i64>,
    /// The window's end (ms, exclusive), if any: the query's, brought
    /// forward by the minimum label age.
    pub to_ms: Option<i64>,
    /// The share each interval covers.
    pub confidence: f64,
    /// The counts.
    pub counts: Counts,
    /// One entry per threshold, in the order asked.
    pub estimates: Vec<PolicyEstimate>,
}

/// Why an estimate could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// A threshold above 100.
    #[error("threshold {0} is outside 0–100")]
    Threshold(u32),
    /// A confidence not strictly between 0 and 1.
    #[error("confidence {0} is not strictly between 0 and 1")]
    Confidence(f64),
    /// A negative minimum label age.
    #[error("minimum label age {0} ms is negative")]
    LabelAge(i64),
    /// Too few draws for an interval.
    #[error("{0} draws are too few; at least 100")]
    Draws(usize),
    /// An empty window.
    #[error("the window ends ({to_ms}) at or before it starts ({from_ms})")]
    Window {
        /// Its start.
        from_ms: i64,
        /// Its end.
        to_ms: i64,
    },
    /// A propensity that is not a probability, or that contradicts the
    /// decision (an allowed payment that could not be allowed, a blocked
    /// one that could not be blocked).
    #[error(
        "observation {index}: allowed propensity {propensity} is impossible for a payment {}",
        if *allowed { "that was allowed" } else { "that was blocked" }
    )]
    Propensity {
        /// Its position in the input.
        index: usize,
        /// The propensity given.
        propensity: f64,
        /// Whether it was allowed.
        allowed: bool,
    },
}

/// Payments of one propensity at one true score.
#[derive(Debug, Clone, Copy, Default)]
struct Bin {
    payments: u64,
    seen: u64,
    frauds: u64,
    seen_legit: u64,
}

/// Payments of one propensity on one side of a threshold.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    above: bool,
    payments: u64,
    seen: u64,
    frauds: u64,
}

impl Cell {
    fn identified(&self) -> bool {
        self.seen > 0 || self.payments == 0
    }
}

/// Fraud counts of the cells above and below the threshold, and their
/// payments: the figures follow from these.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    frauds_above: f64,
    frauds_below: f64,
    payments_above: f64,
    payments_below: f64,
}

impl Totals {
    fn add(&mut self, cell: &Cell, frauds: f64) {
        if cell.above {
            self.frauds_above += frauds;
            self.payments_above += cell.payments as f64;
        } else {
            self.frauds_below += frauds;
            self.payments_below += cell.payments as f64;
        }
    }

    fn recall(&self) -> Option<f64> {
        ratio(self.frauds_above, self.frauds_above + self.frauds_below)
    }

    fn false_positive_rate(&self) -> Option<f64> {
        let legit_above = self.payments_above - self.frauds_above;
        let legit_below = self.payments_below - self.frauds_below;
        ratio(legit_above, legit_above + legit_below)
    }

    fn precision(&self) -> Option<f64> {
        ratio(self.frauds_above, self.payments_above)
    }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| (num / den).clamp(0.0, 1.0))
}

/// How the cells nobody was seen in are filled for a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// No fraud above the threshold, all fraud below: recall and precision
    /// at their lowest, false-positive rate at its highest.
    Low,
    /// All fraud above, none below: the other way round.
    High,
}

/// Estimates `query` from `observations`.
pub fn estimate(observations: &[Observation], query: &Query) -> Result<Report, PolicyError> {
    estimate_each(observations.iter().copied(), query)
}

/// [`estimate`] from observations made one at a time (read once, in one
/// pass, never held together).
pub fn estimate_each(
    observations: impl IntoIterator<Item = Observation>,
    query: &Query,
) -> Result<Report, PolicyError> {
    if let Some(&t) = query.thresholds.iter().find(|&&t| t > 100) {
        return Err(PolicyError::Threshold(t));
    }
    if !(query.confidence > 0.0 && query.confidence < 1.0) {
        return Err(PolicyError::Confidence(query.confidence));
    }
    if query.draws < 100 {
        return Err(PolicyError::Draws(query.draws));
    }
    if query.min_label_age_ms < 0 {
        return Err(PolicyError::LabelAge(query.min_label_age_ms));
    }
    if let (Some(from_ms), Some(to_ms)) = (query.from_ms, query.to_ms)
        && to_ms <= from_ms
    {
        return Err(PolicyError::Window { from_ms, to_ms });
    }

    let mut counts = Counts::default();
    // (propensity bits, true score) → payments; scores above 100 fold into 100.
    let mut bins: BTreeMap<(u64, u32), Bin> = BTreeMap::new();
    for (index, o) in observations.into_iter().enumerate() {
        if !query.contains(o.ts_ms) {
            continue;
        }
        match o.decided_by {
            DecidedBy::Model => {}
            DecidedBy::List => {
                counts.decided_by_list += 1;
                continue;
            }
            DecidedBy::NotAssessed => {
                counts.not_assessed += 1;
                continue;
            }
            DecidedBy::ScoringFailed => {
                counts.scoring_failed += 1;
                continue;
            }
        }
        let p = o.allowed_propensity;
        let possible = p.is_finite() && (0.0..=1.0).contains(&p);
        if !possible || (o.allowed && p == 0.0) || (!o.allowed && p == 1.0) {
            return Err(PolicyError::Propensity {
                index,
                propensity: p,
                allowed: o.allowed,
            });
        }
        counts.payments += 1;
        counts.holdout_payments += u64::from(o.holdout);
        let bin = bins
            .entry((p.to_bits(), o.true_score.min(100)))
            .or_default();
        bin.payments += 1;
        if o.allowed {
            counts.allowed += 1;
            bin.seen += 1;
            if o.fraud {
                counts.observed_frauds += 1;
                bin.frauds += 1;
            } else {
                bin.seen_legit += 1;
            }
        } else {
            counts.blocked_labelled += u64::from(o.labelled);
        }
    }

    let z = normal_quantile(0.5 + query.confidence / 2.0);
    let estimates = query
        .thresholds
        .iter()
        .map(|&t| threshold_estimate(&bins, counts, t, query, z))
        .collect();
    Ok(Report {
        from_ms: query.from_ms,
        to_ms: query.end_ms(),
        confidence: query.confidence,
        counts,
        estimates,
    })
}

/// The figures of threshold `t`.
fn threshold_estimate(
    bins: &BTreeMap<(u64, u32), Bin>,
    counts: Counts,
    t: u32,
    query: &Query,
    z: f64,
) -> PolicyEstimate {
    // Cells: (propensity bits, above) → counts.
    let mut cells: BTreeMap<(u64, bool), Cell> = BTreeMap::new();
    let (mut seen_frauds_above, mut seen_legit_above) = (0u64, 0u64);
    for (&(p, score), bin) in bins {
        let above = score >= t;
        let c = cells.entry((p, above)).or_default();
        c.above = above;
        c.payments += bin.payments;
        c.seen += bin.seen;
        c.frauds += bin.frauds;
        if above {
            seen_frauds_above += bin.frauds;
            seen_legit_above += bin.seen_legit;
        }
    }
    let cells: Vec<Cell> = cells.into_values().collect();
    let at_or_above: u64 = cells.iter().filter(|c| c.above).map(|c| c.payments).sum();
    let at_or_above_seen: u64 = cells.iter().filter(|c| c.above).map(|c| c.seen).sum();

    // Point estimates: each identified cell's fraud share scaled to its payments.
    let mut point = Totals::default();
    for c in cells.iter().filter(|c| c.identified()) {
        let frauds = if c.seen == 0 {
            0.0
        } else {
            c.payments as f64 * c.frauds as f64 / c.seen as f64
        };
        point.add(c, frauds);
    }
    let all_identified = cells.iter().all(Cell::identified);
    let above_identified = cells.iter().filter(|c| c.above).all(Cell::identified);

    let (recall, false_positive_rate, precision) = intervals(&cells, t, query, point);
    let recall = recall.with_value(point.recall().filter(|_| all_identified));
    let false_positive_rate =
        false_positive_rate.with_value(point.false_positive_rate().filter(|_| all_identified));
    let precision = precision.with_value(point.precision().filter(|_| above_identified));

    let block_rate = if counts.payments == 0 {
        Estimate::unknown()
    } else {
        Estimate::exact(at_or_above as f64 / counts.payments as f64)
    };
    let seen_legit = counts.allowed - counts.observed_frauds;
    let naive = |k: u64, n: u64| {
        let (lower, upper) = wilson(k, n, z);
        Estimate {
            value: (n > 0).then(|| k as f64 / n as f64),
            lower,
            upper,
        }
    };
    PolicyEstimate {
        threshold: t,
        recall,
        false_positive_rate,
        precision,
        block_rate,
        naive_recall: naive(seen_frauds_above, counts.observed_frauds),
        naive_false_positive_rate: naive(seen_legit_above, seen_legit),
        naive_precision: naive(seen_frauds_above, at_or_above_seen),
        at_or_above,
        at_or_above_seen,
    }
}

/// The intervals of recall, false-positive rate and precision from draws of
/// the unseen payments' frauds, cells nobody was seen in filled at the
/// extremes (once each way when there are such cells).
fn intervals(
    cells: &[Cell],
    t: u32,
    query: &Query,
    point: Totals,
) -> (Estimate, Estimate, Estimate) {
    let alpha = 1.0 - query.confidence;
    let (lo_q, hi_q) = (alpha / 2.0, 1.0 - alpha / 2.0);
    let fills: &[Fill] = if cells.iter().all(Cell::identified) {
        &[Fill::Low]
    } else {
        &[Fill::Low, Fill::High]
    };
    // Per fill: the draws of each figure.
    let mut drawn: Vec<[Vec<f64>; 3]> = Vec::with_capacity(fills.len());
    for &fill in fills {
        // The same stream of draws for both fills and for every query with
        // the same seed and threshold.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(query.seed ^ u64::from(t));
        let mut figures: [Vec<f64>; 3] = std::array::from_fn(|_| Vec::with_capacity(query.draws));
        for _ in 0..query.draws {
            let mut totals = Totals::default();
            for c in cells {
                let frauds = if c.seen == 0 {
                    match (fill, c.above) {
                        (Fill::Low, true) | (Fill::High, false) => 0,
                        (Fill::Low, false) | (Fill::High, true) => c.payments,
                    }
                } else {
                    c.frauds + unseen_frauds(&mut rng, c.frauds, c.seen, c.payments - c.seen)
                };
                totals.add(c, frauds as f64);
            }
            for (i, f) in [
                totals.recall(),
                totals.false_positive_rate(),
                totals.precision(),
            ]
            .into_iter()
            .enumerate()
            {
                if let Some(f) = f {
                    figures[i].push(f);
                }
            }
        }
        drawn.push(figures);
    }
    let (low, high) = (0, drawn.len() - 1);
    let bound = |fill: usize, figure: usize, q: f64, fallback: f64| {
        let mut values = drawn[fill][figure].clone();
        // A figure undefined in most draws has no interval to speak of.
        if values.len() * 2 < query.draws {
            return fallback;
        }
        quantile(&mut values, q).unwrap_or(fallback)
    };
    let interval = |lower_fill: usize, upper_fill: usize, figure: usize, defined: bool| {
        if !defined {
            return Estimate::unknown();
        }
        Estimate {
            value: None,
            lower: bound(lower_fill, figure, lo_q, 0.0),
            upper: bound(upper_fill, figure, hi_q, 1.0),
        }
    };
    (
        interval(low, high, 0, point.frauds_above + point.frauds_below > 0.0),
        interval(high, low, 1, {
            let legit = point.payments_above + point.payments_below
                - point.frauds_above
                - point.frauds_below;
            legit > 0.0
        }),
        interval(low, high, 2, point.payments_above > 0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holdout rate 5%, default thresholds: the chance of being let through
    /// below and at or above the block threshold 75.
    const BELOW: f64 = 0.95 + 0.05 * 0.75;
    const ABOVE: f64 = 0.05 * 0.75;

    fn obs(score: u32, allowed: bool, propensity: f64, fraud: bool) -> Observation {
        Observation {
            ts_ms: 1000,
            decided_by: DecidedBy::Model,
            true_score: score,
            allowed,
            allowed_propensity: propensity,
            holdout: propensity < 0.5 && allowed,
            labelled: fraud,
            fraud,
        }
    }

    /// `n` payments of `score`, `seen` of them let through, `frauds` of
    /// those fraudulent.
    fn group(
        out: &mut Vec<Observation>,
        score: u32,
        propensity: f64,
        n: usize,
        seen: usize,
        frauds: usize,
    ) {
        for i in 0..n {
            out.push(obs(score, i < seen, propensity, i < frauds));
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn value(e: &Estimate) -> f64 {
        e.value.expect("a value")
    }

    fn run(o: &[Observation], thresholds: &[u32]) -> Report {
        estimate(o, &Query::new(thresholds.to_vec())).expect("estimates")
    }

    /// 100 payments below 75, all seen, 10 frauds; 40 at or above 75
    /// (20 at 80, 20 at 90), 2 of each seen through the holdout, 1 of
    /// each pair fraudulent.
    fn holdout_population() -> Vec<Observation> {
        let mut o = Vec::new();
        group(&mut o, 30, BELOW, 100, 100, 10);
        group(&mut o, 80, ABOVE, 20, 2, 1);
        group(&mut o, 90, ABOVE, 20, 2, 1);
        o
    }

    #[test]
    fn everything_seen_gives_exact_figures() {
        // Nothing is ever blocked: every label is seen.
        let mut o = Vec::new();
        for (score, fraud) in [
            (10, false),
            (20, false),
            (30, false),
            (40, false),
            (50, false),
            (60, true),
            (70, false),
            (80, false),
            (90, true),
            (95, true),
        ] {
            o.push(obs(score, true, 1.0, fraud));
        }
        let r = run(&o, &[75]);
        let e = &r.estimates[0];
        assert_eq!(e.recall, Estimate::exact(2.0 / 3.0));
        assert_eq!(e.false_positive_rate, Estimate::exact(1.0 / 7.0));
        assert_eq!(e.precision, Estimate::exact(2.0 / 3.0));
        assert_eq!(e.block_rate, Estimate::exact(0.3));
        assert!(close(value(&e.naive_recall), 2.0 / 3.0));
        assert!(close(value(&e.naive_false_positive_rate), 1.0 / 7.0));
        assert!(close(value(&e.naive_precision), 2.0 / 3.0));
        assert_eq!((e.at_or_above, e.at_or_above_seen), (3, 3));
        assert_eq!(r.counts.payments, 10);
        assert_eq!(r.counts.observed_frauds, 3);
    }

    #[test]
    fn holdout_cells_are_scaled_to_their_payments() {
        let r = run(&holdout_population(), &[75, 85]);
        let c = r.counts;
        assert_eq!((c.payments, c.allowed, c.observed_frauds), (140, 104, 12));
        assert_eq!(c.holdout_payments, 4);

        // At 75: frauds above 40 × 2/4 = 20, below 10.
        let e = &r.estimates[0];
        assert!(close(value(&e.recall), 20.0 / 30.0));
        assert!(close(value(&e.false_positive_rate), 20.0 / 110.0));
        assert!(close(value(&e.precision), 0.5));
        assert_eq!(e.block_rate, Estimate::exact(40.0 / 140.0));
        // Unweighted, the blocked frauds vanish: 2 of 12 frauds seen above.
        assert!(close(value(&e.naive_recall), 2.0 / 12.0));
        assert!(close(value(&e.naive_false_positive_rate), 2.0 / 92.0));
        assert!(close(value(&e.naive_precision), 0.5));
        // Four labels above 75 leave recall wide open, but not unbounded:
        // below 75 everything is seen, so recall is at most 40 / 50.
        assert!(
            e.recall.lower < 0.5 && e.recall.upper > 0.75,
            "{:?}",
            e.recall
        );
        assert!(e.recall.lower > 0.0 && e.recall.upper <= 0.8 + 1e-12);
        assert!(e.precision.lower > 0.05 && e.precision.upper < 0.95);
        assert!(e.naive_recall.upper < e.recall.lower + 0.2);

        // At 85: the 90s hold 20 × 1/2 = 10 frauds, the 80s 10, below 10.
        let e = &r.estimates[1];
        assert!(close(value(&e.recall), 10.0 / 30.0));
        assert!(close(value(&e.false_positive_rate), 10.0 / 110.0));
        assert!(close(value(&e.precision), 0.5));
        assert_eq!((e.at_or_above, e.at_or_above_seen), (20, 2));
    }

    #[test]
    fn thresholds_zero_and_one_hundred() {
        let r = run(&holdout_population(), &[0, 100]);
        let zero = &r.estimates[0];
        assert_eq!(zero.recall, Estimate::exact(1.0));
        assert_eq!(zero.false_positive_rate, Estimate::exact(1.0));
        assert_eq!(zero.block_rate, Estimate::exact(1.0));
        // Everything is at or above 0: precision is the fraud share, 30 / 140.
        assert!(close(value(&zero.precision), 30.0 / 140.0));
        assert!(zero.precision.lower < 30.0 / 140.0 && zero.precision.upper > 30.0 / 140.0);

        let hundred = &r.estimates[1];
        assert_eq!(hundred.recall, Estimate::exact(0.0));
        assert_eq!(hundred.false_positive_rate, Estimate::exact(0.0));
        assert_eq!(hundred.block_rate, Estimate::exact(0.0));
        assert_eq!(
            hundred.precision,
            Estimate::unknown(),
            "nothing to divide by"
        );
        assert_eq!(hundred.naive_precision, Estimate::unknown());
        assert_eq!(hundred.at_or_above, 0);
    }

    #[test]
    fn zero_holdout_samples_give_the_widest_honest_interval() {
        // No holdout: everything at or above 75 is blocked, its fraud unknown.
        let mut o = Vec::new();
        group(&mut o, 50, 1.0, 60, 60, 4);
        group(&mut o, 70, 1.0, 40, 40, 6);
        group(&mut o, 90, 0.0, 40, 0, 0);
        let r = run(&o, &[75, 65, 85]);
        assert_eq!(r.counts.holdout_payments, 0);

        let e = &r.estimates[0];
        assert_eq!(e.recall.value, None);
        // None of the 40 fraudulent, or all of them, beside 10 seen frauds.
        assert!(close(e.recall.lower, 0.0) && close(e.recall.upper, 40.0 / 50.0));
        assert_eq!(e.false_positive_rate.value, None);
        assert!(close(e.false_positive_rate.lower, 0.0));
        assert!(close(e.false_positive_rate.upper, 40.0 / 130.0));
        assert_eq!(e.precision, Estimate::unknown());
        assert_eq!(e.block_rate, Estimate::exact(40.0 / 140.0));
        assert_eq!(e.naive_recall.value, Some(0.0));

        // At 65 the 70s are seen (6 frauds) and the 90s are not.
        let e = &r.estimates[1];
        assert_eq!(e.recall.value, None);
        assert!(close(e.recall.lower, 6.0 / 10.0));
        assert!(close(e.recall.upper, 46.0 / 50.0));
        // Precision at 65: between 6 / 80 and 46 / 80.
        assert!(close(e.precision.lower, 6.0 / 80.0));
        assert!(close(e.precision.upper, 46.0 / 80.0));

        // At 85 the unseen 90s are all above: the same bounds as at 75.
        let e = &r.estimates[2];
        assert!(close(e.recall.lower, 0.0) && close(e.recall.upper, 0.8));
    }

    #[test]
    fn labels_of_blocked_payments_and_other_deciders_are_left_out() {
        let base = run(&holdout_population(), &[75]);
        let mut o = holdout_population();
        // Every blocked payment gets a fraud label anyway.
        for x in o.iter_mut().filter(|x| !x.allowed) {
            x.fraud = true;
            x.labelled = true;
        }
        let mut other = obs(95, false, 1.0, true);
        for decided_by in [
            DecidedBy::List,
            DecidedBy::NotAssessed,
            DecidedBy::ScoringFailed,
        ] {
            other.decided_by = decided_by;
            o.push(other);
        }
        // Outside the window.
        let mut late = obs(95, true, ABOVE, true);
        late.ts_ms = 5000;
        o.push(late);
        let q = Query {
            to_ms: Some(2000),
            ..Query::new(vec![75])
        };
        let r = estimate(&o, &q).expect("estimates");
        assert_eq!(r.estimates, base.estimates);
        assert_eq!(r.counts.blocked_labelled, 36);
        assert_eq!(
            (
                r.counts.decided_by_list,
                r.counts.not_assessed,
                r.counts.scoring_failed
            ),
            (1, 1, 1)
        );
        assert_eq!(r.counts.payments, base.counts.payments);
    }

    #[test]
    fn payments_too_young_for_their_labels_are_left_out() {
        let mut o = holdout_population();
        // A fraud let through at 90 that would double the frauds seen above 75.
        let mut young = obs(90, true, ABOVE, true);
        young.ts_ms = 9000;
        o.push(young);
        let q = Query {
            as_of_ms: Some(10_000),
            min_label_age_ms: 5000,
            ..Query::new(vec![75])
        };
        assert_eq!(q.end_ms(), Some(5001));
        let r = estimate(&o, &q).expect("estimates");
        assert_eq!(r.to_ms, Some(5001));
        assert_eq!(r.estimates, run(&holdout_population(), &[75]).estimates);
        // Old enough: counted.
        let q = Query {
            min_label_age_ms: 1000,
            ..q
        };
        assert_eq!(estimate(&o, &q).expect("estimates").counts.payments, 141);
        let q = Query {
            to_ms: Some(2000),
            ..q
        };
        assert_eq!(q.end_ms(), Some(2000));
        let bad = Query {
            min_label_age_ms: -1,
            ..q
        };
        assert_eq!(estimate(&o, &bad), Err(PolicyError::LabelAge(-1)));
    }

    #[test]
    fn no_fraud_seen_and_no_payments_say_so() {
        let mut o = Vec::new();
        group(&mut o, 20, BELOW, 50, 50, 0);
        group(&mut o, 80, ABOVE, 10, 1, 0);
        let e = &run(&o, &[75]).estimates[0];
        assert_eq!(e.recall, Estimate::unknown());
        assert_eq!(e.naive_recall, Estimate::unknown());
        assert!(close(value(&e.false_positive_rate), 10.0 / 60.0));
        // One legitimate label above 75 stands for ten payments: precision
        // is 0, but could well be far above it.
        assert_eq!(value(&e.precision), 0.0);
        assert!(e.precision.upper > 0.3, "{:?}", e.precision);

        let r = run(&[], &[0, 75, 100]);
        assert_eq!(r.counts, Counts::default());
        for e in &r.estimates {
            assert_eq!(e.recall, Estimate::unknown());
            assert_eq!(e.false_positive_rate, Estimate::unknown());
            assert_eq!(e.precision, Estimate::unknown());
            assert_eq!(e.block_rate, Estimate::unknown());
        }
    }

    #[test]
    fn the_interval_holds_the_estimate_when_no_fraud_is_seen() {
        // 20 legitimate payments seen of 100,000 above 75: none fraudulent
        // is the estimate, though the draws' lower end is above 0.
        let mut o = Vec::new();
        group(&mut o, 20, 1.0, 100, 100, 10);
        group(&mut o, 80, ABOVE, 100_000, 20, 0);
        let e = &run(&o, &[75]).estimates[0];
        assert_eq!(value(&e.recall), 0.0);
        assert_eq!(e.recall.lower, 0.0);
        assert!(e.recall.upper > 0.9, "{:?}", e.recall);
        assert_eq!(value(&e.precision), 0.0);
        assert_eq!(e.precision.lower, 0.0);
        assert!(e.precision.upper > 0.05, "{:?}", e.precision);
    }

    #[test]
    fn the_same_input_gives_the_same_intervals() {
        let a = run(&holdout_population(), &[75]);
        let b = run(&holdout_population(), &[75]);
        assert_eq!(a, b);
        let wider = estimate(
            &holdout_population(),
            &Query {
                confidence: 0.99,
                ..Query::new(vec![75])
            },
        )
        .expect("estimates");
        let (narrow, wide) = (&a.estimates[0].recall, &wider.estimates[0].recall);
        assert!(wide.lower <= narrow.lower && wide.upper >= narrow.upper);
        assert!(wide.upper - wide.lower > narrow.upper - narrow.lower);
    }

    #[test]
    fn bad_queries_and_impossible_propensities_are_refused() {
        let o = holdout_population();
        let err = |q: Query| estimate(&o, &q).expect_err("refused");
        assert_eq!(err(Query::new(vec![75, 101])), PolicyError::Threshold(101));
        for c in [0.0, 1.0, f64::NAN] {
            assert!(matches!(
                err(Query {
                    confidence: c,
                    ..Query::new(vec![75])
                }),
                PolicyError::Confidence(_)
            ));
        }
        assert_eq!(
            err(Query {
                draws: 10,
                ..Query::new(vec![75])
            }),
            PolicyError::Draws(10)
        );
        assert!(matches!(
            err(Query {
                from_ms: Some(10),
                to_ms: Some(10),
                ..Query::new(vec![75])
            }),
            PolicyError::Window { .. }
        ));
        for (allowed, p) in [(true, 0.0), (false, 1.0), (true, 1.5), (true, f64::NAN)] {
            let bad = [obs(50, true, 1.0, false), obs(80, allowed, p, false)];
            let e = estimate(&bad, &Query::new(vec![75])).expect_err("refused");
            assert!(matches!(e, PolicyError::Propensity { index: 1, .. }), "{e}");
        }
    }
}
