//! Nothing panics on request data: corrupted and truncated requests of every
//! kind go through the same engine calls the server makes, and every
//! payment event still gets exactly one outcome.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message;
use riskstream::engine::system_now_ms;
use riskstream::proto;

/// A deterministic stream of pseudo-random numbers.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
}

fn corrupt(rng: &mut Lcg, good: &[u8]) -> Vec<u8> {
    let mut m = good.to_vec();
    match rng.next() % 4 {
        0 => m.truncate((rng.next() as usize) % (good.len() + 1)),
        1 => {
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                m[i] = rng.next() as u8;
            }
        }
        2 => {
            let i = (rng.next() as usize) % m.len();
            m.insert(i, rng.next() as u8);
        }
        _ => m.extend((0..rng.next() % 16).map(|_| rng.next() as u8)),
    }
    m
}

#[tokio::test]
async fn corrupted_requests_never_panic_and_events_always_get_an_outcome() {
    let srv = TestServer::start().await;
    let engine = srv.engine.clone();
    let clock = engine.clock();
    let reg = registration(
        "pm_1",
        "fp_1",
        30 * DAY_MS,
        Some(home_session("s0")),
        customer(1),
    );
    engine.register_message(&reg, &clock).expect("registered");

    let mut event = payment(
        "pay_x",
        "pm_1",
        1234,
        Some(foreign_session("s1")),
        customer(1),
    );
    if let Some(pm) = event.payment_method.as_mut() {
        pm.creation_session = Some(home_session("inline"));
    }
    event.recurring = Some(proto::Recurring {
        subscription_id: "sub".into(),
        initial: true,
    });
    event.metadata.insert("order".into(), "o-1".into());
    let good_event = event.encode_to_vec();
    let good_reg = reg.encode_to_vec();
    let good_feedback = proto::FeedbackEvent {
        payment_id: "pay_x".into(),
        kind: proto::FeedbackKind::Fraudulent as i32,
        reported_at_ms: system_now_ms(),
    }
    .encode_to_vec();

    let mut rng = Lcg(42);
    let mut errors = 0;
    for _ in 0..20_000 {
        let bad = Bytes::from(corrupt(&mut rng, &good_event));
        let outcome = engine.score_or_error(&bad, &clock);
        errors += usize::from(outcome.error.is_some());
        let _ = engine.register(&corrupt(&mut rng, &good_reg), &clock);
        let _ = engine.feedback(&corrupt(&mut rng, &good_feedback), &clock);
        let _ = engine.get_payment_method(&corrupt(&mut rng, &good_reg));
    }
    assert!(errors > 1_000, "corruption is mostly caught: {errors}");
    // The engine still scores a good event afterwards.
    let ok = engine.score_or_error(&Bytes::from(good_event), &clock);
    assert!(ok.error.is_none(), "{ok:?}");
}

/// Found by the `request_path` fuzz target: an event whose `payment_id` is
/// not UTF-8 got an error outcome carrying those bytes as its `payment_id`,
/// which no client can decode (a protobuf string must be UTF-8), so one
/// such event broke the client's whole stream. The id is now left empty.
#[test]
fn an_event_whose_payment_id_is_not_utf8_gets_an_outcome_a_client_can_decode() {
    use riskstream::engine::{Engine, EngineConfig};
    use riskstream::metrics::Metrics;
    use riskstream::model::ModelHandle;
    use riskstream::state::{MemoryStore, StoreLimits};
    use std::sync::Arc;

    let engine = Engine::new(
        Arc::new(MemoryStore::new(StoreLimits::default(), 7)),
        ModelHandle::new(default_model()),
        EngineConfig::default(),
        Metrics::noop(),
        None,
    );
    let clock = engine.clock();
    let inputs: [&[u8]; 3] = [
        // The fuzzer's minimized input: payment_id "pa_\xffown".
        b"\x0a\x07pa_\xffown",
        b"\x0a\x01\xff",
        // A valid id first, then an invalid one: the last one read counts.
        b"\x0a\x02ok\x0a\x01\xff",
    ];
    for raw in inputs {
        let outcome = engine.score_or_error(&Bytes::from_static(raw), &clock);
        let decoded = proto::Outcome::decode(&outcome.encode_to_vec()[..])
            .unwrap_or_else(|e| panic!("{raw:?}: the outcome does not decode: {e}"));
        assert_eq!(decoded.payment_id, "", "{raw:?}");
        let err = decoded.error.expect("an error outcome");
        assert_eq!(err.code, "invalid_argument");
        assert_eq!(err.field, "payment_id");
    }
}
