//! Fraud feedback feeds the default block lists; the next payment with the
//! same card or email is blocked with reason `blocklist`.

mod common;

use common::*;
use riskstream::proto::{self, Decision};

#[tokio::test]
async fn fraud_feedback_then_blocklist_block() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    register(
        c,
        registration(
            "pm_1",
            "fp_stolen",
            30 * DAY_MS,
            Some(home_session("s0")),
            customer(1),
        ),
    )
    .await;
    let first = score_ok(
        c,
        payment("pay_1", "pm_1", 5000, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_eq!(first.decision(), Decision::Allow);

    let fb = feedback(c, "pay_1", proto::FeedbackKind::DisputeFraud)
        .await
        .expect("feedback accepted");
    let mut lists = fb.lists_updated.clone();
    lists.sort();
    assert_eq!(lists, vec!["block_card_fingerprint", "block_email"]);

    // The same card, from the same trusted session: blocked by the list.
    let again = score_ok(
        c,
        payment("pay_2", "pm_1", 5000, Some(home_session("s2")), customer(1)),
    )
    .await;
    assert_eq!(again.decision(), Decision::Block, "{again:?}");
    assert_eq!(again.reason, "blocklist");
    assert_eq!(again.rule, "block_card_fingerprint");
    assert!(!again.seller_message.is_empty());

    // Another card of the same email: blocked by the email list.
    register(
        c,
        registration(
            "pm_2",
            "fp_other",
            30 * DAY_MS,
            Some(home_session("s3")),
            customer(1),
        ),
    )
    .await;
    let other = score_ok(
        c,
        payment("pay_3", "pm_2", 5000, Some(home_session("s4")), customer(1)),
    )
    .await;
    assert_eq!(other.decision(), Decision::Block);
    assert_eq!(other.rule, "block_email");

    // The same report again changes nothing.
    let fb = feedback(c, "pay_1", proto::FeedbackKind::Fraudulent)
        .await
        .expect("feedback accepted");
    assert!(fb.lists_updated.is_empty());
}

#[tokio::test]
async fn legitimate_feedback_blocks_nothing_and_unknown_payments_are_not_found() {
    let mut srv = TestServer::start().await;
    let c = &mut srv.client;
    register_home_card(c).await;
    c.score(payment(
        "pay_1",
        "pm_1",
        5000,
        Some(home_session("s1")),
        customer(1),
    ))
    .await
    .expect("scored");
    let fb = feedback(c, "pay_1", proto::FeedbackKind::Legitimate)
        .await
        .expect("accepted");
    assert!(fb.lists_updated.is_empty());
    let next = score_ok(
        c,
        payment("pay_2", "pm_1", 5000, Some(home_session("s2")), customer(1)),
    )
    .await;
    assert_eq!(next.decision(), Decision::Allow);

    let err = feedback(c, "pay_unknown", proto::FeedbackKind::Fraudulent)
        .await
        .expect_err("unknown payment");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().starts_with("payment_id:"),
        "{}",
        err.message()
    );
}
