//! Training: replays traffic through the serving engine in process (the same
//! validation, state and feature code that serves requests, so there is no
//! training/serving skew), fits logistic regression with linfa, calibrates it,
//! places the score-map knots, evaluates on a later time split, and writes a
//! model file with its provenance.
//!
//! - [`eval`]: AUC ROC, average precision, rates at a threshold.

pub mod eval;

use crate::engine::{Engine, EngineConfig};
use crate::features::{FEATURES, NUM_FEATURES};
use crate::metrics::Metrics;
use crate::model::file::{Calibration, Estimator, FORMAT, Knot, LogisticRegression, ModelFile};
use crate::model::score_map::{ScoreMap, logit, sigmoid};
use crate::model::{Model, ModelHandle};
use crate::sim::{self, Scenario, SimConfig, SimKind};
use crate::state::{MemoryStore, StoreLimits};
use crate::validate::Clock;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression as LinfaLr;
use ndarray::{Array1, Array2};
use serde_json::json;
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
}

/// One payment as training sees it: features at the time it happened, and truth.
#[derive(Debug, Clone)]
pub struct Example {
    /// When it happened.
    pub at_ms: i64,
    /// Feature vector.
    pub x: [f64; NUM_FEATURES],
    /// Fraud scenario, or `None` when legitimate.
    pub fraud: Option<Scenario>,
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
                        fraud,
                    });
                }
            }
            SimKind::Feedback(_) => {}
        }
    }
    Ok(out)
}

fn matrix(rows: &[&Example]) -> Array2<f64> {
    let mut m = Array2::zeros((rows.len(), NUM_FEATURES));
    for (i, r) in rows.iter().enumerate() {
        for j in 0..NUM_FEATURES {
            m[[i, j]] = r.x[j];
        }
    }
    m
}

fn check(split: &'static str, rows: &[&Example]) -> Result<(), TrainError> {
    let pos = rows.iter().filter(|r| r.fraud.is_some()).count();
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

/// The probability above which at most `fpr` of `legit` (sorted descending) lie.
fn knot_at_fpr(legit_desc: &[f64], fpr: f64) -> f64 {
    let k = ((legit_desc.len() as f64) * fpr).floor() as usize;
    let p = legit_desc.get(k).copied().unwrap_or(0.5);
    p.next_up().clamp(1e-9, 1.0 - 1e-9)
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
    let fit: Vec<&Example> = examples.iter().filter(|e| e.at_ms < fit_end).collect();
    let cal: Vec<&Example> = examples
        .iter()
        .filter(|e| (fit_end..cal_end).contains(&e.at_ms))
        .collect();
    let test: Vec<&Example> = examples.iter().filter(|e| e.at_ms >= cal_end).collect();
    check("fit", &fit)?;
    check("calibration", &cal)?;
    check("test", &test)?;

    // Standardise on the fit split.
    let xf = matrix(&fit);
    let n = xf.nrows() as f64;
    let mean: Vec<f64> = (0..NUM_FEATURES).map(|j| xf.column(j).sum() / n).collect();
    let scale: Vec<f64> = (0..NUM_FEATURES)
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
        for j in 0..NUM_FEATURES {
            m.column_mut(j).mapv_inplace(|v| (v - mean[j]) / scale[j]);
        }
        m
    };
    let yf: Array1<bool> = fit.iter().map(|e| e.fraud.is_some()).collect();
    let (weights, intercept) = fit_logistic(standardise(xf), yf, 1.0)?;

    let raw = |rows: &[&Example]| -> Vec<f64> {
        rows.iter()
            .map(|r| {
                intercept
                    + (0..NUM_FEATURES)
                        .map(|j| weights[j] * (r.x[j] - mean[j]) / scale[j])
                        .sum::<f64>()
            })
            .collect()
    };

    // Platt calibration on the calibration split.
    let cal_raw = raw(&cal);
    let xc = Array2::from_shape_vec((cal_raw.len(), 1), cal_raw.clone())?;
    let yc: Array1<bool> = cal.iter().map(|e| e.fraud.is_some()).collect();
    let (slope, offset) = fit_logistic(xc, yc, 1e-6)?;
    let calibration = Calibration {
        slope: slope[0],
        intercept: offset,
    };
    let calibrated = |z: f64| sigmoid(calibration.slope * z + calibration.intercept);

    // Thresholds: 75 where at most 0.1% of legitimate calibration payments
    // score, 65 where at most 0.5% do.
    let mut legit: Vec<f64> = cal
        .iter()
        .zip(&cal_raw)
        .filter(|(e, _)| e.fraud.is_none())
        .map(|(_, z)| calibrated(*z))
        .collect();
    legit.sort_by(|a, b| b.total_cmp(a));
    let p75 = knot_at_fpr(&legit, HIGHEST_FPR);
    let mut p65 = knot_at_fpr(&legit, ELEVATED_FPR);
    if p65 >= p75 {
        p65 = sigmoid(logit(p75) - 0.5);
    }
    let p0 = sigmoid(logit(p65) - 12.0);
    let p99 = sigmoid(logit(p75).max(0.0) + 6.0);
    let score_map = vec![
        Knot {
            probability: p0,
            score: 0,
        },
        Knot {
            probability: p65,
            score: 65,
        },
        Knot {
            probability: p75,
            score: 75,
        },
        Knot {
            probability: p99,
            score: 99,
        },
    ];

    // Evaluate on the test split.
    let map = ScoreMap::new(&score_map)?;
    let test_raw = raw(&test);
    let probs: Vec<f64> = test_raw.iter().map(|z| calibrated(*z)).collect();
    let scores: Vec<u32> = test_raw
        .iter()
        .map(|z| map.score_of_logit(calibration.slope * z + calibration.intercept))
        .collect();
    let labels: Vec<bool> = test.iter().map(|e| e.fraud.is_some()).collect();
    let (fpr75, recall75) = eval::rates_at(&scores, &labels, 75);
    let (fpr65, recall65) = eval::rates_at(&scores, &labels, 65);
    let mut per_scenario = serde_json::Map::new();
    for s in Scenario::ALL {
        let idx: Vec<usize> = (0..test.len())
            .filter(|&i| test[i].fraud == Some(s))
            .collect();
        let blocked = idx.iter().filter(|&&i| scores[i] >= 75).count();
        per_scenario.insert(
            s.name().into(),
            json!({
                "payments": idx.len(),
                "recall_at_75": if idx.is_empty() { f64::NAN } else { blocked as f64 / idx.len() as f64 },
            }),
        );
    }
    let count = |rows: &[&Example]| {
        let pos = rows.iter().filter(|r| r.fraud.is_some()).count();
        json!({"payments": rows.len(), "fraudulent": pos})
    };
    let evaluation = json!({
        "split": "test: last 20% of the simulated days",
        "payments": test.len(),
        "fraudulent": labels.iter().filter(|l| **l).count(),
        "auc_roc": round6(eval::auc_roc(&probs, &labels)),
        "average_precision": round6(eval::average_precision(&probs, &labels)),
        "legit_blocked_rate_at_75": round6(fpr75),
        "recall_at_75": round6(recall75),
        "legit_flagged_rate_at_65": round6(fpr65),
        "recall_at_65": round6(recall65),
        "by_scenario": per_scenario,
    });
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
            "fit": count(&fit),
            "calibration": count(&cal),
            "test": count(&test),
        },
        "estimator": {
            "library": "linfa-logistic",
            "alpha": 1.0,
            "max_iterations": 1000,
            "gradient_tolerance": 1e-5,
        },
        "thresholds": {
            "highest_75_at_legit_fpr": HIGHEST_FPR,
            "elevated_65_at_legit_fpr": ELEVATED_FPR,
        },
        "crates": {
            "riskstream": env!("CARGO_PKG_VERSION"),
            "linfa": LINFA_VERSION,
            "linfa-logistic": LINFA_LOGISTIC_VERSION,
        },
    });
    let file = ModelFile {
        format: FORMAT.into(),
        version: version.into(),
        features: FEATURES.iter().map(|(_, n, _)| (*n).to_owned()).collect(),
        estimator: Estimator::LogisticRegression(LogisticRegression {
            mean,
            scale,
            weights,
            intercept,
        }),
        calibration,
        score_map,
        provenance,
        evaluation,
    };
    // The file must load as the server would load it.
    Model::from_file(file.clone())?;
    Ok(file)
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}
