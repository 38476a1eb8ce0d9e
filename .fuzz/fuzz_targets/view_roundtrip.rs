//! Arbitrary bytes as a `PaymentEvent`, read by riskstream's borrowed view
//! (`view::payment_event`) and by prost (`proto::PaymentEvent::decode`).
//! The two parsers must agree:
//! - when both accept the bytes, the view holds field for field what prost
//!   decoded;
//! - when the view accepts and prost refuses, the only reason may be a
//!   string that is not UTF-8 (the view leaves that check to validation);
//! - when the view refuses and prost accepts, the only reason may be a
//!   group (wire types 3 and 4), which the view does not support, or a
//!   `metadata` map field with another wire type than length-delimited,
//!   which prost reads anyway (its map decoder ignores the wire type);
//! - the payment id salvaged from bytes the view parses is the view's (when
//!   it is UTF-8; else none).
//!
//! The same for `RegisterPaymentMethodRequest` and `FeedbackEvent`, picked by
//! the first byte.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use riskstream::proto as public;
use riskstream::view::{
    self, CustomerView, DecodeError, FeedbackView, PaymentEventView, PaymentMethodView,
    RecurringView, RegisterView, SessionView,
};

/// `b` as a string, or `None` when it is not UTF-8.
fn text(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

fn opt<T, U>(v: &Option<T>, f: impl Fn(&T) -> Option<U>) -> Option<Option<U>> {
    match v {
        Some(x) => f(x).map(Some),
        None => Some(None),
    }
}

// The views as the public messages, every field of both sides named (no
// `..`), so that a field added to either side fails to compile here until
// it is carried across. `None` when a string is not UTF-8.

fn session(v: &SessionView<'_>) -> Option<public::Session> {
    let SessionView {
        session_id,
        captured_at_ms,
        ip,
        user_agent,
        accept_language,
        timezone,
        utc_offset_minutes,
        screen_width,
        screen_height,
        color_depth,
        device_id,
        platform,
    } = v;
    Some(public::Session {
        session_id: text(session_id)?,
        captured_at_ms: *captured_at_ms,
        ip: text(ip)?,
        user_agent: text(user_agent)?,
        accept_language: text(accept_language)?,
        timezone: text(timezone)?,
        utc_offset_minutes: *utc_offset_minutes,
        screen_width: *screen_width,
        screen_height: *screen_height,
        color_depth: *color_depth,
        device_id: text(device_id)?,
        platform: text(platform)?,
    })
}

fn customer(v: &CustomerView<'_>) -> Option<public::Customer> {
    let CustomerView { id, email } = v;
    Some(public::Customer {
        id: text(id)?,
        email: text(email)?,
    })
}

fn payment_method(v: &PaymentMethodView<'_>) -> Option<public::PaymentMethod> {
    let PaymentMethodView {
        id,
        r#type,
        card_fingerprint,
        card_country,
        created_at_ms,
        creation_session,
        customer: cust,
    } = v;
    Some(public::PaymentMethod {
        id: text(id)?,
        r#type: *r#type,
        card_fingerprint: text(card_fingerprint)?,
        card_country: text(card_country)?,
        created_at_ms: *created_at_ms,
        creation_session: opt(creation_session, session)?,
        customer: opt(cust, customer)?,
    })
}

fn event(v: &PaymentEventView<'_>) -> Option<public::PaymentEvent> {
    let PaymentEventView {
        payment_id,
        object_type,
        amount,
        currency,
        created_at_ms,
        customer: cust,
        merchant_id,
        payment_method: pm,
        session: sess,
        off_session,
        recurring,
        metadata,
        risk_assessment_opt_out,
        ..
    } = v;
    Some(public::PaymentEvent {
        payment_id: text(payment_id)?,
        object_type: *object_type,
        amount: *amount,
        currency: text(currency)?,
        created_at_ms: *created_at_ms,
        customer: opt(cust, customer)?,
        merchant_id: text(merchant_id)?,
        payment_method: opt(pm, payment_method)?,
        session: opt(sess, session)?,
        off_session: *off_session,
        recurring: opt(recurring, |r| {
            let RecurringView {
                subscription_id,
                initial,
            } = r;
            Some(public::Recurring {
                subscription_id: text(subscription_id)?,
                initial: *initial,
            })
        })?,
        metadata: metadata
            .iter()
            .map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect::<Option<_>>()?,
        risk_assessment_opt_out: *risk_assessment_opt_out,
    })
}

fn register(v: &RegisterView<'_>) -> Option<public::RegisterPaymentMethodRequest> {
    let RegisterView {
        payment_method: pm,
        customer: cust,
    } = v;
    Some(public::RegisterPaymentMethodRequest {
        payment_method: opt(pm, payment_method)?,
        customer: opt(cust, customer)?,
    })
}

fn feedback(v: &FeedbackView<'_>) -> Option<public::FeedbackEvent> {
    let FeedbackView {
        payment_id,
        kind,
        reported_at_ms,
    } = v;
    Some(public::FeedbackEvent {
        payment_id: text(payment_id)?,
        kind: *kind,
        reported_at_ms: *reported_at_ms,
    })
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Whether the view refuses `event` at a top-level `metadata` field
/// carried with another wire type than length-delimited (everything before
/// that field parses). Prost reads a map
/// field whatever its wire type says (its map decoder takes no wire type),
/// so it may accept such bytes; the view refuses them, as the protobuf
/// encoding requires.
fn map_with_another_wire_type(event: &[u8]) -> bool {
    let mut pos = 0;
    while pos < event.len() {
        let start = pos;
        let Some(key) = varint(event, &mut pos) else {
            return false;
        };
        let wire = key & 7;
        if key >> 3 == 12 && wire != 2 {
            return view::payment_event(&event[..start]).is_ok();
        }
        let skip = match wire {
            0 => varint(event, &mut pos).map(|_| 0),
            1 => Some(8),
            2 => varint(event, &mut pos).and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        match skip.and_then(|n| pos.checked_add(n)) {
            Some(end) if end <= event.len() => pos = end,
            _ => return false,
        }
    }
    false
}

/// Checks that the view's reading (`view`: the public message, `None` for a
/// string that is not UTF-8) agrees with prost's on `bytes`.
fn agree<P: Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    view: Result<Option<P>, view::DecodeError>,
    has_map: bool,
) {
    let prost = P::decode(bytes);
    match (view, prost) {
        (Ok(Some(v)), Ok(p)) => assert_eq!(v, p, "the view reads another message than prost"),
        (Ok(None), Ok(p)) => panic!("prost decodes a string the view holds as not UTF-8: {p:?}"),
        // Prost checks every occurrence of a string; the view keeps the last.
        (Ok(_), Err(e)) => assert!(
            e.to_string().contains("UTF-8"),
            "prost refuses what the view reads for another reason than UTF-8: {e}"
        ),
        (Err(e), Ok(p)) => assert!(
            matches!(e, DecodeError::Malformed("groups are not supported"))
                // The view bounds metadata while it reads it; prost does not.
                || matches!(e, DecodeError::MetadataEntries | DecodeError::MetadataBytes)
                || has_map && map_with_another_wire_type(bytes),
            "the view refuses what prost decodes ({e}): {p:?}"
        ),
        (Err(_), Err(_)) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let v = view::payment_event(bytes);
            if let Ok(v) = &v {
                // The salvaged id is the one read, if a client can decode
                // it: UTF-8 of at most MAX_ID_LEN bytes, else empty.
                let id = std::str::from_utf8(v.payment_id)
                    .ok()
                    .filter(|id| id.len() <= riskstream::validate::MAX_ID_LEN)
                    .map_or(&[][..], str::as_bytes);
                assert_eq!(view::salvage_payment_id(bytes), id);
            }
            agree(bytes, v.map(|v| event(&v)), true);
        }
        1 => agree(bytes, view::register(bytes).map(|v| register(&v)), false),
        _ => agree(bytes, view::feedback(bytes).map(|v| feedback(&v)), false),
    }
});
