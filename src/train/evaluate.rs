//! `riskstream evaluate`: replays recorded traffic through the serving path
//! with a model loaded (or reads the outcomes a running server streamed
//! back to `riskstream replay --outcomes-out`), takes each payment's served
//! probability and score, and measures them against the file's fraud reports: AUC ROC, average
//! precision, card precision@100, recall and false-positive rate at the
//! block threshold, a calibration table, and per-scenario recall.

use super::eval::{self, CalibrationBin, CardScore};
use super::{TimeWindow, TrainError, card_of, fraud_labels, replay};
use crate::engine::{Engine, EngineConfig};
use crate::metrics::Metrics;
use crate::model::{Model, ModelHandle};
use crate::proto;
use crate::replay::outcomes::Served;
use crate::state::{MemoryStore, StoreLimits};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

const DAY_MS: i64 = 86_400_000;

/// How to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// The payments measured.
    pub window: TimeWindow,
    /// The block threshold recall and false-positive rate are given at.
    pub threshold: u32,
    /// Apply the fraud-detection handbook's test-set rules: leave out the
    /// payments of cards already known to be compromised, i.e. with a fraud
    /// in the 14 days before the window's start or up to 7 days (the label
    /// delay) before the payment's day.
    pub handbook_test_set: bool,
}

/// Recall of one fraud scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScenarioRecall {
    /// Fraudulent payments of the scenario measured.
    pub payments: usize,
    /// Share of them at or above the threshold.
    pub recall: f64,
}

/// The figures of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Version of the model evaluated.
    pub model_version: String,
    /// Records replayed, rejected, payments assessed.
    pub replay: super::ReplayCounts,
    /// Payments measured (assessed, in the window, after test-set rules).
    pub payments: usize,
    /// Of which labelled fraudulent.
    pub fraudulent: usize,
    /// Payments left out by the handbook's test-set rules.
    pub excluded_known_compromised: usize,
    /// Area under the ROC curve of the served probability.
    pub auc_roc: f64,
    /// Average precision of the served probability.
    pub average_precision: f64,
    /// Card precision@100 (handbook definition, daily, detected cards dropped).
    pub card_precision_at_100: f64,
    /// The block threshold.
    pub threshold: u32,
    /// Share of fraudulent payments scored at or above the threshold.
    pub recall_at_threshold: f64,
    /// Share of legitimate payments scored at or above the threshold.
    pub false_positive_rate_at_threshold: f64,
    /// Predicted probability against observed fraud rate.
    pub calibration: Vec<CalibrationBin>,
    /// Recall per ground-truth scenario, when the traffic names them.
    pub by_scenario: BTreeMap<String, ScenarioRecall>,
}

struct Row {
    at_ms: i64,
    card: String,
    probability: f64,
    score: u32,
    fraud: bool,
    scenario: String,
}

/// Where the scores evaluated come from.
#[derive(Debug)]
pub enum Scores {
    /// Scored in-process by this model.
    Model(Box<Model>),
    /// As a server served them: outcomes read back from a replay's
    /// `--outcomes-out` file, by payment id.
    Served(HashMap<String, Served>),
}

impl Scores {
    /// Reads a replay's outcomes file.
    pub fn served(path: &Path) -> Result<Scores, TrainError> {
        let lines =
            crate::replay::outcomes::read(path).map_err(|e| TrainError::Outcomes(e.to_string()))?;
        Ok(Scores::Served(
            lines
                .into_iter()
                .map(|o| (o.payment_id.clone(), o))
                .collect(),
        ))
    }
}

/// Evaluates the `scores` of the payments in the recorded traffic at `path`.
pub fn evaluate(path: &Path, scores: Scores, opts: EvalOptions) -> Result<Evaluation, TrainError> {
    let labels = fraud_labels(path)?;
    let (model, served) = match scores {
        Scores::Model(m) => (ModelHandle::new(*m), None),
        Scores::Served(s) => (ModelHandle::empty(), Some(s)),
    };
    let mut model_version = model
        .current()
        .map(|m| m.version().to_owned())
        .unwrap_or_default();
    let mut missing: Option<String> = None;
    let engine = Engine::new(
        Arc::new(MemoryStore::new(StoreLimits::default(), 0)),
        model,
        EngineConfig::default(),
        Metrics::noop(),
        None,
    );
    let mut rows = Vec::new();
    // For the handbook rules: when each card was defrauded (payment times).
    let mut frauds_by_card: HashMap<String, Vec<i64>> = HashMap::new();
    // The handbook rules look at the frauds of the 14 days before the window.
    let history = if opts.handbook_test_set {
        TimeWindow {
            from_ms: opts.window.from_ms.map(|f| f - 14 * DAY_MS),
            to_ms: opts.window.to_ms,
        }
    } else {
        opts.window
    };
    let counts = replay(path, history, &engine, |r, ev, engine, clock| {
        let fraud = labels.contains(&ev.payment_id);
        let card = card_of(ev);
        if fraud && opts.handbook_test_set {
            frauds_by_card
                .entry(card.clone())
                .or_default()
                .push(r.at_ms);
        }
        if let Some(served) = &served {
            // The state still follows the traffic, so that the replay
            // counts (feedback matched to payments) read as in-process.
            let known = engine.features_message(ev, clock).is_ok();
            if !opts.window.contains(r.at_ms) {
                return known;
            }
            let Some(o) = served.get(&ev.payment_id) else {
                missing.get_or_insert_with(|| ev.payment_id.clone());
                return false;
            };
            if model_version.is_empty() {
                model_version.clone_from(&o.model_version);
            }
            if o.assessed() {
                rows.push(Row {
                    at_ms: r.at_ms,
                    card,
                    probability: o.fraud_probability,
                    score: o.risk_score,
                    fraud,
                    scenario: r.scenario.clone(),
                });
            }
            return o.assessed();
        }
        if !opts.window.contains(r.at_ms) {
            // Before the window: only the state matters.
            return engine.features_message(ev, clock).is_ok();
        }
        let Ok(outcome) = engine.score_message(ev, clock) else {
            return false;
        };
        let assessed = outcome.error.is_none()
            && outcome.risk_level != proto::RiskLevel::NotAssessed as i32
            && outcome.risk_level != proto::RiskLevel::Unknown as i32;
        if assessed {
            rows.push(Row {
                at_ms: r.at_ms,
                card,
                probability: outcome.fraud_probability,
                score: outcome.risk_score,
                fraud,
                scenario: r.scenario.clone(),
            });
        }
        assessed
    })?;
    if let Some(id) = missing {
        return Err(TrainError::Outcomes(format!(
            "payment_id {id:?} of the measured window has no outcome in the outcomes file \
             (was the whole traffic file replayed?)"
        )));
    }

    let before = rows.len();
    if opts.handbook_test_set {
        let start = opts.window.from_ms.unwrap_or(i64::MIN / 2) - 14 * DAY_MS;
        rows.retain(|row| {
            let day_start = row.at_ms - row.at_ms.rem_euclid(DAY_MS);
            let known_until = day_start - 7 * DAY_MS;
            !frauds_by_card
                .get(&row.card)
                .is_some_and(|ts| ts.iter().any(|&t| t >= start && t < known_until))
        });
    }
    let excluded = before - rows.len();

    let probs: Vec<f64> = rows.iter().map(|r| r.probability).collect();
    let scores: Vec<u32> = rows.iter().map(|r| r.score).collect();
    let truth: Vec<bool> = rows.iter().map(|r| r.fraud).collect();
    let (fpr, recall) = eval::rates_at(&scores, &truth, opts.threshold);
    let cards: Vec<CardScore<'_>> = rows
        .iter()
        .map(|r| CardScore {
            day: r.at_ms.div_euclid(DAY_MS),
            card: &r.card,
            score: r.probability,
            fraud: r.fraud,
        })
        .collect();
    let mut by_scenario: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.fraud && !r.scenario.is_empty()) {
        let e = by_scenario.entry(r.scenario.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.score >= opts.threshold);
    }
    Ok(Evaluation {
        model_version,
        replay: counts,
        payments: rows.len(),
        fraudulent: truth.iter().filter(|f| **f).count(),
        excluded_known_compromised: excluded,
        auc_roc: eval::auc_roc(&probs, &truth),
        average_precision: eval::average_precision(&probs, &truth),
        card_precision_at_100: eval::card_precision_at_k(&cards, 100),
        threshold: opts.threshold,
        recall_at_threshold: recall,
        false_positive_rate_at_threshold: fpr,
        calibration: eval::calibration_table(
            &probs,
            &truth,
            &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.01],
        ),
        by_scenario: by_scenario
            .into_iter()
            .map(|(k, (n, hit))| {
                (
                    k,
                    ScenarioRecall {
                        payments: n,
                        recall: hit as f64 / n as f64,
                    },
                )
            })
            .collect(),
    })
}

impl Evaluation {
    /// A plain-text report for a terminal.
    pub fn report(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "model                  {}", self.model_version);
        let _ = writeln!(
            s,
            "payments               {} ({} fraudulent; {} left out as known compromised; {} records replayed, {} rejected)",
            self.payments,
            self.fraudulent,
            self.excluded_known_compromised,
            self.replay.records,
            self.replay.rejected
        );
        let _ = writeln!(s, "AUC ROC                {:.3}", self.auc_roc);
        let _ = writeln!(s, "average precision      {:.3}", self.average_precision);
        let _ = writeln!(
            s,
            "card precision@100     {:.3}",
            self.card_precision_at_100
        );
        let _ = writeln!(
            s,
            "at score >= {:<2}         recall {:.3}, false-positive rate {:.5}",
            self.threshold, self.recall_at_threshold, self.false_positive_rate_at_threshold
        );
        for (name, r) in &self.by_scenario {
            let _ = writeln!(
                s,
                "  {name:<22} recall {:.3} of {} payments",
                r.recall, r.payments
            );
        }
        let _ = writeln!(s, "calibration            predicted   observed   payments");
        for b in &self.calibration {
            let _ = writeln!(
                s,
                "  [{:.3}, {:.3})       {:>9.4}  {:>9.4}  {:>9}",
                b.low, b.high, b.mean_predicted, b.fraud_rate, b.payments
            );
        }
        s
    }
}
