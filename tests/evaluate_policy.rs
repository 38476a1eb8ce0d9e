//! `riskstream evaluate-policy` through the real binary: simulated traffic,
//! whose every payment's truth is known, replayed through a server with a
//! 5% holdout and a decision log; the estimates from the log and the
//! traffic's fraud reports are checked against the truth, and the naive
//! figures are shown biased.

mod common;

use common::*;
use riskstream::decision::DecidedBy;
use riskstream::decision_log::DecisionRecord;
use riskstream::policy::{Estimate, Report};
use riskstream::proto;
use riskstream::proto::traffic_record::Request;
use riskstream::traffic::TrafficReader;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const THRESHOLDS: [u32; 3] = [65, 75, 85];

fn riskstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskstream"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("RISKSTREAM_LOG");
    c
}

/// Runs the binary off the async runtime (the server under test runs on it).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || riskstream().args(&args).output().expect("runs"))
        .await
        .expect("joins")
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(out: &Output) -> serde_json::Value {
    succeeded(out);
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// Simulates `customers` for `days` with `seed` into `traffic`.
fn simulate(traffic: &Path, seed: u64, customers: u32, days: u32) {
    let out = riskstream()
        .args(["simulate", "--seed", &seed.to_string()])
        .args(["--customers", &customers.to_string()])
        .args(["--days", &days.to_string(), "--out"])
        .arg(traffic)
        .output()
        .expect("simulate runs");
    succeeded(&out);
}

/// Replays `traffic` to the server at `addr` (host:port); every request answered.
async fn replay(traffic: &Path, addr: &str) {
    let out = run(vec![
        "replay".into(),
        traffic.display().to_string(),
        "--progress".into(),
        "off".into(),
        "--target".into(),
        format!("http://{addr}"),
    ])
    .await;
    succeeded(&out);
}

/// What a served run left behind.
struct Run {
    traffic: PathBuf,
    log: PathBuf,
}

/// Simulates `customers` for `days` with `seed`, replays the traffic through
/// a server with a 5% holdout writing a decision log, and stops it.
async fn serve_traffic(dir: &Path, seed: u64, customers: u32, days: u32) -> Run {
    let traffic = dir.join(format!("sim{seed}.traffic"));
    let log = dir.join(format!("decisions{seed}.jsonl"));
    simulate(&traffic, seed, customers, days);
    let server = TestServer::with(
        Setup {
            decision_log: Some(log.clone()),
            ..Setup::default()
        }
        .holdout(0.05),
    )
    .await;
    replay(&traffic, &server.addr.to_string()).await;
    server.shutdown().await;
    Run { traffic, log }
}

/// `evaluate-policy` on a served run, with `extra` flags.
async fn evaluate_policy(s: &Run, extra: &[&str]) -> Output {
    let mut args = vec![
        "evaluate-policy".to_owned(),
        "--decision-log".into(),
        s.log.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    run(args).await
}

/// The true figures of the payments the model's policy decided: recall,
/// false-positive rate, precision and block rate per threshold, from the
/// simulator's own record of which payments were fraudulent.
struct Truth {
    records: Vec<DecisionRecord>,
    fraud: HashMap<String, bool>,
}

impl Truth {
    fn read(s: &Run) -> Truth {
        let mut fraud = HashMap::new();
        for r in TrafficReader::open(&s.traffic).expect("opens") {
            let r = r.expect("reads");
            if let Some(Request::Payment(p)) = r.request {
                fraud.insert(p.payment_id, !r.scenario.is_empty());
            }
        }
        let records = std::fs::read_to_string(&s.log)
            .expect("decision log")
            .lines()
            .map(|l| serde_json::from_str::<DecisionRecord>(l).expect("a record"))
            .filter(|r| r.decided_by == Some(DecidedBy::Model))
            .collect();
        Truth { records, fraud }
    }

    fn is_fraud(&self, r: &DecisionRecord) -> bool {
        self.fraud[&r.payment_id]
    }

    /// `[recall, false-positive rate, precision, block rate]` at `t`.
    fn figures(&self, t: u32) -> [f64; 4] {
        let count = |f: &dyn Fn(&DecisionRecord) -> bool| {
            self.records.iter().filter(|r| f(r)).count() as f64
        };
        let frauds = count(&|r| self.is_fraud(r));
        let legit = self.records.len() as f64 - frauds;
        let above = count(&|r| r.true_score >= t);
        let frauds_above = count(&|r| r.true_score >= t && self.is_fraud(r));
        [
            frauds_above / frauds,
            (above - frauds_above) / legit,
            frauds_above / above,
            above / self.records.len() as f64,
        ]
    }
}

fn interval(e: &serde_json::Value) -> (Option<f64>, f64, f64) {
    (
        e["value"].as_f64(),
        e["lower"].as_f64().expect("lower"),
        e["upper"].as_f64().expect("upper"),
    )
}

/// Per threshold of `THRESHOLDS`: whether the recall and false-positive
/// rate intervals hold the truth, and the naive and true recall.
fn check(report: &serde_json::Value, truth: &Truth) -> Vec<(bool, bool, f64, f64)> {
    let counts = &report["counts"];
    let records = &truth.records;
    assert_eq!(counts["payments"], records.len() as u64);
    let holdout = records.iter().filter(|r| r.holdout).count() as u64;
    assert_eq!(counts["holdout_payments"], holdout);
    // Every fraud is reported in the traffic, and the labels are read as of
    // its end: the frauds seen are the true frauds let through.
    let seen = records
        .iter()
        .filter(|r| r.decision != "block" && truth.is_fraud(r))
        .count() as u64;
    assert_eq!(counts["observed_frauds"], seen);
    let estimates = report["estimates"].as_array().expect("estimates");
    assert_eq!(estimates.len(), THRESHOLDS.len());
    THRESHOLDS
        .iter()
        .zip(estimates)
        .map(|(&t, e)| {
            assert_eq!(e["threshold"], t);
            let [recall, fpr, _, block_rate] = truth.figures(t);
            let (b, lo, hi) = interval(&e["block_rate"]);
            assert!(
                (b.expect("block rate") - block_rate).abs() < 1e-12 && lo == hi,
                "the block rate is known exactly"
            );
            let (_, r_lo, r_hi) = interval(&e["recall"]);
            let (_, f_lo, f_hi) = interval(&e["false_positive_rate"]);
            let naive = e["naive_recall"]["value"].as_f64().expect("naive recall");
            (
                (r_lo..=r_hi).contains(&recall),
                (f_lo..=f_hi).contains(&fpr),
                naive,
                recall,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimates_from_a_served_log_hold_the_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let served = serve_traffic(dir.path(), 21, 3000, 14).await;
    let truth = Truth::read(&served);
    let thresholds = "65,75,85";
    let report = json(
        &evaluate_policy(
            &served,
            &[
                "--traffic",
                &served.traffic.display().to_string(),
                "--threshold",
                thresholds,
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(report["model_version"], "sim-lr-2026.11.2");
    assert_eq!(report["confidence"], 0.95);
    let checks = check(&report, &truth);
    let covered: usize = checks
        .iter()
        .map(|(r, f, _, _)| usize::from(*r) + usize::from(*f))
        .sum();
    assert!(
        covered >= 5,
        "{covered} of 6 intervals hold the truth: {checks:?}"
    );
    // Unweighted, the blocked frauds vanish: naive recall at 75 is far below.
    let (_, _, naive, recall) = checks[1];
    assert!(naive < recall / 2.0, "naive {naive} vs true {recall}");

    // The same labels as a JSON-lines file give the same figures.
    let labels = dir.path().join("labels.jsonl");
    let mut text = String::new();
    for r in TrafficReader::open(&served.traffic).expect("opens") {
        if let Some(Request::Feedback(f)) = r.expect("reads").request {
            let kind = riskstream::proto::FeedbackKind::try_from(f.kind)
                .expect("kind")
                .as_str_name()
                .to_owned();
            text.push_str(
                &serde_json::json!({
                    "payment_id": f.payment_id,
                    "kind": kind,
                    "reported_at_ms": f.reported_at_ms,
                })
                .to_string(),
            );
            text.push('\n');
        }
    }
    std::fs::write(&labels, text).expect("labels written");
    let from_labels = json(
        &evaluate_policy(
            &served,
            &[
                "--labels",
                &labels.display().to_string(),
                "--threshold",
                "65",
                "--threshold",
                "75",
                "--threshold",
                "85",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(from_labels, report);

    // The text report: one block per threshold, the default ones.
    let out = evaluate_policy(
        &served,
        &["--traffic", &served.traffic.display().to_string()],
    )
    .await;
    succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for t in [65, 70, 75, 80, 85] {
        assert!(text.contains(&format!("at true score >= {t} ")), "{text}");
    }
    assert!(text.contains("recall") && text.contains("naive"), "{text}");

    // Payments too young for their labels at --as-of are left out: the
    // simulated traffic starts on 2026-01-01.
    let young = json(
        &evaluate_policy(
            &served,
            &[
                "--traffic",
                &served.traffic.display().to_string(),
                "--as-of",
                "2026-01-10",
                "--min-label-age",
                "2days",
                "--json",
            ],
        )
        .await,
    );
    let cutoff = riskstream::config::date_ms("as-of", "2026-01-08").expect("date");
    let old_enough = truth.records.iter().filter(|r| r.ts_ms <= cutoff).count() as u64;
    assert_eq!(young["counts"]["payments"], old_enough);
    assert!(old_enough > 0 && old_enough < truth.records.len() as u64);
    assert_eq!(young["to_ms"], cutoff + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_old_logs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("old.jsonl");
    std::fs::write(
        &log,
        r#"{"ts_ms":10,"payment_id":"p1","model_version":"m1","risk_level":"normal","decision":"allow","reason":"","true_score":20,"reported_score":20,"true_probability":0.01,"reported_probability":0.01,"holdout":false,"propensity":0.99}"#,
    )
    .expect("written");
    let labels = dir.path().join("labels.jsonl");
    std::fs::write(&labels, "").expect("written");
    let s = Run {
        traffic: dir.path().join("none"),
        log,
    };
    let labels_flag = labels.display().to_string();
    let out = evaluate_policy(&s, &["--labels", &labels_flag, "--threshold", "101"]).await;
    assert_eq!(out.status.code(), Some(64), "a bad flag is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
    let out = evaluate_policy(&s, &["--labels", &labels_flag, "--confidence", "1"]).await;
    assert_eq!(out.status.code(), Some(64));
    // Labels are required, from one place.
    let out = evaluate_policy(&s, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = evaluate_policy(&s, &["--labels", &labels_flag]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("old.jsonl:1") && err.contains("allowed_propensity"),
        "{err}"
    );
}

/// The ground truth over ten seeds: for thresholds 65, 75 and 85 the truth
/// lies inside the 95% intervals of recall and false-positive rate in at
/// least 54 of the 60, and naive recall at 75 is far below the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ground_truth_over_ten_seeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut covered, mut total) = (0, 0);
    for seed in 1..=10 {
        let served = serve_traffic(dir.path(), seed, 3000, 14).await;
        let truth = Truth::read(&served);
        let report = json(
            &evaluate_policy(
                &served,
                &[
                    "--traffic",
                    &served.traffic.display().to_string(),
                    "--threshold",
                    "65,75,85",
                    "--json",
                ],
            )
            .await,
        );
        let checks = check(&report, &truth);
        for (r, f, _, _) in &checks {
            covered += usize::from(*r) + usize::from(*f);
            total += 2;
        }
        let (_, _, naive, recall) = checks[1];
        eprintln!("seed {seed}: {checks:?}");
        assert!(
            naive < recall / 2.0,
            "seed {seed}: naive {naive} vs true {recall}"
        );
    }
    eprintln!("{covered} of {total} intervals hold the truth");
    assert!(covered * 10 >= total * 9, "{covered} of {total}");
}

/// `EvaluatePolicy` at `thresholds`.
async fn evaluate_call(srv: &Served, thresholds: &[u32]) -> proto::EvaluatePolicyResponse {
    srv.admin_client()
        .await
        .evaluate_policy(proto::EvaluatePolicyRequest {
            thresholds: thresholds.to_vec(),
            ..Default::default()
        })
        .await
        .expect("EvaluatePolicy answers")
        .into_inner()
}

/// The bits of a figure (NaN, for "cannot tell", equals itself).
fn bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn same_estimate(call: &Option<proto::Estimate>, cli: &Estimate, what: &str) {
    let call = call.as_ref().expect("an estimate");
    assert_eq!(
        [bits(call.value), bits(call.lower), bits(call.upper)],
        [
            bits(cli.value.unwrap_or(f64::NAN)),
            bits(cli.lower),
            bits(cli.upper)
        ],
        "{what}: the call says {call:?}, the CLI {cli:?}"
    );
}

/// The call's figures are the CLI's, bit for bit.
fn same_figures(call: &proto::EvaluatePolicyResponse, cli: &Report) {
    assert_eq!(call.estimates.len(), cli.estimates.len());
    for (c, f) in call.estimates.iter().zip(&cli.estimates) {
        let t = f.threshold;
        assert_eq!(c.threshold, t);
        same_estimate(&c.recall, &f.recall, &format!("recall at {t}"));
        same_estimate(
            &c.false_positive_rate,
            &f.false_positive_rate,
            &format!("false-positive rate at {t}"),
        );
        same_estimate(&c.precision, &f.precision, &format!("precision at {t}"));
        same_estimate(&c.block_rate, &f.block_rate, &format!("block rate at {t}"));
        for (call, cli) in [
            (c.naive_recall, f.naive_recall.value),
            (
                c.naive_false_positive_rate,
                f.naive_false_positive_rate.value,
            ),
            (c.naive_precision, f.naive_precision.value),
        ] {
            assert_eq!(
                bits(call),
                bits(cli.unwrap_or(f64::NAN)),
                "naive figure at {t}"
            );
        }
        assert_eq!(c.payments, cli.counts.payments);
        assert_eq!(c.holdout_payments, cli.counts.holdout_payments);
        assert_eq!(c.observed_frauds, cli.counts.observed_frauds);
    }
}

/// Simulated traffic replayed through the binary `srv` (a 5% holdout and
/// a decision log at `log`); the CLI's figures from that log and the
/// traffic's fraud reports.
async fn replay_and_evaluate(srv: &Served, traffic: &Path, log: &Path) -> Report {
    replay(traffic, &srv.grpc).await;
    // The log is complete once the server says every record is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let payments = TrafficReader::open(traffic)
        .expect("opens")
        .filter(|r| {
            matches!(
                r.as_ref().map(|r| &r.request),
                Ok(Some(Request::Payment(_)))
            )
        })
        .count();
    while std::fs::read_to_string(log).map_or(0, |t| t.lines().count()) < payments {
        assert!(
            std::time::Instant::now() < deadline,
            "the decision log is complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = run(vec![
        "evaluate-policy".into(),
        "--decision-log".into(),
        log.display().to_string(),
        "--traffic".into(),
        traffic.display().to_string(),
        "--threshold".into(),
        "65,75,85".into(),
        "--json".into(),
    ])
    .await;
    serde_json::from_value(json(&out)).expect("a report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_the_cli_and_the_gauges_agree_and_the_call_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, log, data) = (
        dir.path().join("sim.traffic"),
        dir.path().join("decisions.jsonl"),
        dir.path().join("data"),
    );
    simulate(&traffic, 23, 2000, 14);
    let args = |log: &Path| {
        vec![
            "--holdout-rate".to_owned(),
            "0.05".into(),
            "--decision-log".into(),
            log.display().to_string(),
            "--policy-metrics-interval".into(),
            "200ms".into(),
        ]
    };
    let mut srv = Served::launch(Launch {
        args: args(&log),
        data_dir: Some(data.clone()),
        ..Launch::default()
    });
    let cli = replay_and_evaluate(&srv, &traffic, &log).await;
    assert!(cli.counts.holdout_payments > 0 && cli.counts.observed_frauds > 0);
    let call = evaluate_call(&srv, &THRESHOLDS).await;
    same_figures(&call, &cli);
    let recall = call.estimates[1].recall.as_ref().expect("recall at 75");
    assert!(
        recall.value > 0.0 && recall.lower < recall.upper,
        "{recall:?}"
    );
    assert_eq!(call.model_version, "sim-lr-2026.11.2");

    // No threshold: the live highest-risk one (75), which the gauges show.
    let live = evaluate_call(&srv, &[]).await;
    assert_eq!(live.estimates.len(), 1);
    assert_eq!(live.estimates[0], call.estimates[1]);
    let want = |e: &Option<proto::Estimate>| bits(e.as_ref().expect("estimate").value);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let gauges = [
            "riskstream_policy_recall",
            "riskstream_policy_false_positive_rate",
            "riskstream_policy_precision",
        ]
        .map(|g| bits(srv.metric(g)));
        let e = &live.estimates[0];
        if gauges
            == [
                want(&e.recall),
                want(&e.false_positive_rate),
                want(&e.precision),
            ]
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gauges {gauges:?} show the call's figures {e:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The same figures after a restart: the store kept the decisions.
    srv.terminate();
    srv.wait(std::time::Duration::from_secs(30)).await;
    let srv = Served::launch(Launch {
        args: args(&dir.path().join("decisions-after.jsonl")),
        data_dir: Some(data),
        ..Launch::default()
    });
    let after = evaluate_call(&srv, &THRESHOLDS).await;
    same_figures(&after, &cli);

    // Bad settings are refused, naming the field.
    let err = srv
        .admin_client()
        .await
        .evaluate_policy(proto::EvaluatePolicyRequest {
            thresholds: vec![101],
            ..Default::default()
        })
        .await
        .expect_err("threshold 101 is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("101"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_every_replica_answers_the_call_with_the_clis_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, log) = (
        dir.path().join("sim.traffic"),
        dir.path().join("decisions.jsonl"),
    );
    simulate(&traffic, 24, 2000, 14);
    let url = redis_server::shared().url();
    let prefix = redis_server::prefix();
    let a = Served::start(&[
        "--state",
        &url,
        "--redis-prefix",
        &prefix,
        "--holdout-rate",
        "0.05",
        "--decision-log",
        &log.display().to_string(),
    ]);
    let cli = replay_and_evaluate(&a, &traffic, &log).await;
    assert!(cli.counts.holdout_payments > 0 && cli.counts.observed_frauds > 0);
    // A's decisions are written after its answers: wait until all are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while evaluate_call(&a, &THRESHOLDS).await.estimates[0].payments < cli.counts.payments {
        assert!(
            std::time::Instant::now() < deadline,
            "A's decisions reach Redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    same_figures(&evaluate_call(&a, &THRESHOLDS).await, &cli);
    // A replica that scored nothing answers the same from Redis.
    let b = Served::start(&["--state", &url, "--redis-prefix", &prefix]);
    same_figures(&evaluate_call(&b, &THRESHOLDS).await, &cli);
}
