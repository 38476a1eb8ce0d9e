//! Registration then scoring through the real gRPC client: the same session
//! scores normal, a drifted session scores strictly higher, outcomes name
//! the sessions that were compared, and a payment method the server never
//! saw is scored without a creation session.

mod common;

use common::*;
use riskstream::proto::{self, Decision, RiskLevel};

#[tokio::test]
async fn same_session_is_normal_and_drifted_session_scores_higher() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;

    // Saved from the home laptop 90 days ago, paid from the same laptop.
    let reg = registration(
        "pm_home",
        "fp_home",
        90 * DAY_MS,
        Some(home_session("sess_create")),
        customer(1),
    );
    let id = c
        .register_payment_method(reg)
        .await
        .expect("registered")
        .into_inner();
    assert_eq!(id.payment_method_id, "pm_home");
    let same = score_ok(
        c,
        payment(
            "pay_same",
            "pm_home",
            2500,
            Some(home_session("sess_pay")),
            customer(1),
        ),
    )
    .await;
    assert_eq!(same.payment_id, "pay_same");
    assert_eq!(same.risk_level(), RiskLevel::Normal, "{same:?}");
    assert_eq!(same.decision(), Decision::Allow);
    assert_eq!(same.reason, "");
    assert!(same.error.is_none());
    assert_eq!(same.session_id, "sess_pay");
    assert_eq!(same.creation_session_id, "sess_create");
    assert_eq!(same.model_version, default_model().version().to_string());
    assert!(same.risk_score < 65);
    assert!(same.fraud_probability > 0.0 && same.fraud_probability < 1.0);

    // A card saved seconds ago, paid from a different device, network, time
    // zone and language.
    let reg = registration(
        "pm_new",
        "fp_new",
        5_000,
        Some(home_session("sess_create2")),
        customer(2),
    );
    register(c, reg).await;
    let drifted = score_ok(
        c,
        payment(
            "pay_drift",
            "pm_new",
            2500,
            Some(foreign_session("sess_foreign")),
            customer(2),
        ),
    )
    .await;
    assert!(
        drifted.risk_score > same.risk_score,
        "drifted {} vs same {}",
        drifted.risk_score,
        same.risk_score
    );
    assert!(drifted.fraud_probability > same.fraud_probability);
    assert_eq!(drifted.creation_session_id, "sess_create2");
    assert_eq!(drifted.session_id, "sess_foreign");
    // What moved the score: largest first, session features among them.
    assert!(!drifted.insights.is_empty());
    assert!(
        drifted
            .insights
            .windows(2)
            .all(|w| w[0].contribution >= w[1].contribution)
    );
    let session_features = [
        "device_mismatch",
        "network_mismatch",
        "ip_mismatch",
        "timezone_mismatch",
        "language_mismatch",
        "card_country_mismatch",
        "card_new_1h",
        "card_age_minutes",
        "user_agent_mismatch",
        "os_mismatch",
        "screen_mismatch",
        "utc_offset_diff_hours",
    ];
    assert!(
        session_features.contains(&drifted.insights[0].feature.as_str()),
        "{:?}",
        drifted.insights
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn each_drift_signal_alone_raises_the_score() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    register(
        c,
        registration(
            "pm_1",
            "fp_1",
            90 * DAY_MS,
            Some(home_session("s0")),
            customer(1),
        ),
    )
    .await;
    let base = score_ok(
        c,
        payment(
            "p_base",
            "pm_1",
            2500,
            Some(home_session("s1")),
            customer(1),
        ),
    )
    .await;
    let mut drift = home_session("s2");
    drift.device_id = "dev_other".into();
    drift.ip = "114.122.7.200".into();
    drift.accept_language = "id-ID,id;q=0.9".into();
    let drifted = score_ok(
        c,
        payment("p_drift", "pm_1", 2500, Some(drift), customer(1)),
    )
    .await;
    assert!(drifted.fraud_probability > base.fraud_probability);
}

#[tokio::test]
async fn get_payment_method_returns_the_creation_session() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    let session = home_session("sess_create");
    register(
        c,
        registration("pm_x", "fp_x", DAY_MS, Some(session.clone()), customer(9)),
    )
    .await;
    let pm = c
        .get_payment_method(proto::GetPaymentMethodRequest {
            payment_method_id: "pm_x".into(),
        })
        .await
        .expect("found")
        .into_inner();
    assert_eq!(pm.id, "pm_x");
    assert_eq!(pm.r#type(), proto::PaymentMethodType::Card);
    assert_eq!(pm.card_fingerprint, "fp_x");
    assert_eq!(pm.card_country, "FR");
    assert_eq!(pm.creation_session, Some(session));
    assert_eq!(pm.customer, Some(customer(9)));

    let missing = c
        .get_payment_method(proto::GetPaymentMethodRequest {
            payment_method_id: "pm_nope".into(),
        })
        .await
        .expect_err("unknown id");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("payment_method_id"));
}

#[tokio::test]
async fn an_inline_creation_session_takes_precedence() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    register(
        c,
        registration(
            "pm_1",
            "fp_1",
            90 * DAY_MS,
            Some(home_session("registered")),
            customer(1),
        ),
    )
    .await;
    let mut ev = payment("p1", "pm_1", 1000, Some(home_session("pay")), customer(1));
    if let Some(pm) = ev.payment_method.as_mut() {
        pm.creation_session = Some(home_session("inline"));
    }
    let out = score_ok(c, ev).await;
    assert_eq!(out.creation_session_id, "inline");

    // A method sent entirely inline, never registered.
    let ev = proto::PaymentEvent {
        payment_id: "p2".into(),
        object_type: proto::ObjectType::Charge as i32,
        amount: 1000,
        currency: "eur".into(),
        payment_method: Some(proto::PaymentMethod {
            r#type: proto::PaymentMethodType::Card as i32,
            card_fingerprint: "fp_inline".into(),
            ..Default::default()
        }),
        session: Some(home_session("pay2")),
        ..Default::default()
    };
    let out = score_ok(c, ev).await;
    assert_eq!(out.creation_session_id, "");
    assert!(matches!(
        out.risk_level(),
        RiskLevel::Normal | RiskLevel::Elevated | RiskLevel::Highest
    ));
}

#[tokio::test]
async fn velocity_raises_the_score_of_card_testing() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    let mut first = None;
    let mut last = None;
    // Thirty new cards from one phone and IP within minutes.
    for i in 0..30 {
        let mut s = foreign_session(&format!("s{i}"));
        s.device_id = "dev_tester".into();
        let ev = proto::PaymentEvent {
            payment_id: format!("ct_{i}"),
            object_type: proto::ObjectType::Charge as i32,
            amount: 100,
            currency: "usd".into(),
            customer: Some(proto::Customer {
                id: String::new(),
                email: "tester@mail.example".into(),
            }),
            payment_method: Some(proto::PaymentMethod {
                r#type: proto::PaymentMethodType::Card as i32,
                card_fingerprint: format!("fp_test_{i}"),
                ..Default::default()
            }),
            session: Some(s),
            ..Default::default()
        };
        let out = score_ok(c, ev).await;
        if first.is_none() {
            first = Some(out.clone());
        }
        last = Some(out);
    }
    let (first, last) = (first.expect("first"), last.expect("last"));
    assert!(last.fraud_probability > first.fraud_probability);
    assert_eq!(last.risk_level(), RiskLevel::Highest, "{last:?}");
    assert_eq!(last.decision(), Decision::Block);
    assert_eq!(last.reason, "highest_risk_level");
    assert_eq!(last.rule, "block_if_highest_risk");
}

/// What a payment naming an unknown payment method must get: a scored
/// outcome, no error, no creation session.
fn assert_scored_without_creation_session(o: &proto::Outcome, id: &str) {
    assert_eq!(o.payment_id, id);
    assert!(o.error.is_none(), "{o:?}");
    assert!(
        matches!(
            o.risk_level(),
            RiskLevel::Normal | RiskLevel::Elevated | RiskLevel::Highest
        ),
        "assessed by the model: {o:?}"
    );
    assert!(!o.model_version.is_empty());
    assert_eq!(
        o.creation_session_id, "",
        "no creation session was compared"
    );
    assert_eq!(o.session_id, "sess_pay");
}

#[tokio::test]
async fn a_payment_method_the_server_never_saw_is_scored_not_refused() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    let ev = |id: &str| {
        payment(
            id,
            "pm_never_registered",
            2500,
            Some(home_session("sess_pay")),
            customer(1),
        )
    };
    let unary = score_ok(c, ev("pay_unary")).await;
    assert_scored_without_creation_session(&unary, "pay_unary");
    let mut outcomes = c
        .score_stream(tokio_stream::iter(vec![ev("pay_stream")]))
        .await
        .expect("stream opens")
        .into_inner();
    let streamed = outcomes
        .message()
        .await
        .expect("no stream error")
        .expect("one outcome");
    assert_scored_without_creation_session(&streamed, "pay_stream");
    // The same card registered with its session is compared again.
    register(
        c,
        registration(
            "pm_never_registered",
            "fp_1",
            30 * DAY_MS,
            Some(home_session("sess_create")),
            customer(1),
        ),
    )
    .await;
    let known = score_ok(c, ev("pay_known")).await;
    assert_eq!(known.creation_session_id, "sess_create");
}
