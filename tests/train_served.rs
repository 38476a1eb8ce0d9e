//! Training from a served period: simulated traffic replayed through a
//! server with a holdout and a decision log, then collected as `riskstream
//! train --served-decision-log` collects it: only the payments let through,
//! each weighted by the inverse of its logged probability of being let
//! through, which restores the frauds the server blocked.

mod common;

use common::*;
use riskstream::decision::DecidedBy;
use riskstream::decision_log::DecisionRecord;
use riskstream::train::served::{ServedLog, Weighting};
use riskstream::train::{Family, Served, TimeWindow, TrainError};
use std::path::{Path, PathBuf};
use std::process::Command;

fn riskstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskstream"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("RISKSTREAM_LOG");
    c
}

/// Simulates traffic and replays it through a server with a 50% holdout
/// writing a decision log; returns the traffic and the log.
async fn served(dir: &Path) -> (PathBuf, PathBuf) {
    let traffic = dir.join("sim.traffic");
    let log = dir.join("decisions.jsonl");
    let out = riskstream()
        .args([
            "simulate",
            "--seed",
            "9",
            "--customers",
            "600",
            "--days",
            "12",
        ])
        .arg("--out")
        .arg(&traffic)
        .output()
        .expect("simulate runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = TestServer::with(
        Setup {
            decision_log: Some(log.clone()),
            ..Setup::default()
        }
        .holdout(0.5),
    )
    .await;
    let target = format!("http://{}", server.addr);
    let replay = traffic.clone();
    let out = tokio::task::spawn_blocking(move || {
        riskstream()
            .arg("replay")
            .arg(&replay)
            .args(["--progress", "off", "--target", &target])
            .output()
            .expect("replay runs")
    })
    .await
    .expect("joins");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.shutdown().await;
    (traffic, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn inverse_propensity_weights_restore_the_blocked_frauds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, log_path) = served(dir.path()).await;
    let window = TimeWindow::default();
    let log = ServedLog::read(&log_path).expect("log reads");
    let (all, _) = riskstream::train::collect_traffic(&traffic, window).expect("collects");
    let (weighted, _, c) =
        riskstream::train::collect_served(&traffic, window, &log, Weighting::InversePropensity)
            .expect("collects");
    let (plain, _, c_plain) =
        riskstream::train::collect_served(&traffic, window, &log, Weighting::None)
            .expect("collects");

    // Every assessed payment is accounted for: trained on, or left out
    // because the server blocked it.
    assert_eq!(c.unlogged, 0, "{c:?}");
    assert_eq!(c.allowed + c.blocked, all.len() as u64);
    assert!(c.blocked > 0, "{c:?}");
    assert_eq!(weighted.len() as u64, c.allowed);
    assert_eq!(plain.len(), weighted.len());
    assert!(plain.iter().all(|e| e.weight == 1.0));
    assert_eq!(c_plain.weight_sum, c.allowed as f64);

    // The weights are the inverse allowed propensities the server logged.
    let records: Vec<DecisionRecord> = std::fs::read_to_string(&log_path)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let let_through: Vec<f64> = records
        .iter()
        .filter(|r| r.decision != "block" && r.decided_by != Some(DecidedBy::NotAssessed))
        .map(|r| r.allowed_propensity.expect("logged"))
        .collect();
    assert_eq!(let_through.len() as u64, c.allowed);
    let expected: f64 = let_through.iter().map(|p| 1.0 / p).sum();
    let got: f64 = weighted.iter().map(|e| e.weight).sum();
    assert!(
        (got - expected).abs() < 1e-6 * expected,
        "{got} vs {expected}"
    );
    assert!((c.weight_sum - expected).abs() < 1e-6 * expected);

    // Weighted, the payments let through stand for every payment: the
    // frauds they count come close to the true number, where counting each
    // once misses most of the blocked ones.
    let frauds = all.iter().filter(|e| e.fraud).count() as f64;
    let seen = plain.iter().filter(|e| e.fraud).count() as f64;
    let restored: f64 = weighted.iter().filter(|e| e.fraud).map(|e| e.weight).sum();
    eprintln!("frauds: {frauds} in all, {seen} let through, {restored:.1} weighted");
    assert!(
        (restored - frauds).abs() < (seen - frauds).abs(),
        "true {frauds}, weighted {restored:.1}, unweighted {seen}"
    );
    assert!(
        seen < frauds * 0.8,
        "the server blocked frauds: {seen} of {frauds} seen"
    );

    // A boosted fit takes the weights and records where they came from;
    // logistic regression (linfa) refuses them.
    let served = Served {
        path: &log_path,
        log: &log,
        weighting: Weighting::InversePropensity,
    };
    let params = riskstream::train::gbt::Params {
        rounds: 30,
        ..Default::default()
    };
    let file = riskstream::train::train_served(
        &traffic,
        window,
        2,
        Family::GradientBoostedTrees(params),
        served,
        "served-1",
        "test",
    )
    .expect("trains");
    let s = &file.provenance["data"]["served"];
    assert_eq!(s["weighting"], "inverse-propensity");
    assert_eq!(s["payments"]["allowed"], c.allowed);
    let refused = riskstream::train::train_served(
        &traffic,
        window,
        2,
        Family::LogisticRegression,
        served,
        "served-2",
        "test",
    );
    assert!(matches!(refused, Err(TrainError::Unweightable)));
}
