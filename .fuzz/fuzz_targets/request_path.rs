//! Arbitrary request bytes through the synchronous request path, as the
//! server calls it: `Score` (stream form, `Engine::score_or_error`),
//! `RegisterPaymentMethod`, `ReportFeedback`, `GetPaymentMethod` and the
//! store's sweep, several requests per input against a fresh in-memory store
//! (see `riskstream_fuzz::requests` for the framing).
//!
//! Beyond "no panic", every answer must be one a client can read:
//! - an outcome encodes, decodes with the public prost types (every string
//!   UTF-8) and re-encodes to the same bytes;
//! - a rejected event's outcome carries `invalid_argument`, the salvaged
//!   payment id when it is UTF-8, and no score;
//! - a scored event's outcome names its payment, has a score of at most 99,
//!   a probability in [0, 1], a known level and decision, a level that
//!   matches the score, at most `max_insights` insights of known features,
//!   finite, non-zero and largest first;
//! - a registered method can be read back by its id, and the store never
//!   holds more methods than its bound;
//! - errors map to the codes their calls can fail with.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use riskstream::decision::Policy;
use riskstream::engine::{Engine, EngineConfig, risk_level_proto};
use riskstream::error::{ErrorCode, ServiceError};
use riskstream::features::Feature;
use riskstream::metrics::Metrics;
use riskstream::model::ModelHandle;
use riskstream::proto::{self, wire};
use riskstream::server::status::to_status;
use riskstream::state::List;
use riskstream::view;
use riskstream_fuzz::{Kind, LIMITS, clock, default_model, engine, requests};
use std::sync::LazyLock;

struct Fixture {
    model: ModelHandle,
    version: String,
    metrics: Metrics,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let model = default_model();
    Fixture {
        version: model.version().to_owned(),
        model: ModelHandle::new(model),
        metrics: Metrics::noop(),
    }
});

/// `msg` encoded, decoded as the public type `P` and encoded again: the
/// bytes must not change.
fn round_trip<W: Message + std::fmt::Debug, P: Message + Default>(msg: &W) -> P {
    let bytes = msg.encode_to_vec();
    let public = P::decode(&bytes[..])
        .unwrap_or_else(|e| panic!("an answer a client cannot decode ({e}): {msg:?}"));
    assert_eq!(
        public.encode_to_vec(),
        bytes,
        "the public type re-encodes an answer differently"
    );
    public
}

/// What an error must look like, whatever the call.
fn check_error(e: ServiceError, allowed: &[ErrorCode]) {
    assert!(allowed.contains(&e.code()), "unexpected error class: {e:?}");
    // The gRPC edge turns it into a status.
    let status = to_status(e);
    assert!(!status.message().is_empty());
}

fn score(engine: &Engine, raw: &[u8], max_insights: usize, version: &str) {
    let raw = Bytes::copy_from_slice(raw);
    let outcome: wire::Outcome = engine.score_or_error(&raw, &clock());
    let public: proto::Outcome = round_trip(&outcome);
    match &public.error {
        Some(err) => {
            assert_eq!(err.code, "invalid_argument", "{public:?}");
            assert!(!err.message.is_empty(), "{public:?}");
            let salvaged = view::salvage_payment_id(&raw);
            match std::str::from_utf8(salvaged) {
                Ok(id) => assert_eq!(public.payment_id, id),
                Err(_) => assert!(public.payment_id.is_empty(), "{public:?}"),
            }
            assert_eq!(public.risk_score, 0);
            assert_eq!(public.fraud_probability, 0.0);
            assert!(public.insights.is_empty());
        }
        None => {
            let ev = view::payment_event(&raw).expect("a scored event parses");
            assert_eq!(public.payment_id.as_bytes(), ev.payment_id);
            assert!(!public.payment_id.is_empty());
            assert!(public.risk_score <= 99, "{public:?}");
            let p = public.fraud_probability;
            assert!(p.is_finite() && (0.0..=1.0).contains(&p), "{public:?}");
            let level = proto::RiskLevel::try_from(public.risk_level).expect("a known level");
            proto::Decision::try_from(public.decision).expect("a known decision");
            match level {
                proto::RiskLevel::Normal
                | proto::RiskLevel::Elevated
                | proto::RiskLevel::Highest => {
                    assert_eq!(public.model_version, version);
                    let expected = risk_level_proto(Policy::default().level(public.risk_score));
                    assert_eq!(public.risk_level, expected as i32, "{public:?}");
                }
                proto::RiskLevel::NotAssessed | proto::RiskLevel::Unknown => {
                    assert_eq!(public.risk_score, 0, "{public:?}");
                    assert_eq!(public.fraud_probability, 0.0, "{public:?}");
                    assert!(public.insights.is_empty(), "{public:?}");
                }
                proto::RiskLevel::Unspecified => panic!("unspecified level: {public:?}"),
            }
            assert!(public.insights.len() <= max_insights, "{public:?}");
            for (i, insight) in public.insights.iter().enumerate() {
                assert!(
                    Feature::from_name(&insight.feature).is_some(),
                    "unknown feature: {public:?}"
                );
                let c = insight.contribution;
                assert!(c.is_finite() && c != 0.0, "{public:?}");
                if i > 0 {
                    assert!(c <= public.insights[i - 1].contribution, "{public:?}");
                }
            }
        }
    }
}

fn register(engine: &Engine, raw: &[u8]) {
    match engine.register(raw, &clock()) {
        Ok((id, commit)) => {
            commit.wait().expect("the memory store commits at once");
            assert!(!id.is_empty());
            let get = proto::GetPaymentMethodRequest {
                payment_method_id: id.clone(),
            };
            let pm = engine
                .get_payment_method(&get.encode_to_vec())
                .expect("a registered method is found");
            let public: proto::PaymentMethod = round_trip(&pm);
            assert_eq!(public.id, id);
        }
        Err(e) => check_error(
            e,
            &[ErrorCode::InvalidArgument, ErrorCode::ResourceExhausted],
        ),
    }
    let stats = engine.store().stats();
    assert!(stats.payment_methods <= LIMITS.max_payment_methods);
}

fn feedback(engine: &Engine, raw: &[u8]) {
    match engine.feedback(raw, &clock()) {
        Ok((lists, commit)) => {
            commit.wait().expect("the memory store commits at once");
            for l in lists {
                assert!(
                    matches!(
                        List::from_name(l),
                        Some(List::BlockCardFingerprint | List::BlockEmail)
                    ),
                    "feedback added to {l}"
                );
            }
        }
        Err(e) => check_error(e, &[ErrorCode::InvalidArgument, ErrorCode::NotFound]),
    }
}

fn get(engine: &Engine, raw: &[u8]) {
    match engine.get_payment_method(raw) {
        Ok(pm) => {
            let public: proto::PaymentMethod = round_trip(&pm);
            let asked = view::get(raw).expect("a served request parses");
            assert_eq!(public.id.as_bytes(), asked.payment_method_id);
        }
        Err(e) => check_error(e, &[ErrorCode::InvalidArgument, ErrorCode::NotFound]),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let engine = engine(&f.model, &f.metrics);
    let max_insights = EngineConfig::default().max_insights;
    for (kind, raw) in requests(data) {
        match kind {
            Kind::Score => score(&engine, raw, max_insights, &f.version),
            Kind::Register => register(&engine, raw),
            Kind::Feedback => feedback(&engine, raw),
            Kind::Get => get(&engine, raw),
            Kind::Sweep => {
                engine.store().sweep();
            }
        }
    }
});
