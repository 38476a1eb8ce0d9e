//! The decision log's disk in trouble, through the real binary: a stalled
//! disk (a FIFO nobody reads) must not slow scoring, health or /metrics nor
//! hold up SIGTERM; a full disk (a file-size limit) must leave only whole
//! records in the file, and writing must resume once there is room again.

mod common;

use common::*;
use riskstream::decision_log::DecisionRecord;
use riskstream::proto;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Answers slower than this while the log is stalled fail the test.
const FAST: Duration = Duration::from_millis(100);

/// The decision log's counters: (written, dropped, failed).
fn log_counts(srv: &Served) -> (f64, f64, f64) {
    let m = parse_metrics(&srv.scrape());
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("{name} missing"));
    (
        get("riskstream_decision_log_records_total"),
        get("riskstream_decision_log_dropped_total"),
        get("riskstream_decision_log_failed_total"),
    )
}

/// `fut`, failing the test if it takes more than 30 s (a server that hangs
/// fails the test rather than hanging it).
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 30 s"))
}

fn ev(id: String) -> proto::PaymentEvent {
    payment(&id, "pm_1", 1000, Some(home_session("s")), customer(1))
}

/// Scores `n` payments named `{prefix}{i}` over one ScoreStream.
async fn stream(c: &mut Client, prefix: &str, n: usize) {
    bounded("a stream of payments", stream_unbounded(c, prefix, n)).await;
}

async fn stream_unbounded(c: &mut Client, prefix: &str, n: usize) {
    let events: Vec<_> = (0..n).map(|i| ev(format!("{prefix}{i}"))).collect();
    let mut outcomes = c
        .score_stream(tokio_stream::iter(events))
        .await
        .expect("stream")
        .into_inner();
    let mut answered = 0;
    while let Some(o) = outcomes.next().await {
        let o = o.expect("outcome");
        assert!(o.error.is_none(), "{:?}", o.error);
        answered += 1;
    }
    assert_eq!(answered, n);
}

/// Polls /metrics until the decision log has accounted for `total`
/// records (written, dropped or failed); returns its counters.
async fn settled(srv: &Served, total: f64) -> (f64, f64, f64) {
    let start = Instant::now();
    loop {
        let (w, d, f) = log_counts(srv);
        if w + d + f == total {
            return (w, d, f);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the decision log accounted for {} of {total} records",
            w + d + f
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every line of `path` parses as a record; the records, in file order.
fn records(path: &Path) -> Vec<DecisionRecord> {
    let text = std::fs::read_to_string(path).expect("decision log");
    assert!(text.ends_with('\n'), "a partial last line");
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l:?}", i + 1))
        })
        .collect()
}

#[tokio::test]
async fn a_stalled_decision_log_slows_nothing_and_does_not_hold_up_shutdown() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("decisions.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    // The reader that never reads. Opening a FIFO for reading and writing
    // does not wait for the other end (Linux), so neither does the server.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    let grace = Duration::from_secs(2);
    let mut srv = Served::start(&[
        "--decision-log",
        fifo.to_str().expect("utf-8"),
        "--decision-log-queue",
        "64",
        "--shutdown-grace",
        "2s",
    ]);
    let channel = srv.channel().await;
    let mut c = Client::new(channel.clone());
    let mut health = HealthClient::new(channel);
    bounded("registration", register_home_card(&mut c)).await;

    // Fill the pipe, the writer's batch and the queue, until records are
    // dropped and nothing more is written.
    let mut scored = 0;
    let mut before = log_counts(&srv);
    loop {
        assert!(scored < 50_000, "the writer never stalled: {before:?}");
        stream(&mut c, &format!("pay_fill_{scored}_"), 500).await;
        scored += 500;
        let now = log_counts(&srv);
        // Stalled: records dropped and no more written, once the pipe took
        // some (on a loaded machine the queue may overflow before the
        // writer's first write).
        if now.1 > 0.0 && now.0 == before.0 && now.0 > 0.0 {
            break;
        }
        before = now;
    }
    let (written, dropped, failed) = log_counts(&srv);
    assert!(written > 0.0 && failed == 0.0, "{written} {failed}");
    let warned = srv.logged("decision log queue full");

    // Everything still answers at once.
    let mut slowest = [Duration::ZERO; 3];
    for i in 0..10 {
        let t = Instant::now();
        bounded("Score", score_ok(&mut c, ev(format!("pay_stalled_{i}")))).await;
        slowest[0] = slowest[0].max(t.elapsed());
        let t = Instant::now();
        bounded(
            "health check",
            health.check(HealthCheckRequest {
                service: "riskstream.v1.RiskScorer".into(),
            }),
        )
        .await
        .expect("health");
        slowest[1] = slowest[1].max(t.elapsed());
        let t = Instant::now();
        let _ = srv.scrape();
        slowest[2] = slowest[2].max(t.elapsed());
    }
    eprintln!("slowest while stalled: score, health, /metrics = {slowest:?}");
    for (what, d) in ["Score", "health check", "GET /metrics"]
        .iter()
        .zip(slowest)
    {
        assert!(
            d < FAST,
            "{what} took {d:?} while the decision log was stalled"
        );
    }
    let (written_now, dropped_now, _) = log_counts(&srv);
    assert_eq!(
        written_now, written,
        "the stalled writer wrote nothing more"
    );
    assert_eq!(dropped_now, dropped + 10.0, "each Score above was dropped");
    // One line per burst, none per record: the burst the stall started
    // is still on, and it said so once.
    assert_eq!(srv.logged("decision log queue full"), warned);
    assert_eq!(
        srv.logged("decision log queue full"),
        srv.logged("decision log writer caught up") + 1,
    );

    // SIGTERM: the flush gives up within the grace period.
    let t = Instant::now();
    srv.terminate();
    let status = srv.wait(grace + Duration::from_secs(3)).await;
    eprintln!("exited {:?} after SIGTERM", t.elapsed());
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(srv.logged("decision log not flushed in time"), 1);
    srv.assert_no_payment_ids_logged();
}

#[tokio::test]
async fn a_full_disk_leaves_only_whole_records_and_writing_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    // Files of at most 64 KiB (bash counts in 1024-byte blocks); writes past
    // it fail with EFBIG instead of killing the process with SIGXFSZ. Only
    // the soft limit, so that it can be raised again.
    // The limit holds for every file of the process: the state stays in
    // memory, so that it hits the decision log only.
    let mut srv = Served::launch(Launch {
        prelude: Some("trap '' XFSZ; ulimit -S -f 64"),
        args: vec![
            "--state".into(),
            "memory".into(),
            "--decision-log".into(),
            log.to_str().expect("utf-8").into(),
        ],
        ..Launch::default()
    });
    let mut c = Client::new(srv.channel().await);
    bounded("registration", register_home_card(&mut c)).await;

    stream(&mut c, "pay_full_", 1000).await;
    let (written, dropped, failed) = settled(&srv, 1000.0).await;
    assert!(failed > 0.0, "no write failed past the limit");
    assert_eq!(dropped, 0.0);
    let size = std::fs::metadata(&log).expect("log").len();
    assert!(size <= 64 * 1024, "{size} bytes: the limit did not apply");
    assert_eq!(records(&log).len() as f64, written);
    assert!(srv.logged("decision log write failed") >= 1);
    // Scoring goes on.
    bounded("Score", score_ok(&mut c, ev("pay_still_scored".into()))).await;

    // Room again: the next records are appended.
    let raised = Command::new("prlimit")
        .args(["--pid", &srv.pid(), "--fsize=unlimited"])
        .status()
        .expect("prlimit runs");
    assert!(raised.success(), "prlimit failed");
    stream(&mut c, "pay_after_", 100).await;
    let (written_after, _, _) = settled(&srv, 1101.0).await;
    assert!(
        written_after >= written + 100.0,
        "{written} then {written_after}"
    );
    // The burst ends once writes have worked for a second.
    let start = Instant::now();
    while srv.logged("decision log writing again") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the end of the failure burst was never logged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every burst said when it started and when it ended, once.
    assert_eq!(
        srv.logged("decision log write failed"),
        srv.logged("decision log writing again")
    );

    srv.terminate();
    let status = srv.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    let recs = records(&log);
    assert!(!recs.is_empty());
    assert_eq!(recs.len() as f64, written_after);
    assert_eq!(recs.last().expect("a record").payment_id, "pay_after_99");
    srv.assert_no_payment_ids_logged();
}
