//! Training: replays traffic through the serving engine in process (the same
//! validation, state and feature code that serves requests, so there is no
//! training/serving skew), fits logistic regression with linfa, calibrates it,
//! places the score-map knots, evaluates on a later time split, and writes a
//! model file with its provenance.
//!
//! - [`eval`]: AUC ROC, average precision, rates at a threshold, card
//!   precision@k, calibration table.
//! - [`evaluate`]: a model measured on recorded traffic through the serving path.
//! - [`gbt`]: gradient-boosted trees, in pure Rust.
//! - [`served`]: training data from a served period: the payments a server
//!   let through, weighted by the inverse of the probability that it did.

pub mod eval;
pub mod evaluate;
pub mod gbt;
pub mod served;

use crate::engine::{Engine, EngineConfig};
use crate::features::{FEATURE_SETS, FEATURES, LATEST_FEATURE_SET, NUM_FEATURES};
use crate::metrics::Metrics;
use crate::model::file::{Calibration, Estimator, FORMAT, Knot, LogisticRegression, ModelFile};
use crate::model::score_map::{ScoreMap, logit, sigmoid};
use crate::model::{Model, ModelHandle};
use crate::proto::traffic_record::Request;
use crate::sim::{self, Scenario, SimConfig, SimKind};
use crate::state::{MemoryStore, StoreLimits};
use crate::traffic::TrafficReader;
use crate::validate::Clock;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression as LinfaLr;
use ndarray::{Array1, Array2};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// Versions of the crates that produced a model (read from Cargo.lock at build time).
pub const LINFA_VERSION: &str = env!("RISKSTREAM_LINFA_VERSION");
/// Version of linfa-logistic.
pub const LINFA_LOGISTIC_VERSION: &str = env!("RISKSTREAM_LINFA_LOGISTIC_VERSION");

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The traffic held an event the engine rejected.
    #[error("traffic event rejected: {0}")]
    Event(#[from] crate::error::ServiceError),
    /// A training matrix had an inconsistent shape.
    #[error("training matrix: {0}")]
    Shape(#[from] ndarray::ShapeError),
    /// Too few examples of a class in a split.
    #[error(
        "the {split} split has {pos} fraudulent and {neg} legitimate payments; both must be present"
    )]
    Degenerate {
        /// Which split.
        split: &'static str,
        /// Positives.
        pos: usize,
        /// Negatives.
        neg: usize,
    },
    /// linfa failed.
    #[error("logistic regression failed: {0}")]
    Fit(#[from] linfa_logistic::error::Error),
    /// The fitted model did not validate.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The traffic file could not be read.
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
    /// Served outcomes could not be read, or miss a payment.
    #[error("{0}")]
    Outcomes(String),
    /// A served period's decision log could not weight the payments.
    #[error(transparent)]
    Served(#[from] served::ServedError),
    /// Weighted rows given to a fit that takes no weights.
    #[error(
        "logistic regression (linfa) takes no sample weights: train on weighted rows with --estimator gradient-boosted-trees, or with --served-weighting none"
    )]
    Unweightable,
}

/// One payment as training sees it: features at the time it happened, and truth.
#[derive(Debug, Clone)]
pub struct Example {
    /// When it happened.
    pub at_ms: i64,
    /// Feature vector.
    pub x: [f64; NUM_FEATURES],
    /// Whether the payment is labelled fraudulent.
    pub fraud: bool,
    /// Ground-truth scenario when the traffic names one ("" otherwise).
    pub scenario: String,
    /// The card the payment used, as evaluation groups them (the customer
    /// id, else the payment method id).
    pub card: String,
    /// Its weight in the fit and calibration: 1, or for a payment a server
    /// let through, the inverse of the probability that it did
    /// ([`served`]).
    pub weight: f64,
}

/// Legitimate-traffic false-positive rate the highest-risk threshold (75) is placed at.
pub const HIGHEST_FPR: f64 = 0.001;
/// Legitimate-traffic false-positive rate the elevated threshold (65) is placed at.
pub const ELEVATED_FPR: f64 = 0.005;

/// Replays simulated traffic through a fresh engine and collects the
/// point-in-time features of every assessed payment.
pub fn collect(cfg: SimConfig) -> Result<Vec<Example>, TrainError> {
    let events = sim::generate(cfg);
    let store = Arc::new(MemoryStore::new(StoreLimits::default(), 0));
    let engine = Engine::new(
        store,
        ModelHandle::empty(),
        EngineConfig::default(),
        Metrics::noop(),
        None,
    );
    // Simulated timestamps are all in the past of this clock.
    let clock = Clock {
        now_ms: i64::MAX / 4,
        max_future_skew_ms: 0,
    };
    let mut out = Vec::new();
    for e in events {
        match e.kind {
            SimKind::Register(req) => {
                engine.register_message(&req, &clock)?;
            }
            SimKind::Payment { event, fraud } => {
                if let Some(x) = engine.features_message(&event, &clock)? {
                    out.push(Example {
                        at_ms: e.at_ms,
                        x: x.0,
                        fraud: fraud.is_some(),
                        scenario: fraud.map_or("", Scenario::name).to_owned(),
                        card: card_of(&event),
                        weight: 1.0,
                    });
                }
            }
            SimKind::Feedback(_) => {}
        }
    }
    Ok(out)
}

/// The card a payment used, as evaluation groups payments: the customer id,
/// else the payment method id.
pub fn card_of(ev: &crate::proto::PaymentEvent) -> String {
    match ev.customer.as_ref().map(|c| c.id.as_str()) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => ev
            .payment_method
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default(),
    }
}

/// The rows' values of `features`, one column each.
fn matrix(rows: &[&Example], features: &[usize]) -> Array2<f64> {
    let mut m = Array2::zeros((rows.len(), features.len()));
    for (i, r) in rows.iter().enumerate() {
        for (j, &f) in features.iter().enumerate() {
            m[[i, j]] = r.x[f];
        }
    }
    m
}

fn check(split: &'static str, rows: &[&Example]) -> Result<(), TrainError> {
    let pos = rows.iter().filter(|r| r.fraud).count();
    let neg = rows.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(TrainError::Degenerate { split, pos, neg });
    }
    Ok(())
}

/// Fits `y ~ x` by logistic regression and returns (weights, intercept) of
/// the log-odds of `true`, whichever class linfa took as positive.
fn fit_logistic(
    x: Array2<f64>,
    y: Array1<bool>,
    alpha: f64,
) -> Result<(Vec<f64>, f64), TrainError> {
    let ds = Dataset::new(x, y);
    let fitted = LinfaLr::default()
        .alpha(alpha)
        .max_iterations(1000)
        .gradient_tolerance(1e-5)
        .fit(&ds)?;
    // linfa's positive class is the majority class; flip to fraud log-odds.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok((
        fitted.params().iter().map(|w| sign * w).collect(),
        sign * fitted.intercept(),
    ))
}

/// The probability above which at most a share `fpr` of the weight of
/// `legit` (probability and weight, sorted by probability descending) lies.
fn knot_at_weighted_fpr(legit_desc: &[(f64, f64)], fpr: f64) -> f64 {
    let limit = legit_desc.iter().map(|(_, w)| w).sum::<f64>() * fpr;
    let mut above = 0.0;
    let mut k = 0;
    for (_, w) in legit_desc {
        if above + w > limit {
            break;
        }
        above += w;
        k += 1;
    }
    let p = legit_desc.get(k).map_or(0.5, |(p, _)| *p);
    p.next_up().clamp(1e-9, 1.0 - 1e-9)
}

/// Weighted Platt calibration: the slope and intercept of the weighted
/// logistic regression of the labels of `cal` on their raw log-odds `z`
/// (Newton's method, halving a step that does not lower the loss, a ridge
/// of 1e-6 as the unweighted fit has).
fn platt_weighted(cal: &[&Example], z: &[f64]) -> (f64, f64) {
    const RIDGE: f64 = 1e-6;
    let loss = |a: f64, b: f64| {
        cal.iter()
            .zip(z)
            .map(|(e, z)| {
                let t = a * z + b;
                // -log σ(t) for a fraud, -log(1 - σ(t)) otherwise, stably.
                let m = if e.fraud { -t } else { t };
                e.weight * (m.max(0.0) + (-m.abs()).exp().ln_1p())
            })
            .sum::<f64>()
            + RIDGE * (a * a + b * b) / 2.0
    };
    let (mut a, mut b) = (1.0, 0.0);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (RIDGE * a, RIDGE * b, RIDGE, 0.0, RIDGE);
        for (e, z) in cal.iter().zip(z) {
            let p = sigmoid(a * z + b);
            let r = e.weight * (p - f64::from(u8::from(e.fraud)));
            let h = e.weight * p * (1.0 - p);
            ga += r * z;
            gb += r;
            haa += h * z * z;
            hab += h * z;
            hbb += h;
        }
        let det = haa * hbb - hab * hab;
        if !(det.is_finite() && det > 0.0) {
            break;
        }
        let (mut da, mut db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut improved = false;
        for _ in 0..30 {
            let next = loss(a - step * da, b - step * db);
            if next <= current {
                (a, b, current) = (a - step * da, b - step * db, next);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        (da, db) = (step * da, step * db);
        if !improved || da.abs().max(db.abs()) < 1e-10 {
            break;
        }
    }
    (a, b)
}

/// The probability above which at most `fpr` of `legit` (sorted descending) lie.
fn knot_at_fpr(legit_desc: &[f64], fpr: f64) -> f64 {
    let k = ((legit_desc.len() as f64) * fpr).floor() as usize;
    let p = legit_desc.get(k).copied().unwrap_or(0.5);
    p.next_up().clamp(1e-9, 1.0 - 1e-9)
}

/// A fitted, calibrated logistic regression with its score map.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// Indices (into [`FEATURES`]) of the features the model reads.
    features: Vec<usize>,
    estimator: Estimator,
    calibration: Calibration,
    score_map: Vec<Knot>,
}

/// Uncalibrated log-odds of `x` under `estimator`, which reads `features`.
fn raw_logit(estimator: &Estimator, features: &[usize], x: &[f64; NUM_FEATURES]) -> f64 {
    match estimator {
        Estimator::LogisticRegression(lr) => {
            lr.intercept
                + features
                    .iter()
                    .enumerate()
                    .map(|(j, &f)| lr.weights[j] * (x[f] - lr.mean[j]) / lr.scale[j])
                    .sum::<f64>()
        }
        Estimator::GradientBoostedTrees(g) => g.base + gbt::output(&g.trees, features, x),
    }
}

impl Fitted {
    /// Uncalibrated log-odds of `x`.
    fn raw(&self, x: &[f64; NUM_FEATURES]) -> f64 {
        raw_logit(&self.estimator, &self.features, x)
    }

    /// Calibrated log-odds of an uncalibrated one.
    fn calibrated_logit(&self, z: f64) -> f64 {
        self.calibration.slope * z + self.calibration.intercept
    }

    /// The model file of this fit.
    fn into_file(self, version: &str, provenance: Value, evaluation: Value) -> ModelFile {
        ModelFile {
            format: FORMAT.into(),
            version: version.into(),
            features: self
                .features
                .iter()
                .map(|&f| FEATURES[f].1.to_owned())
                .collect(),
            estimator: self.estimator,
            calibration: self.calibration,
            score_map: self.score_map,
            provenance,
            evaluation,
        }
    }
}

/// The estimator families `train` fits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Family {
    /// Logistic regression (linfa).
    #[default]
    LogisticRegression,
    /// Gradient-boosted trees ([`gbt`]) with these settings.
    GradientBoostedTrees(gbt::Params),
}

/// Fits the estimator of `family` on `fit`, then calibrates it (Platt) and
/// places the thresholds on `cal`: 75 where at most 0.1% of its legitimate
/// payments score, 65 where at most 0.5% do. Boosting stops at the round
/// with the best log-loss on `cal`.
pub fn fit(
    fit: &[&Example],
    cal: &[&Example],
    features: &[usize],
    family: Family,
) -> Result<Fitted, TrainError> {
    check("fit", fit)?;
    check("calibration", cal)?;
    if family == Family::LogisticRegression && !unweighted(fit) {
        return Err(TrainError::Unweightable);
    }
    let estimator = match family {
        Family::LogisticRegression => fit_linear(fit, features)?,
        Family::GradientBoostedTrees(params) => {
            let (fit_rows, cal_rows) = (gbt_rows(fit), gbt_rows(cal));
            Estimator::GradientBoostedTrees(gbt::train(&fit_rows, &cal_rows, features, &params))
        }
    };
    calibrate(
        Fitted {
            features: features.to_vec(),
            estimator,
            calibration: Calibration {
                slope: 1.0,
                intercept: 0.0,
            },
            score_map: Vec::new(),
        },
        cal,
    )
}

/// The boosting trainer's view of `examples`.
fn gbt_rows<'a>(examples: &[&'a Example]) -> Vec<gbt::Row<'a>> {
    examples
        .iter()
        .map(|e| gbt::Row {
            x: &e.x,
            y: e.fraud,
            w: e.weight,
        })
        .collect()
}

/// Logistic regression of `fit` on `features`, standardised on `fit`.
fn fit_linear(fit: &[&Example], features: &[usize]) -> Result<Estimator, TrainError> {
    let k = features.len();
    let xf = matrix(fit, features);
    let n = xf.nrows() as f64;
    let mean: Vec<f64> = (0..k).map(|j| xf.column(j).sum() / n).collect();
    let scale: Vec<f64> = (0..k)
        .map(|j| {
            let var = xf
                .column(j)
                .iter()
                .map(|v| (v - mean[j]).powi(2))
                .sum::<f64>()
                / n;
            if var > 1e-12 { var.sqrt() } else { 1.0 }
        })
        .collect();
    let standardise = |mut m: Array2<f64>| {
        for j in 0..k {
            m.column_mut(j).mapv_inplace(|v| (v - mean[j]) / scale[j]);
        }
        m
    };
    let yf: Array1<bool> = fit.iter().map(|e| e.fraud).collect();
    let (weights, intercept) = fit_logistic(standardise(xf), yf, 1.0)?;
    Ok(Estimator::LogisticRegression(LogisticRegression {
        mean,
        scale,
        weights,
        intercept,
    }))
}

/// Whether every row weighs 1.
fn unweighted(rows: &[&Example]) -> bool {
    rows.iter().all(|e| e.weight == 1.0)
}

/// Platt calibration and score-map knots of `fitted` on `cal` (weighted
/// when its rows are).
fn calibrate(mut fitted: Fitted, cal: &[&Example]) -> Result<Fitted, TrainError> {
    let cal_raw: Vec<f64> = cal.iter().map(|r| fitted.raw(&r.x)).collect();
    let plain = unweighted(cal);
    let (slope, offset) = if plain {
        // Platt calibration on the calibration split.
        let xc = Array2::from_shape_vec((cal_raw.len(), 1), cal_raw.clone())?;
        let yc: Array1<bool> = cal.iter().map(|e| e.fraud).collect();
        let (slope, offset) = fit_logistic(xc, yc, 1e-6)?;
        (slope[0], offset)
    } else {
        platt_weighted(cal, &cal_raw)
    };
    fitted.calibration = Calibration {
        slope,
        intercept: offset,
    };

    let mut legit: Vec<(f64, f64)> = cal
        .iter()
        .zip(&cal_raw)
        .filter(|(e, _)| !e.fraud)
        .map(|(e, z)| (sigmoid(fitted.calibrated_logit(*z)), e.weight))
        .collect();
    legit.sort_by(|a, b| b.0.total_cmp(&a.0));
    let knot = |fpr| {
        if plain {
            let probabilities: Vec<f64> = legit.iter().map(|(p, _)| *p).collect();
            knot_at_fpr(&probabilities, fpr)
        } else {
            knot_at_weighted_fpr(&legit, fpr)
        }
    };
    let p75 = knot(HIGHEST_FPR);
    let mut p65 = knot(ELEVATED_FPR);
    if p65 >= p75 {
        p65 = sigmoid(logit(p75) - 0.5);
    }
    let p0 = sigmoid(logit(p65) - 12.0);
    let p99 = sigmoid(logit(p75).max(0.0) + 6.0);
    fitted.score_map = [(p0, 0), (p65, 65), (p75, 75), (p99, 99)]
        .into_iter()
        .map(|(probability, score)| Knot { probability, score })
        .collect();
    Ok(fitted)
}

/// Figures of a fitted model on `test`: AUC ROC, average precision, and
/// false-positive rate and recall at 65 and 75, overall and per scenario.
fn figures(f: &Fitted, test: &[&Example], split: &str) -> Result<Value, TrainError> {
    let map = ScoreMap::new(&f.score_map)?;
    let test_raw: Vec<f64> = test.iter().map(|r| f.raw(&r.x)).collect();
    let probs: Vec<f64> = test_raw
        .iter()
        .map(|z| sigmoid(f.calibrated_logit(*z)))
        .collect();
    let scores: Vec<u32> = test_raw
        .iter()
        .map(|z| map.score_of_logit(f.calibrated_logit(*z)))
        .collect();
    let labels: Vec<bool> = test.iter().map(|e| e.fraud).collect();
    let (fpr75, recall75) = eval::rates_at(&scores, &labels, 75);
    let (fpr65, recall65) = eval::rates_at(&scores, &labels, 65);
    let mut by_scenario: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for (e, s) in test.iter().zip(&scores) {
        if e.fraud && !e.scenario.is_empty() {
            let c = by_scenario.entry(e.scenario.as_str()).or_default();
            c.0 += 1;
            c.1 += usize::from(*s >= 75);
        }
    }
    let per_scenario: serde_json::Map<String, Value> = by_scenario
        .into_iter()
        .map(|(name, (n, blocked))| {
            (
                name.to_owned(),
                json!({"payments": n, "recall_at_75": blocked as f64 / n as f64}),
            )
        })
        .collect();
    Ok(json!({
        "split": split,
        "payments": test.len(),
        "fraudulent": labels.iter().filter(|l| **l).count(),
        "auc_roc": round6(eval::auc_roc(&probs, &labels)),
        "average_precision": round6(eval::average_precision(&probs, &labels)),
        "legit_blocked_rate_at_75": round6(fpr75),
        "recall_at_75": round6(recall75),
        "legit_flagged_rate_at_65": round6(fpr65),
        "recall_at_65": round6(recall65),
        "by_scenario": per_scenario,
    }))
}

fn count(rows: &[&Example]) -> Value {
    let pos = rows.iter().filter(|r| r.fraud).count();
    json!({"payments": rows.len(), "fraudulent": pos})
}

fn estimator_provenance() -> Value {
    json!({
        "library": "linfa-logistic",
        "alpha": 1.0,
        "max_iterations": 1000,
        "gradient_tolerance": 1e-5,
    })
}

fn thresholds_provenance() -> Value {
    json!({
        "highest_75_at_legit_fpr": HIGHEST_FPR,
        "elevated_65_at_legit_fpr": ELEVATED_FPR,
    })
}

fn crates_provenance() -> Value {
    json!({
        "riskstream": env!("CARGO_PKG_VERSION"),
        "linfa": LINFA_VERSION,
        "linfa-logistic": LINFA_LOGISTIC_VERSION,
    })
}

/// Trains a model on simulated traffic: 60% of the days to fit, the next 20%
/// to calibrate and place the thresholds, the last 20% to evaluate.
pub fn train_synthetic(
    cfg: SimConfig,
    version: &str,
    command: &str,
) -> Result<ModelFile, TrainError> {
    let examples = collect(cfg)?;
    let day = 86_400_000i64;
    let fit_end = cfg.start_ms + i64::from(cfg.days) * day * 6 / 10;
    let cal_end = cfg.start_ms + i64::from(cfg.days) * day * 8 / 10;
    let fit_rows: Vec<&Example> = examples.iter().filter(|e| e.at_ms < fit_end).collect();
    let cal: Vec<&Example> = examples
        .iter()
        .filter(|e| (fit_end..cal_end).contains(&e.at_ms))
        .collect();
    let test: Vec<&Example> = examples.iter().filter(|e| e.at_ms >= cal_end).collect();
    check("test", &test)?;
    // Feature set 1: what this trainer has always read.
    let features: Vec<usize> = (0..FEATURE_SETS[0]).collect();
    let fitted = fit(&fit_rows, &cal, &features, Family::LogisticRegression)?;
    let evaluation = figures(&fitted, &test, "test: last 20% of the simulated days")?;
    let provenance = json!({
        "trainer": "riskstream train --synthetic",
        "command": command,
        "data": {
            "source": "riskstream synthetic sessions (src/sim)",
            "seed": cfg.seed,
            "customers": cfg.customers,
            "days": cfg.days,
            "start_ms": cfg.start_ms,
            "fraud_rate": cfg.fraud_rate,
            "fit": count(&fit_rows),
            "calibration": count(&cal),
            "test": count(&test),
        },
        "estimator": estimator_provenance(),
        "thresholds": thresholds_provenance(),
        "crates": crates_provenance(),
    });
    let file = fitted.into_file(version, provenance, evaluation);
    // The file must load as the server would load it.
    Model::from_file(file.clone())?;
    Ok(file)
}

/// Which payments of a traffic file a command uses: those at or after
/// `from_ms` and before `to_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// First instant included (ms since the epoch).
    pub from_ms: Option<i64>,
    /// First instant excluded.
    pub to_ms: Option<i64>,
}

impl TimeWindow {
    /// Whether `at_ms` is in the window.
    pub fn contains(&self, at_ms: i64) -> bool {
        self.from_ms.is_none_or(|f| at_ms >= f) && self.to_ms.is_none_or(|t| at_ms < t)
    }
}

/// Counts of a replay of recorded traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayCounts {
    /// Records read.
    pub records: u64,
    /// Records the serving path rejected (as a server would have).
    pub rejected: u64,
    /// Payments in the window that were assessed.
    pub assessed: u64,
}

/// Fraud labels of a traffic file: payment ids with a FRAUDULENT or
/// DISPUTE_FRAUD report and no later LEGITIMATE one.
pub fn fraud_labels(path: &Path) -> Result<HashSet<String>, TrainError> {
    let mut fraud = HashSet::new();
    for r in TrafficReader::open(path)? {
        if let Some(Request::Feedback(f)) = r?.request {
            match crate::proto::FeedbackKind::try_from(f.kind) {
                Ok(
                    crate::proto::FeedbackKind::Fraudulent
                    | crate::proto::FeedbackKind::DisputeFraud,
                ) => {
                    fraud.insert(f.payment_id);
                }
                Ok(crate::proto::FeedbackKind::Legitimate) => {
                    fraud.remove(&f.payment_id);
                }
                _ => {}
            }
        }
    }
    Ok(fraud)
}

/// Replays the recorded traffic at `path` through `engine` in order, as a
/// server would receive it (each record validated against a clock at its
/// own time), and calls `on_payment` for each payment in `window` with the
/// event and the served result. Records the serving path rejects are
/// counted and skipped, as a server would answer them with an error.
pub fn replay<F>(
    path: &Path,
    window: TimeWindow,
    engine: &Engine,
    mut on_payment: F,
) -> Result<ReplayCounts, TrainError>
where
    F: FnMut(&crate::proto::TrafficRecord, &crate::proto::PaymentEvent, &Engine, &Clock) -> bool,
{
    let mut counts = ReplayCounts::default();
    for r in TrafficReader::open(path)? {
        let r = r?;
        // Records are in time order: nothing after the window matters.
        if window.to_ms.is_some_and(|t| r.at_ms >= t) {
            break;
        }
        counts.records += 1;
        let clock = Clock {
            now_ms: r.at_ms,
            max_future_skew_ms: REPLAY_SKEW_MS,
        };
        let ok = match &r.request {
            Some(Request::Register(req)) => engine.register_message(req, &clock).is_ok(),
            Some(Request::Feedback(fb)) => engine.feedback_message(fb, &clock).is_ok(),
            Some(Request::Payment(ev)) if window.contains(r.at_ms) => {
                let assessed = on_payment(&r, ev, engine, &clock);
                counts.assessed += u64::from(assessed);
                true
            }
            Some(Request::Payment(ev)) => engine.features_message(ev, &clock).is_ok(),
            None => false,
        };
        counts.rejected += u64::from(!ok);
    }
    Ok(counts)
}

/// Clock skew tolerated when replaying: recorded client timestamps may run
/// ahead of the arrival time, as the server tolerates by default.
pub const REPLAY_SKEW_MS: i64 = 5 * 60_000;

/// An engine with no model and no holdout, for collecting features.
fn feature_engine() -> Engine {
    Engine::new(
        Arc::new(MemoryStore::new(StoreLimits::default(), 0)),
        ModelHandle::empty(),
        EngineConfig::default(),
        Metrics::noop(),
        None,
    )
}

/// The point-in-time features of every assessed payment of recorded
/// traffic in `window`, labelled by the file's fraud reports.
pub fn collect_traffic(
    path: &Path,
    window: TimeWindow,
) -> Result<(Vec<Example>, ReplayCounts), TrainError> {
    collect_weighted(path, window, |_, _| Some(1.0))
}

/// Like [`collect_traffic`], each payment kept with the weight `weigh`
/// gives its id and label, or left out when it gives `None`.
fn collect_weighted(
    path: &Path,
    window: TimeWindow,
    mut weigh: impl FnMut(&str, bool) -> Option<f64>,
) -> Result<(Vec<Example>, ReplayCounts), TrainError> {
    let labels = fraud_labels(path)?;
    let engine = feature_engine();
    let mut out = Vec::new();
    let counts = replay(path, window, &engine, |r, ev, engine, clock| {
        match engine.features_message(ev, clock) {
            Ok(Some(x)) => {
                let fraud = labels.contains(&ev.payment_id);
                if let Some(weight) = weigh(&ev.payment_id, fraud) {
                    out.push(Example {
                        at_ms: r.at_ms,
                        x: x.0,
                        fraud,
                        scenario: r.scenario.clone(),
                        card: card_of(ev),
                        weight,
                    });
                }
                true
            }
            _ => false,
        }
    })?;
    Ok((out, counts))
}

/// The assessed payments of recorded traffic in `window` that the server
/// whose decision log is `log` let through, labelled by the file's fraud
/// reports, weighted under `weighting`; the blocked payments and those
/// missing from the log are counted and left out.
pub fn collect_served(
    path: &Path,
    window: TimeWindow,
    log: &served::ServedLog,
    weighting: served::Weighting,
) -> Result<(Vec<Example>, ReplayCounts, served::ServedCounts), TrainError> {
    let mut c = served::ServedCounts {
        logged: log.len() as u64,
        ..Default::default()
    };
    let (examples, counts) = collect_weighted(path, window, |id, fraud| {
        match log.weight(id, weighting) {
            None => c.unlogged += 1,
            Some(None) => c.blocked += 1,
            Some(Some(w)) => {
                c.allowed += 1;
                c.allowed_fraudulent += u64::from(fraud);
                c.weight_sum += w;
                c.max_weight = c.max_weight.max(w);
                return Some(w);
            }
        }
        None
    })?;
    Ok((examples, counts, c))
}

/// A served period to train from: its decision log, read, and how its
/// allowed payments are weighted.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// The decision log's path (for the provenance).
    pub path: &'a Path,
    /// The log.
    pub log: &'a served::ServedLog,
    /// The weighting.
    pub weighting: served::Weighting,
}

/// Trains a model on recorded traffic: the payments of `window` (in time
/// order), the first 80% to fit and the last 20% to calibrate, place the
/// thresholds and report figures.
pub fn train_traffic(
    path: &Path,
    window: TimeWindow,
    feature_set: usize,
    family: Family,
    version: &str,
    command: &str,
) -> Result<ModelFile, TrainError> {
    train_from(path, window, feature_set, family, None, version, command)
}

/// Trains a model on the recorded traffic of a served period as
/// [`train_traffic`] does, on the payments the server let through only,
/// weighted as `served` says (fit, calibration and thresholds alike).
pub fn train_served(
    path: &Path,
    window: TimeWindow,
    feature_set: usize,
    family: Family,
    served: Served<'_>,
    version: &str,
    command: &str,
) -> Result<ModelFile, TrainError> {
    train_from(
        path,
        window,
        feature_set,
        family,
        Some(served),
        version,
        command,
    )
}

fn train_from(
    path: &Path,
    window: TimeWindow,
    feature_set: usize,
    family: Family,
    served: Option<Served<'_>>,
    version: &str,
    command: &str,
) -> Result<ModelFile, TrainError> {
    let (examples, counts, served_counts) = match served {
        None => {
            let (examples, counts) = collect_traffic(path, window)?;
            (examples, counts, None)
        }
        Some(s) => {
            if family == Family::LogisticRegression
                && s.weighting == served::Weighting::InversePropensity
            {
                return Err(TrainError::Unweightable);
            }
            let (examples, counts, c) = collect_served(path, window, s.log, s.weighting)?;
            (examples, counts, Some(c))
        }
    };
    let cut = examples.len() * 8 / 10;
    let rows: Vec<&Example> = examples.iter().collect();
    let (fit_rows, cal) = rows.split_at(cut);
    let features: Vec<usize> =
        (0..FEATURE_SETS[feature_set.clamp(1, LATEST_FEATURE_SET) - 1]).collect();
    let fitted = fit(fit_rows, cal, &features, family)?;
    let evaluation = figures(
        &fitted,
        cal,
        if served.is_some() {
            "calibration: last 20% of the window's payments let through, unweighted (run riskstream evaluate on later traffic for test figures)"
        } else {
            "calibration: last 20% of the window's payments (run riskstream evaluate on later traffic for test figures)"
        },
    )?;
    let mut provenance = json!({
        "trainer": "riskstream train --traffic",
        "command": command,
        "data": {
            "source": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "sha256": sha256_file(path)?,
            "from_ms": window.from_ms,
            "to_ms": window.to_ms,
            "replay": counts,
            "fit": count(fit_rows),
            "calibration": count(cal),
        },
        "estimator": match family {
            Family::LogisticRegression => estimator_provenance(),
            Family::GradientBoostedTrees(params) => json!({
                "library": "riskstream (src/train/gbt.rs)",
                "params": params,
                "trees_kept": match &fitted.estimator {
                    Estimator::GradientBoostedTrees(g) => g.trees.len(),
                    Estimator::LogisticRegression(_) => 0,
                },
            }),
        },
        "thresholds": thresholds_provenance(),
        "crates": crates_provenance(),
    });
    if let (Some(s), Some(c)) = (served, served_counts) {
        provenance["data"]["served"] = json!({
            "decision_log": s.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "sha256": sha256_file(s.path)?,
            "weighting": s.weighting,
            "payments": c,
        });
    }
    let file = fitted.into_file(version, provenance, evaluation);
    Model::from_file(file.clone())?;
    Ok(file)
}

/// SHA-256 of a file, in hex (data provenance).
fn sha256_file(path: &Path) -> Result<String, TrainError> {
    use sha2::Digest;
    let io = |source| crate::traffic::TrafficError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn example(z: f64, fraud: bool, weight: f64) -> Example {
        let mut x = [0.0; NUM_FEATURES];
        x[0] = z;
        Example {
            at_ms: 0,
            x,
            fraud,
            scenario: String::new(),
            card: String::new(),
            weight,
        }
    }

    #[test]
    fn weighted_platt_recovers_the_population_from_a_weighted_sample() {
        // Log-odds 1.5 z - 0.5; payments with z above 1 kept one in ten,
        // weighted 10, as a server blocking them would let through.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut rows = Vec::new();
        for _ in 0..60_000 {
            let z: f64 = rng.random_range(-4.0..4.0);
            let fraud = rng.random::<f64>() < sigmoid(1.5 * z - 0.5);
            if z <= 1.0 {
                rows.push(example(z, fraud, 1.0));
            } else if rng.random::<f64>() < 0.1 {
                rows.push(example(z, fraud, 10.0));
            }
        }
        let refs: Vec<&Example> = rows.iter().collect();
        let z: Vec<f64> = rows.iter().map(|e| e.x[0]).collect();
        let (a, b) = platt_weighted(&refs, &z);
        assert!((a - 1.5).abs() < 0.1 && (b + 0.5).abs() < 0.1, "{a} {b}");
        // Integer weights fit as repeated rows do.
        let repeated: Vec<Example> = rows
            .iter()
            .flat_map(|e| std::iter::repeat_n(example(e.x[0], e.fraud, 1.0), e.weight as usize))
            .collect();
        let refs2: Vec<&Example> = repeated.iter().collect();
        let z2: Vec<f64> = repeated.iter().map(|e| e.x[0]).collect();
        let (a2, b2) = platt_weighted(&refs2, &z2);
        assert!(
            (a - a2).abs() < 1e-6 && (b - b2).abs() < 1e-6,
            "{a} {b} vs {a2} {b2}"
        );
    }

    #[test]
    fn weighted_knots_count_weight_not_rows() {
        let desc: Vec<f64> = (0..2000).map(|i| 1.0 - f64::from(i) / 2000.0).collect();
        let unit: Vec<(f64, f64)> = desc.iter().map(|p| (*p, 1.0)).collect();
        for fpr in [0.001, 0.005, 0.1] {
            assert_eq!(knot_at_weighted_fpr(&unit, fpr), knot_at_fpr(&desc, fpr));
        }
        // The top ten weigh 199 each, as much as all the rest (3,980 in
        // all): 0.5% of the weight (19.9) is less than the first, 5% (199)
        // is the first, 15% (597) the first three.
        let heavy: Vec<(f64, f64)> = desc
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, if i < 10 { 199.0 } else { 1.0 }))
            .collect();
        assert_eq!(knot_at_weighted_fpr(&heavy, 0.005), 1.0 - 1e-9);
        assert_eq!(knot_at_weighted_fpr(&heavy, 0.05), desc[1].next_up());
        assert_eq!(knot_at_weighted_fpr(&heavy, 0.15), desc[3].next_up());
    }
}
