//! The in-process store, per operation, at a size closer to production than
//! the scoring bench: 100,000 registered cards, as many e-mails, 50,000 IPs
//! and devices, 50 merchants, a state warmed with 30 days of payments.
//! `observe` records one new payment in every window it touches (the
//! store's work per scored payment); the others are the lookups a payment
//! or a fraud report makes.
//!
//! Run: `cargo bench --bench stores`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use riskstream::domain::{MethodKind, RegisteredMethod};
use riskstream::state::{Key, List, MemoryStore, Observation, Store, StoreLimits, StoredMethod};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CARDS: u64 = 100_000;
const NETWORKS: u64 = 50_000;
const MERCHANTS: u64 = 50;
const T0: i64 = 1_800_000_000_000;
/// Payments recorded while warming up (over 30 days).
const WARM_PAYMENTS: u64 = 500_000;

/// A small deterministic generator (the bench needs no statistical quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

struct Keys {
    card: Vec<Key>,
    email: Vec<Key>,
    net: Vec<Key>,
    device: Vec<Key>,
    merchant: Vec<Key>,
}

fn keys(s: &MemoryStore) -> Keys {
    let k = |prefix: &str, n: u64| {
        (0..n)
            .map(|i| s.key(format!("{prefix}{i}").as_bytes()))
            .collect()
    };
    Keys {
        card: k("fp_", CARDS),
        email: k("customer@", CARDS),
        net: k("10.1.", NETWORKS),
        device: k("dev_", NETWORKS),
        merchant: k("acct_", MERCHANTS),
    }
}

fn observation<'a>(k: &Keys, rng: &mut Lcg, id: &'a str, at_ms: i64) -> Observation<'a> {
    let c = rng.next(CARDS) as usize;
    let n = rng.next(NETWORKS) as usize;
    Observation {
        payment_id: id,
        at_ms,
        amount: 1_000 + rng.next(20_000) as i64,
        card: Some(k.card[c]),
        email: Some(k.email[c]),
        ip: Some(k.net[n]),
        device: Some(k.device[n]),
        merchant: Some(k.merchant[rng.next(MERCHANTS) as usize]),
    }
}

fn bench(c: &mut Criterion) {
    let store = MemoryStore::new(StoreLimits::default(), 1);
    let k = keys(&store);
    for i in 0..CARDS {
        let id = format!("pm_{i}");
        store
            .register(StoredMethod {
                method: RegisteredMethod {
                    id,
                    kind: MethodKind::Card,
                    card_fingerprint: Some(format!("fp_{i}")),
                    card_country: Some(*b"FR"),
                    created_at_ms: T0 - 90 * 86_400_000,
                    creation_session: None,
                    customer: Default::default(),
                },
                creation: None,
                creation_session_id: bytes::Bytes::new(),
                card: Some(k.card[i as usize]),
                email: Some(k.email[i as usize]),
                customer: None,
            })
            .expect("registers")
            .wait()
            .expect("saved");
    }
    // Thirty days of payments, spread evenly.
    let mut rng = Lcg(7);
    let step = 30 * 86_400_000 / WARM_PAYMENTS as i64;
    let mut at = T0;
    let mut id = String::with_capacity(32);
    for i in 0..WARM_PAYMENTS {
        id.clear();
        id.push_str("warm_");
        id.push_str(&i.to_string());
        at += step;
        store.observe(&observation(&k, &mut rng, &id, at));
    }

    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    let mut n: u64 = 0;
    g.bench_function("observe_new_payment", |b| {
        b.iter(|| {
            n += 1;
            id.clear();
            id.push_str("pay_");
            id.push_str(&n.to_string());
            at += step;
            black_box(store.observe(&observation(&k, &mut rng, &id, at)))
        })
    });
    g.bench_function("payment_method_lookup", |b| {
        let ids: Vec<String> = (0..1024)
            .map(|i| format!("pm_{}", i * 97 % CARDS))
            .collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(store.payment_method(&ids[i]).expect("the store answers"))
        })
    });
    g.bench_function("label_remembered_payment", |b| {
        let ids: Vec<String> = (0..1024).map(|i| format!("warm_{}", i * 389)).collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(store.label(&ids[i], riskstream::domain::FeedbackKind::Fraudulent, &[]))
        })
    });
    store
        .list_add(
            List::BlockEmail,
            k.email[1],
            riskstream::state::ListEntry {
                value: "customer@1".into(),
                added_at_ms: T0,
                reason: String::new(),
                expires_at_ms: 0,
                source: riskstream::state::ListSource::Admin,
                payment_id: String::new(),
            },
        )
        .expect("listed")
        .map(riskstream::state::Commit::wait);
    g.bench_function("list_contains", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % k.email.len();
            black_box(store.list_contains(List::BlockEmail, k.email[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
