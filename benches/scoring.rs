//! The in-process scoring path, per event: decode the protobuf bytes,
//! validate, look up state, record velocity, compute features, run the model,
//! decide (`decode_validate_assess`); the same plus building and encoding the
//! outcome (`decode_validate_score_encode`); and each stage alone.
//!
//! Run: `cargo bench --bench scoring`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use riskstream::engine::{Engine, EngineConfig};
use riskstream::features::{self, Inputs};
use riskstream::metrics::Metrics;
use riskstream::model::{Model, ModelHandle};
use riskstream::proto::{self, wire};
use riskstream::state::{MemoryStore, StoreLimits, Velocity};
use riskstream::validate::{self, Clock};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CUSTOMERS: u32 = 10_000;
const T0: i64 = 1_800_000_000_000;

fn session(id: &str, c: u32, drift: bool) -> proto::Session {
    proto::Session {
        session_id: id.into(),
        captured_at_ms: T0,
        ip: if drift { format!("114.122.{}.{}", c % 250, c % 200) } else { format!("37.164.{}.{}", c % 250, c % 200) },
        user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15".into(),
        accept_language: if drift { "id-ID,id;q=0.9".into() } else { "fr-FR,fr;q=0.9,en;q=0.7".into() },
        timezone: if drift { "Asia/Jakarta".into() } else { "Europe/Paris".into() },
        utc_offset_minutes: if drift { 420 } else { 60 },
        screen_width: 1440,
        screen_height: 900,
        color_depth: 24,
        device_id: format!("dev_{}", if drift { c + 1 } else { c }),
        platform: "MacIntel".into(),
    }
}

fn event(i: u32) -> proto::PaymentEvent {
    let c = i % CUSTOMERS;
    proto::PaymentEvent {
        payment_id: format!("pay_{i}"),
        object_type: proto::ObjectType::PaymentIntent as i32,
        amount: 1000 + i64::from(i % 5000),
        currency: "eur".into(),
        created_at_ms: T0 + i64::from(i) * 10,
        customer: Some(proto::Customer {
            id: format!("cus_{c}"),
            email: format!("customer{c}@example.com"),
        }),
        merchant_id: "acct_1".into(),
        payment_method: Some(proto::PaymentMethod {
            id: format!("pm_{c}"),
            ..Default::default()
        }),
        session: Some(session(&format!("sess_{i}"), c, i.is_multiple_of(10))),
        ..Default::default()
    }
}

fn engine() -> Engine {
    let model = Model::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/default.json"
    )))
    .expect("default model");
    let engine = Engine::new(
        Arc::new(MemoryStore::new(StoreLimits::default(), 1)),
        ModelHandle::new(model),
        EngineConfig::default(),
        Metrics::noop(),
        None,
    );
    let clock = clock();
    for c in 0..CUSTOMERS {
        let req = proto::RegisterPaymentMethodRequest {
            payment_method: Some(proto::PaymentMethod {
                id: format!("pm_{c}"),
                r#type: proto::PaymentMethodType::Card as i32,
                card_fingerprint: format!("fp_{c}"),
                card_country: "FR".into(),
                created_at_ms: T0 - 30 * 86_400_000,
                creation_session: Some(session(&format!("create_{c}"), c, false)),
                customer: None,
            }),
            customer: Some(proto::Customer {
                id: format!("cus_{c}"),
                email: format!("customer{c}@example.com"),
            }),
        };
        engine
            .register(proto::convert(&req).expect("wire form"), &clock)
            .expect("registers");
    }
    engine
}

fn clock() -> Clock {
    Clock {
        now_ms: T0 + 86_400_000 * 365,
        max_future_skew_ms: 0,
    }
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let clock = clock();
    // Request bodies as tonic hands them to the decoder: `Bytes`, so string
    // fields are sliced, not copied.
    let encoded: Vec<Bytes> = (0..CUSTOMERS * 2)
        .map(|i| Bytes::from(event(i).encode_to_vec()))
        .collect();
    let fresh_id = |n: u64| {
        let mut id = String::with_capacity(16);
        let _ = write!(id, "p{n}");
        Bytes::from(id)
    };

    let mut g = c.benchmark_group("score_path");
    g.throughput(Throughput::Elements(1));

    // The scoring path: decode, validate, state, features, model, decision.
    let mut n: u64 = 0;
    g.bench_function("decode_validate_assess", |b| {
        b.iter(|| {
            n += 1;
            let bytes = encoded[(n % encoded.len() as u64) as usize].clone();
            let mut ev = wire::PaymentEvent::decode(bytes).expect("decodes");
            // A fresh payment id each time, as in real traffic.
            ev.payment_id = fresh_id(n);
            let p = validate::payment(ev, &clock).expect("valid");
            black_box(engine.assess(&p).expect("assessed"));
        })
    });

    // Everything a server does per streamed event, minus the transport:
    // the above, plus building and encoding the outcome.
    let mut out = Vec::with_capacity(1024);
    g.bench_function("decode_validate_score_encode", |b| {
        b.iter(|| {
            n += 1;
            let bytes = encoded[(n % encoded.len() as u64) as usize].clone();
            let mut ev = wire::PaymentEvent::decode(bytes).expect("decodes");
            ev.payment_id = fresh_id(n);
            let outcome = engine.score_or_error(ev, &clock);
            out.clear();
            outcome.encode(&mut out).expect("encodes");
            black_box(&out);
        })
    });

    let bytes = &encoded[1];
    g.bench_function("decode", |b| {
        b.iter(|| black_box(wire::PaymentEvent::decode(black_box(bytes.clone())).expect("decodes")))
    });
    let ev: wire::PaymentEvent = proto::convert(&event(1)).expect("wire form");
    g.bench_function("validate", |b| {
        b.iter_batched(
            || ev.clone(),
            |e| black_box(validate::payment(e, &clock)),
            criterion::BatchSize::SmallInput,
        )
    });

    let payment =
        validate::payment(proto::convert(&event(3)).expect("wire form"), &clock).expect("valid");
    let creation = riskstream::features::session::Facts::of(
        &validate::session(
            "c",
            proto::convert(&session("create", 3, false)).expect("wire form"),
            &clock,
        )
        .expect("valid"),
    );
    let velocity = Velocity {
        card_1h: 1,
        card_24h: 2,
        card_amount_24h: 4000,
        email_1h: 1,
        email_24h: 2,
        ip_1h: 1,
        ip_24h: 3,
        device_1h: 1,
        device_24h: 2,
        device_cards_24h: 1,
        ip_cards_24h: 1,
    };
    let inputs = Inputs {
        payment: &payment,
        creation: Some(&creation),
        card_country: Some(*b"FR"),
        method_created_at_ms: Some(T0 - 86_400_000),
        velocity: &velocity,
    };
    g.bench_function("features", |b| {
        b.iter(|| black_box(features::extract(black_box(&inputs))))
    });
    let model = engine.model().current().expect("model");
    let x = features::extract(&inputs);
    g.bench_function("model", |b| {
        b.iter(|| black_box(model.predict(black_box(&x))))
    });

    let outcome = engine.score_or_error(proto::convert(&event(5)).expect("wire form"), &clock);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&outcome).encode(&mut out).expect("encodes");
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
