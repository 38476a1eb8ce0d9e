//! Validation: turns borrowed views of request messages ([`crate::view`])
//! into typed domain events, or into a [`FieldError`] that names the
//! offending field. Strings arrive as byte slices of the request and are
//! checked for UTF-8 here. Nothing here panics on request data.

use crate::domain::{
    Customer, Feedback, FeedbackKind, MethodKind, MethodRef, ObjectKind, Payment, Recurring,
    RegisteredMethod, Session,
};
use crate::proto;
use crate::scan::{Scanned, scan};
use crate::view::{
    CustomerView, FeedbackView, GetView, PaymentEventView, PaymentMethodView, RegisterView,
    SessionView,
};
use std::borrow::Cow;
use std::net::IpAddr;

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
/// Most metadata entries on one payment, counted on the wire (a repeated key
/// counts each time): the parser stops at the first entry past it.
pub const MAX_METADATA_ENTRIES: usize = 50;
/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 40;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_LEN: usize = 500;
/// Most bytes of metadata entries on one payment (keys, values and their
/// protobuf framing, counted on the wire): the parser stops at the first
/// entry past it. [`MAX_METADATA_ENTRIES`] entries of the longest key and
/// value take 27,250.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;
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

/// One pass over a string field (see [`crate::scan`]), or an error if it is
/// not valid UTF-8.
fn scanned(field: impl FnOnce() -> String, value: &[u8]) -> Result<Scanned<'_>, FieldError> {
    scan(value).ok_or_else(|| FieldError::new(field(), "is not valid UTF-8"))
}

/// The UTF-8 text of a string field, borrowing the request.
fn utf8(field: impl FnOnce() -> String, value: &[u8]) -> Result<&str, FieldError> {
    scanned(field, value).map(|s| s.text)
}

/// Whether a non-ASCII string holds a C1 control (U+0080..=U+009F, encoded
/// 0xC2 0x80..=0x9F).
fn has_c1(s: &str) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0] == 0xc2 && (0x80..=0x9f).contains(&w[1]))
}

/// Whether any byte of `b` matches `bad`. Branch-free over a byte
/// accumulator, so that it vectorises.
#[inline]
fn any_byte(b: &[u8], bad: impl Fn(u8) -> bool) -> bool {
    b.iter().fold(0u8, |acc, &c| acc | u8::from(bad(c))) != 0
}

/// Whether `s` holds a control character (C0, DEL or C1).
fn has_control(s: &str) -> bool {
    let b = s.as_bytes();
    any_byte(b, |c| (c < 0x20) | (c == 0x7f)) || (!s.is_ascii() && has_c1(s))
}

/// Whether `s` holds whitespace (vectorised ASCII scan, Unicode otherwise).
fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        any_byte(s.as_bytes(), |b| (b == b' ') | (b.wrapping_sub(9) < 5))
    } else {
        s.chars().any(char::is_whitespace)
    }
}

/// Parses dotted-quad IPv4 quickly; `None` sends the text to the full parser.
fn parse_ipv4(b: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, part) in b.split(|c| *c == b'.').enumerate() {
        if k >= 4 || part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        octets[k] = u8::try_from(v).ok()?;
        i = k + 1;
    }
    (i == 4).then(|| std::net::Ipv4Addr::from(octets))
}

fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    if b.len() <= 15 && b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return parse_ipv4(b).map(IpAddr::V4);
    }
    std::str::from_utf8(b)
        .ok()
        .filter(|t| t.len() <= 64)
        .and_then(|t| t.parse::<IpAddr>().ok())
}

/// A free-text field: UTF-8, at most `max` bytes, no control characters.
fn text(field: impl Fn() -> String, value: &[u8], max: usize) -> Result<&str, FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field(),
            format!("is {} bytes long; at most {max} are accepted", value.len()),
        ));
    }
    let s = scanned(&field, value)?;
    if s.control || (!s.ascii && has_c1(s.text)) {
        return Err(FieldError::new(field(), "contains control characters"));
    }
    Ok(s.text)
}

/// An id field: UTF-8, at most [`MAX_ID_LEN`] bytes, no control characters,
/// no whitespace (one vectorised pass for ASCII ids).
fn id(field: impl Fn() -> String, value: &[u8], required: bool) -> Result<&str, FieldError> {
    if value.is_empty() {
        if required {
            return Err(FieldError::new(field(), "is required"));
        }
        return Ok("");
    }
    if value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field(),
            format!(
                "is {} bytes long; at most {MAX_ID_LEN} are accepted",
                value.len()
            ),
        ));
    }
    // Space, C0 controls (which include \t \n \r) and DEL; Unicode
    // controls and spaces when not ASCII.
    let s = scanned(&field, value)?;
    if s.control || s.space || (!s.ascii && (has_c1(s.text) || has_whitespace(s.text))) {
        return Err(FieldError::new(
            field(),
            "must not contain whitespace or control characters",
        ));
    }
    Ok(s.text)
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

/// Whether free text holds a card number: 13–19 digits, written together or
/// in groups separated by one space or one dash (`4242 4242 4242 4242`,
/// `3782-822463-10005`), with no digit right before or after, starting
/// with 2–6 (the major industry identifiers of the payment card brands:
/// Mastercard, Amex, Diners, JCB, Visa, Discover, UnionPay) and passing the
/// Luhn check. A candidate starts and ends at group boundaries, so a card
/// number followed by more digit groups (an expiry date) is found, while a
/// longer number written without separators (an order id) is not split.
/// Numbers starting with 0, 1 or 7–9 (millisecond timestamps start with 1)
/// are not taken for card numbers.
pub fn contains_card_number(text: &[u8]) -> bool {
    (0..text.len()).any(|i| {
        text[i].is_ascii_digit()
            && (i == 0 || !text[i - 1].is_ascii_digit())
            && card_number_at(text, i)
    })
}

/// Whether a card number (see [`contains_card_number`]) starts with the
/// digit group at `start`: at most 19 digits and their separators are read.
fn card_number_at(text: &[u8], start: usize) -> bool {
    if !(b'2'..=b'6').contains(&text[start]) {
        return false;
    }
    // Luhn sums with the digits at even (left-to-right) positions doubled,
    // and with those at odd positions doubled: which one applies depends
    // on the length, known only at the end.
    let (mut n, mut sums) = (0usize, [0u32; 2]);
    let mut i = start;
    loop {
        while let Some(c) = text.get(i).filter(|c| c.is_ascii_digit()) {
            let d = u32::from(c - b'0');
            let twice = if d >= 5 { 2 * d - 9 } else { 2 * d };
            sums[n % 2] += twice;
            sums[1 - n % 2] += d;
            n += 1;
            i += 1;
            if n > 19 {
                return false;
            }
        }
        // The last digit is never doubled: with n digits, the doubled ones
        // are those whose position has the parity of n.
        if n >= 13 && sums[n % 2].is_multiple_of(10) {
            return true;
        }
        match (text.get(i), text.get(i + 1)) {
            (Some(b' ' | b'-'), Some(d)) if d.is_ascii_digit() => i += 1,
            _ => return false,
        }
    }
}

fn fingerprint(field: impl Fn() -> String, value: &[u8]) -> Result<&str, FieldError> {
    if value.len() > MAX_FINGERPRINT_LEN {
        return Err(FieldError::new(
            field(),
            format!(
                "is {} bytes long; at most {MAX_FINGERPRINT_LEN} are accepted",
                value.len()
            ),
        ));
    }
    let value = utf8(&field, value)?;
    if looks_like_pan(value) {
        return Err(FieldError::new(
            field(),
            "looks like a card number (PAN); send the card's fingerprint, never the number",
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(FieldError::new(
            field(),
            "must be printable ASCII without spaces",
        ));
    }
    Ok(value)
}

fn country(field: impl Fn() -> String, value: &[u8]) -> Result<Option<[u8; 2]>, FieldError> {
    match value {
        [] => Ok(None),
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Ok(Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
        }
        _ => Err(FieldError::new(
            field(),
            "must be an ISO 3166-1 alpha-2 code such as \"FR\"",
        )),
    }
}

fn email(field: impl Fn() -> String, value: &[u8]) -> Result<Cow<'_, str>, FieldError> {
    if value.is_empty() {
        return Ok(Cow::Borrowed(""));
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
    let s = scanned(&field, value)?;
    let (value, ascii) = (s.text, s.ascii);
    let b = value.as_bytes();
    // One more pass: count '@', spot upper case.
    let (mut ats, mut upper) = (0u32, 0u8);
    for &c in b {
        ats += u32::from(c == b'@');
        upper |= u8::from(c.is_ascii_uppercase());
    }
    let valid = ats == 1
        && b.first() != Some(&b'@')
        && b.last() != Some(&b'@')
        && !s.control
        && !s.space
        && (ascii || !(has_c1(value) || has_whitespace(value)));
    if !valid {
        return Err(FieldError::new(field(), "is not an email address"));
    }
    // Lower-case only when needed: most addresses already are.
    if upper != 0 || !ascii {
        Ok(Cow::Owned(value.to_lowercase()))
    } else {
        Ok(Cow::Borrowed(value))
    }
}

fn customer<'a>(prefix: &str, c: Option<&CustomerView<'a>>) -> Result<Customer<'a>, FieldError> {
    let Some(c) = c else {
        return Ok(Customer::default());
    };
    Ok(Customer {
        id: Cow::Borrowed(id(|| path(prefix, "id"), c.id, false)?),
        email: email(|| path(prefix, "email"), c.email)?,
    })
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
pub fn session<'a>(
    prefix: &str,
    s: &SessionView<'a>,
    clock: &Clock,
) -> Result<Session<'a>, FieldError> {
    let session_id = id(|| path(prefix, "session_id"), s.session_id, true)?;
    let captured_at_ms =
        clock.timestamp_at(|| path(prefix, "captured_at_ms"), s.captured_at_ms, false)?;
    let ip = if s.ip.is_empty() {
        None
    } else {
        match parse_ip(s.ip) {
            Some(ip) => Some(ip),
            None => {
                return Err(FieldError::new(
                    path(prefix, "ip"),
                    "is not an IPv4 or IPv6 address",
                ));
            }
        }
    };
    let user_agent = text(
        || path(prefix, "user_agent"),
        s.user_agent,
        MAX_USER_AGENT_LEN,
    )?;
    let accept_language = text(
        || path(prefix, "accept_language"),
        s.accept_language,
        MAX_ACCEPT_LANGUAGE_LEN,
    )?;
    if s.timezone.len() > MAX_TIMEZONE_LEN
        || any_byte(s.timezone, |b| {
            !(b.is_ascii_alphanumeric() | (b == b'/') | (b == b'_') | (b == b'-') | (b == b'+'))
        })
    {
        return Err(FieldError::new(
            path(prefix, "timezone"),
            "must be an IANA time zone name such as \"Europe/Paris\"",
        ));
    }
    let timezone = utf8(|| path(prefix, "timezone"), s.timezone)?;
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
    let device_id = id(|| path(prefix, "device_id"), s.device_id, false)?;
    let platform = text(|| path(prefix, "platform"), s.platform, MAX_PLATFORM_LEN)?;
    Ok(Session {
        session_id: Cow::Borrowed(session_id),
        captured_at_ms,
        ip,
        user_agent: Cow::Borrowed(user_agent),
        accept_language: Cow::Borrowed(accept_language),
        timezone: Cow::Borrowed(timezone),
        utc_offset_minutes: s.utc_offset_minutes,
        screen_width: s.screen_width,
        screen_height: s.screen_height,
        color_depth: s.color_depth,
        device_id: Cow::Borrowed(device_id),
        platform: Cow::Borrowed(platform),
    })
}

/// Validates a `RegisterPaymentMethodRequest`. Everything kept is copied out
/// of the request.
pub fn registration(req: &RegisterView<'_>, clock: &Clock) -> Result<RegisteredMethod, FieldError> {
    let Some(pm) = &req.payment_method else {
        return Err(FieldError::new("payment_method", "is required"));
    };
    let method_id = id(|| "payment_method.id".into(), pm.id, true)?;
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
            pm.card_fingerprint,
        )?)
    };
    let card_country = country(|| "payment_method.card_country".into(), pm.card_country)?;
    let created_at_ms = clock.timestamp("payment_method.created_at_ms", pm.created_at_ms, true)?;
    let creation_session = match &pm.creation_session {
        Some(s) => Some(session("payment_method.creation_session", s, clock)?.into_owned()),
        None => None,
    };
    // The request's customer wins; the method's own is accepted as a fallback.
    let customer = match &req.customer {
        Some(c) => customer("customer", Some(c))?,
        None => customer("payment_method.customer", pm.customer.as_ref())?,
    };
    Ok(RegisteredMethod {
        id: method_id.to_owned(),
        kind,
        card_fingerprint: card_fingerprint.map(str::to_owned),
        card_country,
        created_at_ms,
        creation_session,
        customer: customer.into_owned(),
    })
}

fn method_ref<'a>(pm: &PaymentMethodView<'a>, clock: &Clock) -> Result<MethodRef<'a>, FieldError> {
    let method_id = id(|| "payment_method.id".into(), pm.id, false)?;
    let kind = method_kind(|| "payment_method.type".into(), pm.r#type)?;
    if method_id.is_empty() && kind.is_none() {
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
            pm.card_fingerprint,
        )?)
    };
    if method_id.is_empty() && kind == Some(MethodKind::Card) && card_fingerprint.is_none() {
        return Err(FieldError::new(
            "payment_method.card_fingerprint",
            "is required for an inline card without a registered id",
        ));
    }
    let card_country = country(|| "payment_method.card_country".into(), pm.card_country)?;
    let created_at_ms = match pm.created_at_ms {
        0 => None,
        t => Some(clock.timestamp("payment_method.created_at_ms", t, false)?),
    };
    let creation_session = match &pm.creation_session {
        Some(s) => Some(session("payment_method.creation_session", s, clock)?),
        None => None,
    };
    Ok(MethodRef {
        id: method_id,
        kind,
        card_fingerprint,
        card_country,
        created_at_ms,
        creation_session,
    })
}

/// Why a metadata key or value holding a card number is refused.
const CARD_NUMBER_IN_METADATA: &str =
    "holds what looks like a card number (PAN); metadata must never carry card numbers";

/// Validates a `PaymentEvent`.
pub fn payment<'a>(ev: &PaymentEventView<'a>, clock: &Clock) -> Result<Payment<'a>, FieldError> {
    let payment_id = id(|| "payment_id".into(), ev.payment_id, true)?;
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
    let currency = match ev.currency {
        [] if ev.amount > 0 => {
            return Err(FieldError::new(
                "currency",
                "is required when amount is set",
            ));
        }
        [] => Cow::Borrowed(""),
        [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_lowercase()) => {
            Cow::Borrowed(utf8(|| "currency".into(), ev.currency)?)
        }
        [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => {
            Cow::Owned(String::from_utf8_lossy(ev.currency).to_ascii_lowercase())
        }
        _ => {
            return Err(FieldError::new(
                "currency",
                "must be a three-letter ISO 4217 code such as \"usd\"",
            ));
        }
    };
    let created_at_ms = clock.timestamp("created_at_ms", ev.created_at_ms, true)?;
    let customer = customer("customer", ev.customer.as_ref())?;
    let merchant_id = id(|| "merchant_id".into(), ev.merchant_id, false)?;
    let Some(pm) = &ev.payment_method else {
        return Err(FieldError::new("payment_method", "is required"));
    };
    let method = method_ref(pm, clock)?;
    let session = match &ev.session {
        Some(s) => Some(session("session", s, clock)?),
        None => None,
    };
    let recurring = match &ev.recurring {
        Some(r) => Some(Recurring {
            subscription_id: id(
                || "recurring.subscription_id".into(),
                r.subscription_id,
                true,
            )?,
            initial: r.initial,
        }),
        None => None,
    };
    // The parser has bounded the entries (MAX_METADATA_ENTRIES) and their
    // bytes (MAX_METADATA_BYTES).
    for (k, v) in &ev.metadata {
        if k.is_empty() {
            return Err(FieldError::new("metadata", "has an empty key"));
        }
        let k = text(|| "metadata".into(), k, MAX_METADATA_KEY_LEN)?;
        if contains_card_number(k.as_bytes()) {
            return Err(FieldError::new("metadata", CARD_NUMBER_IN_METADATA));
        }
        if v.len() > MAX_METADATA_VALUE_LEN || utf8(String::new, v).map_or(true, has_control) {
            return Err(FieldError::new(
                format!("metadata.{k}"),
                format!(
                    "is more than {MAX_METADATA_VALUE_LEN} bytes or contains control characters"
                ),
            ));
        }
        if contains_card_number(v) {
            return Err(FieldError::new(
                format!("metadata.{k}"),
                CARD_NUMBER_IN_METADATA,
            ));
        }
    }
    Ok(Payment {
        payment_id,
        object,
        amount: ev.amount,
        currency,
        created_at_ms,
        customer,
        merchant_id,
        method,
        session,
        off_session: ev.off_session,
        recurring,
        opt_out: ev.risk_assessment_opt_out,
    })
}

/// Validates a `FeedbackEvent`.
pub fn feedback<'a>(ev: &FeedbackView<'a>, clock: &Clock) -> Result<Feedback<'a>, FieldError> {
    let payment_id = id(|| "payment_id".into(), ev.payment_id, true)?;
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
        payment_id,
        kind,
        reported_at_ms,
    })
}

/// Validates a `GetPaymentMethodRequest`, returning the id.
pub fn get_request<'a>(req: &GetView<'a>) -> Result<&'a str, FieldError> {
    id(|| "payment_method_id".into(), req.payment_method_id, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto as public;
    use prost::Message;

    const NOW: i64 = 1_800_000_000_000;

    fn clock() -> Clock {
        Clock {
            now_ms: NOW,
            max_future_skew_ms: 300_000,
        }
    }

    fn event() -> public::PaymentEvent {
        public::PaymentEvent {
            payment_id: "pay_1".into(),
            object_type: public::ObjectType::PaymentIntent as i32,
            amount: 1099,
            currency: "USD".into(),
            payment_method: Some(public::PaymentMethod {
                id: "pm_1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(ev: public::PaymentEvent) -> String {
        let bytes = ev.encode_to_vec();
        let view = crate::view::payment_event(&bytes).expect("parses");
        match payment(&view, &clock()) {
            Ok(_) => "ok".into(),
            Err(e) => e.field,
        }
    }

    #[test]
    fn valid_event_is_normalised() {
        let bytes = event().encode_to_vec();
        let view = crate::view::payment_event(&bytes).expect("parses");
        let p = payment(&view, &clock()).expect("valid");
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
    fn card_numbers_are_found_in_free_text_as_people_type_them() {
        let found = |t: &str| contains_card_number(t.as_bytes());
        for card in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "4242 4242-4242 4242",
            "3782 822463 10005",
            "3782-822463-10005",
            "5555555555554444",
            "6011111111111117",
            "2223003122003222",
            "4000056655665556",
            // Visa's 13 and 19 digits.
            "4222222222222",
            "4000 0000 0000 0000 006",
            // Inside text.
            "card 4242 4242 4242 4242 exp 12/28",
            "pan:4242424242424242;",
            "x4242424242424242y",
            // Followed by more digit groups (an expiry, a CVC).
            "4242 4242 4242 4242 1228",
            "4242424242424242 1228 123",
            "order 77 4242 4242 4242 4242",
        ] {
            assert!(found(card), "{card:?}");
        }
        for not_card in [
            "4242424242424241",            // fails Luhn
            "4242 4242 4242 4241",         // fails Luhn
            "424242424242",                // 12 digits
            "42424242424242424242",        // 20 digits in one number
            "order 123456789012345678901", // a long id, not split
            "4242  4242  4242  4242",      // two spaces: separate numbers
            "4242--4242--4242--4242",
            "4242.4242.4242.4242", // dots are not card separators
            "1763000000000",       // a millisecond timestamp (starts with 1)
            "1234 5678 9012 3452",
            "0000000000000000",
            "9999999999999995",
            "",
            "no digits at all",
        ] {
            assert!(!found(not_card), "{not_card:?}");
        }
        // A digit right before a card number makes another number (17
        // digits, failing Luhn): a number is never split inside.
        assert!(!found("34242424242424242"));
    }

    #[test]
    fn card_numbers_in_metadata_are_refused_naming_the_entry() {
        let with = |k: &str, v: &str| {
            let mut e = event();
            e.metadata.insert("order".into(), "ord_7".into());
            e.metadata.insert(k.into(), v.into());
            let bytes = e.encode_to_vec();
            let view = crate::view::payment_event(&bytes).expect("parses");
            payment(&view, &clock()).map(|_| ())
        };
        assert_eq!(with("note", "thanks!"), Ok(()));
        assert_eq!(with("ts", "1763000000000"), Ok(()));
        for pan in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "card 4242-4242-4242-4242 exp 12/28",
        ] {
            let err = with("note", pan).expect_err(pan);
            assert_eq!(err.field, "metadata.note", "{pan}");
            assert!(err.message.contains("card number"), "{}", err.message);
            assert!(!err.message.contains("4242"), "the number is not echoed");
        }
        // In a key: the key is not echoed in the field.
        let err = with("4242424242424242", "x").expect_err("key");
        assert_eq!(err.field, "metadata");
        assert!(!err.message.contains("4242"));
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
        e.payment_method = Some(public::PaymentMethod {
            id: "pm_1".into(),
            card_fingerprint: "4242424242424242".into(),
            ..Default::default()
        });
        assert_eq!(field_of(e), "payment_method.card_fingerprint");
        let mut e = event();
        e.session = Some(public::Session {
            session_id: "s".into(),
            ip: "999.1.1.1".into(),
            ..Default::default()
        });
        assert_eq!(field_of(e), "session.ip");
        let mut e = event();
        e.session = Some(public::Session {
            session_id: "s".into(),
            user_agent: "x".repeat(10 * 1024 * 1024),
            ..Default::default()
        });
        assert_eq!(field_of(e), "session.user_agent");
        let mut e = event();
        e.customer = Some(public::Customer {
            id: String::new(),
            email: "not-an-email".into(),
        });
        assert_eq!(field_of(e), "customer.email");
    }

    #[test]
    fn ip_addresses_parse_like_the_standard_library() {
        for ok in [
            "203.0.113.7",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(parse_ip(ok.as_bytes()), ok.parse().ok(), "{ok}");
        }
        for bad in [
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            "",
            "1.2.3.4 ",
            "a.b.c.d",
        ] {
            assert_eq!(parse_ip(bad.as_bytes()), None, "{bad}");
            assert!(bad.parse::<IpAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        let e = |s: &'static str| email(|| "e".into(), s.as_bytes());
        assert_eq!(
            &*e("Jane.Doe@Example.COM").expect("valid"),
            "jane.doe@example.com"
        );
        assert_eq!(&*e("jane@example.com").expect("valid"), "jane@example.com");
        for bad in [
            "jane",
            "@example.com",
            "jane@",
            "ja ne@example.com",
            "a@b@c",
            "jane@exa\tmple.com",
        ] {
            assert!(e(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_utf8_is_named() {
        let bytes = event().encode_to_vec();
        let mut view = crate::view::payment_event(&bytes).expect("parses");
        view.merchant_id = &[0x66, 0xff, 0x66];
        let err = payment(&view, &clock()).expect_err("invalid UTF-8");
        assert_eq!(err.field, "merchant_id");
        assert_eq!(err.message, "is not valid UTF-8");
    }
}
