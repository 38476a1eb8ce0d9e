//! Several `riskstream serve` processes on one Redis (`--state redis://…`)
//! act as one service: a registration acknowledged by one is scored by
//! another with its creation session, a fraud report made to one blocks on
//! another, and velocity counts payments made through either. Redis is a
//! redis-server of this test binary's own.

mod common;

use common::redis_server;
use common::*;
use riskstream::proto::{self, Decision, RiskLevel};

/// Two tests of one check (an async fn of the Redis URL): on the test
/// binary's Redis, and on its three-master Redis Cluster.
macro_rules! on_one_redis_and_a_cluster {
    (#[$test:meta] $one:ident, $cluster:ident, $check:ident) => {
        #[$test]
        async fn $one() {
            $check(redis_server::shared().url()).await;
        }

        #[$test]
        async fn $cluster() {
            $check(redis_server::shared_cluster().url()).await;
        }
    };
}

/// Two servers on the test binary's Redis, in a namespace of their own.
fn two_replicas(url: &str) -> (Served, Served, String) {
    let prefix = redis_server::prefix();
    let start = || Served::start(&["--state", url, "--redis-prefix", &prefix]);
    (start(), start(), prefix)
}

on_one_redis_and_a_cluster!(
    #[tokio::test]
    a_registration_on_one_replica_is_scored_on_another_with_its_creation_session,
    a_registration_on_one_replica_is_scored_on_another_with_its_creation_session_on_a_cluster,
    a_registration_on_one_replica_is_scored_on_another_with_its_creation_session_at
);

async fn a_registration_on_one_replica_is_scored_on_another_with_its_creation_session_at(
    url: String,
) {
    let (a, b, _) = two_replicas(&url);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    register_home_card(&mut ca).await;
    let got = cb
        .get_payment_method(proto::GetPaymentMethodRequest {
            payment_method_id: "pm_1".into(),
        })
        .await
        .expect("B holds A's registration")
        .into_inner();
    assert_eq!(
        got.creation_session.map(|s| s.session_id).as_deref(),
        Some("s0")
    );
    let o = score_ok(
        &mut cb,
        payment("pay_1", "pm_1", 2500, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_eq!(
        o.creation_session_id, "s0",
        "B compared A's creation session"
    );
    assert_eq!(o.session_id, "s1");
    assert_eq!(o.decision(), Decision::Allow);
    assert!(
        matches!(o.risk_level(), RiskLevel::Normal | RiskLevel::Elevated),
        "{o:?}"
    );
    assert!(o.error.is_none());
    a.assert_no_customer_data_logged();
    b.assert_no_customer_data_logged();
}

on_one_redis_and_a_cluster!(
    #[tokio::test]
    fraud_feedback_on_one_replica_blocks_on_another,
    fraud_feedback_on_one_replica_blocks_on_another_on_a_cluster,
    fraud_feedback_on_one_replica_blocks_on_another_at
);

async fn fraud_feedback_on_one_replica_blocks_on_another_at(url: String) {
    let (a, b, _) = two_replicas(&url);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    register_home_card(&mut ca).await;
    let first = score_ok(
        &mut cb,
        payment("pay_1", "pm_1", 5000, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_eq!(first.decision(), Decision::Allow);
    // Reported to A, about a payment B scored.
    let fb = feedback(&mut ca, "pay_1", proto::FeedbackKind::Fraudulent)
        .await
        .expect("A finds the payment B recorded");
    let mut lists = fb.lists_updated.clone();
    lists.sort();
    assert_eq!(lists, ["block_card_fingerprint", "block_email"]);
    // The very next payment on B is blocked.
    let again = score_ok(
        &mut cb,
        payment("pay_2", "pm_1", 5000, Some(home_session("s2")), customer(1)),
    )
    .await;
    assert_eq!(again.decision(), Decision::Block, "{again:?}");
    assert_eq!(again.reason, "blocklist");
}

on_one_redis_and_a_cluster!(
    #[tokio::test]
    velocity_counts_payments_made_through_either_replica_and_streams_batch,
    velocity_counts_payments_made_through_either_replica_and_streams_batch_on_a_cluster,
    velocity_counts_payments_made_through_either_replica_and_streams_batch_at
);

async fn velocity_counts_payments_made_through_either_replica_and_streams_batch_at(url: String) {
    let (a, b, prefix) = two_replicas(&url);
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    register_home_card(&mut ca).await;
    // Twenty payments of one card, alternating between the replicas; B
    // takes its ten on one stream, sent at once (scored in batches).
    for i in 0..10 {
        score_ok(
            &mut ca,
            payment(
                &format!("pay_a{i}"),
                "pm_1",
                1000,
                Some(home_session("s")),
                customer(1),
            ),
        )
        .await;
    }
    let events: Vec<proto::PaymentEvent> = (0..10)
        .map(|i| {
            payment(
                &format!("pay_b{i}"),
                "pm_1",
                1000,
                Some(home_session("s")),
                customer(1),
            )
        })
        .collect();
    let mut outcomes = cb
        .score_stream(tokio_stream::iter(events))
        .await
        .expect("stream opens")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(o) = outcomes.message().await.expect("outcome") {
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(o.creation_session_id, "s0");
        ids.push(o.payment_id);
    }
    let expected: Vec<String> = (0..10).map(|i| format!("pay_b{i}")).collect();
    assert_eq!(ids, expected, "one outcome per event, in order");
    // A retry of a payment A recorded is not counted again on B, and the
    // next payment on A counts all twenty.
    score_ok(
        &mut cb,
        payment("pay_a3", "pm_1", 1000, Some(home_session("s")), customer(1)),
    )
    .await;
    let scored = b.metric("riskstream_store_round_trip_seconds_count");
    assert!(scored >= 2.0, "B's payments went in round trips: {scored}");
    assert_eq!(b.metric("riskstream_store_fail_open_total"), 0.0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let hits = b.metric("riskstream_store_cache_lookups_total{result=\"hit\"}");
    let misses = b.metric("riskstream_store_cache_lookups_total{result=\"miss\"}");
    assert!(misses >= 1.0 && hits >= 1.0, "hits {hits}, misses {misses}");
    // What Redis holds of the card: a retry reads its windows unchanged.
    let counts = tokio::task::spawn_blocking(move || {
        use riskstream::state::{Observation, RedisOptions, RedisStore, Store};
        let s = RedisStore::open(RedisOptions {
            prefix,
            ..RedisOptions::new(url)
        })
        .expect("opens");
        let o = s.observe(&Observation {
            payment_id: "pay_a0",
            at_ms: riskstream::engine::system_now_ms(),
            amount: 1000,
            card: Some(s.key(b"fp_1")),
            email: None,
            ip: None,
            device: None,
            merchant: None,
        });
        assert!(!o.first);
        (o.velocity.card_1h, o.velocity.card_days[0].count)
    })
    .await
    .expect("probe");
    assert_eq!(
        counts,
        (20, 20),
        "every payment counted once, on either replica"
    );
}

/// The status health reports for `service`.
async fn health_of(served: &Served, service: &str) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(served.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test]
async fn a_redis_outage_fails_payments_open_within_their_deadline_and_the_server_recovers() {
    let mut redis = redis_server::RedisServer::start(&[]);
    let port = redis.port;
    let url = redis.url();
    let a = Served::start(&["--state", &url, "--redis-timeout", "300ms"]);
    let mut c = a.client().await;
    register_home_card(&mut c).await;
    let before = score_ok(
        &mut c,
        payment("pay_1", "pm_1", 2500, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_ne!(before.risk_level(), RiskLevel::Unknown);
    assert_eq!(health_of(&a, "riskstream.v1.Store").await, SERVING);

    redis.kill();
    // Scoring fails open well within the call's deadline.
    let mut req = tonic::Request::new(payment(
        "pay_2",
        "pm_1",
        2500,
        Some(home_session("s2")),
        customer(1),
    ));
    req.set_timeout(std::time::Duration::from_secs(2));
    let started = std::time::Instant::now();
    let o = c.score(req).await.expect("scored, open").into_inner();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    eprintln!("a payment during the outage was answered in {took:?}");
    assert_eq!(o.risk_level(), RiskLevel::Unknown);
    assert_eq!(o.decision(), Decision::Allow);
    assert_eq!(o.reason, "unknown_risk_level");
    // A stream's events too, one outcome each.
    let events: Vec<proto::PaymentEvent> = (0..3)
        .map(|i| {
            payment(
                &format!("pay_s{i}"),
                "pm_1",
                100,
                Some(home_session("s")),
                customer(1),
            )
        })
        .collect();
    let mut outcomes = c
        .score_stream(tokio_stream::iter(events))
        .await
        .expect("stream opens")
        .into_inner();
    let mut n = 0;
    while let Some(o) = outcomes.message().await.expect("outcome") {
        assert_eq!(o.risk_level(), RiskLevel::Unknown, "{o:?}");
        n += 1;
    }
    assert_eq!(n, 3);
    // Writes answer UNAVAILABLE.
    let started = std::time::Instant::now();
    let refused = c
        .register_payment_method(registration(
            "pm_2",
            "fp_2",
            DAY_MS,
            Some(home_session("s0")),
            customer(2),
        ))
        .await
        .expect_err("no store to save it");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // So do a report and a lookup that cannot reach what they name: not
    // NOT_FOUND, which a client would not retry.
    let report = feedback(&mut c, "pay_1", proto::FeedbackKind::Fraudulent)
        .await
        .expect_err("no store to find the payment in");
    assert_eq!(report.code(), tonic::Code::Unavailable, "{report:?}");
    let lookup = c
        .get_payment_method(proto::GetPaymentMethodRequest {
            payment_method_id: "pm_1".into(),
        })
        .await
        .expect_err("no store to read it from");
    assert_eq!(lookup.code(), tonic::Code::Unavailable, "{lookup:?}");
    // Health and metrics show it; the server as a whole keeps serving.
    assert_eq!(health_of(&a, "riskstream.v1.Store").await, NOT_SERVING);
    assert_eq!(health_of(&a, "").await, SERVING);
    assert_eq!(a.metric("riskstream_store_reachable"), 0.0);
    assert!(a.metric("riskstream_store_fail_open_total") >= 4.0);

    // Redis comes back (empty: it saved nothing); the server recovers by itself.
    let _back = redis_server::RedisServer::start_on(port, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while health_of(&a, "riskstream.v1.Store").await != SERVING {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's health did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(a.metric("riskstream_store_reachable"), 1.0);
    register_home_card(&mut c).await;
    let after = score_ok(
        &mut c,
        payment("pay_3", "pm_1", 2500, Some(home_session("s3")), customer(1)),
    )
    .await;
    assert_ne!(after.risk_level(), RiskLevel::Unknown, "{after:?}");
    assert_eq!(after.creation_session_id, "s0");
    assert_eq!(a.logged("the store is not reachable"), 1);
    assert_eq!(a.logged("the store is reachable again"), 1);
}

/// `riskstream replay TRAFFIC` against `served` (one stream, strict order,
/// 64 events in flight); its outcome lines without their latencies.
async fn replayed(
    traffic: &std::path::Path,
    served: &Served,
    out: &std::path::Path,
) -> Vec<String> {
    let args: Vec<String> = [
        "replay",
        &traffic.display().to_string(),
        "--progress",
        "off",
        "--target",
        &format!("http://{}", served.grpc),
        "--outcomes-out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(&args)
            .output()
            .expect("replay runs")
    })
    .await
    .expect("joins");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(out)
        .expect("outcomes")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            v.as_object_mut().expect("object").remove("latency_us");
            v.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_redis_scores_recorded_traffic_exactly_as_one_in_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traffic = dir.path().join("sim.traffic");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "simulate",
            "--seed",
            "4",
            "--customers",
            "600",
            "--days",
            "3",
            "--out",
        ])
        .arg(&traffic)
        .status()
        .expect("simulate runs");
    assert!(made.success());
    let memory = Served::start(&["--state", "memory", "--holdout-rate", "0"]);
    let url = redis_server::shared().url();
    let prefix = redis_server::prefix();
    let redis = Served::start(&[
        "--state",
        &url,
        "--redis-prefix",
        &prefix,
        "--holdout-rate",
        "0",
    ]);
    let in_memory = replayed(&traffic, &memory, &dir.path().join("memory.jsonl")).await;
    let on_redis = replayed(&traffic, &redis, &dir.path().join("redis.jsonl")).await;
    assert!(in_memory.len() > 100, "{} outcomes", in_memory.len());
    assert_eq!(in_memory.len(), on_redis.len());
    for (m, r) in in_memory.iter().zip(&on_redis) {
        assert_eq!(m, r, "the same payment scored alike");
    }
    let batches = redis.metric("riskstream_store_round_trip_seconds_count");
    assert!(
        batches < in_memory.len() as f64,
        "events were batched: {batches} round trips for {} payments",
        in_memory.len()
    );
    eprintln!("{} payments in {batches} round trips", in_memory.len());
}

/// What a server answered to one record of traffic: a registration's
/// acknowledgement, a payment's outcome, or a fraud report's lists.
#[derive(Debug, PartialEq)]
enum Answer {
    Registered,
    Scored(Box<proto::Outcome>),
    Reported(Vec<String>),
    Refused(tonic::Code, String),
}

/// Sends `records` one at a time, waiting for each answer, record `i` to
/// `targets[i % targets.len()]`; the answers in order.
async fn spread(records: &[proto::TrafficRecord], targets: &[&Served]) -> Vec<Answer> {
    use proto::traffic_record::Request;
    let mut clients = Vec::new();
    for t in targets {
        clients.push(t.client().await);
    }
    let mut answers = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let c = &mut clients[i % targets.len()];
        let answer = match r.request.clone().expect("a request") {
            Request::Register(req) => c
                .register_payment_method(req)
                .await
                .map(|_| Answer::Registered),
            Request::Payment(ev) => c
                .score(ev)
                .await
                .map(|o| Answer::Scored(Box::new(o.into_inner()))),
            Request::Feedback(ev) => c.report_feedback(ev).await.map(|f| {
                let mut lists = f.into_inner().lists_updated;
                lists.sort();
                Answer::Reported(lists)
            }),
        };
        answers.push(answer.unwrap_or_else(|s| Answer::Refused(s.code(), s.message().into())));
    }
    answers
}

on_one_redis_and_a_cluster!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    payments_spread_over_two_replicas_are_scored_as_one_server_scores_them_all,
    payments_spread_over_two_replicas_are_scored_as_one_server_scores_them_all_on_a_cluster,
    payments_spread_over_two_replicas_are_scored_as_one_server_scores_them_all_at
);

async fn payments_spread_over_two_replicas_are_scored_as_one_server_scores_them_all_at(
    url: String,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let traffic = dir.path().join("sim.traffic");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "simulate",
            "--seed",
            "7",
            "--customers",
            "600",
            "--days",
            "3",
            "--fraud-rate",
            "0.05",
            "--out",
        ])
        .arg(&traffic)
        .status()
        .expect("simulate runs");
    assert!(made.success());
    // A model on every feature (amount spikes and their peaks included),
    // so that any feature that differs moves a probability.
    let model = dir.path().join("model.json");
    let trained = std::process::Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(["train", "--feature-set", "5", "--traffic"])
        .arg(&traffic)
        .arg("--out")
        .arg(&model)
        .status()
        .expect("train runs");
    assert!(trained.success());
    let model = model.display().to_string();
    let mut reader = riskstream::traffic::TrafficReader::open(&traffic).expect("opens");
    let mut records = Vec::new();
    while let Some(r) = reader.next_record().expect("reads") {
        records.push(r);
    }
    let count = |kind: &str| {
        records
            .iter()
            .filter(|r| riskstream::traffic::kind(r) == kind)
            .count()
    };
    assert!(
        count("payment") > 300 && count("feedback") > 5 && count("register") > 100,
        "payments {}, reports {}, registrations {}",
        count("payment"),
        count("feedback"),
        count("register")
    );
    let one = Served::start(&[
        "--state",
        "memory",
        "--holdout-rate",
        "0",
        "--model",
        &model,
    ]);
    let prefix = redis_server::prefix();
    let replica = || {
        Served::start(&[
            "--state",
            &url,
            "--redis-prefix",
            &prefix,
            "--holdout-rate",
            "0",
            "--model",
            &model,
        ])
    };
    let (a, b) = (replica(), replica());
    let alone = spread(&records, &[&one]).await;
    let together = spread(&records, &[&a, &b]).await;
    assert_eq!(alone.len(), together.len());
    let mut scored = 0;
    let mut features_moved = 0;
    for (i, (x, y)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(x, y, "record {i}: one server and two replicas answer alike");
        if let Answer::Scored(o) = x {
            assert!(o.error.is_none(), "{o:?}");
            assert_ne!(o.risk_level(), RiskLevel::Unknown, "{o:?}");
            scored += 1;
            features_moved += usize::from(!o.insights.is_empty());
        }
    }
    let blocked = alone
        .iter()
        .filter(|x| matches!(x, Answer::Scored(o) if o.reason == "blocklist"))
        .count();
    eprintln!(
        "{scored} payments, {features_moved} with insights, {blocked} blocked by a report made to either replica: identical"
    );
    assert!(
        features_moved > scored / 2,
        "outcomes carry their features' contributions"
    );
    assert_eq!(a.metric("riskstream_store_fail_open_total"), 0.0);
    assert_eq!(b.metric("riskstream_store_fail_open_total"), 0.0);
}

on_one_redis_and_a_cluster!(
    #[tokio::test]
    a_list_change_through_one_replica_is_listed_by_another_within_100_ms,
    a_list_change_through_one_replica_is_listed_by_another_within_100_ms_on_a_cluster,
    a_list_change_through_one_replica_is_listed_by_another_within_100_ms_at
);

async fn a_list_change_through_one_replica_is_listed_by_another_within_100_ms_at(url: String) {
    let (a, b, _) = two_replicas(&url);
    let (mut admin_a, mut admin_b) = (a.admin_client().await, b.admin_client().await);
    let listed = |items: &[proto::ListItem]| items.iter().any(|i| i.value == "jane@example.com");
    let started = std::time::Instant::now();
    admin_a
        .add_list_items(proto::AddListItemsRequest {
            list: "allow_email".into(),
            values: vec!["Jane@example.com".into()],
            reason: "verified by phone".into(),
            expires_at_ms: 0,
        })
        .await
        .expect("added on A");
    let acknowledged = started.elapsed();
    let seen = loop {
        let items = admin_b
            .list_items(proto::ListItemsRequest {
                list: "allow_email".into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .expect("listed on B")
            .into_inner()
            .items;
        if listed(&items) {
            assert_eq!(items[0].reason, "verified by phone");
            assert_eq!(items[0].source, "admin");
            break started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "B does not list A's entry after 100 ms"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    eprintln!("acknowledged by A in {acknowledged:?}, listed by B after {seen:?}");
}

/// One call a client made during the load: when it started and ended, its
/// deadline, and what came back.
#[derive(Debug)]
struct Call {
    what: Sent,
    started: std::time::Instant,
    ended: std::time::Instant,
    deadline: std::time::Duration,
    result: Result<Got, tonic::Code>,
}

/// What a call sent.
#[derive(Debug, Clone)]
enum Sent {
    /// A registration of `pm_C_I` (card `fp_C_I`, customer `n`).
    Register {
        id: String,
        n: u32,
    },
    Score,
    /// A lookup of a card registered before.
    Get,
    /// A fraud report about the payment of `pm_C_I`.
    Fraud {
        id: String,
        n: u32,
    },
}

/// What a call brought back.
#[derive(Debug)]
enum Got {
    Done,
    Scored(RiskLevel, Decision, String),
}

/// One client of the load: registers a card, pays with it (or with the
/// last card registered, when the registration was refused), reports every
/// other payment as fraud, and again, until `stop` (or `most` rounds).
async fn client_load(
    served_grpc: String,
    c: u32,
    most: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Call> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{served_grpc}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut client = proto::risk_scorer_client::RiskScorerClient::new(channel);
    let mut calls = Vec::new();
    let short = std::time::Duration::from_millis(1_500);
    // Each call is also bounded here, so that a hung call fails the test
    // rather than hanging it.
    async fn timed<T>(
        deadline: std::time::Duration,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> (
        std::time::Instant,
        std::time::Instant,
        Result<T, tonic::Code>,
    ) {
        let started = std::time::Instant::now();
        let r = match tokio::time::timeout(deadline * 3, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.code()),
            Err(_) => Err(tonic::Code::Unknown),
        };
        (started, std::time::Instant::now(), r)
    }
    fn with_deadline<T>(t: T, d: std::time::Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(t);
        r.set_timeout(d);
        r
    }
    let mut last: Option<(String, u32)> = None;
    for i in 0..most {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let n = c * 10_000 + i;
        let id = format!("pm_{c}_{i}");
        let req = registration(
            &id,
            &format!("fp_{c}_{i}"),
            30 * DAY_MS,
            Some(home_session(&format!("s_{n}"))),
            customer(n),
        );
        let (started, ended, r) = timed(
            short,
            client.register_payment_method(with_deadline(req, short)),
        )
        .await;
        let registered = r.is_ok();
        calls.push(Call {
            what: Sent::Register { id: id.clone(), n },
            started,
            ended,
            deadline: short,
            result: r.map(|_| Got::Done),
        });
        // A payment with this card, or the last one registered.
        if registered {
            last = Some((id.clone(), n));
        }
        let Some((pm, of)) = last.clone() else {
            continue;
        };
        let get = proto::GetPaymentMethodRequest {
            payment_method_id: pm.clone(),
        };
        let (started, ended, r) =
            timed(short, client.get_payment_method(with_deadline(get, short))).await;
        if let Ok(m) = &r {
            assert_eq!(m.card_fingerprint, pm.replace("pm_", "fp_"));
        }
        calls.push(Call {
            what: Sent::Get,
            started,
            ended,
            deadline: short,
            result: r.map(|_| Got::Done),
        });
        let ev = payment(
            &format!("pay_{c}_{i}"),
            &pm,
            2_500,
            Some(home_session(&format!("p_{n}"))),
            customer(of),
        );
        let (started, ended, r) = timed(short, client.score(with_deadline(ev, short))).await;
        let r = r.map(|o| Got::Scored(o.risk_level(), o.decision(), o.reason));
        let recorded = matches!(&r, Ok(Got::Scored(level, _, _)) if *level != RiskLevel::Unknown);
        calls.push(Call {
            what: Sent::Score,
            started,
            ended,
            deadline: short,
            result: r,
        });
        if registered && recorded && i % 2 == 0 {
            let fb = proto::FeedbackEvent {
                payment_id: format!("pay_{c}_{i}"),
                kind: proto::FeedbackKind::Fraudulent as i32,
                reported_at_ms: 0,
            };
            let (started, ended, r) =
                timed(short, client.report_feedback(with_deadline(fb, short))).await;
            calls.push(Call {
                what: Sent::Fraud { id, n },
                started,
                ended,
                deadline: short,
                result: r.map(|_| Got::Done),
            });
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_keeps_every_acknowledged_write_and_no_call_outlives_its_deadline()
{
    let durable = ["--appendonly", "yes", "--appendfsync", "always"];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = redis_server::RedisServer::start_in(Some(dir.path()), &durable);
    let (port, url) = (redis.port, redis.url());
    let a = Served::start(&["--state", &url, "--redis-timeout", "300ms"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| tokio::spawn(client_load(a.grpc.clone(), c, 400, stop.clone())))
        .collect();

    // Load for a while, then Redis dies in the middle of it.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    redis.kill();
    let killed = std::time::Instant::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while health_of(&a, "riskstream.v1.Store").await != NOT_SERVING {
        assert!(
            std::time::Instant::now() < deadline,
            "health does not show the outage"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let noticed = killed.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(a.metric("riskstream_store_reachable"), 0.0);
    assert_eq!(health_of(&a, "").await, SERVING, "the server keeps serving");

    // Redis restarts on its port and directory, reading its append-only file.
    let back_at = std::time::Instant::now();
    let _back = redis_server::RedisServer::restart_in(port, Some(dir.path()), &durable);
    let restarted = std::time::Instant::now();
    let deadline = restarted + std::time::Duration::from_secs(15);
    while health_of(&a, "riskstream.v1.Store").await != SERVING {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's health did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let recovered = restarted.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = Vec::new();
    for c in clients {
        calls.extend(c.await.expect("client"));
    }

    // No call outlived its deadline (a little room for the client's side).
    let room = std::time::Duration::from_millis(300);
    for call in &calls {
        let took = call.ended - call.started;
        assert!(took <= call.deadline + room, "{call:?} took {took:?}");
        assert!(
            !matches!(
                call.result,
                Err(tonic::Code::DeadlineExceeded | tonic::Code::Unknown)
            ),
            "{call:?}"
        );
    }
    // During the outage payments failed open and writes were refused.
    let outage = |c: &&Call| c.started > killed && c.ended < back_at;
    let mut open = 0;
    let mut refused = 0;
    for call in calls.iter().filter(outage) {
        match (&call.what, &call.result) {
            (Sent::Score, Ok(Got::Scored(level, decision, reason))) => {
                assert_eq!(*level, RiskLevel::Unknown, "{call:?}");
                assert_eq!(*decision, Decision::Allow, "{call:?}");
                assert_eq!(reason, "unknown_risk_level");
                open += 1;
            }
            (Sent::Register { .. } | Sent::Fraud { .. } | Sent::Get, Err(code)) => {
                assert_eq!(*code, tonic::Code::Unavailable, "{call:?}");
                refused += 1;
            }
            // A lookup may be answered by the replica's cache.
            (Sent::Get, Ok(_)) => {}
            _ => panic!("during the outage: {call:?}"),
        }
    }
    // Every answer was one the contract allows.
    for call in &calls {
        match (&call.what, &call.result) {
            (Sent::Score, Ok(Got::Scored(RiskLevel::Unknown, d, _))) => {
                assert_eq!(*d, Decision::Allow)
            }
            (_, Ok(_)) => {}
            (_, Err(code)) => assert_eq!(
                *code,
                tonic::Code::Unavailable,
                "{call:?}, {:?} to {:?} after the kill, restarted {:?} after it",
                call.started.saturating_duration_since(killed),
                call.ended.saturating_duration_since(killed),
                back_at - killed
            ),
        }
    }
    let slowest = |kind: fn(&Sent) -> bool| {
        calls
            .iter()
            .filter(outage)
            .filter(|c| kind(&c.what))
            .map(|c| c.ended - c.started)
            .max()
            .unwrap_or_default()
    };
    eprintln!(
        "slowest answers during the outage: payment {:?}, registration {:?}, lookup {:?}",
        slowest(|w| matches!(w, Sent::Score)),
        slowest(|w| matches!(w, Sent::Register { .. })),
        slowest(|w| matches!(w, Sent::Get)),
    );
    let acked = |before: bool| {
        calls
            .iter()
            .filter(|c| c.result.is_ok() && (c.ended < killed) == before)
            .filter_map(|c| match &c.what {
                Sent::Register { id, n } => Some((false, id.clone(), *n)),
                Sent::Fraud { id, n } => Some((true, id.clone(), *n)),
                Sent::Score | Sent::Get => None,
            })
            .collect::<Vec<_>>()
    };
    let (before, after) = (acked(true), acked(false));
    let frauds = |v: &[(bool, String, u32)]| v.iter().filter(|w| w.0).count();
    eprintln!(
        "{} calls; acknowledged before the kill: {} writes ({} fraud reports), after: {}; during the outage {open} payments failed open and {refused} writes were refused; outage seen by health after {noticed:?}, recovery {recovered:?} after the restart",
        calls.len(),
        before.len(),
        frauds(&before),
        after.len(),
    );
    assert!(
        before.len() >= 20 && frauds(&before) >= 5,
        "load before the kill"
    );
    assert!(open >= 4 && refused >= 4, "load during the outage");
    assert!(!after.is_empty(), "writes acknowledged after the restart");
    assert!(a.metric("riskstream_store_fail_open_total") >= f64::from(open));
    assert_eq!(a.metric("riskstream_store_reachable"), 1.0);
    assert_eq!(a.logged("the store is not reachable"), 1);
    assert_eq!(a.logged("the store is reachable again"), 1);

    // Every write acknowledged is in Redis: a replica started now (nothing
    // cached) holds every registration, and blocks every card reported.
    let b = Served::start(&["--state", &url]);
    let mut cb = b.client().await;
    let mut unreported = 0;
    for (fraud, id, n) in before.iter().chain(&after) {
        // A call that could not reach Redis (this machine stalled) is asked
        // again: what is checked is what Redis holds, not whether it answers.
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let got = loop {
            let got = cb
                .get_payment_method(proto::GetPaymentMethodRequest {
                    payment_method_id: id.clone(),
                })
                .await;
            match got {
                Err(s)
                    if s.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() < patience =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
        .unwrap_or_else(|s| panic!("{id}, acknowledged, is lost: {s:?}"))
        .into_inner();
        assert_eq!(got.card_fingerprint, id.replace("pm_", "fp_"));
        assert_eq!(
            got.creation_session.map(|s| s.session_id),
            Some(format!("s_{n}"))
        );
        let reported = before
            .iter()
            .chain(&after)
            .any(|(f, other, _)| *f && other == id);
        if *fraud || (!reported && unreported < 20) {
            unreported += usize::from(!reported);
            let check = payment(
                &format!("check_{id}"),
                id,
                2_500,
                Some(home_session("check")),
                customer(*n),
            );
            let o = loop {
                let o = score_ok(&mut cb, check.clone()).await;
                if o.risk_level() != RiskLevel::Unknown || std::time::Instant::now() >= patience {
                    break o;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            if reported {
                assert_eq!(o.decision(), Decision::Block, "{id}: {o:?}");
                assert_eq!(o.reason, "blocklist");
            } else {
                assert_ne!(o.reason, "blocklist", "{id} was never reported: {o:?}");
            }
        }
    }
}
