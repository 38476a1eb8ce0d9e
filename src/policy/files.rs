//! Holdout measurement from files: the decision log a server wrote, and the
//! labels that arrived, from a JSON-lines file of
//! `{payment_id, kind, reported_at_ms}` or from a recorded-traffic file's
//! fraud reports. A payment counts as fraudulent when its latest label up
//! to the evaluation time is `fraudulent` or `dispute_fraud` (a later
//! `legitimate` overturns it, as in the server's store).

use super::estimate::Observation;
use crate::decision::DecidedBy;
use crate::decision_log::DecisionRecord;
use crate::domain::FeedbackKind;
use crate::proto::traffic_record::Request;
use crate::traffic::{TrafficError, TrafficReader};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// A decision log or labels file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not what the file should hold.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A record the model's policy decided lacks the probability that it
    /// was let through (written before the decision log had it).
    #[error(
        "{path}:{line}: the record has no allowed_propensity (written by an older server): it cannot be weighted"
    )]
    MissingPropensity {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
    },
    /// The recorded-traffic file could not be read.
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

/// A decision log read into the estimator's observations, one per record
/// in file order, without keeping the records themselves (a log of tens of
/// millions of payments fits in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionLogFile {
    observations: Vec<Observation>,
    /// Per observation, its index in `versions`.
    version_of: Vec<u32>,
    versions: Vec<String>,
    latest_ms: Option<i64>,
}

impl DecisionLogFile {
    /// Reads the decision log at `path` (blank lines are skipped), each
    /// payment labelled from `labels` as known at `as_of_ms` (every label
    /// when `None`). A payment logged more than once (a retry, scored
    /// again) counts once, by its first record, as the server's store
    /// keeps it, unless that record is a failure to score it (its store
    /// did not answer; the store keeps the retry's decision).
    pub fn read(path: &Path, labels: &Labels, as_of_ms: Option<i64>) -> Result<Self, FilesError> {
        let mut log = DecisionLogFile {
            observations: Vec::new(),
            version_of: Vec::new(),
            versions: Vec::new(),
            latest_ms: None,
        };
        let mut version_index: HashMap<String, u32> = HashMap::new();
        let mut seen = PaymentIds::default();
        let as_of_ms = as_of_ms.unwrap_or(i64::MAX);
        for_each_line(path, |line, text| {
            let r: DecisionRecord = serde_json::from_str(text).map_err(|e| FilesError::Line {
                path: path.to_owned(),
                line,
                message: format!("not a decision record: {e}"),
            })?;
            let earlier = seen.kept_or_insert(&r.payment_id, log.observations.len());
            let observation =
                observation(&r, labels, as_of_ms).ok_or_else(|| FilesError::MissingPropensity {
                    path: path.to_owned(),
                    line,
                })?;
            let next = log.versions.len() as u32;
            let version = *version_index
                .entry(r.model_version.clone())
                .or_insert_with(|| {
                    log.versions.push(r.model_version);
                    next
                });
            match earlier {
                // A payment whose scoring failed (failing open before the
                // store recorded it) and was scored again: the store keeps
                // the decision of the retry, and so does this.
                Some(i) if log.observations[i].decided_by == DecidedBy::ScoringFailed => {
                    log.observations[i] = observation;
                    log.version_of[i] = version;
                }
                Some(_) => {}
                None => {
                    log.observations.push(observation);
                    log.version_of.push(version);
                }
            }
            log.latest_ms = log.latest_ms.max(Some(r.ts_ms));
            Ok(())
        })?;
        Ok(log)
    }

    /// The estimator's view of every record, in file order.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    /// The latest payment time in the log.
    pub fn latest_ms(&self) -> Option<i64> {
        self.latest_ms
    }

    /// The model versions of the payments the model's policy decided at
    /// times for which `counted` holds, sorted and joined by commas.
    pub fn model_versions(&self, counted: impl Fn(i64) -> bool) -> String {
        let versions: BTreeSet<&str> = self
            .observations
            .iter()
            .zip(&self.version_of)
            .filter(|(o, _)| o.decided_by == DecidedBy::Model && counted(o.ts_ms))
            .map(|(_, v)| self.versions[*v as usize].as_str())
            .collect();
        versions.into_iter().collect::<Vec<_>>().join(",")
    }
}

/// The payment ids met so far (as 128-bit hashes: a log of tens of
/// millions of payments stays small), with the position of the record
/// kept for each.
#[derive(Default)]
struct PaymentIds {
    kept: HashMap<u128, usize>,
    hashers: (foldhash::quality::FixedState, foldhash::quality::FixedState),
}

impl PaymentIds {
    /// The position of the record kept for `id`, if it was met before;
    /// else remembers `next` as its position.
    fn kept_or_insert(&mut self, id: &str, next: usize) -> Option<usize> {
        use std::hash::BuildHasher;
        let h = u128::from(self.hashers.0.hash_one(id)) << 64
            | u128::from(self.hashers.1.hash_one((id, 1u8)));
        // Positions only grow: one kept earlier is below `next`.
        let kept = *self.kept.entry(h).or_insert(next);
        (kept != next).then_some(kept)
    }
}

/// What decided `r`, whether it was let through, and the probability that
/// it was; `None` when the model's policy decided it and it lacks
/// `allowed_propensity` (written before the log had it).
fn let_through(r: &DecisionRecord) -> Option<(DecidedBy, bool, f64)> {
    let decided_by = r.decided_by.unwrap_or_else(|| decided_by_of(r));
    let allowed = r.decision != "block";
    let allowed_propensity = match (r.allowed_propensity, decided_by) {
        (Some(p), _) => p,
        // Nothing but the model's policy depends on the holdout.
        (None, DecidedBy::List | DecidedBy::NotAssessed | DecidedBy::ScoringFailed) => {
            if allowed {
                1.0
            } else {
                0.0
            }
        }
        (None, DecidedBy::Model) => return None,
    };
    Some((decided_by, allowed, allowed_propensity))
}

/// One payment of a decision log as training from a served period reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LetThrough {
    /// The payment.
    pub payment_id: String,
    /// What decided it.
    pub decided_by: DecidedBy,
    /// Whether it was let through (decision not `block`).
    pub allowed: bool,
    /// The probability, over the holdout draw, that it was let through.
    pub allowed_propensity: f64,
}

/// Calls `f` with each record of the decision log at `path`, in file order.
pub fn read_let_through(path: &Path, mut f: impl FnMut(LetThrough)) -> Result<(), FilesError> {
    for_each_line(path, |line, text| {
        let r: DecisionRecord = serde_json::from_str(text).map_err(|e| FilesError::Line {
            path: path.to_owned(),
            line,
            message: format!("not a decision record: {e}"),
        })?;
        let (decided_by, allowed, allowed_propensity) =
            let_through(&r).ok_or_else(|| FilesError::MissingPropensity {
                path: path.to_owned(),
                line,
            })?;
        f(LetThrough {
            payment_id: r.payment_id,
            decided_by,
            allowed,
            allowed_propensity,
        });
        Ok(())
    })
}

/// The estimator's view of `r`, labelled as known at `as_of_ms`; `None`
/// when the model's policy decided it and it lacks `allowed_propensity`.
fn observation(r: &DecisionRecord, labels: &Labels, as_of_ms: i64) -> Option<Observation> {
    let (decided_by, allowed, allowed_propensity) = let_through(r)?;
    let label = labels.latest(&r.payment_id, as_of_ms);
    Some(Observation {
        ts_ms: r.ts_ms,
        decided_by,
        true_score: r.true_score,
        allowed,
        allowed_propensity,
        holdout: r.holdout,
        labelled: label.is_some(),
        fraud: label.is_some_and(FeedbackKind::is_fraud),
    })
}

/// What decided a record written before `decided_by` was logged: its
/// reason and level tell.
fn decided_by_of(r: &DecisionRecord) -> DecidedBy {
    match (r.reason.as_str(), r.risk_level.as_str()) {
        ("allowlist" | "blocklist", _) => DecidedBy::List,
        (_, "not_assessed") => DecidedBy::NotAssessed,
        (_, "unknown") => DecidedBy::ScoringFailed,
        _ => DecidedBy::Model,
    }
}

/// The labels that arrived, per payment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels {
    /// Per payment: (reported at, kind), in arrival order.
    by_payment: HashMap<String, Vec<(i64, FeedbackKind)>>,
    latest_ms: Option<i64>,
}

impl Labels {
    /// Adds a label reported at `reported_at_ms`.
    pub fn add(&mut self, payment_id: String, kind: FeedbackKind, reported_at_ms: i64) {
        self.by_payment
            .entry(payment_id)
            .or_default()
            .push((reported_at_ms, kind));
        self.latest_ms = self.latest_ms.max(Some(reported_at_ms));
    }

    /// The latest label of `payment_id` reported at or before `as_of_ms`
    /// (of two reported at the same time, the one that came later).
    pub fn latest(&self, payment_id: &str, as_of_ms: i64) -> Option<FeedbackKind> {
        self.by_payment
            .get(payment_id)?
            .iter()
            .filter(|(at, _)| *at <= as_of_ms)
            .max_by_key(|(at, _)| *at)
            .map(|(_, k)| *k)
    }

    /// The time of the latest label.
    pub fn latest_ms(&self) -> Option<i64> {
        self.latest_ms
    }

    /// Labels counted.
    pub fn len(&self) -> usize {
        self.by_payment.values().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_payment.is_empty()
    }

    /// Reads a JSON-lines file of `{"payment_id": …, "kind": …,
    /// "reported_at_ms": …}`; `kind` is `fraudulent`, `dispute_fraud` or
    /// `legitimate` (the contract's `FEEDBACK_KIND_…` names are accepted too).
    pub fn from_json_lines(path: &Path) -> Result<Self, FilesError> {
        #[derive(serde::Deserialize)]
        struct Line {
            payment_id: String,
            kind: String,
            reported_at_ms: i64,
        }
        let mut labels = Labels::default();
        for_each_line(path, |line, text| {
            let bad = |message: String| FilesError::Line {
                path: path.to_owned(),
                line,
                message,
            };
            let l: Line =
                serde_json::from_str(text).map_err(|e| bad(format!("not a label: {e}")))?;
            let kind = parse_kind(&l.kind).ok_or_else(|| {
                bad(format!(
                    "kind {:?} is not fraudulent, dispute_fraud or legitimate",
                    l.kind
                ))
            })?;
            labels.add(l.payment_id, kind, l.reported_at_ms);
            Ok(())
        })?;
        Ok(labels)
    }

    /// Reads the fraud reports (`FeedbackEvent`s) of a recorded-traffic
    /// file; a report without a time takes its record's.
    pub fn from_traffic(path: &Path) -> Result<Self, FilesError> {
        let mut labels = Labels::default();
        for r in TrafficReader::open(path)? {
            let r = r?;
            let Some(Request::Feedback(f)) = r.request else {
                continue;
            };
            let kind = match crate::proto::FeedbackKind::try_from(f.kind) {
                Ok(crate::proto::FeedbackKind::Fraudulent) => FeedbackKind::Fraudulent,
                Ok(crate::proto::FeedbackKind::DisputeFraud) => FeedbackKind::DisputeFraud,
                Ok(crate::proto::FeedbackKind::Legitimate) => FeedbackKind::Legitimate,
                // A server refuses these; so does the evaluation.
                _ => continue,
            };
            let at = if f.reported_at_ms == 0 {
                r.at_ms
            } else {
                f.reported_at_ms
            };
            labels.add(f.payment_id, kind, at);
        }
        Ok(labels)
    }
}

fn parse_kind(s: &str) -> Option<FeedbackKind> {
    let s = s.to_ascii_lowercase();
    match s.strip_prefix("feedback_kind_").unwrap_or(&s) {
        "fraudulent" => Some(FeedbackKind::Fraudulent),
        "dispute_fraud" => Some(FeedbackKind::DisputeFraud),
        "legitimate" => Some(FeedbackKind::Legitimate),
        _ => None,
    }
}

/// Calls `f` with each non-blank line of `path` and its number.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), FilesError>,
) -> Result<(), FilesError> {
    let io = |source| FilesError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if !line.trim().is_empty() {
            f(i + 1, &line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        path
    }

    const OLD: &str = r#"{"ts_ms":10,"payment_id":"p1","model_version":"m1","risk_level":"normal","decision":"allow","reason":"","true_score":20,"reported_score":20,"true_probability":0.01,"reported_probability":0.01,"holdout":false,"propensity":0.99}"#;

    #[test]
    fn decision_logs_old_and_new_become_observations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let new = r#"{"ts_ms":20,"payment_id":"p2","model_version":"m2","risk_level":"highest","decision":"review","reason":"highest_risk_level","true_score":90,"reported_score":90,"true_probability":0.9,"reported_probability":0.9,"holdout":false,"propensity":0.95,"decided_by":"model","allowed_propensity":0.9875}"#;
        let listed = r#"{"ts_ms":30,"payment_id":"p3","model_version":"m1","risk_level":"normal","decision":"block","reason":"blocklist","true_score":5,"reported_score":5,"true_probability":0.0,"reported_probability":0.0,"holdout":false,"propensity":1.0}"#;
        let path = write(dir.path(), "log.jsonl", &format!("{new}\n\n{listed}\n"));
        let mut labels = Labels::default();
        labels.add("p2".into(), FeedbackKind::DisputeFraud, 100);
        labels.add("p3".into(), FeedbackKind::Fraudulent, 100);
        let log = DecisionLogFile::read(&path, &labels, None).expect("reads");
        let o = log.observations();
        assert_eq!(o.len(), 2);
        assert_eq!(log.latest_ms(), Some(30));
        assert_eq!(
            o[0],
            Observation {
                ts_ms: 20,
                decided_by: DecidedBy::Model,
                true_score: 90,
                allowed: true,
                allowed_propensity: 0.9875,
                holdout: false,
                labelled: true,
                fraud: true,
            }
        );
        // Written before decided_by: the reason tells; 0 for a block.
        assert_eq!(o[1].decided_by, DecidedBy::List);
        assert_eq!((o[1].allowed, o[1].allowed_propensity), (false, 0.0));
        assert_eq!(log.model_versions(|_| true), "m2");
        assert_eq!(log.model_versions(|ts| ts > 20), "");
        // The observations of a log of `records`, one a line.
        let observations_of = |name: &str, records: [&str; 3]| {
            let path = write(dir.path(), name, &(records.join("\n") + "\n"));
            let log = DecisionLogFile::read(&path, &labels, None).expect("reads");
            log.observations().to_vec()
        };
        // A payment scored again (a retry) counts once, by its first record.
        let retried = new.replace("\"ts_ms\":20", "\"ts_ms\":25");
        assert_eq!(observations_of("retry.jsonl", [new, &retried, listed]), o);
        // ... unless the first record is a failure to score it: the retry's
        // decision is the one kept.
        let failed = new
            .replace(
                "\"decided_by\":\"model\"",
                "\"decided_by\":\"scoring_failed\"",
            )
            .replace("\"true_score\":90", "\"true_score\":0");
        assert_eq!(observations_of("failed.jsonl", [&failed, new, listed]), o);
        // Labels not yet arrived at the evaluation time do not count.
        let early = DecisionLogFile::read(&path, &labels, Some(99)).expect("reads");
        assert!(!early.observations()[0].labelled && !early.observations()[0].fraud);

        // A model decision without allowed_propensity cannot be weighted.
        let path = write(dir.path(), "old.jsonl", &format!("{listed}\n{OLD}\n"));
        let err = DecisionLogFile::read(&path, &labels, None).expect_err("refused");
        assert!(
            matches!(err, FilesError::MissingPropensity { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("allowed_propensity"));

        let path = write(dir.path(), "bad.jsonl", "{\"ts_ms\":1}\n");
        let err = DecisionLogFile::read(&path, &labels, None).expect_err("refused");
        assert!(matches!(err, FilesError::Line { line: 1, .. }), "{err}");
    }

    #[test]
    fn labels_from_json_lines_latest_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "labels.jsonl",
            concat!(
                r#"{"payment_id":"a","kind":"fraudulent","reported_at_ms":10}"#,
                "\n",
                r#"{"payment_id":"a","kind":"legitimate","reported_at_ms":20}"#,
                "\n",
                r#"{"payment_id":"b","kind":"FEEDBACK_KIND_DISPUTE_FRAUD","reported_at_ms":15}"#,
                "\n",
            ),
        );
        let labels = Labels::from_json_lines(&path).expect("reads");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels.latest_ms(), Some(20));
        assert_eq!(labels.latest("a", 15), Some(FeedbackKind::Fraudulent));
        assert_eq!(labels.latest("a", 20), Some(FeedbackKind::Legitimate));
        assert_eq!(labels.latest("b", 20), Some(FeedbackKind::DisputeFraud));
        assert_eq!(labels.latest("b", 14), None);
        assert_eq!(labels.latest("c", 100), None);

        let path = write(
            dir.path(),
            "bad.jsonl",
            r#"{"payment_id":"a","kind":"chargeback","reported_at_ms":10}"#,
        );
        let err = Labels::from_json_lines(&path).expect_err("refused");
        assert!(err.to_string().contains("chargeback"), "{err}");
        assert!(matches!(
            Labels::from_json_lines(&dir.path().join("missing")),
            Err(FilesError::Io { .. })
        ));
    }

    #[test]
    fn labels_from_recorded_traffic() {
        use crate::proto;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.traffic");
        let mut w = crate::traffic::TrafficWriter::create(&path).expect("create");
        let feedback = |id: &str, kind: proto::FeedbackKind, at: i64| proto::TrafficRecord {
            at_ms: 500,
            request: Some(Request::Feedback(proto::FeedbackEvent {
                payment_id: id.into(),
                kind: kind as i32,
                reported_at_ms: at,
            })),
            scenario: String::new(),
        };
        w.write(&feedback("x", proto::FeedbackKind::Fraudulent, 100))
            .expect("write");
        w.write(&feedback("y", proto::FeedbackKind::DisputeFraud, 0))
            .expect("write");
        w.write(&feedback("z", proto::FeedbackKind::Unspecified, 100))
            .expect("write");
        w.finish().expect("finish");
        let labels = Labels::from_traffic(&path).expect("reads");
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.latest("x", 100), Some(FeedbackKind::Fraudulent));
        // No time of its own: the record's.
        assert_eq!(labels.latest("y", 499), None);
        assert_eq!(labels.latest("y", 500), Some(FeedbackKind::DisputeFraud));
    }
}
