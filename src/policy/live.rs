//! The live holdout measurement: the estimator over the payments the
//! server's store remembers (what was decided of each, kept with it, and
//! its latest label), shared by `RiskAdmin.EvaluatePolicy` and the
//! `riskstream_policy_*` gauges. The store keeps them, so the figures
//! survive a restart (embedded, Redis) and are the same on every replica
//! (Redis).

use super::estimate::{Observation, Query, Report, estimate_each};
use crate::error::ServiceError;
use crate::state::{DecidedPayment, Store};

/// What is asked, as `EvaluatePolicyRequest` says it (0: no bound).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Thresholds on the true score; empty: `live_threshold`.
    pub thresholds: Vec<u32>,
    /// Payments attempted at or after (ms; 0: no bound).
    pub from_ms: i64,
    /// And before (ms; 0: no bound).
    pub to_ms: i64,
    /// Leave out payments younger than this at the latest payment seen.
    pub min_label_age_ms: i64,
    /// Interval level; 0: the default (0.95).
    pub confidence: f64,
}

/// The estimator's view of a remembered payment.
pub fn observation(p: &DecidedPayment) -> Observation {
    let d = &p.decided;
    Observation {
        ts_ms: p.at_ms,
        decided_by: d.decided_by,
        true_score: u32::from(d.true_score),
        allowed: d.allowed,
        allowed_propensity: f64::from(d.allowed_propensity),
        holdout: d.holdout,
        labelled: p.label.is_some(),
        fraud: p.label.is_some_and(crate::domain::FeedbackKind::is_fraud),
    }
}

/// Estimates `request` over what `store` remembers; `live_threshold` is
/// the threshold of an empty list. Labels are known up to the latest
/// payment the store remembers. Reads the whole store: call it off async
/// workers.
pub fn evaluate(
    store: &dyn Store,
    request: &Request,
    live_threshold: u32,
) -> Result<Report, ServiceError> {
    let decisions = store.decisions()?;
    let thresholds = if request.thresholds.is_empty() {
        vec![live_threshold]
    } else {
        request.thresholds.clone()
    };
    let mut query = Query::new(thresholds);
    query.from_ms = (request.from_ms != 0).then_some(request.from_ms);
    query.to_ms = (request.to_ms != 0).then_some(request.to_ms);
    query.min_label_age_ms = request.min_label_age_ms;
    query.as_of_ms = decisions.iter().map(|d| d.at_ms).max();
    if request.confidence != 0.0 {
        query.confidence = request.confidence;
    }
    Ok(estimate_each(decisions.iter().map(observation), &query)?)
}
