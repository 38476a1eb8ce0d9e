//! What the embedded store keeps, through the real binary and the real gRPC
//! client: a SIGKILL in the middle of concurrent registrations, fraud
//! reports and scoring loses nothing that was acknowledged; a torn or
//! corrupt tail of the store's files is skipped with one warning and never
//! stops start-up; a second process on the same directory is refused; a
//! full disk makes writes answer UNAVAILABLE, keeps scoring going, and
//! leaves no trace of what it refused.
//!
//! The crash test runs `RISKSTREAM_CRASH_ROUNDS` rounds (2 by default; the
//! 20-round figure comes from running it with 20).

mod common;

use common::*;
use riskstream::proto::{self, Decision};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Code;

/// `fut`, failing the test if it takes more than 60 s.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 60 s"))
}

/// The server on `dir`, started the way an operator restarts it.
fn serve_on(dir: &Path, extra: &[&str], prelude: Option<&str>) -> Served {
    Served::launch(Launch {
        prelude,
        args: extra.iter().map(|s| (*s).to_owned()).collect(),
        data_dir: Some(dir.to_owned()),
        ..Launch::default()
    })
}

/// Registration `n` of a round: its own card, customer and creation session.
fn card(round: usize, n: usize) -> proto::RegisterPaymentMethodRequest {
    let mut s = home_session(&format!("sess_{round}_{n}"));
    s.device_id = format!("dev_{round}_{n}");
    registration(
        &format!("pm_{round}_{n}"),
        &format!("fp_{round}_{n}"),
        DAY_MS,
        Some(s),
        proto::Customer {
            id: format!("cus_{round}_{n}"),
            email: format!("c{round}_{n}@example.com"),
        },
    )
}

/// A payment with the registered card `n` of `round`.
fn pay_with(round: usize, n: usize, id: &str) -> proto::PaymentEvent {
    payment(
        id,
        &format!("pm_{round}_{n}"),
        1500,
        Some(home_session("sess_pay")),
        proto::Customer {
            id: format!("cus_{round}_{n}"),
            email: format!("c{round}_{n}@example.com"),
        },
    )
}

/// What the clients were told was done before the crash.
#[derive(Default)]
struct Acked {
    /// Registrations acknowledged (their numbers).
    registered: Vec<usize>,
    /// Payments scored (id, card number).
    scored: Vec<(String, usize)>,
    /// Fraud reports acknowledged (card numbers).
    reported: Vec<usize>,
}

/// Registers, scores and reports fraud from several clients at once until
/// the server dies; what was acknowledged.
async fn load_until_killed(srv: &mut Served, round: usize) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = srv.client().await;
        let (acked, next) = (acked.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match c.register_payment_method(card(round, n)).await {
                    Ok(_) => acked.lock().expect("lock").registered.push(n),
                    Err(_) => return,
                }
                // Every registered card pays; every third payment is
                // reported as fraud.
                let id = format!("pay_{round}_{n}");
                if c.score(pay_with(round, n, &id)).await.is_err() {
                    return;
                }
                acked.lock().expect("lock").scored.push((id.clone(), n));
                if n % 3 == 0 {
                    let fb = proto::FeedbackEvent {
                        payment_id: id,
                        kind: proto::FeedbackKind::Fraudulent as i32,
                        reported_at_ms: 0,
                    };
                    match c.report_feedback(fb).await {
                        Ok(_) => acked.lock().expect("lock").reported.push(n),
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    // Let the load run, then kill the server in the middle of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    srv.kill();
    for t in tasks {
        let _ = bounded("a client after the kill", t).await;
    }
    Arc::try_unwrap(acked)
        .ok()
        .expect("tasks are done")
        .into_inner()
        .expect("lock")
}

/// Every acknowledged registration is back with its creation session (read
/// and compared when scoring), every acknowledged fraud report's card and
/// email are blocked.
async fn assert_nothing_acknowledged_was_lost(srv: &Served, round: usize, acked: &Acked) {
    let mut c = srv.client().await;
    for &n in &acked.registered {
        let pm = c
            .get_payment_method(proto::GetPaymentMethodRequest {
                payment_method_id: format!("pm_{round}_{n}"),
            })
            .await
            .unwrap_or_else(|e| panic!("registration {n} of round {round} lost: {e}"))
            .into_inner();
        let sid = pm.creation_session.map(|s| s.session_id);
        assert_eq!(sid.as_deref(), Some(format!("sess_{round}_{n}").as_str()));
        let o = score_ok(&mut c, pay_with(round, n, &format!("check_{round}_{n}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_{round}_{n}"), "{o:?}");
    }
    for &n in &acked.reported {
        // The card alone (another customer) and the email alone (another
        // card) are each blocked.
        let mut by_card = pay_with(round, n, &format!("again_card_{round}_{n}"));
        by_card.customer = Some(customer(9_999));
        by_card.payment_method = Some(proto::PaymentMethod {
            r#type: proto::PaymentMethodType::Card as i32,
            card_fingerprint: format!("fp_{round}_{n}"),
            ..Default::default()
        });
        let o = score_ok(&mut c, by_card).await;
        assert_eq!(
            (o.decision(), o.rule.as_str()),
            (Decision::Block, "block_card_fingerprint"),
            "fraud report {n} of round {round}: {o:?}"
        );
        let mut by_email = pay_with(round, n, &format!("again_email_{round}_{n}"));
        by_email.payment_method = Some(proto::PaymentMethod {
            r#type: proto::PaymentMethodType::Card as i32,
            card_fingerprint: format!("fp_other_{round}_{n}"),
            ..Default::default()
        });
        let o = score_ok(&mut c, by_email).await;
        assert_eq!(
            (o.decision(), o.rule.as_str()),
            (Decision::Block, "block_email"),
            "fraud report {n} of round {round}: {o:?}"
        );
    }
}

fn crash_rounds() -> usize {
    std::env::var("RISKSTREAM_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_load_loses_nothing_acknowledged() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let rounds = crash_rounds();
    let mut all: Vec<(usize, Acked)> = Vec::new();
    for round in 0..rounds {
        let mut srv = serve_on(&dir, &[], None);
        // What earlier rounds acknowledged is still there.
        for (r, acked) in &all {
            assert_nothing_acknowledged_was_lost(&srv, *r, acked).await;
        }
        let acked = load_until_killed(&mut srv, round).await;
        assert!(
            acked.registered.len() > 50 && !acked.reported.is_empty(),
            "too little load to test: {} registrations, {} reports",
            acked.registered.len(),
            acked.reported.len()
        );
        eprintln!(
            "round {round}: killed after {} registrations, {} payments, {} fraud reports acknowledged",
            acked.registered.len(),
            acked.scored.len(),
            acked.reported.len()
        );
        all.push((round, acked));
    }
    let srv = serve_on(&dir, &[], None);
    for (r, acked) in &all {
        assert_nothing_acknowledged_was_lost(&srv, *r, acked).await;
    }
    let registered: usize = all.iter().map(|(_, a)| a.registered.len()).sum();
    let reported: usize = all.iter().map(|(_, a)| a.reported.len()).sum();
    eprintln!(
        "{rounds} crash rounds: all {registered} acknowledged registrations and {reported} fraud reports found after the restarts"
    );
}

/// The store's files of `dir`, by name.
fn store_files(dir: &Path) -> HashMap<String, PathBuf> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().into_string().ok()?, e.path()))
        })
        .collect()
}

/// The newest log file of `dir`.
fn newest_log(dir: &Path) -> PathBuf {
    let files = store_files(dir);
    let mut logs: Vec<_> = files
        .into_iter()
        .filter(|(n, _)| n.starts_with("log-"))
        .collect();
    logs.sort();
    logs.pop().expect("a log file").1
}

async fn register_many(srv: &Served, round: usize, n: usize) {
    let mut c = srv.client().await;
    for i in 0..n {
        register(&mut c, card(round, i)).await;
    }
}

#[tokio::test]
async fn a_torn_or_corrupt_tail_is_skipped_with_one_warning_naming_the_file() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let mut srv = serve_on(&dir, &[], None);
    register_many(&srv, 0, 20).await;
    srv.kill();
    let log = newest_log(&dir);
    let whole = std::fs::metadata(&log).expect("log").len();

    // A torn write at the end: half a frame header and garbage.
    let mut bytes = std::fs::read(&log).expect("read");
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    std::fs::write(&log, &bytes).expect("write");
    let mut srv = serve_on(&dir, &[], None);
    let name = log.file_name().and_then(|n| n.to_str()).expect("name");
    let warnings = srv.lines("store file damaged");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(name) && warnings[0].contains(&format!("offset={whole}")),
        "{warnings:?}"
    );
    let mut c = srv.client().await;
    for i in 0..20 {
        let o = score_ok(&mut c, pay_with(0, i, &format!("p_{i}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_0_{i}"));
    }
    srv.kill();

    // The damage was cut off: the next start reads a whole file.
    let mut srv = serve_on(&dir, &[], None);
    assert_eq!(srv.logged("store file damaged"), 0);
    register_many(&srv, 1, 5).await;
    srv.kill();

    // A flipped byte in the last record: it is skipped, the rest is read.
    let log = newest_log(&dir);
    let mut bytes = std::fs::read(&log).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&log, &bytes).expect("write");
    let srv = serve_on(&dir, &[], None);
    assert_eq!(srv.logged("store file damaged"), 1);
    assert_eq!(srv.logged("a checksum mismatch"), 1);
    let mut c = srv.client().await;
    for i in 0..4 {
        let o = score_ok(&mut c, pay_with(1, i, &format!("q_{i}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_1_{i}"));
    }
    let lost = score_ok(&mut c, pay_with(1, 4, "q_4")).await;
    assert_eq!(
        lost.creation_session_id, "",
        "the damaged record is not read"
    );
    for i in 0..20 {
        let o = score_ok(&mut c, pay_with(0, i, &format!("r_{i}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_0_{i}"));
    }
    drop(c);
    let mut srv = srv;
    srv.kill();
    // A fresh log file whose first records are five registrations.
    let mut srv = serve_on(&dir, &[], None);
    register_many(&srv, 2, 5).await;
    srv.kill();

    // A flipped byte in the first record of a file: that record alone is
    // lost, the ones after it are read (and the file is not cut).
    let log = newest_log(&dir);
    let mut bytes = std::fs::read(&log).expect("read");
    bytes[8 + 8 + 2] ^= 0xff;
    std::fs::write(&log, &bytes).expect("write");
    let srv = serve_on(&dir, &[], None);
    assert_eq!(srv.logged("its damaged records are skipped"), 1);
    assert_eq!(
        std::fs::metadata(&log).expect("log").len(),
        bytes.len() as u64
    );
    let mut c = srv.client().await;
    let first = score_ok(&mut c, pay_with(2, 0, "s_0")).await;
    assert_eq!(
        first.creation_session_id, "",
        "the damaged record is not read"
    );
    for i in 1..5 {
        let o = score_ok(&mut c, pay_with(2, i, &format!("s_{i}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_2_{i}"));
    }
}

#[tokio::test]
async fn a_second_process_on_the_same_directory_is_refused_naming_the_lock() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    let srv = serve_on(&dir, &[], None);
    let (status, stderr) = serve_and_fail(&dir, &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another riskstream process") && stderr.contains("LOCK"),
        "{stderr}"
    );
    assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
    // The first one is unharmed.
    let mut c = srv.client().await;
    register(&mut c, card(0, 0)).await;
}

#[tokio::test]
async fn a_full_disk_refuses_writes_scoring_goes_on_and_nothing_acknowledged_is_lost() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("data");
    // No file of the process may grow past 64 KiB (writes past it fail
    // with EFBIG): each log file fills after about 150 registrations.
    let mut srv = serve_on(&dir, &[], Some("trap '' XFSZ; ulimit -S -f 64"));
    let mut c = srv.client().await;
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for n in 0..600 {
        match bounded("a registration", c.register_payment_method(card(0, n))).await {
            Ok(_) => acked.push(n),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.message().contains("could not save")
                        && status.message().contains("cannot write"),
                    "{status:?}"
                );
                refused.push(n);
            }
        }
        // Scoring goes on, whatever the disk does.
        let o = score_ok(&mut c, pay_with(0, n, &format!("pay_{n}"))).await;
        assert!(o.error.is_none());
    }
    assert!(!refused.is_empty(), "the limit was never reached");
    assert!(acked.len() > refused.len());
    // Refused writes leave no trace.
    for &n in &refused {
        let err = c
            .get_payment_method(proto::GetPaymentMethodRequest {
                payment_method_id: format!("pm_0_{n}"),
            })
            .await
            .expect_err("a refused registration is not kept");
        assert_eq!(err.code(), Code::NotFound);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let errors = srv.metric("riskstream_store_write_errors_total");
    assert!(errors >= refused.len() as f64 / 2.0, "{errors}");
    let lines = srv.logged("the store cannot write its log");
    assert!(
        lines >= 1 && lines as f64 <= errors,
        "{lines} lines for {errors} failed writes: one per burst"
    );
    srv.terminate();
    assert!(srv.wait(Duration::from_secs(15)).await.success());

    // Without the limit: everything acknowledged is back, nothing refused.
    let srv = serve_on(&dir, &[], None);
    let mut c = srv.client().await;
    for &n in &acked {
        let o = score_ok(&mut c, pay_with(0, n, &format!("after_{n}"))).await;
        assert_eq!(o.creation_session_id, format!("sess_0_{n}"));
    }
    for &n in &refused {
        let o = score_ok(&mut c, pay_with(0, n, &format!("after_{n}"))).await;
        assert_eq!(
            o.creation_session_id, "",
            "refused registration {n} came back"
        );
    }
}
