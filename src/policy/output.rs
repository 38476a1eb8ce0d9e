//! What `riskstream evaluate-policy` prints: the figures of each threshold
//! as a text report or as JSON.

use super::estimate::{Estimate, Report};
use std::fmt::Write;

/// An evaluation as printed: the estimator's report with what it was
/// computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// The model versions of the payments counted, comma-separated.
    pub model_version: String,
    /// The time the labels were taken as known up to (ms).
    pub as_of_ms: i64,
    /// How old a payment had to be at `as_of_ms` to count (ms).
    pub min_label_age_ms: i64,
    /// The figures.
    #[serde(flatten)]
    pub report: Report,
}

/// `ms` as a UTC date-time, or `-` when absent (no bound).
fn when(ms: Option<i64>) -> String {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t).to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

/// `value [lower, upper]`, `unknown [lower, upper]` when not identified.
fn figure(e: &Estimate) -> String {
    let value = e
        .value
        .map_or_else(|| "unknown".to_owned(), |v| format!("{v:.4}"));
    format!("{value:>7} [{:.4}, {:.4}]", e.lower, e.upper)
}

impl Evaluation {
    /// The report as text, one block per threshold.
    pub fn text(&self) -> String {
        let r = &self.report;
        let c = &r.counts;
        let mut s = String::new();
        let version = if self.model_version.is_empty() {
            "-"
        } else {
            &self.model_version
        };
        let _ = writeln!(s, "model                  {version}");
        let age = humantime::format_duration(std::time::Duration::from_millis(
            u64::try_from(self.min_label_age_ms).unwrap_or(0),
        ));
        let _ = writeln!(
            s,
            "payments               {} decided by the model's policy, from {} until {} (labels as of {}; payments at least {age} old)",
            c.payments,
            when(r.from_ms),
            when(r.to_ms),
            when(Some(self.as_of_ms)),
        );
        let _ = writeln!(
            s,
            "                       {} in the holdout; {} let through, {} of them labelled fraudulent",
            c.holdout_payments, c.allowed, c.observed_frauds
        );
        let _ = writeln!(
            s,
            "left out               {} decided by a list, {} not assessed, {} whose scoring failed; {} labels on blocked payments",
            c.decided_by_list, c.not_assessed, c.scoring_failed, c.blocked_labelled
        );
        let _ = writeln!(
            s,
            "intervals              {}% (unknown: no payment seen where one is needed; the interval is then what the data allow)",
            r.confidence * 100.0
        );
        for e in &r.estimates {
            let _ = writeln!(
                s,
                "at true score >= {:<3}  block rate {:.4} ({} payments, {} of them let through)",
                e.threshold,
                e.block_rate.value.unwrap_or(0.0),
                e.at_or_above,
                e.at_or_above_seen
            );
            for (name, est, naive) in [
                ("recall", &e.recall, &e.naive_recall),
                (
                    "false-positive rate",
                    &e.false_positive_rate,
                    &e.naive_false_positive_rate,
                ),
                ("precision", &e.precision, &e.naive_precision),
            ] {
                let _ = writeln!(s, "  {name:<20} {}   naive {}", figure(est), figure(naive));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DecidedBy;
    use crate::policy::{Observation, Query, estimate};

    #[test]
    fn text_and_json_carry_every_figure() {
        let mut o = Vec::new();
        for i in 0..40u32 {
            o.push(Observation {
                ts_ms: 1_767_225_600_000,
                decided_by: DecidedBy::Model,
                true_score: if i < 30 { 20 } else { 90 },
                allowed: i < 32,
                allowed_propensity: if i < 30 { 0.9875 } else { 0.0375 },
                holdout: (30..32).contains(&i),
                labelled: i % 3 == 0,
                fraud: i % 3 == 0,
            });
        }
        let e = Evaluation {
            model_version: "m1".into(),
            as_of_ms: 1_767_225_600_000,
            min_label_age_ms: 0,
            report: estimate(&o, &Query::new(vec![75, 100])).expect("estimates"),
        };
        let text = e.text();
        assert!(text.contains("model                  m1"), "{text}");
        assert!(text.contains("40 decided by the model's policy"), "{text}");
        assert!(text.contains("2026-01-01T00:00:00Z"), "{text}");
        assert!(
            text.contains(
                "at true score >= 75   block rate 0.2500 (10 payments, 2 of them let through)"
            ),
            "{text}"
        );
        // Nothing at or above 100: precision unknown.
        assert!(
            text.contains("precision            unknown [0.0000, 1.0000]"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&e).expect("json");
        assert_eq!(json["model_version"], "m1");
        assert_eq!(json["counts"]["payments"], 40);
        assert_eq!(json["estimates"][0]["threshold"], 75);
        assert!(json["estimates"][0]["recall"]["value"].is_f64());
        assert!(json["estimates"][1]["precision"]["value"].is_null());
    }
}
