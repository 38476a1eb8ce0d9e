//! Writes the seed corpora of the fuzz targets into `corpus/<target>/`:
//! valid requests encoded with prost (the sessions and payments of the
//! integration tests, at the fuzz clock's fixed time), a few invalid ones,
//! and the shipped models (the tree model trimmed to a few trees).
//!
//! `cargo run --manifest-path .fuzz/Cargo.toml --example seeds` from the
//! repository root. The seeds are deterministic: rerunning it after a proto
//! or model change shows the change as a diff.

use prost::Message;
use riskstream::model::file::{Estimator, Knot, ModelFile, Node, Tree};
use riskstream::proto;
use riskstream_fuzz::{DAY_MS, Kind, NOW_MS, frame};
use std::fs;
use std::path::{Path, PathBuf};

const MAC_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Mobile Safari/537.36";

/// The customer's own laptop at home in Paris.
fn home_session(id: &str) -> proto::Session {
    proto::Session {
        session_id: id.into(),
        captured_at_ms: NOW_MS - 1000,
        ip: "37.164.20.41".into(),
        user_agent: MAC_SAFARI.into(),
        accept_language: "fr-FR,fr;q=0.9,en;q=0.7".into(),
        timezone: "Europe/Paris".into(),
        utc_offset_minutes: 60,
        screen_width: 1440,
        screen_height: 900,
        color_depth: 24,
        device_id: "dev_home_laptop".into(),
        platform: "MacIntel".into(),
    }
}

/// Someone else's phone, on another continent's network.
fn foreign_session(id: &str) -> proto::Session {
    proto::Session {
        session_id: id.into(),
        captured_at_ms: NOW_MS - 1000,
        ip: "114.122.7.200".into(),
        user_agent: ANDROID_CHROME.into(),
        accept_language: "id-ID,id;q=0.9".into(),
        timezone: "Asia/Jakarta".into(),
        utc_offset_minutes: 420,
        screen_width: 412,
        screen_height: 915,
        color_depth: 32,
        device_id: "dev_unknown_phone".into(),
        platform: "Linux armv8l".into(),
    }
}

fn customer(n: u32) -> proto::Customer {
    proto::Customer {
        id: format!("cus_{n}"),
        email: format!("customer{n}@example.com"),
    }
}

/// A card registered `age_ms` before the fuzz clock's now from `session`.
fn registration(
    method_id: &str,
    fingerprint: &str,
    age_ms: i64,
    session: Option<proto::Session>,
    customer: proto::Customer,
) -> proto::RegisterPaymentMethodRequest {
    proto::RegisterPaymentMethodRequest {
        payment_method: Some(proto::PaymentMethod {
            id: method_id.into(),
            r#type: proto::PaymentMethodType::Card as i32,
            card_fingerprint: fingerprint.into(),
            card_country: "FR".into(),
            created_at_ms: NOW_MS - age_ms,
            creation_session: session,
            customer: None,
        }),
        customer: Some(customer),
    }
}

/// A PaymentIntent of `amount` cents with the registered method `method_id`.
fn payment(
    payment_id: &str,
    method_id: &str,
    amount: i64,
    session: Option<proto::Session>,
    customer: proto::Customer,
) -> proto::PaymentEvent {
    proto::PaymentEvent {
        payment_id: payment_id.into(),
        object_type: proto::ObjectType::PaymentIntent as i32,
        amount,
        currency: "eur".into(),
        created_at_ms: 0,
        customer: Some(customer),
        merchant_id: "acct_1".into(),
        payment_method: Some(proto::PaymentMethod {
            id: method_id.into(),
            ..Default::default()
        }),
        session,
        ..Default::default()
    }
}

fn feedback(payment_id: &str, kind: proto::FeedbackKind) -> proto::FeedbackEvent {
    proto::FeedbackEvent {
        payment_id: payment_id.into(),
        kind: kind as i32,
        reported_at_ms: 0,
    }
}

fn get(id: &str) -> proto::GetPaymentMethodRequest {
    proto::GetPaymentMethodRequest {
        payment_method_id: id.into(),
    }
}

fn home_card() -> proto::RegisterPaymentMethodRequest {
    registration(
        "pm_1",
        "fp_1",
        30 * DAY_MS,
        Some(home_session("s0")),
        customer(1),
    )
}

/// A payment with every field set: an inline creation session, recurring,
/// metadata (the robustness test's event).
fn full_payment() -> proto::PaymentEvent {
    let mut ev = payment(
        "pay_x",
        "pm_1",
        1234,
        Some(foreign_session("s1")),
        customer(1),
    );
    if let Some(pm) = ev.payment_method.as_mut() {
        pm.creation_session = Some(home_session("inline"));
        pm.card_fingerprint = "fp_1".into();
        pm.card_country = "FR".into();
        pm.r#type = proto::PaymentMethodType::Card as i32;
        pm.created_at_ms = NOW_MS - 2 * DAY_MS;
    }
    ev.recurring = Some(proto::Recurring {
        subscription_id: "sub".into(),
        initial: true,
    });
    ev.metadata.insert("order".into(), "o-1".into());
    ev
}

type Requests = Vec<(Kind, Vec<u8>)>;

fn score(ev: proto::PaymentEvent) -> (Kind, Vec<u8>) {
    (Kind::Score, ev.encode_to_vec())
}

/// Seeds of `request_path`: sequences of requests, framed.
fn request_path() -> Vec<(&'static str, Vec<u8>)> {
    use Kind::{Feedback, Get, Register, Score, Sweep};
    let home = (Register, home_card().encode_to_vec());
    let mut seeds: Vec<(&str, Requests)> = Vec::new();

    seeds.push((
        "home-card-same-laptop",
        vec![
            home.clone(),
            score(payment(
                "pay_1",
                "pm_1",
                1099,
                Some(home_session("s1")),
                customer(1),
            )),
            (
                Feedback,
                feedback("pay_1", proto::FeedbackKind::Legitimate).encode_to_vec(),
            ),
            (Get, get("pm_1").encode_to_vec()),
        ],
    ));
    seeds.push((
        "foreign-phone-fraud-then-blocked",
        vec![
            home.clone(),
            score(payment(
                "pay_2",
                "pm_1",
                250_000,
                Some(foreign_session("s2")),
                customer(1),
            )),
            (
                Feedback,
                feedback("pay_2", proto::FeedbackKind::Fraudulent).encode_to_vec(),
            ),
            score(payment(
                "pay_3",
                "pm_1",
                990,
                Some(home_session("s3")),
                customer(1),
            )),
        ],
    ));
    seeds.push((
        "inline-method-recurring-metadata",
        vec![score(full_payment())],
    ));

    let mut burst = vec![home.clone()];
    for i in 0..6 {
        let mut s = foreign_session(&format!("b{i}"));
        s.ip = format!("114.122.7.{}", 10 + i);
        let mut ev = payment(
            &format!("pay_b{i}"),
            "pm_1",
            500 * (i + 1),
            Some(s),
            customer(1),
        );
        ev.created_at_ms = NOW_MS - (6 - i) * 60_000;
        burst.push(score(ev));
    }
    burst.push((Sweep, Vec::new()));
    burst.push((
        Feedback,
        feedback("pay_b5", proto::FeedbackKind::DisputeFraud).encode_to_vec(),
    ));
    seeds.push(("velocity-burst-and-sweep", burst));

    let mut setup = payment("seti_1", "pm_1", 0, Some(home_session("s4")), customer(1));
    setup.object_type = proto::ObjectType::SetupIntent as i32;
    setup.currency.clear();
    let mut sepa = full_payment();
    sepa.payment_id = "pay_sepa".into();
    if let Some(pm) = sepa.payment_method.as_mut() {
        pm.r#type = proto::PaymentMethodType::SepaDebit as i32;
    }
    let mut opt_out = payment("pay_opt", "pm_9", 700, None, customer(2));
    opt_out.risk_assessment_opt_out = true;
    opt_out.off_session = true;
    let mut ipv6 = payment(
        "pay_v6",
        "pm_1",
        4200,
        Some(home_session("s5")),
        customer(1),
    );
    if let Some(s) = ipv6.session.as_mut() {
        s.ip = "::ffff:37.164.20.41".into();
    }
    seeds.push((
        "setup-intent-sepa-opt-out-ipv6",
        vec![
            home.clone(),
            score(setup),
            score(sepa),
            score(opt_out),
            score(ipv6),
        ],
    ));

    // Invalid requests: each is refused with a field error or not found.
    let mut bad_id = payment("pay_bad", "pm_1", 100, None, customer(1)).encode_to_vec();
    // Make the id "pay_bad" invalid UTF-8 in place.
    let at = bad_id
        .windows(7)
        .position(|w| w == b"pay_bad")
        .expect("the id is in the bytes");
    bad_id[at + 4] = 0xff;
    let mut truncated = full_payment().encode_to_vec();
    truncated.truncate(truncated.len() / 2);
    let mut future = payment("pay_f", "pm_1", 100, None, customer(1));
    future.created_at_ms = NOW_MS + DAY_MS;
    let mut no_method = payment("pay_n", "", 100, None, customer(1));
    no_method.payment_method = None;
    let mut bad_ip = home_card();
    if let Some(s) = bad_ip
        .payment_method
        .as_mut()
        .and_then(|pm| pm.creation_session.as_mut())
    {
        s.ip = "999.1.2.3".into();
    }
    seeds.push((
        "invalid-requests",
        vec![
            (Score, bad_id),
            (Score, truncated),
            score(future),
            score(no_method),
            (Register, bad_ip.encode_to_vec()),
            (
                Feedback,
                feedback("pay_unknown", proto::FeedbackKind::Fraudulent).encode_to_vec(),
            ),
            (Get, get("pm_unknown").encode_to_vec()),
        ],
    ));

    let mut out: Vec<(&str, Vec<u8>)> = seeds
        .into_iter()
        .map(|(name, reqs)| (name, frame(&reqs)))
        .collect();
    // Inputs the target found, minimized: an event whose payment_id
    // "pa_\xffown" is not UTF-8 (its error outcome echoed the bytes).
    out.push((
        "regression-payment-id-not-utf8",
        b"\x00\x42\x00\x0a\x07pa_\xffown".to_vec(),
    ));
    out
}

/// Seeds of `view_roundtrip`: a selector byte (0 event, 1 registration,
/// 2 feedback), then the message.
fn view_roundtrip() -> Vec<(&'static str, Vec<u8>)> {
    let with = |b: u8, m: Vec<u8>| [vec![b], m].concat();
    let mut dup = full_payment().encode_to_vec();
    // A second session and metadata entry: embedded messages merge, the
    // later map entry wins.
    dup.extend(
        proto::PaymentEvent {
            session: Some(proto::Session {
                device_id: "dev_2".into(),
                ..Default::default()
            }),
            metadata: [("order".to_string(), "o-2".to_string())].into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut unknown = payment("pay_u", "pm_1", 1, None, customer(3)).encode_to_vec();
    // Unknown fields 99 (varint), 100 (fixed64), 101 (bytes), 102 (fixed32).
    unknown.extend([0x98, 0x06, 0x2a]);
    unknown.extend([0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
    unknown.extend([0xaa, 0x06, 2, b'h', b'i']);
    unknown.extend([0xb5, 0x06, 1, 2, 3, 4]);
    vec![
        // Inputs the target found, minimized: a key past 32 bits (the view
        // skipped it where prost refuses it), and a metadata field with the
        // fixed32 wire type (prost reads a map field whatever its wire type).
        (
            "regression-key-past-32-bits",
            vec![0x06, 0xed, 0xff, 0xff, 0xff, 0x13, 0xff, 0x13, 0x92, 0x03],
        ),
        ("prost-map-field-any-wire-type", vec![0x00, 0x65, 0x00]),
        // And an event whose payment_id is longer than MAX_ID_LEN: the view
        // reads it, the salvaged id is empty (the target expected it whole).
        (
            "regression-salvaged-id-past-max-len",
            [&[0x00, 0x0a, 0x80, 0x02][..], &[b'p'; 256]].concat(),
        ),
        ("event-full", with(0, full_payment().encode_to_vec())),
        ("event-merged-repeats", with(0, dup)),
        ("event-unknown-fields", with(0, unknown)),
        ("register-home-card", with(1, home_card().encode_to_vec())),
        (
            "feedback-fraud",
            with(
                2,
                feedback("pay_x", proto::FeedbackKind::Fraudulent).encode_to_vec(),
            ),
        ),
    ]
}

/// `file` keeping only its first `n` trees (a tree model's seed stays small).
fn trimmed(mut file: ModelFile, n: usize) -> ModelFile {
    if let Estimator::GradientBoostedTrees(g) = &mut file.estimator {
        g.trees.truncate(n);
    }
    file.evaluation = serde_json::Value::Null;
    file
}

/// Seeds of `model_file`: the shipped models and a few broken ones.
fn model_file(models: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let read = |name: &str| {
        fs::read_to_string(models.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let parse = |name: &str| -> ModelFile {
        serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let json = |f: &ModelFile| {
        serde_json::to_vec_pretty(f)
            .expect("a model file serialises")
            .into_iter()
            .chain(*b"\n")
            .collect::<Vec<u8>>()
    };
    let gbt = trimmed(parse("handbook-gbt.json"), 3);
    let mut child_first = gbt.clone();
    if let Estimator::GradientBoostedTrees(g) = &mut child_first.estimator {
        g.trees[0].nodes[1].left = Some(0);
    }
    let mut one_leaf = gbt.clone();
    if let Estimator::GradientBoostedTrees(g) = &mut one_leaf.estimator {
        g.trees = vec![Tree {
            nodes: vec![Node {
                feature: None,
                threshold: None,
                left: None,
                right: None,
                value: 0.5,
            }],
        }];
    }
    let mut flat_map = parse("default.json");
    flat_map.score_map.swap(1, 2);
    let mut unknown_feature = parse("handbook.json");
    unknown_feature.features[0] = "no_such_feature".into();
    // Knots one unit in the last place apart: scores 1–98 have no log-odds.
    let mut close_knots = parse("default.json");
    close_knots.score_map = vec![
        Knot {
            probability: 0.9,
            score: 0,
        },
        Knot {
            probability: 0.900_000_000_000_000_1,
            score: 99,
        },
    ];
    // Loads, but its log-odds overflow on large feature values.
    let mut huge = parse("default.json");
    if let Estimator::LogisticRegression(lr) = &mut huge.estimator {
        lr.weights.iter_mut().for_each(|w| *w *= 1e300);
    }
    vec![
        ("default.json", read("default.json").into_bytes()),
        ("handbook.json", read("handbook.json").into_bytes()),
        ("handbook-gbt-3-trees.json", json(&gbt)),
        ("gbt-single-leaf.json", json(&one_leaf)),
        ("invalid-child-before-parent.json", json(&child_first)),
        ("invalid-score-map-order.json", json(&flat_map)),
        ("invalid-unknown-feature.json", json(&unknown_feature)),
        ("invalid-score-map-knots-too-close.json", json(&close_knots)),
        ("overflowing-weights.json", json(&huge)),
    ]
}

fn write(dir: &Path, seeds: Vec<(&str, Vec<u8>)>, ext: &str) {
    fs::create_dir_all(dir).expect("corpus directory");
    for (name, bytes) in seeds {
        let file = if name.ends_with(ext) {
            dir.join(name)
        } else {
            dir.join(format!("{name}{ext}"))
        };
        fs::write(&file, bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        println!("{}", file.display());
    }
}

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = fuzz.join("corpus");
    write(&corpus.join("request_path"), request_path(), ".bin");
    write(&corpus.join("view_roundtrip"), view_roundtrip(), ".bin");
    write(
        &corpus.join("model_file"),
        model_file(&fuzz.join("../models")),
        ".json",
    );
}
