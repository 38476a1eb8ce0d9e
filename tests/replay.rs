//! `riskstream replay` through the real binary against a live server on
//! loopback: the report, outcomes files complete and in order, scores equal
//! to in-process evaluation, open-loop pacing (rate and recorded time),
//! outcome checking, Ctrl-C, and recording.

mod common;

use common::*;
use riskstream::proto::{self, traffic_record::Request};
use riskstream::server::fixed::{self, FixedService};
use riskstream::traffic::TrafficReader;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn riskstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskstream"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG");
    c
}

/// Runs the binary off the async runtime (the server under test runs on it).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || riskstream().args(&args).output().expect("runs"))
        .await
        .expect("joins")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `riskstream replay TRAFFIC` against `addr`, without progress output,
/// with the `extra` flags.
async fn replay(traffic: &Path, addr: SocketAddr, extra: &[&str]) -> Output {
    let mut args = strings(&[
        "replay",
        &traffic.display().to_string(),
        "--progress",
        "off",
        "--target",
        &format!("http://{addr}"),
    ]);
    args.extend(strings(extra));
    run(args).await
}

/// Asserts that the command behind `out` succeeded.
fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Simulated traffic in `dir`; its records.
fn simulate(dir: &Path, customers: u32, days: u32) -> (PathBuf, Vec<proto::TrafficRecord>) {
    let path = dir.join("sim.traffic");
    let out = riskstream()
        .args(["simulate", "--seed", "11", "--customers"])
        .arg(customers.to_string())
        .arg("--days")
        .arg(days.to_string())
        .arg("--out")
        .arg(&path)
        .output()
        .expect("simulate runs");
    succeeded(&out);
    let records = TrafficReader::open(&path)
        .expect("opens")
        .collect::<Result<Vec<_>, _>>()
        .expect("reads");
    (path, records)
}

fn payment_ids(records: &[proto::TrafficRecord]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::Payment(p)) => Some(p.payment_id.clone()),
            _ => None,
        })
        .collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `(stream, payment_id)` of each line of an outcomes file, in file order.
fn outcome_lines(path: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .expect("outcomes file")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            for field in [
                "risk_score",
                "fraud_probability",
                "risk_level",
                "decision",
                "latency_us",
            ] {
                assert!(v.get(field).is_some(), "{field} missing in {l}");
            }
            (
                v["stream"].as_u64().expect("stream"),
                v["payment_id"].as_str().expect("payment_id").to_owned(),
            )
        })
        .collect()
}

async fn test_server() -> TestServer {
    TestServer::with(Setup::default().holdout(0.0)).await
}

/// Replays `traffic` against `server` (one stream, strict order); the
/// outcome lines without their latencies.
async fn replay_outcomes(
    traffic: &Path,
    server: &TestServer,
    out: &Path,
) -> Vec<serde_json::Value> {
    succeeded(
        &replay(
            traffic,
            server.addr,
            &["--outcomes-out", &out.display().to_string()],
        )
        .await,
    );
    std::fs::read_to_string(out)
        .expect("outcomes")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v.as_object_mut().expect("object").remove("latency_us");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_reports_and_its_served_scores_evaluate_as_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    let server = test_server().await;
    let outcomes = dir.path().join("outcomes.jsonl");
    let out = replay(
        &traffic,
        server.addr,
        &["--outcomes-out", &outcomes.display().to_string(), "--json"],
    )
    .await;
    succeeded(&out);
    let report = json(&out);
    let payments = payment_ids(&records);
    assert_eq!(report["events"].as_u64(), Some(records.len() as u64));
    assert_eq!(
        report["by_kind"]["payment"].as_u64(),
        Some(payments.len() as u64)
    );
    assert_eq!(report["errors"], serde_json::json!({}));
    assert_eq!(
        report["latency_us"]["count"].as_u64(),
        Some(payments.len() as u64)
    );
    assert!(report["latency_us"]["p99"].as_f64().expect("p99") > 0.0);
    let decided: u64 = report["decisions"]
        .as_object()
        .expect("decisions")
        .values()
        .map(|v| v.as_u64().expect("count"))
        .sum();
    assert_eq!(decided, payments.len() as u64);

    // One stream: the outcomes come back in the file's order, all of them.
    let lines = outcome_lines(&outcomes);
    let ids: Vec<String> = lines.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, payments);

    // The scores the server streamed back measure as the in-process path.
    let served = run(strings(&[
        "evaluate",
        "--traffic",
        &traffic.display().to_string(),
        "--outcomes",
        &outcomes.display().to_string(),
        "--json",
    ]))
    .await;
    succeeded(&served);
    let in_process = run(strings(&[
        "evaluate",
        "--traffic",
        &traffic.display().to_string(),
        "--json",
    ]))
    .await;
    succeeded(&in_process);
    let (served, in_process) = (json(&served), json(&in_process));
    assert!(served["payments"].as_u64().expect("payments") > 0);
    assert_eq!(served, in_process);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_are_complete_and_in_order_per_stream_or_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    let payments = payment_ids(&records);
    let position: HashMap<&str, usize> = payments
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let server = test_server().await;
    for mode in [
        ["--mode", "stream", "--order", "relaxed"],
        ["--mode", "unary", "--order", "strict"],
    ] {
        let outcomes = dir.path().join(format!("{}.jsonl", mode[1]));
        let outcomes_arg = outcomes.display().to_string();
        let mut args = vec![
            "--concurrency",
            "3",
            "--connections",
            "2",
            "--json",
            "--outcomes-out",
            &outcomes_arg,
        ];
        args.extend(mode);
        let out = replay(&traffic, server.addr, &args).await;
        assert!(
            out.status.success(),
            "{mode:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = outcome_lines(&outcomes);
        let unique: HashSet<&str> = lines.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(lines.len(), payments.len(), "{mode:?}");
        assert_eq!(
            unique.len(),
            payments.len(),
            "{mode:?}: an outcome is repeated"
        );
        let streams: HashSet<u64> = lines.iter().map(|(s, _)| *s).collect();
        assert!(streams.len() > 1, "{mode:?}: all on one stream");
        if mode[1] == "stream" {
            // Each stream answers in the order its payments were sent.
            let mut last: HashMap<u64, usize> = HashMap::new();
            for (stream, id) in &lines {
                let at = position[id.as_str()];
                if let Some(prev) = last.insert(*stream, at) {
                    assert!(prev < at, "stream {stream} answered {id} out of order");
                }
            }
        }
    }
    // The other server state was fed twice; both replays still succeeded.
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_run_lands_within_five_percent_of_its_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    assert!(records.len() > 500, "{} records", records.len());
    let server = test_server().await;
    let started = Instant::now();
    let out = replay(
        &traffic,
        server.addr,
        &[
            // Well below what a debug build of the server absorbs.
            "--rate",
            "200",
            "--duration",
            "2s",
            "--order",
            "relaxed",
            "--concurrency",
            "2",
            "--json",
        ],
    )
    .await;
    let wall = started.elapsed();
    succeeded(&out);
    let report = json(&out);
    let rate = report["events_per_s"].as_f64().expect("rate");
    let events = report["events"].as_u64().expect("events");
    assert!(
        (rate - 200.0).abs() <= 10.0,
        "{rate} events/s, {events} events"
    );
    assert!(
        (390..=401).contains(&events),
        "{events} events in 2 s at 200/s"
    );
    assert!(
        wall >= Duration::from_millis(1_900),
        "sent too fast: {wall:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speed_replays_the_recorded_time_scaled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    let first = records.first().expect("records").at_ms;
    let last = records.last().expect("records").at_ms;
    // The recorded span, played in 3 s.
    let speed = (last - first) as f64 / 3_000.0;
    let server = test_server().await;
    let out = replay(
        &traffic,
        server.addr,
        &[
            "--speed",
            &speed.to_string(),
            "--order",
            "relaxed",
            "--json",
        ],
    )
    .await;
    succeeded(&out);
    let report = json(&out);
    let elapsed = report["elapsed_s"].as_f64().expect("elapsed");
    assert!(
        (2.85..3.3).contains(&elapsed),
        "{elapsed} s for a 3 s schedule"
    );
    assert_eq!(report["events"].as_u64(), Some(records.len() as u64));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_for_another_payment_fails_the_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, _) = simulate(dir.path(), 50, 2);
    for (service, should_pass) in [
        (FixedService::new(), true),
        (FixedService::wrong_ids(), false),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fixed::serve(service, listener, async {
            let _ = stopped.await;
        }));
        let out = replay(&traffic, addr, &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if should_pass {
            assert!(out.status.success(), "{stderr}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("outcome mismatch"), "{stderr}");
            assert!(stderr.contains("not_the_payment_sent"), "{stderr}");
        }
        let _ = stop.send(());
        task.await.expect("joins").expect("fixed server stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_a_replay_with_a_partial_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    let server = test_server().await;
    let child = riskstream()
        .args(["replay"])
        .arg(&traffic)
        .args(["--rate", "100", "--json", "--progress", "off", "--target"])
        .arg(format!("http://{}", server.addr))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replay starts");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");
    assert!(started.elapsed() < Duration::from_secs(10), "slow to stop");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["interrupted"], serde_json::json!(true));
    let events = report["events"].as_u64().expect("events");
    assert!(
        events > 0 && events < records.len() as u64,
        "{events} events"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_traffic_replays_to_the_same_outcomes() {
    use riskstream::replay::record::{QUEUE, Recorder};
    let dir = tempfile::tempdir().expect("tempdir");
    let (traffic, records) = simulate(dir.path(), 300, 3);
    let recorded = dir.path().join("recorded.traffic");
    let mut setup = Setup::default().holdout(0.0);
    setup.options.recorder = Some(
        Recorder::open(&recorded, QUEUE, riskstream::metrics::Metrics::noop()).expect("opens"),
    );
    let first = TestServer::with(setup).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let original = replay_outcomes(&traffic, &first, &dir.path().join("first.jsonl")).await;
    // Stopping the server writes out what it recorded.
    first.shutdown().await;

    let again = TrafficReader::open(&recorded)
        .expect("recorded file opens")
        .collect::<Result<Vec<_>, _>>()
        .expect("every recorded record reads");
    assert_eq!(again.len(), records.len());
    for (r, a) in records.iter().zip(&again) {
        assert_eq!(r.request, a.request, "recorded as received, in order");
        assert!(a.at_ms >= before, "arrival time, not the recorded time");
    }

    let second = test_server().await;
    let replayed = replay_outcomes(&recorded, &second, &dir.path().join("second.jsonl")).await;
    assert_eq!(replayed.len(), payment_ids(&records).len());
    assert_eq!(replayed, original);
    second.shutdown().await;
}
