//! The offline tools through the real binary: `simulate` and `convert`
//! write recorded traffic that the serving path accepts.

use riskstream::engine::{Engine, EngineConfig};
use riskstream::metrics::Metrics;
use riskstream::model::{Model, ModelHandle};
use riskstream::proto::{self, traffic_record::Request};
use riskstream::state::{MemoryStore, StoreLimits};
use riskstream::traffic::TrafficReader;
use riskstream::validate::Clock;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn riskstream(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(args)
        .output()
        .expect("runs the binary");
    assert!(
        out.status.success(),
        "riskstream {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `riskstream simulate` with `seed`, `customers` and `days` into `out`.
fn simulate(seed: &str, customers: &str, days: &str, out: &Path) {
    riskstream(&[
        "simulate",
        "--seed",
        seed,
        "--customers",
        customers,
        "--days",
        days,
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
}

fn records(path: &Path) -> Vec<proto::TrafficRecord> {
    TrafficReader::open(path)
        .expect("opens")
        .collect::<Result<_, _>>()
        .expect("every record reads")
}

fn engine() -> Engine {
    let model = Model::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/default.json"
    )))
    .expect("default model");
    Engine::new(
        Arc::new(MemoryStore::new(StoreLimits::default(), 1)),
        ModelHandle::new(model),
        EngineConfig::default(),
        Metrics::noop(),
        None,
    )
}

/// Sends every record through the engine as a server would; returns the
/// number of payments scored.
fn serve_all(records: &[proto::TrafficRecord]) -> usize {
    let engine = engine();
    let mut scored = 0;
    for r in records {
        let clock = Clock {
            now_ms: r.at_ms,
            max_future_skew_ms: 0,
        };
        match r.request.as_ref().expect("request") {
            Request::Register(req) => {
                engine
                    .register_message(req, &clock)
                    .expect("registration accepted");
            }
            Request::Payment(ev) => {
                let outcome = engine
                    .score_message(ev, &clock)
                    .unwrap_or_else(|e| panic!("payment {} rejected: {e}", ev.payment_id));
                assert!(outcome.error.is_none(), "{:?}", outcome.error);
                scored += 1;
            }
            Request::Feedback(fb) => {
                engine
                    .feedback_message(fb, &clock)
                    .expect("feedback accepted");
            }
        }
    }
    scored
}

#[test]
fn simulate_is_deterministic_and_its_traffic_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |seed: &str, name: &str| {
        let path = dir.path().join(name);
        simulate(seed, "300", "6", &path);
        std::fs::read(&path).expect("written")
    };
    let a = run("11", "a.traffic");
    assert_eq!(a, run("11", "b.traffic"), "same seed, same bytes");
    assert_ne!(a, run("12", "c.traffic"), "another seed, other traffic");

    let recs = records(&dir.path().join("a.traffic"));
    assert!(
        recs.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "time order"
    );
    let mut payments = HashMap::new();
    let mut scenarios = HashSet::new();
    let mut registered = HashSet::new();
    for r in &recs {
        match r.request.as_ref().expect("request") {
            Request::Register(req) => {
                registered.insert(req.payment_method.as_ref().expect("method").id.clone());
            }
            Request::Payment(p) => {
                let pm = &p.payment_method.as_ref().expect("method").id;
                assert!(
                    pm.is_empty() || registered.contains(pm),
                    "payment {} uses a method registered earlier",
                    p.payment_id
                );
                payments.insert(p.payment_id.clone(), (r.at_ms, r.scenario.clone()));
                if !r.scenario.is_empty() {
                    scenarios.insert(r.scenario.clone());
                }
            }
            Request::Feedback(f) => {
                let (at, scenario) = payments
                    .get(&f.payment_id)
                    .expect("feedback names an earlier payment");
                assert!(r.at_ms > *at, "labels arrive after the payment");
                if f.kind != proto::FeedbackKind::Legitimate as i32 {
                    assert!(
                        !scenario.is_empty(),
                        "fraud reports name fraudulent payments"
                    );
                }
            }
        }
    }
    let want: HashSet<String> = riskstream::sim::Scenario::ALL
        .iter()
        .map(|s| s.name().to_owned())
        .collect();
    assert_eq!(scenarios, want, "every fraud scenario appears");
    assert_eq!(serve_all(&recs), payments.len());
}

#[test]
fn convert_handbook_csv_writes_traffic_the_server_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("tx.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&csv).expect("creates"),
        flate2::Compression::fast(),
    );
    gz.write_all(
        b"TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_TIME_DAYS,TX_FRAUD,TX_FRAUD_SCENARIO
0,2018-04-01 00:00:31,596,3156,57.16,31,0,0,0
1,2018-04-01 00:02:10,4961,3412,81.51,130,0,0,0
2,2018-04-01 07:19:05,2,1365,146.00,26345,0,1,2
3,2018-04-09 08:00:00,596,3156,12.30,0,8,0,0
",
    )
    .expect("writes");
    gz.finish().expect("finishes");
    let out = dir.path().join("hb.traffic");
    riskstream(&[
        "convert",
        "--format",
        "handbook-csv",
        csv.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    ]);
    let recs = records(&out);
    let payments: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::Payment(p)) => Some(p),
            _ => None,
        })
        .collect();
    let ids: Vec<_> = payments.iter().map(|p| p.payment_id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3"]);
    assert_eq!(payments[2].amount, 14600);
    assert_eq!(payments[2].merchant_id, "1365");
    let feedback: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::Feedback(f)) => Some((r.at_ms, f.payment_id.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(feedback.len(), 1);
    assert_eq!(feedback[0].1, "2");
    assert_eq!(
        feedback[0].0 - payments[2].created_at_ms,
        7 * 86_400_000,
        "reported 7 days later"
    );
    assert_eq!(serve_all(&recs), 4);

    // A missing input is a clear error, not a panic.
    let bad = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "convert",
            "--format",
            "handbook-csv",
            "/nonexistent.csv",
            "/tmp/x",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.csv"));
}

#[test]
fn a_trained_model_round_trips_through_its_file_with_the_same_scores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traffic = dir.path().join("sim.traffic");
    simulate("5", "400", "8", &traffic);
    let window = riskstream::train::TimeWindow::default();
    let file = riskstream::train::train_traffic(
        &traffic,
        window,
        riskstream::features::LATEST_FEATURE_SET,
        riskstream::train::Family::LogisticRegression,
        "rt-1",
        "test",
    )
    .expect("trains");
    let in_memory = Model::from_file(file.clone()).expect("valid");
    // Saved as the binary saves it, then loaded as the server loads it.
    let path = dir.path().join("m.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file).expect("json")).expect("writes");
    let loaded = Model::load(&path).expect("loads");
    let (examples, _) = riskstream::train::collect_traffic(&traffic, window).expect("collects");
    assert!(examples.len() > 500, "{} examples", examples.len());
    for e in &examples {
        let x = riskstream::features::FeatureVector(e.x);
        let a = in_memory.predict(&x).expect("scores");
        let b = loaded.predict(&x).expect("scores");
        assert_eq!(a, b, "same probability, score and contributions");
    }
    // The binary trains the same file from the same traffic.
    let out = dir.path().join("bin.json");
    riskstream(&[
        "train",
        "--traffic",
        traffic.to_str().expect("utf-8"),
        "--version",
        "rt-1",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    let bin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("reads")).expect("json");
    let lib: serde_json::Value = serde_json::to_value(&file).expect("json");
    assert_eq!(bin["estimator"], lib["estimator"]);
    assert_eq!(bin["calibration"], lib["calibration"]);
    assert_eq!(bin["score_map"], lib["score_map"]);
}

#[test]
fn no_feature_sees_an_event_or_a_label_from_its_future() {
    use riskstream::features::Feature;
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.traffic");
    simulate("9", "600", "24", &full);
    // The same traffic cut at day 20: what a server had seen by then.
    let recs = records(&full);
    let first_payment = recs
        .iter()
        .find(|r| matches!(r.request, Some(Request::Payment(_))))
        .expect("payments")
        .at_ms;
    let cut = first_payment + 20 * 86_400_000;
    let prefix = dir.path().join("prefix.traffic");
    let mut w = riskstream::traffic::TrafficWriter::create(&prefix).expect("creates");
    for r in recs.iter().take_while(|r| r.at_ms < cut) {
        w.write(r).expect("writes");
    }
    w.flush().expect("flushes");
    assert!(
        recs.iter()
            .any(|r| r.at_ms >= cut && matches!(r.request, Some(Request::Feedback(_)))),
        "labels arrive after the cut"
    );

    let window = riskstream::train::TimeWindow::default();
    let (all, _) = riskstream::train::collect_traffic(&full, window).expect("collects");
    let (seen, _) = riskstream::train::collect_traffic(&prefix, window).expect("collects");
    assert!(seen.len() > 1_000, "{} payments before the cut", seen.len());
    assert!(all.len() > seen.len());
    for (a, b) in all.iter().zip(&seen) {
        assert_eq!((a.at_ms, &a.card), (b.at_ms, &b.card));
        assert_eq!(
            a.x, b.x,
            "payment at {}: features changed by later traffic",
            a.at_ms
        );
    }
    // Not vacuous: labels and history did reach these features.
    let nonzero = |f: Feature| seen.iter().filter(|e| e.x[f as usize] != 0.0).count();
    for f in [
        Feature::MerchantFraudRate1dDelayed,
        Feature::MerchantPlainFraudRate30dDelayed,
        Feature::CardPeakRatio7d,
        Feature::CardCount30d,
    ] {
        assert!(nonzero(f) > 10, "{} is almost never set", f.name());
    }
}
