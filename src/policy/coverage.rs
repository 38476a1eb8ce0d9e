//! The intervals checked by simulation: synthetic populations whose every
//! label is known go through the default decision policy with a holdout,
//! the estimator sees only what a server would see, and the share of
//! intervals holding the true figure is compared with their confidence.
//! The unweighted figures are shown biased. The `flat` and `score` holdout
//! policies are compared at equal cost (the share of the would-be-blocked
//! payments let through): the widths and coverage of their intervals.

use super::estimate::{Observation, Query, estimate};
use crate::decision::holdout::{Holdout, HoldoutPolicy};
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

/// The two holdout policies compared at the same cost: the share of the
/// payments at or above the block threshold (the would-be-blocked) that the
/// holdout lets through.
mod equal_cost {
    use super::*;

    /// A population: each payment's true score and truth.
    pub(super) type Scored = Vec<(u32, bool)>;

    /// A holdout rate per true score.
    pub(super) type RateOf<'a> = &'a dyn Fn(u32) -> f64;

    /// `n` payments drawn as [`population`] draws them.
    pub(super) fn synthetic(rng: &mut ChaCha8Rng, n: usize) -> Scored {
        (0..n)
            .map(|_| {
                let band: f64 = rng.random();
                let score = if band < 0.85 {
                    rng.random_range(0..60)
                } else if band < 0.95 {
                    rng.random_range(60..85)
                } else {
                    rng.random_range(85..100)
                };
                let p_fraud = 1.0 / (1.0 + (-(f64::from(score) - 80.0) / 6.0).exp());
                (score, rng.random::<f64>() < p_fraud)
            })
            .collect()
    }

    /// The costs of holding out at `rate_of` on `pop`: the expected share of
    /// the would-be-blocked payments let through, and of the would-be-allowed
    /// ones blocked.
    pub(super) fn costs(pop: &Scored, rate_of: RateOf<'_>) -> (f64, f64) {
        let policy = Policy::default();
        let (mut through, mut above, mut blocked, mut below) = (0.0, 0.0, 0.0, 0.0);
        for &(s, _) in pop {
            let p = policy.allowed_propensity(s, rate_of(s), CARD);
            if s >= 75 {
                through += p;
                above += 1.0;
            } else {
                blocked += 1.0 - p;
                below += 1.0;
            }
        }
        (through / above, blocked / below)
    }

    /// The rate `r` at which `curve(r, score)` costs `cost` on `pop` (bisection).
    pub(super) fn rate_at_cost(pop: &Scored, cost: f64, curve: &dyn Fn(f64, u32) -> f64) -> f64 {
        let (mut lo, mut hi) = (0.0, 1.0);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if costs(pop, &|s| curve(mid, s)).0 < cost {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (lo + hi) / 2.0
    }

    /// Mean interval widths and coverage of one policy.
    #[derive(Debug, Default)]
    pub(super) struct Widths {
        /// Per threshold and figure (recall, false-positive rate,
        /// precision): summed widths, then intervals holding the truth.
        pub width: [[f64; 3]; 3],
        pub covered: [[usize; 3]; 3],
        pub reps: usize,
    }

    impl Widths {
        pub(super) fn mean(&self, t: usize, f: usize) -> f64 {
            self.width[t][f] / self.reps as f64
        }

        pub(super) fn coverage(&self, t: usize, f: usize) -> f64 {
            self.covered[t][f] as f64 / self.reps as f64
        }
    }

    /// The widths of `reps` holdout draws at `rate_of` on the populations
    /// `next` gives.
    pub(super) fn widths(
        rng: &mut ChaCha8Rng,
        reps: usize,
        rate_of: RateOf<'_>,
        next: impl Fn(&mut ChaCha8Rng) -> Scored,
    ) -> Widths {
        let policy = Policy::default();
        let mut w = Widths {
            reps,
            ..Widths::default()
        };
        for rep in 0..reps {
            let pop = next(rng);
            let observations: Vec<Observation> = pop
                .iter()
                .enumerate()
                .map(|(i, &(s, fraud))| {
                    let rate = rate_of(s);
                    let held = rng.random::<f64>() < rate;
                    let reported = if held { rng.random_range(0..100) } else { s };
                    Observation {
                        ts_ms: i as i64,
                        decided_by: DecidedBy::Model,
                        true_score: s,
                        allowed: reported < policy.highest_threshold,
                        allowed_propensity: policy.allowed_propensity(s, rate, CARD),
                        holdout: held,
                        labelled: fraud,
                        fraud,
                    }
                })
                .collect();
            let query = Query {
                draws: 1000,
                seed: rep as u64,
                ..Query::new(THRESHOLDS.to_vec())
            };
            let report = estimate(&observations, &query).expect("estimates");
            let fraud = pop.iter().filter(|p| p.1).count() as f64;
            for (t, e) in report.estimates.iter().enumerate() {
                let th = THRESHOLDS[t];
                let above = pop.iter().filter(|p| p.0 >= th).count() as f64;
                let fraud_above = pop.iter().filter(|p| p.1 && p.0 >= th).count() as f64;
                let truth = [
                    fraud_above / fraud,
                    (above - fraud_above) / (pop.len() as f64 - fraud),
                    fraud_above / above,
                ];
                for (f, est) in [e.recall, e.false_positive_rate, e.precision]
                    .iter()
                    .enumerate()
                {
                    w.width[t][f] += est.upper - est.lower;
                    w.covered[t][f] += usize::from(est.covers(truth[f]));
                }
            }
        }
        w
    }

    /// Prints one row per threshold and figure: each policy's mean width
    /// and coverage.
    pub(super) fn print(label: &str, rows: &[(String, Widths)]) {
        eprintln!("{label}");
        let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        eprintln!("mean width (coverage): {}", names.join(" | "));
        let names = ["recall", "false-positive rate", "precision"];
        for (t, th) in THRESHOLDS.iter().enumerate() {
            for (f, name) in names.iter().enumerate() {
                let cells: Vec<String> = rows
                    .iter()
                    .map(|(_, w)| format!("{:.4} ({:.2})", w.mean(t, f), w.coverage(t, f)))
                    .collect();
                eprintln!("| {th} | {name} | {} |", cells.join(" | "));
            }
        }
    }
}

/// The shipped `score` holdout with floor `floor` that costs what a flat
/// holdout of `flat_rate` costs on `pop`.
fn score_at_equal_cost(pop: &equal_cost::Scored, flat_rate: f64, floor: f64) -> Holdout {
    use equal_cost::*;
    let (cost, _) = costs(pop, &|_| flat_rate);
    let at = |rate: f64| {
        Holdout::new(rate, b"k").with_policy(HoldoutPolicy::Score {
            min_rate: floor.min(rate),
        })
    };
    let rate = rate_at_cost(pop, cost, &|r, s| at(r).rate_at(s, Some(75)));
    at(rate)
}

#[test]
fn at_equal_cost_the_score_policy_narrows_the_intervals_at_the_threshold() {
    use equal_cost::*;
    // Populations of 20,000 payments; a 5% flat holdout lets 3.75% of the
    // would-be-blocked through.
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let big = synthetic(&mut rng, 200_000);
    let score = score_at_equal_cost(&big, 0.05, 0.002);
    let (flat_cost, flat_blocked) = costs(&big, &|_| 0.05);
    let (score_cost, score_blocked) = costs(&big, &|s| score.rate_at(s, Some(75)));
    assert!(
        (score_cost - flat_cost).abs() < 1e-6,
        "{score_cost} vs {flat_cost}"
    );
    // The floor below the threshold blocks few payments the model allows.
    assert!(
        score_blocked < flat_blocked / 10.0,
        "{score_blocked} vs {flat_blocked}"
    );
    let reps = 60;
    let f = widths(&mut rng, reps, &|_| 0.05, |r| synthetic(r, 20_000));
    let s = widths(&mut rng, reps, &|x| score.rate_at(x, Some(75)), |r| {
        synthetic(r, 20_000)
    });
    let rows = [("flat".to_owned(), f), ("score".to_owned(), s)];
    print(
        &format!(
            "synthetic, 20,000 payments, {reps} draws: flat 0.05 | score {:.4}",
            score.rate()
        ),
        &rows,
    );
    let [(_, f), (_, s)] = &rows;
    // Recall, false-positive rate and precision at the block threshold.
    for figure in 0..3 {
        assert!(s.mean(1, figure) < f.mean(1, figure), "figure {figure}");
    }
}

/// The comparison behind the README's table: the shipped `score` curve
/// against `flat` at equal cost, with two steeper curves and the floor alone,
/// on the synthetic population and on simulated months scored by
/// `models/default.json`:
/// `cargo test --release --lib policy::coverage::equal_cost_widths -- --ignored --nocapture`.
#[test]
#[ignore = "slow: simulated months, hundreds of draws"]
fn equal_cost_widths() {
    use equal_cost::*;
    let reps: usize = 200;
    let floor = 0.002;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let big = synthetic(&mut rng, 200_000);
    let mut populations: Vec<(String, Scored, Option<usize>)> = vec![(
        "synthetic, 20,000 payments a draw".into(),
        big,
        Some(20_000),
    )];
    for customers in [3000, 20_000] {
        let sim = simulated(2, customers);
        let above = sim.iter().filter(|p| p.0 >= 75).count();
        let fraud_above = sim.iter().filter(|p| p.0 >= 75 && p.1).count();
        let fraud = sim.iter().filter(|p| p.1).count();
        let label = format!(
            "simulator seed 2, {customers} customers, 30 days: {} payments, {fraud} fraudulent, {above} at 75 or above ({fraud_above} fraudulent)",
            sim.len()
        );
        populations.push((label, sim, None));
    }
    for (label, pop, fresh) in &populations {
        let next = |r: &mut ChaCha8Rng| match fresh {
            Some(n) => synthetic(r, *n),
            None => pop.clone(),
        };
        let flat = |_: u32| 0.05;
        let (cost, flat_blocked) = costs(pop, &flat);
        let score = score_at_equal_cost(pop, 0.05, floor);
        let shipped = |s: u32| score.rate_at(s, Some(75));
        let (_, score_blocked) = costs(pop, &shipped);
        let floor_only_rate = rate_at_cost(pop, cost, &|r, s| if s < 75 { floor } else { r });
        let floor_only = |s: u32| if s < 75 { floor } else { floor_only_rate };
        let steep = |halving: u32| {
            let r = rate_at_cost(pop, cost, &|r, s| curve(r, s, halving, floor));
            move |s: u32| curve(r, s, halving, floor)
        };
        let (steep5, steep10) = (steep(5), steep(10));
        eprintln!(
            "{label}\nwould-be-blocked let through {cost:.4} by each; would-be-allowed blocked: flat {flat_blocked:.5}, score {score_blocked:.5}; score rate {:.4}, floor {floor}",
            score.rate()
        );
        let rows = vec![
            ("flat".to_owned(), widths(&mut rng, reps, &flat, next)),
            ("score".to_owned(), widths(&mut rng, reps, &shipped, next)),
            (
                "floor below, flat above".to_owned(),
                widths(&mut rng, reps, &floor_only, next),
            ),
            (
                "halving every 10".to_owned(),
                widths(&mut rng, reps, &steep10, next),
            ),
            (
                "halving every 5".to_owned(),
                widths(&mut rng, reps, &steep5, next),
            ),
        ];
        print(
            "| threshold | figure | flat | score | floor below, flat above | halving every 10 | halving every 5 |",
            &rows,
        );
    }
}

/// A steeper curve for the comparison: `rate` over the scores from 75,
/// halving every `halving` scores above (in steps of `halving`, at most
/// ten), floored; the floor below 75.
fn curve(rate: f64, s: u32, halving: u32, floor: f64) -> f64 {
    let step = halving.min(10);
    if s < 75 {
        floor
    } else {
        let steps = (s - 75) / step * step;
        (rate * 0.5f64.powf(f64::from(steps) / f64::from(halving))).max(floor)
    }
}

/// The true scores (`models/default.json`) and truth of the payments of a
/// simulated month.
fn simulated(seed: u64, customers: u32) -> equal_cost::Scored {
    let model = crate::model::Model::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json"),
    )
    .expect("default model loads");
    let cfg = crate::sim::SimConfig {
        seed,
        customers,
        ..crate::sim::SimConfig::default()
    };
    crate::train::collect(cfg)
        .expect("simulates")
        .iter()
        .map(|e| {
            let p = model
                .predict(&crate::features::FeatureVector(e.x))
                .expect("scores");
            (p.score, e.fraud)
        })
        .collect()
}
