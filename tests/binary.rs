//! The `riskstream` binary as an operator runs it: reflection and health
//! for stock tools, Prometheus metrics, SIGTERM with an open stream (and
//! what `--record` wrote), and configuration errors.

mod common;

use common::*;
use riskstream::proto::{self, risk_scorer_client::RiskScorerClient};
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;

fn model_arg() -> String {
    default_model_path().display().to_string()
}

#[tokio::test]
async fn reflection_and_health_serve_stock_tools() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let bin = Served::start(&["--model", &model_arg()]);
    let url = format!("http://{}", bin.grpc);

    let channel = tonic::transport::Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "riskstream.v1.RiskScorer".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();
    let listed = responses.next().await.expect("list").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"riskstream.v1.RiskScorer"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    let file = responses.next().await.expect("file").expect("ok");
    let Some(MessageResponse::FileDescriptorResponse(fd)) = file.message_response else {
        panic!("unexpected {file:?}");
    };
    assert!(!fd.file_descriptor_proto.is_empty());

    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "riskstream.v1.RiskScorer".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn metrics_are_scraped_and_carry_no_customer_data() {
    let bin = Served::start(&["--model", &model_arg()]);
    let mut c = bin.client().await;
    register(
        &mut c,
        registration(
            "pm_secret_1",
            "fp_secret_card",
            30 * DAY_MS,
            Some(home_session("s0")),
            customer(4242),
        ),
    )
    .await;
    for i in 0..5 {
        c.score(payment(
            &format!("pay_secret_{i}"),
            "pm_secret_1",
            1000,
            Some(home_session("s1")),
            customer(4242),
        ))
        .await
        .expect("scored");
    }
    let mut bad = payment("pay_bad", "pm_secret_1", -1, None, customer(4242));
    bad.currency = "eur".into();
    c.score(bad).await.expect_err("invalid");
    // Keep a stream open while scraping.
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::PaymentEvent>(4);
    let mut open = c
        .score_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    tx.send(payment(
        "pay_stream",
        "pm_secret_1",
        1000,
        Some(home_session("s2")),
        customer(4242),
    ))
    .await
    .expect("send");
    open.next().await.expect("outcome").expect("ok");

    let text = bin.scrape();
    let m = parse_metrics(&text);
    assert_eq!(
        m["riskstream_events_total{kind=\"payment\"}"], 7.0,
        "{text}"
    );
    assert_eq!(m["riskstream_events_total{kind=\"register\"}"], 1.0);
    assert_eq!(m["riskstream_invalid_events_total{kind=\"payment\"}"], 1.0);
    let decisions: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("riskstream_decisions_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(decisions, 6.0);
    assert!(
        m.keys()
            .any(|k| k.starts_with("riskstream_decisions_total{")
                && k.contains("decision=\"allow\"")
                && k.contains("risk_level=\"normal\""))
    );
    assert_eq!(m["riskstream_score_duration_seconds_count"], 6.0);
    assert!(
        m.contains_key("riskstream_score_duration_seconds_bucket{le=\"0.00001\"}"),
        "{text}"
    );
    assert_eq!(m["riskstream_risk_score_count"], 6.0);
    assert_eq!(m["riskstream_active_streams"], 1.0);
    assert!(m.contains_key("riskstream_holdout_total"));
    let version = default_model().version().to_string();
    assert_eq!(
        m[&format!("riskstream_model_info{{version=\"{version}\"}}")],
        1.0
    );
    for secret in [
        "secret",
        "customer4242",
        "example.com",
        "cus_4242",
        "37.164",
        "dev_home",
    ] {
        assert!(!text.contains(secret), "metrics leak {secret:?}");
    }
    drop(tx);
}

#[tokio::test]
async fn sigterm_with_an_open_stream_drains_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    let log_arg = log.display().to_string();
    let recorded = dir.path().join("recorded.traffic");
    let recorded_arg = recorded.display().to_string();
    let mut bin = Served::start(&[
        "--model",
        &model_arg(),
        "--decision-log",
        &log_arg,
        "--record",
        &recorded_arg,
        "--shutdown-grace",
        "5s",
    ]);
    let mut c = bin.client().await;
    register_home_card(&mut c).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::PaymentEvent>(128);
    let mut outcomes = c
        .score_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    for i in 0..100 {
        tx.send(payment(
            &format!("pay_{i}"),
            "pm_1",
            1000,
            Some(home_session("s")),
            customer(1),
        ))
        .await
        .expect("send");
    }
    for i in 0..100 {
        let o = outcomes.next().await.expect("outcome").expect("ok");
        assert_eq!(o.payment_id, format!("pay_{i}"));
    }
    // The client keeps its side open; the server is asked to stop.
    bin.signal("-TERM");
    let end = tokio::time::timeout(Duration::from_secs(10), outcomes.next())
        .await
        .expect("the stream ends within the grace period");
    match end {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    let status = bin.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let records = std::fs::read_to_string(&log).expect("decision log");
    assert_eq!(records.lines().count(), 100, "every decision flushed");
    // Every request received was recorded, and written out at shutdown.
    let kinds: Vec<&str> = riskstream::traffic::TrafficReader::open(&recorded)
        .expect("recorded traffic")
        .map(|r| riskstream::traffic::kind(&r.expect("record reads")))
        .collect();
    assert_eq!(kinds.len(), 101, "{kinds:?}");
    assert_eq!(kinds[0], "register");
    assert!(kinds[1..].iter().all(|k| *k == "payment"));
    drop(tx);
}

#[test]
fn configuration_errors_exit_64_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--listen", "127.0.0.1:0", "--holdout-rate", "2"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--holdout-rate"), "{err}");

    // The score policy's floor may not exceed its rate.
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--listen", "127.0.0.1:0", "--holdout-rate", "0.02"])
        .args(["--holdout-policy", "score", "--holdout-min-rate", "0.05"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--holdout-min-rate"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--model",
            "/nonexistent/model.json",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.json"), "{err}");
}

#[test]
fn every_flag_reads_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RISKSTREAM_HIGHEST_THRESHOLD", "500")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--highest-threshold"));
}

/// Writes `models/default.json` to `path` under another version, atomically
/// (a temporary file renamed over it).
fn write_model_version(path: &std::path::Path, version: &str) {
    write_model(path, version, |_| {});
}

/// Writes `models/default.json` to `path` under another version, changed
/// by `edit`, atomically (a temporary file renamed over it).
fn write_model(path: &std::path::Path, version: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model_arg()).expect("model")).expect("json");
    file["version"] = serde_json::Value::String(version.into());
    edit(&mut file);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, file.to_string()).expect("writes");
    std::fs::rename(&tmp, path).expect("renames");
}

/// A change to a model file.
type Edit = fn(&mut serde_json::Value);

/// The default model with absurd, though finite, parameters: each would
/// make every payment's log-odds overflow (and the payment UNKNOWN).
fn insane_models() -> [(&'static str, Edit); 3] {
    [
        ("weights[0]", |f| {
            f["estimator"]["logistic_regression"]["weights"][0] = 1e308.into()
        }),
        ("scale[3]", |f| {
            f["estimator"]["logistic_regression"]["scale"][3] = 1e-300.into()
        }),
        ("calibration.slope", |f| {
            f["calibration"]["slope"] = 1e300.into()
        }),
    ]
}

/// Streams payments until `stop` flips; returns each outcome's model
/// version, failing on any error or UNKNOWN level.
async fn score_under_load(
    c: &mut RiskScorerClient<tonic::transport::Channel>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::PaymentEvent>(64);
    let mut outcomes = c
        .score_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let sender = tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let ev = payment(
                &format!("load_{i}"),
                "pm_1",
                1000,
                Some(home_session("s")),
                customer(1),
            );
            if tx.send(ev).await.is_err() {
                break;
            }
            i += 1;
            if i.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    while let Some(o) = outcomes.next().await {
        let o = o.expect("outcome");
        assert!(o.error.is_none(), "{:?}", o.error);
        assert_ne!(
            o.risk_level,
            proto::RiskLevel::Unknown as i32,
            "no payment may see a missing or half-loaded model"
        );
        seen.lock().expect("lock").push(o.model_version);
    }
    sender.await.expect("sender");
}

#[tokio::test]
async fn a_changed_model_file_is_swapped_in_under_load_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.json");
    write_model_version(&model, "v-a");
    let bin = Served::start(&[
        "--model",
        model.to_str().expect("utf-8"),
        "--model-poll-interval",
        "200ms",
        "--holdout-rate",
        "0",
    ]);
    let mut c = bin.client().await;
    register_home_card(&mut c).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = tokio::spawn({
        let (stop, seen) = (stop.clone(), seen.clone());
        let mut c = c.clone();
        async move { score_under_load(&mut c, stop, seen).await }
    });
    let wait_for = |version: &'static str| {
        let seen = seen.clone();
        async move {
            let start = std::time::Instant::now();
            while !seen.lock().expect("lock").iter().any(|v| v == version) {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "{version} never served"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("v-a").await;
    write_model_version(&model, "v-b");
    wait_for("v-b").await;

    // A broken file is refused: the loaded model keeps serving; so is a
    // file whose parameters are finite but absurd (the load task fails on
    // any UNKNOWN outcome).
    let refused = |errors: f64| {
        let bin = &bin;
        async move {
            let start = std::time::Instant::now();
            loop {
                let m = parse_metrics(&bin.scrape());
                if m.get("riskstream_model_reload_errors_total")
                    .copied()
                    .unwrap_or(0.0)
                    >= errors
                {
                    assert_eq!(m.get("riskstream_model_info{version=\"v-b\"}"), Some(&1.0));
                    assert_eq!(m.get("riskstream_model_info{version=\"v-a\"}"), Some(&0.0));
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "reload error {errors} not counted"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    std::fs::write(&model, "{ not a model").expect("writes");
    refused(1.0).await;
    for (i, (param, edit)) in insane_models().into_iter().enumerate() {
        write_model(&model, "v-insane", edit);
        refused(2.0 + i as f64).await;
        assert_eq!(
            bin.lines("model reload failed")
                .iter()
                .filter(|l| l.contains(param))
                .count(),
            1,
            "the error names {param}"
        );
    }
    let served = seen.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.expect("load task");
    let seen = seen.lock().expect("lock");
    assert!(seen.len() > served, "scoring went on after the bad file");
    // Versions only move forward: a, then b, never back.
    let first_b = seen.iter().position(|v| v == "v-b").expect("b served");
    assert!(seen[..first_b].iter().all(|v| v == "v-a"));
    assert!(
        seen[first_b..].iter().all(|v| v == "v-b"),
        "the bad files changed nothing"
    );
}

#[test]
fn a_model_with_absurd_parameters_stops_start_up_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.json");
    for (param, edit) in insane_models() {
        write_model(&model, "v-insane", edit);
        let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
                "--state",
                "memory",
                "--model",
                model.to_str().expect("utf-8"),
            ])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1), "{param}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(param), "{param}: {err}");
    }
}

#[tokio::test]
async fn sighup_reloads_the_model_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.json");
    write_model_version(&model, "v-1");
    let bin = Served::start(&[
        "--model",
        model.to_str().expect("utf-8"),
        "--model-poll-interval",
        "off",
    ]);
    let mut c = bin.client().await;
    register_home_card(&mut c).await;
    let version = |o: proto::Outcome| o.model_version;
    let ev = |i: u32| {
        payment(
            &format!("p{i}"),
            "pm_1",
            1000,
            Some(home_session("s")),
            customer(1),
        )
    };
    assert_eq!(version(score_ok(&mut c, ev(0)).await), "v-1");
    write_model_version(&model, "v-2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        version(score_ok(&mut c, ev(1)).await),
        "v-1",
        "with polling off, only SIGHUP reloads"
    );
    bin.signal("-HUP");
    let start = std::time::Instant::now();
    let mut i = 2;
    while version(score_ok(&mut c, ev(i)).await) != "v-2" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        i += 1;
    }
}
