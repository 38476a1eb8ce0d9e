//! The in-process scoring path, per event: parse the protobuf bytes into a
//! borrowed view, validate, look up state, record velocity, compute
//! features, run the model, decide (`decode_validate_assess`); the same plus
//! building and encoding the outcome (`decode_validate_score_encode`); and
//! each stage alone. Every event carries a fresh payment id.
//!
//! Run: `cargo bench --bench scoring`.

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use riskstream::engine::{Engine, EngineConfig};
use riskstream::features::{self, Inputs};
use riskstream::metrics::Metrics;
use riskstream::model::{Model, ModelHandle};
use riskstream::proto;
use riskstream::state::{MemoryStore, StoreLimits, Velocity};
use riskstream::validate::{self, Clock};
use riskstream::view;
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
        engine.register_message(&req, &clock).expect("registers");
    }
    engine
}

fn clock() -> Clock {
    Clock {
        now_ms: T0 + 86_400_000 * 365,
        max_future_skew_ms: 0,
    }
}

/// Encoded events whose payment ids are 12 digits at a known offset, so that
/// each iteration can stamp a fresh id into a reused buffer.
struct Templates {
    encoded: Vec<(Vec<u8>, usize)>,
}

const ID_DIGITS: usize = 12;

impl Templates {
    fn new() -> Self {
        let encoded = (0..CUSTOMERS * 2)
            .map(|i| {
                let mut ev = event(i);
                ev.payment_id = format!("pay_{:0width$}", 0, width = ID_DIGITS);
                let bytes = ev.encode_to_vec();
                let at = bytes
                    .windows(4)
                    .position(|w| w == b"pay_")
                    .expect("id in message")
                    + 4;
                (bytes, at)
            })
            .collect();
        Templates { encoded }
    }

    /// The `n`th event with payment id `n`, in a fresh buffer (as a request
    /// arrives: just received, hot in cache).
    fn next(&mut self, n: u64) -> Vec<u8> {
        let (bytes, at) = &self.encoded[(n % self.encoded.len() as u64) as usize];
        let mut buf = bytes.clone();
        let mut v = n;
        for d in buf[*at..*at + ID_DIGITS].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        buf
    }
}

/// Requests prepared per batch: few enough to stay in cache, like requests
/// just read from a socket.
const BATCH: BatchSize = BatchSize::NumIterations(64);

fn bench(c: &mut Criterion) {
    let engine = engine();
    let clock = clock();
    let mut templates = Templates::new();

    let mut g = c.benchmark_group("score_path");
    g.throughput(Throughput::Elements(1));

    // The scoring path: parse, validate, state, features, model, decision.
    let mut n: u64 = 0;
    g.bench_function("decode_validate_assess", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                templates.next(n)
            },
            |raw| {
                let v = view::payment_event(raw).expect("parses");
                let p = validate::payment(&v, &clock).expect("valid");
                black_box(engine.assess(&p));
            },
            BATCH,
        )
    });

    // Everything a server does per streamed event, minus the transport: the
    // above, plus building and encoding the outcome.
    let mut out = Vec::with_capacity(1024);
    g.bench_function("decode_validate_score_encode", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                Bytes::from(templates.next(n))
            },
            |raw| {
                let outcome = engine.score_or_error(raw, &clock);
                out.clear();
                outcome.encode(&mut out).expect("encodes");
                black_box(&out);
            },
            BATCH,
        )
    });

    let one = event(1).encode_to_vec();
    g.bench_function("decode", |b| {
        b.iter(|| black_box(view::payment_event(black_box(&one)).expect("parses")))
    });
    let parsed = view::payment_event(&one).expect("parses");
    g.bench_function("validate", |b| {
        b.iter(|| black_box(validate::payment(black_box(&parsed), &clock)).is_ok())
    });

    let three = event(3).encode_to_vec();
    let v3 = view::payment_event(&three).expect("parses");
    let payment = validate::payment(&v3, &clock).expect("valid");
    let create = session("create", 3, false).encode_to_vec();
    let create = proto::Session::decode(create.as_slice()).expect("decodes");
    let create_bytes = proto::PaymentEvent {
        session: Some(create),
        ..Default::default()
    }
    .encode_to_vec();
    let create_view = view::payment_event(&create_bytes).expect("parses");
    let creation = riskstream::fingerprint::Facts::of(
        &validate::session("c", create_view.session.as_ref().expect("session"), &clock)
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
        ..Velocity::default()
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

    let outcome = engine.score_or_error(&Bytes::from(event(5).encode_to_vec()), &clock);
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
