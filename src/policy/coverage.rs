//! The intervals checked by simulation: synthetic populations whose every
//! label is known go through the default decision policy with a holdout,
//! the estimator sees only what a server would see, and the share of
//! intervals holding the true figure is compared with their confidence.
//! The unweighted figures are shown biased.

use super::estimate::{Observation, Query, estimate};
use crate::decision::{Context, DecidedBy, Policy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CARD: Context = Context {
    setup_intent: false,
    card: true,
};
const THRESHOLDS: [u32; 3] = [65, 75, 85];

/// One synthetic population as the estimator sees it, with its true figures.
struct Population {
    observations: Vec<Observation>,
    /// Per threshold: recall, false-positive rate, precision.
    truth: Vec<[f64; 3]>,
}

/// `n` payments: 85% with true scores uniform over 0–59, 10% over 60–84,
/// 5% over 85–99; each fraudulent with a probability rising steeply with
/// the score (about 4% overall, most of it at or above 75, where only the
/// holdout lets labels through). The default policy blocks at a reported
/// score of 75; a share `rate` of payments reports a uniform score instead.
fn population(rng: &mut ChaCha8Rng, n: usize, rate: f64) -> Population {
    let policy = Policy::default();
    let mut observations = Vec::with_capacity(n);
    let mut frauds = Vec::with_capacity(n);
    for i in 0..n {
        let band: f64 = rng.random();
        let score = if band < 0.85 {
            rng.random_range(0..60)
        } else if band < 0.95 {
            rng.random_range(60..85)
        } else {
            rng.random_range(85..100)
        };
        let p_fraud = 1.0 / (1.0 + (-(f64::from(score) - 80.0) / 6.0).exp());
        let fraud = rng.random::<f64>() < p_fraud;
        let holdout = rng.random::<f64>() < rate;
        let reported = if holdout {
            rng.random_range(0..100)
        } else {
            score
        };
        observations.push(Observation {
            ts_ms: i as i64,
            decided_by: DecidedBy::Model,
            true_score: score,
            allowed: reported < policy.highest_threshold,
            allowed_propensity: policy.allowed_propensity(score, rate, CARD),
            holdout,
            // Every fraud is reported, the blocked ones too: the estimator
            // must leave those out.
            labelled: fraud,
            fraud,
        });
        frauds.push(fraud);
    }
    let truth = THRESHOLDS
        .iter()
        .map(|&t| {
            let count = |f: &dyn Fn(&Observation, bool) -> bool| {
                observations
                    .iter()
                    .zip(&frauds)
                    .filter(|(o, fr)| f(o, **fr))
                    .count() as f64
            };
            let fraud = count(&|_, fr| fr);
            let legit = n as f64 - fraud;
            let fraud_above = count(&|o, fr| fr && o.true_score >= t);
            let above = count(&|o, _| o.true_score >= t);
            [
                fraud_above / fraud,
                (above - fraud_above) / legit,
                fraud_above / above,
            ]
        })
        .collect();
    Population {
        observations,
        truth,
    }
}

/// Coverage measured over `reps` populations.
struct Coverage {
    /// Per threshold and figure (recall, false-positive rate, precision):
    /// intervals holding the truth.
    covered: [[usize; 3]; 3],
    /// Intervals per cell of `covered`.
    reps: usize,
    /// Mean over populations of the naive recall and of the true recall at 75.
    naive_recall_75: f64,
    true_recall_75: f64,
    /// Intervals whose value was not identified.
    unidentified: usize,
}

impl Coverage {
    fn share(&self, threshold: usize, figure: usize) -> f64 {
        self.covered[threshold][figure] as f64 / self.reps as f64
    }

    fn figure_share(&self, figure: usize) -> f64 {
        (0..3).map(|t| self.covered[t][figure]).sum::<usize>() as f64 / (3 * self.reps) as f64
    }

    fn print(&self, label: &str) {
        let names = ["recall", "false-positive rate", "precision"];
        for (f, name) in names.iter().enumerate() {
            let per: Vec<String> = THRESHOLDS
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{t}: {:.3}", self.share(i, f)))
                .collect();
            eprintln!(
                "{label}: {name} coverage {:.3} ({})",
                self.figure_share(f),
                per.join(", ")
            );
        }
        eprintln!(
            "{label}: mean recall at 75 {:.3}, naive {:.3}; {} unidentified",
            self.true_recall_75, self.naive_recall_75, self.unidentified
        );
    }
}

fn measure(seed: u64, reps: usize, n: usize, rate: f64, draws: usize) -> Coverage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut c = Coverage {
        covered: [[0; 3]; 3],
        reps,
        naive_recall_75: 0.0,
        true_recall_75: 0.0,
        unidentified: 0,
    };
    for rep in 0..reps {
        let pop = population(&mut rng, n, rate);
        let query = Query {
            draws,
            seed: rep as u64,
            ..Query::new(THRESHOLDS.to_vec())
        };
        let report = estimate(&pop.observations, &query).expect("estimates");
        for (i, e) in report.estimates.iter().enumerate() {
            let truth = pop.truth[i];
            for (f, est) in [e.recall, e.false_positive_rate, e.precision]
                .iter()
                .enumerate()
            {
                c.covered[i][f] += usize::from(est.covers(truth[f]));
                c.unidentified += usize::from(est.value.is_none());
            }
            if e.threshold == 75 {
                c.naive_recall_75 += e.naive_recall.value.unwrap_or(0.0) / reps as f64;
                c.true_recall_75 += truth[0] / reps as f64;
            }
        }
    }
    c
}

#[test]
fn intervals_cover_the_truth_and_naive_recall_is_biased_low() {
    // 100 populations of 4,000 payments with a 5% holdout: about 160
    // frauds each, of which only about 4 above 75 are let through.
    let c = measure(7, 100, 4000, 0.05, 1000);
    c.print("4,000 payments, 5% holdout");
    for f in 0..3 {
        let share = c.figure_share(f);
        assert!(share >= 0.9, "figure {f}: coverage {share}");
    }
    assert!(
        c.naive_recall_75 < c.true_recall_75 / 2.0,
        "naive {} vs true {}",
        c.naive_recall_75,
        c.true_recall_75
    );
}

/// The long run behind the coverage figures in the module documentation:
/// `cargo test --lib policy::coverage -- --ignored --nocapture` (minutes).
#[test]
#[ignore = "slow: thousands of populations"]
fn coverage_over_many_populations() {
    for (n, rate) in [(4000, 0.05), (20_000, 0.05), (20_000, 0.01), (4000, 0.2)] {
        let c = measure(11, 1000, n, rate, 2000);
        c.print(&format!("{n} payments, {}% holdout", rate * 100.0));
        for f in 0..3 {
            assert!(c.figure_share(f) >= 0.92, "figure {f}");
        }
    }
}
