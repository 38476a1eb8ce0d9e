//! Each class of invalid input, on unary calls (INVALID_ARGUMENT naming the
//! field) and on the stream (an outcome with `error`, and the stream goes on).

mod common;

use common::*;
use prost::Message;
use riskstream::engine::system_now_ms;
use riskstream::proto::{self, RiskLevel};
use riskstream::server::ServerOptions;
use tokio_stream::StreamExt;

fn valid(id: &str) -> proto::PaymentEvent {
    payment(id, "pm_1", 1500, Some(home_session("s_ok")), customer(1))
}

/// (class, bad event, field the error must name).
fn invalid_events() -> Vec<(&'static str, proto::PaymentEvent, &'static str)> {
    let mut out = Vec::new();
    let mut e = valid("x");
    e.payment_id.clear();
    out.push(("missing payment_id", e, "payment_id"));
    let mut e = valid("bad_amount");
    e.amount = -100;
    out.push(("negative amount", e, "amount"));
    let mut e = valid("huge_amount");
    e.amount = i64::MAX;
    out.push(("absurd amount", e, "amount"));
    let mut e = valid("bad_enum");
    e.object_type = 77;
    out.push(("unknown enum number", e, "object_type"));
    let mut e = valid("no_object");
    e.object_type = 0;
    out.push(("unspecified enum", e, "object_type"));
    let mut e = valid("future");
    e.created_at_ms = system_now_ms() + 400 * DAY_MS;
    out.push(("timestamp far in the future", e, "created_at_ms"));
    let mut e = valid("negative_ts");
    e.created_at_ms = -5;
    out.push(("negative timestamp", e, "created_at_ms"));
    let mut e = valid("pan");
    e.payment_method = Some(proto::PaymentMethod {
        r#type: proto::PaymentMethodType::Card as i32,
        card_fingerprint: "4242424242424242".into(),
        ..Default::default()
    });
    out.push(("PAN as fingerprint", e, "payment_method.card_fingerprint"));
    let mut e = valid("no_method");
    e.payment_method = None;
    out.push(("missing payment method", e, "payment_method"));
    let mut e = valid("bad_ip");
    if let Some(s) = e.session.as_mut() {
        s.ip = "300.1.2.3".into();
    }
    out.push(("bad IP", e, "session.ip"));
    let mut e = valid("long_ua");
    if let Some(s) = e.session.as_mut() {
        s.user_agent = "A".repeat(8 * 1024);
    }
    out.push(("oversized string", e, "session.user_agent"));
    let mut e = valid("bad_currency");
    e.currency = "euros".into();
    out.push(("bad currency", e, "currency"));
    let mut e = valid("bad_email");
    e.customer = Some(proto::Customer {
        id: "c".into(),
        email: "no-at-sign".into(),
    });
    out.push(("bad email", e, "customer.email"));
    let mut e = valid("bad_offset");
    if let Some(s) = e.session.as_mut() {
        s.utc_offset_minutes = 100_000;
    }
    out.push(("absurd UTC offset", e, "session.utc_offset_minutes"));
    let mut e = valid("no_session_id");
    if let Some(s) = e.session.as_mut() {
        s.session_id.clear();
    }
    out.push(("session without id", e, "session.session_id"));
    let mut e = valid("pan_in_metadata");
    e.metadata
        .insert("note".into(), "card 4242 4242 4242 4242 exp 12/28".into());
    out.push(("card number in a metadata value", e, "metadata.note"));
    let mut e = valid("too_much_metadata");
    e.metadata = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    out.push(("too many metadata entries", e, "metadata"));
    out
}

async fn setup() -> TestServer {
    let mut srv = TestServer::start().await;
    register_home_card(&mut srv.client).await;
    srv
}

#[tokio::test]
async fn unary_calls_answer_invalid_argument_naming_the_field() {
    let mut srv = setup().await;
    for (class, ev, field) in invalid_events() {
        let err = srv.client.score(ev).await.expect_err(class);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{class}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{class}: {}",
            err.message()
        );
    }
    // The server is still healthy after all of that.
    let ok = srv
        .client
        .score(valid("after"))
        .await
        .expect("valid event scores");
    assert_eq!(ok.into_inner().payment_id, "after");
}

#[tokio::test]
async fn stream_answers_an_error_outcome_and_goes_on() {
    let mut srv = setup().await;
    let cases = invalid_events();
    let mut events = Vec::new();
    for (i, (_, ev, _)) in cases.iter().enumerate() {
        events.push(ev.clone());
        events.push(valid(&format!("ok_{i}")));
    }
    let mut outcomes = srv
        .client
        .score_stream(tokio_stream::iter(events.clone()))
        .await
        .expect("stream opens")
        .into_inner();
    let mut got = Vec::new();
    while let Some(o) = outcomes.next().await {
        got.push(o.expect("no stream error"));
    }
    assert_eq!(got.len(), events.len(), "one outcome per event");
    for (i, (class, ev, field)) in cases.iter().enumerate() {
        let bad = &got[2 * i];
        assert_eq!(bad.payment_id, ev.payment_id, "{class}");
        let err = bad
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{class}: no error in {bad:?}"));
        assert_eq!(err.code, "invalid_argument", "{class}");
        assert_eq!(err.field, *field, "{class}");
        assert!(!err.message.is_empty());
        assert_eq!(bad.risk_level(), RiskLevel::Unspecified);
        let good = &got[2 * i + 1];
        assert_eq!(good.payment_id, format!("ok_{i}"));
        assert!(good.error.is_none(), "{good:?}");
    }
}

/// The series counting refused payment events.
const INVALID_PAYMENTS: &str = "riskstream_invalid_events_total{kind=\"payment\"}";

#[tokio::test]
async fn oversized_messages_get_resource_exhausted_and_are_counted() {
    let mut srv = setup().await;
    let mut e = valid("ten_mb");
    if let Some(s) = e.session.as_mut() {
        s.user_agent = "A".repeat(10 * 1024 * 1024);
    }
    let err = srv
        .client
        .score(e.clone())
        .await
        .expect_err("10 MB message");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("at most 262144 are accepted"),
        "{}",
        err.message()
    );
    assert_eq!(srv.metric(INVALID_PAYMENTS), 1.0);
    // On a stream the transport ends the stream with that status after the
    // outcomes of the events before it.
    let mut outcomes = srv
        .client
        .score_stream(tokio_stream::iter(vec![valid("before"), e]))
        .await
        .expect("stream opens")
        .into_inner();
    let first = outcomes.next().await.expect("first outcome").expect("ok");
    assert_eq!(first.payment_id, "before");
    let end = outcomes
        .next()
        .await
        .expect("an end status")
        .expect_err("the stream ends");
    assert_eq!(end.code(), tonic::Code::ResourceExhausted, "{end:?}");
    assert!(outcomes.next().await.is_none(), "nothing after the status");
    assert_eq!(srv.metric(INVALID_PAYMENTS), 2.0);
    // The server still serves.
    let ok = srv
        .client
        .score(valid("after"))
        .await
        .expect("server still serves");
    assert_eq!(ok.into_inner().payment_id, "after");
}

#[tokio::test]
async fn the_size_limit_is_exact_and_holds_for_every_method() {
    const LIMIT: usize = 2048;
    let mut srv = TestServer::with(Setup {
        options: ServerOptions {
            max_message_bytes: LIMIT,
            ..ServerOptions::default()
        },
        ..Setup::default()
    })
    .await;
    register_home_card(&mut srv.client).await;
    // A payment of exactly `len` bytes (its user agent makes the size).
    let sized = |len: usize| {
        let mut e = valid("sized");
        let mut ua = 0;
        loop {
            if let Some(s) = e.session.as_mut() {
                s.user_agent = "A".repeat(ua);
            }
            match e.encoded_len() {
                n if n == len => return e,
                n if n > len => panic!("cannot make a {len}-byte event"),
                _ => ua += 1,
            }
        }
    };
    // At the limit the transport hands it on (validation refuses the user
    // agent); one byte over, it is refused unread.
    let err = srv
        .client
        .score(sized(LIMIT))
        .await
        .expect_err("too long a UA");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("session.user_agent:"), "{err:?}");
    let err = srv.client.score(sized(LIMIT + 1)).await.expect_err("over");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(srv.metric(INVALID_PAYMENTS), 2.0);

    let mut reg = registration("pm_big", "fp_big", 0, Some(home_session("s")), customer(3));
    if let Some(s) = reg
        .payment_method
        .as_mut()
        .and_then(|pm| pm.creation_session.as_mut())
    {
        s.user_agent = "A".repeat(LIMIT);
    }
    let err = srv
        .client
        .register_payment_method(reg)
        .await
        .expect_err("over");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        srv.metric("riskstream_invalid_events_total{kind=\"register\"}"),
        1.0
    );
    let err = srv
        .client
        .report_feedback(proto::FeedbackEvent {
            payment_id: "p".repeat(LIMIT),
            kind: proto::FeedbackKind::Fraudulent as i32,
            reported_at_ms: 0,
        })
        .await
        .expect_err("over");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
}

#[tokio::test]
async fn twenty_thousand_metadata_keys_are_refused_naming_metadata() {
    let mut srv = setup().await;
    let mut e = valid("many_keys");
    e.metadata = (0..20_000)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    let size = e.encoded_len();
    assert!(
        size > 150_000 && size < ServerOptions::default().max_message_bytes,
        "{size} bytes: within the transport's limit, so the parser is what refuses it"
    );
    let err = srv.client.score(e.clone()).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("metadata: has more than 50 entries"),
        "{}",
        err.message()
    );
    assert_eq!(srv.metric(INVALID_PAYMENTS), 1.0);
    // On a stream: an error outcome naming the field, and the stream goes on.
    let outcomes: Vec<proto::Outcome> = srv
        .client
        .score_stream(tokio_stream::iter(vec![e, valid("after")]))
        .await
        .expect("stream opens")
        .into_inner()
        .map(|o| o.expect("outcome"))
        .collect()
        .await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].payment_id, "many_keys");
    let err = outcomes[0].error.as_ref().expect("error outcome");
    assert_eq!(err.code, "invalid_argument");
    assert_eq!(err.field, "metadata");
    assert!(
        err.message.starts_with("has more than 50 entries"),
        "{}",
        err.message
    );
    assert_eq!(outcomes[1].payment_id, "after");
    assert!(outcomes[1].error.is_none());
}

#[tokio::test]
async fn malformed_protobuf_on_a_stream_gets_an_error_outcome_and_the_stream_goes_on() {
    let srv = setup().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", srv.addr))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let good = |id: &str| bytes::Bytes::from(valid(id).encode_to_vec());
    // A payment id, then a length running past the end of the message.
    let mut broken = proto::PaymentEvent {
        payment_id: "broken".into(),
        ..Default::default()
    }
    .encode_to_vec();
    broken.extend_from_slice(&[0x22, 0x7f, b'x']);
    let events = vec![good("a"), bytes::Bytes::from(broken), good("b")];
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/riskstream.v1.RiskScorer/ScoreStream",
    );
    let outcomes: Vec<proto::Outcome> = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(events)),
            path,
            RawClientCodec,
        )
        .await
        .expect("stream opens")
        .into_inner()
        .map(|o| o.expect("outcome"))
        .collect()
        .await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].payment_id, "a");
    assert!(outcomes[0].error.is_none());
    assert_eq!(outcomes[1].payment_id, "broken", "the id is salvaged");
    let err = outcomes[1].error.as_ref().expect("error outcome");
    assert_eq!(err.code, "invalid_argument");
    assert!(
        err.message.contains("malformed protobuf"),
        "{}",
        err.message
    );
    assert_eq!(outcomes[2].payment_id, "b");
    assert!(outcomes[2].error.is_none());
}

/// The bytes of a valid event whose `payment_id` is `id`, whatever it holds.
fn event_with_raw_id(id: &[u8]) -> bytes::Bytes {
    let ev = valid("");
    let mut b = vec![0x0a];
    prost::encoding::encode_varint(id.len() as u64, &mut b);
    b.extend_from_slice(id);
    b.extend(ev.encode_to_vec());
    bytes::Bytes::from(b)
}

#[tokio::test]
async fn every_outcome_of_a_stream_decodes_whatever_payment_ids_were_sent() {
    let srv = setup().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", srv.addr))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let good = |id: &str| bytes::Bytes::from(valid(id).encode_to_vec());
    // Invalid UTF-8 in a message that otherwise parses, and in one that
    // does not (the id is salvaged from it).
    let mut broken = event_with_raw_id(b"pay_\xc3").to_vec();
    broken.extend_from_slice(&[0x22, 0x7f]);
    let events = vec![
        good("a"),
        event_with_raw_id(b"pay_\xff\xfe"),
        good("b"),
        bytes::Bytes::from(broken),
        good("c"),
        event_with_raw_id(&[b'p'; 300]),
        good("d"),
        event_with_raw_id("pay é".as_bytes()),
        good("e"),
    ];
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/riskstream.v1.RiskScorer/ScoreStream",
    );
    // The client decodes outcomes as the generated client does (prost,
    // which refuses a string that is not UTF-8).
    let outcomes: Vec<proto::Outcome> = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(events.clone())),
            path,
            RawClientCodec,
        )
        .await
        .expect("stream opens")
        .into_inner()
        .map(|o| o.expect("every outcome decodes"))
        .collect()
        .await;
    assert_eq!(outcomes.len(), events.len(), "one outcome per event");
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let o = &outcomes[2 * i];
        assert_eq!(o.payment_id, *id);
        assert!(o.error.is_none(), "{o:?}");
    }
    let error = |i: usize| outcomes[i].error.clone().expect("error outcome");
    // Not UTF-8: not echoed, and the field is named.
    assert_eq!(outcomes[1].payment_id, "");
    assert_eq!(error(1).field, "payment_id");
    assert_eq!(error(1).message, "is not valid UTF-8");
    assert_eq!(outcomes[3].payment_id, "");
    assert!(error(3).message.contains("malformed protobuf"));
    // Longer than any accepted id: not echoed.
    assert_eq!(outcomes[5].payment_id, "");
    assert_eq!(error(5).field, "payment_id");
    // Valid UTF-8, though refused: echoed.
    assert_eq!(outcomes[7].payment_id, "pay é");
    assert_eq!(error(7).field, "payment_id");
}

#[tokio::test]
async fn a_payment_id_that_is_not_utf8_on_a_stream_gets_an_error_outcome_and_the_stream_goes_on() {
    use prost::Message;
    let srv = setup().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", srv.addr))
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let good = |id: &str| bytes::Bytes::from(valid(id).encode_to_vec());
    // A valid event whose payment_id "pay_\xffid" is not UTF-8.
    let mut bad = valid("pay_?id").encode_to_vec();
    let at = bad
        .windows(7)
        .position(|w| w == b"pay_?id")
        .expect("the id is in the bytes");
    bad[at + 4] = 0xff;
    let events = vec![good("a"), bytes::Bytes::from(bad), good("b")];
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/riskstream.v1.RiskScorer/ScoreStream",
    );
    let outcomes: Vec<proto::Outcome> = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(events)),
            path,
            RawClientCodec,
        )
        .await
        .expect("stream opens")
        .into_inner()
        .map(|o| o.expect("an outcome the client can decode"))
        .collect()
        .await;
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0].payment_id, "a");
    assert_eq!(
        outcomes[1].payment_id, "",
        "an id that is not UTF-8 is not echoed"
    );
    let err = outcomes[1].error.as_ref().expect("error outcome");
    assert_eq!(err.code, "invalid_argument");
    assert_eq!(err.field, "payment_id");
    assert_eq!(outcomes[2].payment_id, "b");
    assert!(outcomes[2].error.is_none());
}

#[tokio::test]
async fn registration_and_feedback_validate_too() {
    let mut srv = setup().await;
    let mut reg = registration("pm_pan", "4111111111111111", 0, None, customer(2));
    let err = srv
        .client
        .register_payment_method(reg.clone())
        .await
        .expect_err("PAN");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("payment_method.card_fingerprint:"),
        "{}",
        err.message()
    );
    if let Some(pm) = reg.payment_method.as_mut() {
        pm.card_fingerprint = "fp_ok".into();
        pm.r#type = 99;
    }
    let err = srv
        .client
        .register_payment_method(reg)
        .await
        .expect_err("bad enum");
    assert!(
        err.message().starts_with("payment_method.type:"),
        "{}",
        err.message()
    );
    let err = srv
        .client
        .report_feedback(proto::FeedbackEvent {
            payment_id: "p".into(),
            kind: 12,
            reported_at_ms: 0,
        })
        .await
        .expect_err("bad kind");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("kind:"), "{}", err.message());
}
