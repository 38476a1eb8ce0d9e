//! Every NOT_ASSESSED and UNKNOWN case, the elevated-review setting and
//! SetupIntents, through the real gRPC client.

mod common;

use common::*;
use riskstream::decision::{Action, Policy};
use riskstream::model::file::{Estimator, ModelFile};
use riskstream::model::{Model, ModelHandle};
use riskstream::proto::{self, Decision, RiskLevel};

fn assert_not_assessed(o: &proto::Outcome) {
    assert_eq!(o.risk_level(), RiskLevel::NotAssessed, "{o:?}");
    assert_eq!(o.decision(), Decision::Allow);
    assert_eq!(o.reason, "not_assessed_risk_level");
    assert_eq!(o.risk_score, 0);
    assert!(o.insights.is_empty());
}

#[tokio::test]
async fn other_payment_method_types_are_not_assessed() {
    let mut srv = TestServer::start().await;
    let ev = proto::PaymentEvent {
        payment_id: "p_other".into(),
        object_type: proto::ObjectType::PaymentIntent as i32,
        amount: 1000,
        currency: "eur".into(),
        payment_method: Some(proto::PaymentMethod {
            r#type: proto::PaymentMethodType::Other as i32,
            ..Default::default()
        }),
        session: Some(home_session("s1")),
        ..Default::default()
    };
    let out = score_ok(&mut srv.client, ev).await;
    assert_not_assessed(&out);

    // SEPA and ACH debits are assessed.
    for (i, t) in [
        proto::PaymentMethodType::SepaDebit,
        proto::PaymentMethodType::AchDebit,
    ]
    .into_iter()
    .enumerate()
    {
        let ev = proto::PaymentEvent {
            payment_id: format!("p_debit_{i}"),
            object_type: proto::ObjectType::PaymentIntent as i32,
            amount: 1000,
            currency: "eur".into(),
            payment_method: Some(proto::PaymentMethod {
                r#type: t as i32,
                ..Default::default()
            }),
            session: Some(home_session("s2")),
            ..Default::default()
        };
        let out = score_ok(&mut srv.client, ev).await;
        assert!(
            matches!(
                out.risk_level(),
                RiskLevel::Normal | RiskLevel::Elevated | RiskLevel::Highest
            ),
            "{t:?}: {out:?}"
        );
    }
}

#[tokio::test]
async fn opted_out_payments_are_not_assessed() {
    let mut srv = TestServer::start().await;
    register_home_card(&mut srv.client).await;
    let mut ev = payment("p_opt", "pm_1", 1000, Some(home_session("s1")), customer(1));
    ev.risk_assessment_opt_out = true;
    let out = score_ok(&mut srv.client, ev).await;
    assert_not_assessed(&out);
}

#[tokio::test]
async fn recurring_payments_after_the_first_are_not_assessed() {
    let mut srv = TestServer::start().await;
    register_home_card(&mut srv.client).await;
    let mut initial = payment(
        "p_sub_1",
        "pm_1",
        999,
        Some(home_session("s1")),
        customer(1),
    );
    initial.recurring = Some(proto::Recurring {
        subscription_id: "sub_1".into(),
        initial: true,
    });
    let out = score_ok(&mut srv.client, initial).await;
    assert_eq!(
        out.risk_level(),
        RiskLevel::Normal,
        "the initial payment is assessed"
    );

    let mut renewal = payment("p_sub_2", "pm_1", 999, None, customer(1));
    renewal.off_session = true;
    renewal.recurring = Some(proto::Recurring {
        subscription_id: "sub_1".into(),
        initial: false,
    });
    let out = score_ok(&mut srv.client, renewal).await;
    assert_not_assessed(&out);
}

#[tokio::test]
async fn rules_still_run_on_payments_not_assessed() {
    let mut srv = TestServer::start().await;
    register_home_card(&mut srv.client).await;
    let (_, commit) = srv
        .engine
        .add_list_items(
            riskstream::state::List::BlockCardFingerprint,
            &["fp_1"],
            "test",
            0,
            riskstream::state::ListSource::Admin,
            0,
        )
        .expect("valid entry");
    commit.durable().await.expect("saved");
    let mut ev = payment("p_opt", "pm_1", 1000, Some(home_session("s1")), customer(1));
    ev.risk_assessment_opt_out = true;
    let out = score_ok(&mut srv.client, ev).await;
    assert_eq!(out.risk_level(), RiskLevel::NotAssessed);
    assert_eq!(out.decision(), Decision::Block);
    assert_eq!(out.reason, "blocklist");
    assert_eq!(out.rule, "block_card_fingerprint");
}

/// The outcome of a payment from a foreign session, on a server scoring with `model`.
async fn foreign_payment_outcome(model: ModelHandle) -> proto::Outcome {
    let mut srv = TestServer::with(Setup {
        model,
        ..Setup::default()
    })
    .await;
    register_home_card(&mut srv.client).await;
    score_ok(
        &mut srv.client,
        payment("p1", "pm_1", 1000, Some(foreign_session("s1")), customer(1)),
    )
    .await
}

#[tokio::test]
async fn a_missing_model_fails_open_as_unknown() {
    let out = foreign_payment_outcome(ModelHandle::empty()).await;
    assert_eq!(out.risk_level(), RiskLevel::Unknown);
    assert_eq!(out.decision(), Decision::Allow);
    assert_eq!(out.reason, "unknown_risk_level");
    assert_eq!(out.risk_score, 0);
    assert!(out.error.is_none());
}

#[tokio::test]
async fn a_model_that_would_overflow_at_run_time_is_refused_at_load() {
    // Finite parameters whose product overflows would make every payment
    // UNKNOWN (inference yields NaN): such a model never loads, and the
    // scoring path's fail-open branch is the missing model's, above.
    let mut file: ModelFile = default_model().file().clone();
    let Estimator::LogisticRegression(lr) = &mut file.estimator else {
        panic!("the default model is a logistic regression");
    };
    let amount = file
        .features
        .iter()
        .position(|f| f == "amount")
        .expect("amount");
    let device = file
        .features
        .iter()
        .position(|f| f == "device_mismatch")
        .expect("device");
    lr.weights[amount] = 1e300;
    lr.scale[amount] = 1e-300;
    lr.weights[device] = -1e300;
    lr.scale[device] = 1e-300;
    let err = Model::from_file(file).expect_err("refused");
    assert!(err.to_string().contains("weights"), "{err}");
    // The default model scores the same payment.
    let out = foreign_payment_outcome(ModelHandle::new(default_model())).await;
    assert_ne!(out.risk_level(), RiskLevel::Unknown, "{out:?}");
    assert!(out.risk_score > 0);
}

#[tokio::test]
async fn elevated_review_never_applies_to_setup_intents() {
    // Thresholds at 1/2 so that every assessed payment is highest or elevated.
    let mut setup = Setup::default();
    setup.config.policy = Policy {
        elevated_threshold: 1,
        highest_threshold: 99,
        elevated_action: Action::Review,
        highest_action: Action::Block,
    };
    let mut srv = TestServer::with(setup).await;
    register_home_card(&mut srv.client).await;
    let pay = score_ok(
        &mut srv.client,
        payment("p1", "pm_1", 1000, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_eq!(pay.risk_level(), RiskLevel::Elevated, "{pay:?}");
    assert_eq!(pay.decision(), Decision::Review);
    assert_eq!(pay.reason, "elevated_risk_level");
    assert_eq!(pay.rule, "review_if_elevated_risk");

    let mut setup_intent = payment("seti_1", "pm_1", 0, Some(home_session("s2")), customer(1));
    setup_intent.object_type = proto::ObjectType::SetupIntent as i32;
    setup_intent.currency.clear();
    let out = score_ok(&mut srv.client, setup_intent).await;
    assert_eq!(out.risk_level(), RiskLevel::Elevated, "{out:?}");
    assert_eq!(out.decision(), Decision::Allow);
    assert_eq!(out.reason, "elevated_risk_level");
}
