//! Several `riskstream serve` processes on one Redis (`--state redis://…`)
//! act as one service: a registration acknowledged by one is scored by
//! another with its creation session, a fraud report made to one blocks on
//! another, and velocity counts payments made through either. Redis is a
//! redis-server of this test binary's own.

mod common;

use common::redis_server;
use common::*;
use riskstream::proto::{self, Decision, RiskLevel};

/// Two servers on the test binary's Redis, in a namespace of their own.
fn two_replicas() -> (Served, Served, String) {
    let url = redis_server::shared().url();
    let prefix = redis_server::prefix();
    let start = || Served::start(&["--state", &url, "--redis-prefix", &prefix]);
    (start(), start(), prefix)
}

#[tokio::test]
async fn a_registration_on_one_replica_is_scored_on_another_with_its_creation_session() {
    let (a, b, _) = two_replicas();
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

#[tokio::test]
async fn fraud_feedback_on_one_replica_blocks_on_another() {
    let (a, b, _) = two_replicas();
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

#[tokio::test]
async fn velocity_counts_payments_made_through_either_replica_and_streams_batch() {
    let (a, b, prefix) = two_replicas();
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
    // What Redis holds of the card: a retry reads its windows unchanged.
    let counts = tokio::task::spawn_blocking(move || {
        use riskstream::state::{Observation, RedisOptions, RedisStore, Store};
        let s = RedisStore::open(RedisOptions {
            prefix,
            ..RedisOptions::new(redis_server::shared().url())
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
