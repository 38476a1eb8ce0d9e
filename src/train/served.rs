//! Training data from a served period: the recorded traffic a server took
//! in (`serve --record`) and the decision log it wrote. A deployment sees
//! labels only on the payments it let through, so only those are trained
//! on; weighted by the inverse of the probability that each was let
//! through (its logged `allowed_propensity`), they stand for every payment
//! of the period, the blocked ones included, as the holdout estimator's
//! cells do. Without the weights, the payments the model blocked, most of
//! them its surest frauds, are missing but for the few the holdout let
//! through, which count once each.

use crate::decision::DecidedBy;
use crate::policy::files::{FilesError, LetThrough, read_let_through};
use std::collections::HashMap;
use std::path::Path;

/// How the allowed payments of a served period are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weighting {
    /// Each by the inverse of the probability that it was let through.
    #[default]
    InversePropensity,
    /// Each once (the naive fit, for comparison).
    None,
}

/// Why a decision log cannot weight a served period.
#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    /// The log could not be read.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// A payment let through whose logged probability of being let through
    /// is not a probability above 0.
    #[error("payment {payment_id}: let through with allowed_propensity {propensity}")]
    Propensity {
        /// The payment.
        payment_id: String,
        /// What the log says.
        propensity: f64,
    },
}

/// Per payment of a decision log: the probability that it was let through,
/// or `None` when it was blocked.
#[derive(Debug, Clone, Default)]
pub struct ServedLog {
    by_id: HashMap<String, Option<f64>>,
}

/// What a served period contributed to a fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ServedCounts {
    /// Payments of the decision log.
    pub logged: u64,
    /// Assessed payments of the traffic found in the log and let through:
    /// the ones trained on.
    pub allowed: u64,
    /// Of those, the ones labelled fraudulent.
    pub allowed_fraudulent: u64,
    /// Assessed payments of the traffic that the server blocked: left out.
    pub blocked: u64,
    /// Assessed payments of the traffic missing from the log (a record
    /// dropped, or another server's): left out.
    pub unlogged: u64,
    /// Sum of the weights of the payments trained on.
    pub weight_sum: f64,
    /// The largest weight.
    pub max_weight: f64,
}

impl ServedLog {
    /// Reads the decision log at `path`. A payment logged twice (a retry)
    /// keeps its last record.
    pub fn read(path: &Path) -> Result<Self, ServedError> {
        let mut by_id = HashMap::new();
        let mut bad = None;
        read_let_through(path, |r: LetThrough| {
            let valid = r.allowed_propensity > 0.0 && r.allowed_propensity <= 1.0;
            if r.allowed && !valid && bad.is_none() {
                bad = Some((r.payment_id.clone(), r.allowed_propensity));
            }
            let entry = r.allowed.then_some(r.allowed_propensity);
            // A payment no policy scored was let through with certainty.
            let entry = match r.decided_by {
                DecidedBy::Model | DecidedBy::List => entry,
                DecidedBy::NotAssessed | DecidedBy::ScoringFailed => entry.map(|_| 1.0),
            };
            by_id.insert(r.payment_id, entry);
        })?;
        if let Some((payment_id, propensity)) = bad {
            return Err(ServedError::Propensity {
                payment_id,
                propensity,
            });
        }
        Ok(ServedLog { by_id })
    }

    /// Payments in the log.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `payment_id` is logged (`None` if not), and if so its
    /// training weight under `weighting`: `None` inside when it was blocked.
    pub fn weight(&self, payment_id: &str, weighting: Weighting) -> Option<Option<f64>> {
        self.by_id.get(payment_id).map(|p| {
            p.map(|p| match weighting {
                Weighting::InversePropensity => 1.0 / p,
                Weighting::None => 1.0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_payments_are_weighted_by_their_inverse_propensity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        let line = |id: &str, decision: &str, by: &str, p: f64| {
            format!(
                r#"{{"ts_ms":1,"payment_id":"{id}","model_version":"m","risk_level":"normal","decision":"{decision}","reason":"","true_score":80,"reported_score":30,"true_probability":0.5,"reported_probability":0.01,"holdout":true,"propensity":0.5,"decided_by":"{by}","allowed_propensity":{p}}}"#
            )
        };
        let text = [
            line("held", "allow", "model", 0.0375),
            line("low", "allow", "model", 0.9875),
            line("blocked", "block", "model", 0.0375),
            line("listed", "block", "list", 0.0),
        ]
        .join("\n");
        std::fs::write(&path, text).expect("write");
        let log = ServedLog::read(&path).expect("reads");
        assert_eq!(log.len(), 4);
        let ipw = Weighting::InversePropensity;
        let w = log.weight("held", ipw).flatten().expect("allowed");
        assert!((w - 1.0 / 0.0375).abs() < 1e-9, "{w}");
        let w = log.weight("low", ipw).flatten().expect("allowed");
        assert!((w - 1.0 / 0.9875).abs() < 1e-12);
        assert_eq!(log.weight("held", Weighting::None), Some(Some(1.0)));
        assert_eq!(log.weight("blocked", ipw), Some(None));
        assert_eq!(log.weight("listed", ipw), Some(None));
        assert_eq!(log.weight("absent", ipw), None);

        // A payment let through at probability 0 contradicts its log.
        std::fs::write(&path, line("x", "allow", "model", 0.0)).expect("write");
        let err = ServedLog::read(&path).expect_err("impossible propensity");
        assert!(err.to_string().contains("payment x"), "{err}");
    }
}
