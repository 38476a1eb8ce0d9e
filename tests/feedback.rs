//! Fraud feedback feeds the default block lists; the next payment with the
//! same card or email is blocked with reason `blocklist`.

mod common;

use common::*;
use riskstream::proto::{self, Decision};

#[tokio::test]
async fn fraud_feedback_then_blocklist_block() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    c.register_payment_method(registration(
        "pm_1",
        "fp_stolen",
        30 * DAY_MS,
        Some(home_session("s0")),
        customer(1),
    ))
    .await
    .expect("registered");
    let first = c
        .score(payment(
            "pay_1",
            "pm_1",
            5000,
            Some(home_session("s1")),
            customer(1),
        ))
        .await
        .expect("scored")
        .into_inner();
    assert_eq!(first.decision(), Decision::Allow);

    let fb = c
        .report_feedback(proto::FeedbackEvent {
            payment_id: "pay_1".into(),
            kind: proto::FeedbackKind::DisputeFraud as i32,
            reported_at_ms: 0,
        })
        .await
        .expect("feedback accepted")
        .into_inner();
    let mut lists = fb.lists_updated.clone();
    lists.sort();
    assert_eq!(lists, vec!["block_card_fingerprint", "block_email"]);

    // The same card, from the same trusted session: blocked by the list.
    let again = c
        .score(payment(
            "pay_2",
            "pm_1",
            5000,
            Some(home_session("s2")),
            customer(1),
        ))
        .await
        .expect("scored")
        .into_inner();
    assert_eq!(again.decision(), Decision::Block, "{again:?}");
    assert_eq!(again.reason, "blocklist");
    assert_eq!(again.rule, "block_card_fingerprint");
    assert!(!again.seller_message.is_empty());

    // Another card of the same email: blocked by the email list.
    c.register_payment_method(registration(
        "pm_2",
        "fp_other",
        30 * DAY_MS,
        Some(home_session("s3")),
        customer(1),
    ))
    .await
    .expect("registered");
    let other = c
        .score(payment(
            "pay_3",
            "pm_2",
            5000,
            Some(home_session("s4")),
            customer(1),
        ))
        .await
        .expect("scored")
        .into_inner();
    assert_eq!(other.decision(), Decision::Block);
    assert_eq!(other.rule, "block_email");

    // The same report again changes nothing.
    let fb = c
        .report_feedback(proto::FeedbackEvent {
            payment_id: "pay_1".into(),
            kind: proto::FeedbackKind::Fraudulent as i32,
            reported_at_ms: 0,
        })
        .await
        .expect("feedback accepted")
        .into_inner();
    assert!(fb.lists_updated.is_empty());
}

#[tokio::test]
async fn legitimate_feedback_blocks_nothing_and_unknown_payments_are_not_found() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    c.register_payment_method(registration(
        "pm_1",
        "fp_1",
        30 * DAY_MS,
        Some(home_session("s0")),
        customer(1),
    ))
    .await
    .expect("registered");
    c.score(payment(
        "pay_1",
        "pm_1",
        5000,
        Some(home_session("s1")),
        customer(1),
    ))
    .await
    .expect("scored");
    let fb = c
        .report_feedback(proto::FeedbackEvent {
            payment_id: "pay_1".into(),
            kind: proto::FeedbackKind::Legitimate as i32,
            reported_at_ms: 0,
        })
        .await
        .expect("accepted")
        .into_inner();
    assert!(fb.lists_updated.is_empty());
    let next = c
        .score(payment(
            "pay_2",
            "pm_1",
            5000,
            Some(home_session("s2")),
            customer(1),
        ))
        .await
        .expect("scored")
        .into_inner();
    assert_eq!(next.decision(), Decision::Allow);

    let err = c
        .report_feedback(proto::FeedbackEvent {
            payment_id: "pay_unknown".into(),
            kind: proto::FeedbackKind::Fraudulent as i32,
            reported_at_ms: 0,
        })
        .await
        .expect_err("unknown payment");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().starts_with("payment_id:"),
        "{}",
        err.message()
    );
}
