//! Holdout at rate 0 and 1, and the score-dependent holdout: what the
//! outcomes show and what the decision log records for every scored payment
//! (propensities included).

mod common;

use common::*;
use riskstream::decision::DecidedBy;
use riskstream::decision::holdout::{Holdout, HoldoutPolicy};
use riskstream::decision_log::DecisionRecord;
use riskstream::proto::{self, Decision, RiskLevel};
use std::collections::HashMap;
use tokio_stream::StreamExt;

const N: usize = 400;

/// Registers 20 cards, then streams N payments, half of them from drifted
/// sessions so that both low and high true scores occur.
async fn run(rate: f64, log: &std::path::Path) -> (Vec<proto::Outcome>, Vec<DecisionRecord>) {
    run_with(Holdout::new(rate, KEY), log).await
}

const KEY: &[u8] = b"test-key";

async fn run_with(
    holdout: Holdout,
    log: &std::path::Path,
) -> (Vec<proto::Outcome>, Vec<DecisionRecord>) {
    let mut setup = Setup {
        decision_log: Some(log.to_owned()),
        ..Setup::default()
    };
    setup.config.holdout = holdout;
    let mut srv = TestServer::with(setup).await;
    for c in 0..20u32 {
        srv.client
            .register_payment_method(registration(
                &format!("pm_{c}"),
                &format!("fp_{c}"),
                if c.is_multiple_of(2) {
                    60 * DAY_MS
                } else {
                    10_000
                },
                Some(home_session(&format!("create_{c}"))),
                customer(c),
            ))
            .await
            .expect("registered");
    }
    let events: Vec<proto::PaymentEvent> = (0..N)
        .map(|i| {
            let c = (i % 20) as u32;
            let session = if c.is_multiple_of(2) {
                home_session(&format!("s{i}"))
            } else {
                foreign_session(&format!("s{i}"))
            };
            payment(
                &format!("pay_{i}"),
                &format!("pm_{c}"),
                4000,
                Some(session),
                customer(c),
            )
        })
        .collect();
    let outcomes: Vec<proto::Outcome> = srv
        .client
        .score_stream(tokio_stream::iter(events))
        .await
        .expect("stream")
        .into_inner()
        .map(|o| o.expect("outcome"))
        .collect()
        .await;
    srv.shutdown().await;
    let text = std::fs::read_to_string(log).expect("decision log written");
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect();
    (outcomes, records)
}

#[tokio::test]
async fn rate_zero_reports_true_scores_with_propensity_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outcomes, records) = run(0.0, &dir.path().join("decisions.jsonl")).await;
    assert_eq!(records.len(), N, "one record per scored payment");
    let by_id: HashMap<_, _> = records.iter().map(|r| (r.payment_id.clone(), r)).collect();
    let mut blocked = 0;
    for o in &outcomes {
        let r = by_id[o.payment_id.as_str()];
        assert!(!r.holdout);
        assert_eq!(r.true_score, r.reported_score);
        assert_eq!(r.reported_score, o.risk_score);
        assert_eq!(r.propensity, 1.0);
        assert_eq!(r.decided_by, Some(DecidedBy::Model));
        let blocked_here = o.decision() == Decision::Block;
        assert_eq!(
            r.allowed_propensity,
            Some(if blocked_here { 0.0 } else { 1.0 }),
            "without a holdout the true score decides"
        );
        assert_eq!(
            r.decision,
            if o.decision() == Decision::Block {
                "block"
            } else {
                "allow"
            }
        );
        assert_eq!(r.model_version, o.model_version);
        assert!((r.reported_probability - o.fraud_probability).abs() < 1e-12);
        blocked += usize::from(o.decision() == Decision::Block);
    }
    assert!(
        blocked > 0 && blocked < N,
        "both decisions occur: {blocked}"
    );
}

#[tokio::test]
async fn rate_one_perturbs_every_score_and_logs_the_propensity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (outcomes, records) = run(1.0, &dir.path().join("decisions.jsonl")).await;
    assert_eq!(records.len(), N);
    let by_id: HashMap<_, _> = records.iter().map(|r| (r.payment_id.clone(), r)).collect();
    let mut changed = 0;
    let mut blocked = 0;
    for o in &outcomes {
        let r = by_id[o.payment_id.as_str()];
        assert!(r.holdout);
        assert_eq!(
            o.risk_score, r.reported_score,
            "the outcome shows the reported score"
        );
        // The decision follows the reported score.
        let expected = if r.reported_score >= 75 {
            (RiskLevel::Highest, Decision::Block)
        } else if r.reported_score >= 65 {
            (RiskLevel::Elevated, Decision::Allow)
        } else {
            (RiskLevel::Normal, Decision::Allow)
        };
        assert_eq!((o.risk_level(), o.decision()), expected, "{o:?}");
        // The reported probability maps back to the reported score.
        assert!((o.fraud_probability - r.reported_probability).abs() < 1e-12);
        // Every score is uniform: a block has probability 25/100 whatever the true score.
        let p = if o.decision() == Decision::Block {
            0.25
        } else {
            0.75
        };
        assert!((r.propensity - p).abs() < 1e-12, "{r:?}");
        // Let through whenever the uniform score falls below 75.
        let allowed = r.allowed_propensity.expect("logged");
        assert!((allowed - 0.75).abs() < 1e-12, "{r:?}");
        assert_eq!(r.decided_by, Some(DecidedBy::Model));
        changed += usize::from(r.true_score != r.reported_score);
        blocked += usize::from(o.decision() == Decision::Block);
        // Nothing in the outcome marks it.
        assert!(o.error.is_none());
        assert_eq!(o.reason.is_empty(), o.risk_level() == RiskLevel::Normal);
    }
    assert!(changed > N * 9 / 10, "{changed} of {N} changed");
    let share = blocked as f64 / N as f64;
    assert!(
        (0.15..0.35).contains(&share),
        "block share {share} near 0.25"
    );
}

/// The `score` policy's curve as documented, written out independently of
/// the code under test: at the default block threshold 75, the rate `R`
/// over 75–84, `R/√2` over 85–94, `R/2` over 95–99, never below the floor;
/// the floor below 75.
fn documented_rate(true_score: u32, rate: f64, floor: f64) -> f64 {
    match true_score {
        0..=74 => floor,
        75..=84 => rate,
        85..=94 => (rate / 2f64.sqrt()).max(floor),
        _ => (rate / 2.0).max(floor),
    }
}

#[tokio::test]
async fn the_score_policy_draws_and_logs_the_documented_rate_of_each_true_score() {
    let (rate, floor) = (0.8, 0.1);
    let holdout = || Holdout::new(rate, KEY).with_policy(HoldoutPolicy::Score { min_rate: floor });
    let dir = tempfile::tempdir().expect("tempdir");
    let (outcomes, records) = run_with(holdout(), &dir.path().join("decisions.jsonl")).await;
    assert_eq!(records.len(), N);
    let by_id: HashMap<_, _> = records.iter().map(|r| (r.payment_id.clone(), r)).collect();
    // The same key draws the same payments: which were held out, and the
    // score each reported, follow from the documented rate of its true score.
    let replica = Holdout::new(rate, KEY);
    let mut bands = std::collections::BTreeSet::new();
    let mut held = 0;
    for o in &outcomes {
        let r = by_id[o.payment_id.as_str()];
        assert_eq!(r.decided_by, Some(DecidedBy::Model));
        let p = documented_rate(r.true_score, rate, floor);
        bands.insert((r.true_score.max(65) - 65) / 10);
        let drawn = replica.draw(&r.payment_id, p);
        assert_eq!(r.holdout, drawn.is_some(), "{r:?}");
        assert_eq!(r.reported_score, drawn.unwrap_or(r.true_score), "{r:?}");
        assert_eq!(o.risk_score, r.reported_score);
        held += usize::from(r.holdout);
        // Blocked at 75 and above; a held-out payment reports a uniform
        // score, below 75 three times in four.
        let allowed = if r.true_score >= 75 {
            p * 0.75
        } else {
            1.0 - p + p * 0.75
        };
        let logged = r.allowed_propensity.expect("logged");
        assert!(
            (logged - allowed).abs() < 1e-12,
            "{r:?}: expected {allowed}"
        );
        let blocked = o.decision() == Decision::Block;
        assert_eq!(r.decision == "block", blocked);
        let taken = if blocked { 1.0 - allowed } else { allowed };
        assert!(
            (r.propensity - taken).abs() < 1e-12,
            "{r:?}: expected {taken}"
        );
    }
    assert!(held > 0, "some payments held out");
    // Scores below the threshold and in several steps above it occurred.
    assert!(bands.contains(&0), "{bands:?}");
    assert!(bands.iter().filter(|b| **b >= 1).count() >= 2, "{bands:?}");
}
