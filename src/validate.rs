//! Validation: turns proto messages into typed domain events, or into a
//! [`FieldError`] that names the offending field. Nothing here panics on
//! request data.

use crate::domain::{
    Customer, Feedback, FeedbackKind, MethodKind, MethodRef, ObjectKind, Payment, Recurring,
    RegisteredMethod, Session,
};
use crate::proto;
use std::net::IpAddr;
use std::sync::Arc;

/// 2000-01-01T00:00:00Z: anything earlier is rejected as absurd.
pub const MIN_TIMESTAMP_MS: i64 = 946_684_800_000;
/// Largest accepted amount in minor units (ten billion major units).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
/// Longest accepted id (payment, session, customer, method, merchant, device).
pub const MAX_ID_LEN: usize = 255;
/// Longest accepted user agent.
pub const MAX_USER_AGENT_LEN: usize = 1024;
/// Longest accepted Accept-Language header.
pub const MAX_ACCEPT_LANGUAGE_LEN: usize = 256;
/// Longest accepted time zone name.
pub const MAX_TIMEZONE_LEN: usize = 64;
/// Longest accepted platform string.
pub const MAX_PLATFORM_LEN: usize = 64;
/// Longest accepted card fingerprint.
pub const MAX_FINGERPRINT_LEN: usize = 128;
/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Most metadata entries on one payment.
pub const MAX_METADATA_ENTRIES: usize = 50;
/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 40;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 500;
/// Largest screen dimension accepted, in pixels.
pub const MAX_SCREEN_PX: u32 = 100_000;
/// Largest colour depth accepted, in bits.
pub const MAX_COLOR_DEPTH: u32 = 64;
/// Largest UTC offset accepted, in minutes (UTC+14:00).
pub const MAX_UTC_OFFSET_MINUTES: i32 = 14 * 60;

/// A rejected field: its path in the request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field, e.g. `session.ip`.
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Time context of a validation: the server's clock and the tolerated skew.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Now, in ms since the epoch; timestamps of 0 default to it.
    pub now_ms: i64,
    /// How far in the future a timestamp may be before it is rejected.
    pub max_future_skew_ms: i64,
}

impl Clock {
    fn timestamp(&self, field: &str, value: i64, default_now: bool) -> Result<i64, FieldError> {
        self.timestamp_at(|| field.to_owned(), value, default_now)
    }

    /// Like `timestamp`, naming the field only when there is an error.
    fn timestamp_at(
        &self,
        field: impl Fn() -> String,
        value: i64,
        default_now: bool,
    ) -> Result<i64, FieldError> {
        if value == 0 {
            return Ok(if default_now { self.now_ms } else { 0 });
        }
        if value < 0 {
            return Err(FieldError::new(
                field(),
                "must not be negative (ms since the Unix epoch)",
            ));
        }
        if value < MIN_TIMESTAMP_MS {
            return Err(FieldError::new(
                field(),
                format!("{value} is before 2000-01-01; timestamps are ms since the Unix epoch"),
            ));
        }
        if value > self.now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(FieldError::new(
                field(),
                format!(
                    "{value} is in the future (more than {} ms ahead of the server clock)",
                    self.max_future_skew_ms
                ),
            ));
        }
        Ok(value)
    }
}

/// Field path `prefix.name` (or `name` when the prefix is empty).
fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Whether `s` holds a control character (C0, DEL or C1). The ASCII scan
/// has no early exit so that it vectorises.
fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    if b.iter()
        .fold(false, |acc, &c| acc | (c < 0x20) | (c == 0x7f))
    {
        return true;
    }
    // C1 controls are U+0080..=U+009F, encoded 0xC2 0x80..=0x9F.
    !s.is_ascii()
        && b.windows(2)
            .any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// Whether `s` holds whitespace (vectorised ASCII scan, Unicode otherwise).
fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes()
            .fold(false, |acc, b| acc | (b == b' ') | (b.wrapping_sub(9) < 5))
    } else {
        s.chars().any(char::is_whitespace)
    }
}

/// Checks a free-text value: length and no control characters.
fn text(field: impl FnOnce() -> String, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field(),
            format!("is {} bytes long; at most {max} are accepted", value.len()),
        ));
    }
    if has_control(value) {
        return Err(FieldError::new(field(), "contains control characters"));
    }
    Ok(())
}

/// Checks an id: like [`text`], plus no whitespace.
fn id(field: impl Fn() -> String, value: &str, required: bool) -> Result<(), FieldError> {
    if value.is_empty() {
        if required {
            return Err(FieldError::new(field(), "is required"));
        }
        return Ok(());
    }
    text(&field, value, MAX_ID_LEN)?;
    if has_whitespace(value) {
        return Err(FieldError::new(field(), "must not contain whitespace"));
    }
    Ok(())
}

/// True when `s` is 13–19 digits (spaces and dashes ignored) passing the Luhn check.
pub fn looks_like_pan(s: &str) -> bool {
    let mut digits = 0usize;
    let mut sum = 0u32;
    // Luhn from the right: double every second digit.
    for c in s.chars().rev() {
        match c {
            ' ' | '-' => continue,
            '0'..='9' => {
                let mut d = c as u32 - '0' as u32;
                if digits % 2 == 1 {
                    d *= 2;
                    if d > 9 {
                        d -= 9;
                    }
                }
                sum += d;
                digits += 1;
            }
            _ => return false,
        }
    }
    (13..=19).contains(&digits) && sum.is_multiple_of(10)
}

fn fingerprint(field: impl Fn() -> String, value: &str) -> Result<Arc<str>, FieldError> {
    if looks_like_pan(value) {
        return Err(FieldError::new(
            field(),
            "looks like a card number (PAN); send the card's fingerprint, never the number",
        ));
    }
    if value.len() > MAX_FINGERPRINT_LEN {
        return Err(FieldError::new(
            field(),
            format!(
                "is {} bytes long; at most {MAX_FINGERPRINT_LEN} are accepted",
                value.len()
            ),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field(),
            "must be printable ASCII without spaces",
        ));
    }
    Ok(Arc::from(value))
}

fn country(field: impl Fn() -> String, value: &str) -> Result<Option<[u8; 2]>, FieldError> {
    if value.is_empty() {
        return Ok(None);
    }
    match value.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Ok(Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
        }
        _ => Err(FieldError::new(
            field(),
            "must be an ISO 3166-1 alpha-2 code such as \"FR\"",
        )),
    }
}

/// Lower-cases `value` in place when it is ASCII (no allocation), else by Unicode rules.
fn lowercase(mut value: String) -> String {
    if value.is_ascii() {
        value.make_ascii_lowercase();
        value
    } else {
        value.to_lowercase()
    }
}

fn email(field: impl Fn() -> String, value: String) -> Result<String, FieldError> {
    if value.is_empty() {
        return Ok(value);
    }
    if value.len() > MAX_EMAIL_LEN {
        return Err(FieldError::new(
            field(),
            format!(
                "is {} bytes long; at most {MAX_EMAIL_LEN} are accepted",
                value.len()
            ),
        ));
    }
    let valid = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !has_control(&value)
                && !has_whitespace(&value)
        }
        None => false,
    };
    if !valid {
        return Err(FieldError::new(field(), "is not an email address"));
    }
    Ok(lowercase(value))
}

fn customer(prefix: &str, c: Option<proto::Customer>) -> Result<Customer, FieldError> {
    let Some(c) = c else {
        return Ok(Customer::default());
    };
    id(|| path(prefix, "id"), &c.id, false)?;
    let email = email(|| path(prefix, "email"), c.email)?;
    Ok(Customer { id: c.id, email })
}

fn method_kind(field: impl Fn() -> String, value: i32) -> Result<Option<MethodKind>, FieldError> {
    match proto::PaymentMethodType::try_from(value) {
        Ok(proto::PaymentMethodType::Unspecified) => Ok(None),
        Ok(proto::PaymentMethodType::Card) => Ok(Some(MethodKind::Card)),
        Ok(proto::PaymentMethodType::SepaDebit) => Ok(Some(MethodKind::SepaDebit)),
        Ok(proto::PaymentMethodType::AchDebit) => Ok(Some(MethodKind::AchDebit)),
        Ok(proto::PaymentMethodType::Other) => Ok(Some(MethodKind::Other)),
        Err(_) => Err(FieldError::new(
            field(),
            format!("unknown PaymentMethodType value {value}"),
        )),
    }
}

/// Validates a session found at `prefix` (e.g. `session`).
pub fn session(prefix: &str, s: proto::Session, clock: &Clock) -> Result<Session, FieldError> {
    id(|| path(prefix, "session_id"), &s.session_id, true)?;
    let captured_at_ms =
        clock.timestamp_at(|| path(prefix, "captured_at_ms"), s.captured_at_ms, false)?;
    let ip = if s.ip.is_empty() {
        None
    } else {
        if s.ip.len() > 64 {
            return Err(FieldError::new(
                path(prefix, "ip"),
                "is not an IPv4 or IPv6 address",
            ));
        }
        match s.ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                return Err(FieldError::new(
                    path(prefix, "ip"),
                    "is not an IPv4 or IPv6 address",
                ));
            }
        }
    };
    text(
        || path(prefix, "user_agent"),
        &s.user_agent,
        MAX_USER_AGENT_LEN,
    )?;
    text(
        || path(prefix, "accept_language"),
        &s.accept_language,
        MAX_ACCEPT_LANGUAGE_LEN,
    )?;
    if s.timezone.len() > MAX_TIMEZONE_LEN
        || !s
            .timezone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
    {
        return Err(FieldError::new(
            path(prefix, "timezone"),
            "must be an IANA time zone name such as \"Europe/Paris\"",
        ));
    }
    if s.utc_offset_minutes.abs() > MAX_UTC_OFFSET_MINUTES {
        return Err(FieldError::new(
            path(prefix, "utc_offset_minutes"),
            format!("{} is outside -840..=840", s.utc_offset_minutes),
        ));
    }
    if s.screen_width > MAX_SCREEN_PX {
        return Err(FieldError::new(
            path(prefix, "screen_width"),
            format!("{} px is more than {MAX_SCREEN_PX}", s.screen_width),
        ));
    }
    if s.screen_height > MAX_SCREEN_PX {
        return Err(FieldError::new(
            path(prefix, "screen_height"),
            format!("{} px is more than {MAX_SCREEN_PX}", s.screen_height),
        ));
    }
    if s.color_depth > MAX_COLOR_DEPTH {
        return Err(FieldError::new(
            path(prefix, "color_depth"),
            format!("{} bits is more than {MAX_COLOR_DEPTH}", s.color_depth),
        ));
    }
    id(|| path(prefix, "device_id"), &s.device_id, false)?;
    text(|| path(prefix, "platform"), &s.platform, MAX_PLATFORM_LEN)?;
    Ok(Session {
        session_id: s.session_id,
        captured_at_ms,
        ip,
        user_agent: s.user_agent,
        accept_language: s.accept_language,
        timezone: s.timezone,
        utc_offset_minutes: s.utc_offset_minutes,
        screen_width: s.screen_width,
        screen_height: s.screen_height,
        color_depth: s.color_depth,
        device_id: s.device_id,
        platform: s.platform,
    })
}

/// Validates a `RegisterPaymentMethodRequest`.
pub fn registration(
    req: proto::RegisterPaymentMethodRequest,
    clock: &Clock,
) -> Result<RegisteredMethod, FieldError> {
    let Some(pm) = req.payment_method else {
        return Err(FieldError::new("payment_method", "is required"));
    };
    id(|| "payment_method.id".into(), &pm.id, true)?;
    let kind = method_kind(|| "payment_method.type".into(), pm.r#type)?
        .ok_or_else(|| FieldError::new("payment_method.type", "is required"))?;
    let card_fingerprint = if pm.card_fingerprint.is_empty() {
        if kind == MethodKind::Card {
            return Err(FieldError::new(
                "payment_method.card_fingerprint",
                "is required for a card",
            ));
        }
        None
    } else {
        Some(fingerprint(
            || "payment_method.card_fingerprint".into(),
            &pm.card_fingerprint,
        )?)
    };
    let card_country = country(|| "payment_method.card_country".into(), &pm.card_country)?;
    let created_at_ms = clock.timestamp("payment_method.created_at_ms", pm.created_at_ms, true)?;
    let creation_session = match pm.creation_session {
        Some(s) => Some(Arc::new(session(
            "payment_method.creation_session",
            s,
            clock,
        )?)),
        None => None,
    };
    // The request's customer wins; the method's own is accepted as a fallback.
    let customer = match req.customer {
        Some(c) => customer("customer", Some(c))?,
        None => customer("payment_method.customer", pm.customer)?,
    };
    let (mut id, mut customer) = (pm.id, customer);
    id.shrink_to_fit();
    customer.id.shrink_to_fit();
    customer.email.shrink_to_fit();
    Ok(RegisteredMethod {
        id,
        kind,
        card_fingerprint,
        card_country,
        created_at_ms,
        creation_session,
        customer,
    })
}

fn method_ref(pm: proto::PaymentMethod, clock: &Clock) -> Result<MethodRef, FieldError> {
    id(|| "payment_method.id".into(), &pm.id, false)?;
    let kind = method_kind(|| "payment_method.type".into(), pm.r#type)?;
    if pm.id.is_empty() && kind.is_none() {
        return Err(FieldError::new(
            "payment_method.id",
            "is required (or send the method inline with its type)",
        ));
    }
    let card_fingerprint = if pm.card_fingerprint.is_empty() {
        None
    } else {
        Some(fingerprint(
            || "payment_method.card_fingerprint".into(),
            &pm.card_fingerprint,
        )?)
    };
    if pm.id.is_empty() && kind == Some(MethodKind::Card) && card_fingerprint.is_none() {
        return Err(FieldError::new(
            "payment_method.card_fingerprint",
            "is required for an inline card without a registered id",
        ));
    }
    let card_country = country(|| "payment_method.card_country".into(), &pm.card_country)?;
    let created_at_ms = match pm.created_at_ms {
        0 => None,
        t => Some(clock.timestamp("payment_method.created_at_ms", t, false)?),
    };
    let creation_session = match pm.creation_session {
        Some(s) => Some(Arc::new(session(
            "payment_method.creation_session",
            s,
            clock,
        )?)),
        None => None,
    };
    Ok(MethodRef {
        id: pm.id,
        kind,
        card_fingerprint,
        card_country,
        created_at_ms,
        creation_session,
    })
}

/// Validates a `PaymentEvent`.
pub fn payment(ev: proto::PaymentEvent, clock: &Clock) -> Result<Payment, FieldError> {
    id(|| "payment_id".into(), &ev.payment_id, true)?;
    let object = match proto::ObjectType::try_from(ev.object_type) {
        Ok(proto::ObjectType::Charge) => ObjectKind::Charge,
        Ok(proto::ObjectType::PaymentIntent) => ObjectKind::PaymentIntent,
        Ok(proto::ObjectType::SetupIntent) => ObjectKind::SetupIntent,
        Ok(proto::ObjectType::Unspecified) => {
            return Err(FieldError::new("object_type", "is required"));
        }
        Err(_) => {
            return Err(FieldError::new(
                "object_type",
                format!("unknown ObjectType value {}", ev.object_type),
            ));
        }
    };
    if ev.amount < 0 {
        return Err(FieldError::new(
            "amount",
            format!("{} is negative", ev.amount),
        ));
    }
    if ev.amount > MAX_AMOUNT {
        return Err(FieldError::new(
            "amount",
            format!("{} is more than {MAX_AMOUNT} minor units", ev.amount),
        ));
    }
    let currency = if ev.currency.is_empty() {
        if ev.amount > 0 {
            return Err(FieldError::new(
                "currency",
                "is required when amount is set",
            ));
        }
        String::new()
    } else if ev.currency.len() == 3 && ev.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        lowercase(ev.currency)
    } else {
        return Err(FieldError::new(
            "currency",
            "must be a three-letter ISO 4217 code such as \"usd\"",
        ));
    };
    let created_at_ms = clock.timestamp("created_at_ms", ev.created_at_ms, true)?;
    let customer = customer("customer", ev.customer)?;
    id(|| "merchant_id".into(), &ev.merchant_id, false)?;
    let Some(pm) = ev.payment_method else {
        return Err(FieldError::new("payment_method", "is required"));
    };
    let method = method_ref(pm, clock)?;
    let session = match ev.session {
        Some(s) => Some(session("session", s, clock)?),
        None => None,
    };
    let recurring = match ev.recurring {
        Some(r) => {
            id(
                || "recurring.subscription_id".into(),
                &r.subscription_id,
                true,
            )?;
            Some(Recurring {
                subscription_id: r.subscription_id,
                initial: r.initial,
            })
        }
        None => None,
    };
    if ev.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(FieldError::new(
            "metadata",
            format!(
                "has {} entries; at most {MAX_METADATA_ENTRIES} are accepted",
                ev.metadata.len()
            ),
        ));
    }
    for (k, v) in &ev.metadata {
        if k.is_empty() {
            return Err(FieldError::new("metadata", "has an empty key"));
        }
        text(|| "metadata".into(), k, MAX_METADATA_KEY_LEN)?;
        text(|| format!("metadata.{k}"), v, MAX_METADATA_VALUE_LEN)?;
    }
    Ok(Payment {
        payment_id: ev.payment_id,
        object,
        amount: ev.amount,
        currency,
        created_at_ms,
        customer,
        merchant_id: ev.merchant_id,
        method,
        session,
        off_session: ev.off_session,
        recurring,
        opt_out: ev.risk_assessment_opt_out,
    })
}

/// Validates a `FeedbackEvent`.
pub fn feedback(ev: proto::FeedbackEvent, clock: &Clock) -> Result<Feedback, FieldError> {
    id(|| "payment_id".into(), &ev.payment_id, true)?;
    let kind = match proto::FeedbackKind::try_from(ev.kind) {
        Ok(proto::FeedbackKind::Fraudulent) => FeedbackKind::Fraudulent,
        Ok(proto::FeedbackKind::DisputeFraud) => FeedbackKind::DisputeFraud,
        Ok(proto::FeedbackKind::Legitimate) => FeedbackKind::Legitimate,
        Ok(proto::FeedbackKind::Unspecified) => {
            return Err(FieldError::new("kind", "is required"));
        }
        Err(_) => {
            return Err(FieldError::new(
                "kind",
                format!("unknown FeedbackKind value {}", ev.kind),
            ));
        }
    };
    let reported_at_ms = clock.timestamp("reported_at_ms", ev.reported_at_ms, true)?;
    Ok(Feedback {
        payment_id: ev.payment_id,
        kind,
        reported_at_ms,
    })
}

/// Validates a `GetPaymentMethodRequest`, returning the id.
pub fn get_request(req: proto::GetPaymentMethodRequest) -> Result<String, FieldError> {
    id(|| "payment_method_id".into(), &req.payment_method_id, true)?;
    Ok(req.payment_method_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn clock() -> Clock {
        Clock {
            now_ms: NOW,
            max_future_skew_ms: 300_000,
        }
    }

    fn event() -> proto::PaymentEvent {
        proto::PaymentEvent {
            payment_id: "pay_1".into(),
            object_type: proto::ObjectType::PaymentIntent as i32,
            amount: 1099,
            currency: "USD".into(),
            payment_method: Some(proto::PaymentMethod {
                id: "pm_1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(ev: proto::PaymentEvent) -> String {
        match payment(ev, &clock()) {
            Ok(_) => "ok".into(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn valid_event_is_normalised() {
        let p = payment(event(), &clock()).expect("valid");
        assert_eq!(&*p.currency, "usd");
        assert_eq!(p.created_at_ms, NOW, "0 defaults to now");
    }

    #[test]
    fn luhn_detects_card_numbers() {
        assert!(looks_like_pan("4242424242424242"));
        assert!(looks_like_pan("4242 4242 4242 4242"));
        assert!(looks_like_pan("378282246310005"));
        assert!(!looks_like_pan("4242424242424241"), "fails Luhn");
        assert!(!looks_like_pan("424242424242"), "too short");
        assert!(!looks_like_pan("fp_4242424242424242"));
    }

    #[test]
    fn control_characters_are_found_in_any_script() {
        assert!(has_control("a\u{0}b"));
        assert!(has_control("tab\there"));
        assert!(has_control("del\u{7f}"));
        assert!(has_control("c1\u{85}next-line"));
        assert!(!has_control("Zürich café — ok"));
        assert!(has_whitespace("a\u{2003}b"));
        assert!(!has_whitespace("pay_123"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut e = event();
        e.payment_id.clear();
        assert_eq!(field_of(e), "payment_id");
        let mut e = event();
        e.amount = -1;
        assert_eq!(field_of(e), "amount");
        let mut e = event();
        e.object_type = 42;
        assert_eq!(field_of(e), "object_type");
        let mut e = event();
        e.currency = "dollars".into();
        assert_eq!(field_of(e), "currency");
        let mut e = event();
        e.created_at_ms = NOW + 86_400_000;
        assert_eq!(field_of(e), "created_at_ms");
        let mut e = event();
        e.payment_method = None;
        assert_eq!(field_of(e), "payment_method");
        let mut e = event();
        e.payment_method = Some(proto::PaymentMethod {
            id: "pm_1".into(),
            card_fingerprint: "4242424242424242".into(),
            ..Default::default()
        });
        assert_eq!(field_of(e), "payment_method.card_fingerprint");
        let mut e = event();
        e.session = Some(proto::Session {
            session_id: "s".into(),
            ip: "999.1.1.1".into(),
            ..Default::default()
        });
        assert_eq!(field_of(e), "session.ip");
        let mut e = event();
        e.session = Some(proto::Session {
            session_id: "s".into(),
            user_agent: "x".repeat(10 * 1024 * 1024),
            ..Default::default()
        });
        assert_eq!(field_of(e), "session.user_agent");
        let mut e = event();
        e.customer = Some(proto::Customer {
            id: String::new(),
            email: "not-an-email".into(),
        });
        assert_eq!(field_of(e), "customer.email");
    }
}
