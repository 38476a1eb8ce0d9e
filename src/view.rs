//! Borrowed views of the request messages (and of the outcome, for clients):
//! a protobuf parser over the bytes of one message that allocates nothing
//! and copies nothing. Strings come out as byte slices of the message;
//! validation checks them. Wire-compatible
//! with every encoder of `riskstream.v1` (unknown fields are skipped, a
//! repeated embedded message is merged, the last scalar wins).
//!
//! The parser matches on named field numbers; each message's numbers and
//! types are also a table (its module's `FACTS`, all of them in `FACTS`)
//! that `tests/protocol_facts.rs` checks against the compiled descriptor.

use crate::facts::{MessageFacts, message_facts};
use crate::validate::{MAX_ID_LEN, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};

message_facts! {
    /// `riskstream.v1.Session`, as [`SessionView`] reads it.
    session "riskstream.v1.Session" {
        SESSION_ID = 1, "session_id", String;
        CAPTURED_AT_MS = 2, "captured_at_ms", Int64;
        IP = 3, "ip", String;
        USER_AGENT = 4, "user_agent", String;
        ACCEPT_LANGUAGE = 5, "accept_language", String;
        TIMEZONE = 6, "timezone", String;
        UTC_OFFSET_MINUTES = 7, "utc_offset_minutes", Int32;
        SCREEN_WIDTH = 8, "screen_width", Uint32;
        SCREEN_HEIGHT = 9, "screen_height", Uint32;
        COLOR_DEPTH = 10, "color_depth", Uint32;
        DEVICE_ID = 11, "device_id", String;
        PLATFORM = 12, "platform", String;
    }
}

message_facts! {
    /// `riskstream.v1.Customer`, as [`CustomerView`] reads it.
    customer "riskstream.v1.Customer" {
        ID = 1, "id", String;
        EMAIL = 2, "email", String;
    }
}

message_facts! {
    /// `riskstream.v1.PaymentMethod`, as [`PaymentMethodView`] reads it.
    payment_method "riskstream.v1.PaymentMethod" {
        ID = 1, "id", String;
        TYPE = 2, "type", Enum("riskstream.v1.PaymentMethodType");
        CARD_FINGERPRINT = 3, "card_fingerprint", String;
        CARD_COUNTRY = 4, "card_country", String;
        CREATED_AT_MS = 5, "created_at_ms", Int64;
        CREATION_SESSION = 6, "creation_session", Message("riskstream.v1.Session");
        CUSTOMER = 7, "customer", Message("riskstream.v1.Customer");
    }
}

message_facts! {
    /// `riskstream.v1.Recurring`, as [`RecurringView`] reads it.
    recurring "riskstream.v1.Recurring" {
        SUBSCRIPTION_ID = 1, "subscription_id", String;
        INITIAL = 2, "initial", Bool;
    }
}

message_facts! {
    /// The entries of `riskstream.v1.PaymentEvent.metadata`, as the
    /// `map<string, string>` entry parser reads them.
    metadata_entry "riskstream.v1.PaymentEvent.MetadataEntry" {
        KEY = 1, "key", String;
        VALUE = 2, "value", String;
    }
}

message_facts! {
    /// `riskstream.v1.PaymentEvent`, as [`PaymentEventView`] reads it.
    payment_event "riskstream.v1.PaymentEvent" {
        PAYMENT_ID = 1, "payment_id", String;
        OBJECT_TYPE = 2, "object_type", Enum("riskstream.v1.ObjectType");
        AMOUNT = 3, "amount", Int64;
        CURRENCY = 4, "currency", String;
        CREATED_AT_MS = 5, "created_at_ms", Int64;
        CUSTOMER = 6, "customer", Message("riskstream.v1.Customer");
        MERCHANT_ID = 7, "merchant_id", String;
        PAYMENT_METHOD = 8, "payment_method", Message("riskstream.v1.PaymentMethod");
        SESSION = 9, "session", Message("riskstream.v1.Session");
        OFF_SESSION = 10, "off_session", Bool;
        RECURRING = 11, "recurring", Message("riskstream.v1.Recurring");
        METADATA = 12, "metadata", Map("riskstream.v1.PaymentEvent.MetadataEntry");
        RISK_ASSESSMENT_OPT_OUT = 13, "risk_assessment_opt_out", Bool;
    }
}

message_facts! {
    /// `riskstream.v1.RegisterPaymentMethodRequest`, as [`RegisterView`] reads it.
    register "riskstream.v1.RegisterPaymentMethodRequest" {
        PAYMENT_METHOD = 1, "payment_method", Message("riskstream.v1.PaymentMethod");
        CUSTOMER = 2, "customer", Message("riskstream.v1.Customer");
    }
}

message_facts! {
    /// `riskstream.v1.FeedbackEvent`, as [`FeedbackView`] reads it.
    feedback "riskstream.v1.FeedbackEvent" {
        PAYMENT_ID = 1, "payment_id", String;
        KIND = 2, "kind", Enum("riskstream.v1.FeedbackKind");
        REPORTED_AT_MS = 3, "reported_at_ms", Int64;
    }
}

message_facts! {
    /// `riskstream.v1.GetPaymentMethodRequest`, as [`GetView`] reads it.
    get "riskstream.v1.GetPaymentMethodRequest" {
        PAYMENT_METHOD_ID = 1, "payment_method_id", String;
    }
}

message_facts! {
    /// `riskstream.v1.Outcome`, the fields [`OutcomeView`] reads.
    outcome "riskstream.v1.Outcome" {
        PAYMENT_ID = 1, "payment_id", String;
        RISK_SCORE = 2, "risk_score", Uint32;
        RISK_LEVEL = 3, "risk_level", Enum("riskstream.v1.RiskLevel");
        DECISION = 4, "decision", Enum("riskstream.v1.Decision");
        FRAUD_PROBABILITY = 7, "fraud_probability", Double;
        MODEL_VERSION = 11, "model_version", String;
        ERROR = 13, "error", Message("riskstream.v1.EventError");
    }
}

message_facts! {
    /// `riskstream.v1.EventError`, the fields [`OutcomeView`] reads of an
    /// outcome's `error`.
    event_error "riskstream.v1.EventError" {
        CODE = 1, "code", String;
        FIELD = 2, "field", String;
    }
}

/// The table of every message the views read.
#[doc(hidden)]
pub const FACTS: &[MessageFacts] = &[
    session::FACTS,
    customer::FACTS,
    payment_method::FACTS,
    recurring::FACTS,
    metadata_entry::FACTS,
    payment_event::FACTS,
    register::FACTS,
    feedback::FACTS,
    get::FACTS,
    outcome::FACTS,
    event_error::FACTS,
];

/// Why the bytes of a request were not read: they are not a well-formed
/// protobuf message, or a repeated field holds more than is accepted
/// (reading stops there, before any work that grows with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not a well-formed protobuf message.
    Malformed(&'static str),
    /// `metadata` has more than [`MAX_METADATA_ENTRIES`] entries on the wire
    /// (a repeated key counts each time).
    MetadataEntries,
    /// `metadata`'s entries take more than [`MAX_METADATA_BYTES`] bytes.
    MetadataBytes,
}

impl DecodeError {
    /// The field at fault: `metadata` for a bound, empty for a malformed
    /// message.
    pub fn field(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "",
            DecodeError::MetadataEntries | DecodeError::MetadataBytes => "metadata",
        }
    }

    /// What is wrong, without the field.
    pub fn reason(&self) -> String {
        match self {
            DecodeError::Malformed(what) => format!("malformed protobuf message: {what}"),
            DecodeError::MetadataEntries => format!(
                "has more than {MAX_METADATA_ENTRIES} entries; at most {MAX_METADATA_ENTRIES} are accepted"
            ),
            DecodeError::MetadataBytes => format!(
                "has more than {MAX_METADATA_BYTES} bytes of keys and values; at most {MAX_METADATA_BYTES} are accepted"
            ),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field() {
            "" => f.write_str(&self.reason()),
            field => write!(f, "{field}: {}", self.reason()),
        }
    }
}

impl std::error::Error for DecodeError {}

/// One field value as the wire carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Keys, lengths and small numbers fit one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let mut v: u64 = 0;
        for (i, &b) in rest.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return Err(DecodeError::Malformed("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        if rest.len() < 10 {
            Err(DecodeError::Malformed("truncated varint"))
        } else {
            Err(DecodeError::Malformed("varint longer than 10 bytes"))
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DecodeError::Malformed("field length runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next (field number, value), or `None` at the end.
    #[inline(always)]
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        // A key is a uint32 varint: field numbers end at 2^29 - 1.
        let key = u32::try_from(self.varint()?)
            .map_err(|_| DecodeError::Malformed("field key too large"))?;
        let number = key >> 3;
        if number == 0 {
            return Err(DecodeError::Malformed("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| DecodeError::Malformed("length too large"))?;
                Value::Len(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            3 | 4 => return Err(DecodeError::Malformed("groups are not supported")),
            _ => return Err(DecodeError::Malformed("invalid wire type")),
        };
        Ok(Some((number, value)))
    }
}

fn varint(v: Value<'_>) -> Result<u64, DecodeError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(DecodeError::Malformed(
            "a varint field has another wire type",
        )),
    }
}

fn len(v: Value<'_>) -> Result<&[u8], DecodeError> {
    match v {
        Value::Len(b) => Ok(b),
        _ => Err(DecodeError::Malformed(
            "a length-delimited field has another wire type",
        )),
    }
}

fn int64(v: Value<'_>) -> Result<i64, DecodeError> {
    varint(v).map(|x| x as i64)
}

fn int32(v: Value<'_>) -> Result<i32, DecodeError> {
    // Protobuf int32 and enums: the low 32 bits of the (sign-extended) varint.
    varint(v).map(|x| x as i32)
}

fn uint32(v: Value<'_>) -> Result<u32, DecodeError> {
    varint(v).map(|x| x as u32)
}

fn boolean(v: Value<'_>) -> Result<bool, DecodeError> {
    varint(v).map(|x| x != 0)
}

/// Parses `buf` into `msg`, merging (for repeated embedded messages).
trait View<'a>: Default {
    fn set(&mut self, number: u32, v: Value<'a>) -> Result<(), DecodeError>;

    fn merge(&mut self, buf: &'a [u8]) -> Result<(), DecodeError> {
        let mut r = Reader::new(buf);
        while let Some((n, v)) = r.field()? {
            self.set(n, v)?;
        }
        Ok(())
    }

    fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut m = Self::default();
        m.merge(buf)?;
        Ok(m)
    }
}

fn embedded<'a, T: View<'a>>(slot: &mut Option<T>, v: Value<'a>) -> Result<(), DecodeError> {
    slot.get_or_insert_with(T::default).merge(len(v)?)
}

/// `riskstream.v1.Session`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionView<'a> {
    pub session_id: &'a [u8],
    pub captured_at_ms: i64,
    pub ip: &'a [u8],
    pub user_agent: &'a [u8],
    pub accept_language: &'a [u8],
    pub timezone: &'a [u8],
    pub utc_offset_minutes: i32,
    pub screen_width: u32,
    pub screen_height: u32,
    pub color_depth: u32,
    pub device_id: &'a [u8],
    pub platform: &'a [u8],
}

impl<'a> View<'a> for SessionView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use session::*;
        match n {
            SESSION_ID => self.session_id = len(v)?,
            CAPTURED_AT_MS => self.captured_at_ms = int64(v)?,
            IP => self.ip = len(v)?,
            USER_AGENT => self.user_agent = len(v)?,
            ACCEPT_LANGUAGE => self.accept_language = len(v)?,
            TIMEZONE => self.timezone = len(v)?,
            UTC_OFFSET_MINUTES => self.utc_offset_minutes = int32(v)?,
            SCREEN_WIDTH => self.screen_width = uint32(v)?,
            SCREEN_HEIGHT => self.screen_height = uint32(v)?,
            COLOR_DEPTH => self.color_depth = uint32(v)?,
            DEVICE_ID => self.device_id = len(v)?,
            PLATFORM => self.platform = len(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.Customer`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerView<'a> {
    pub id: &'a [u8],
    pub email: &'a [u8],
}

impl<'a> View<'a> for CustomerView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use customer::*;
        match n {
            ID => self.id = len(v)?,
            EMAIL => self.email = len(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.PaymentMethod`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentMethodView<'a> {
    pub id: &'a [u8],
    pub r#type: i32,
    pub card_fingerprint: &'a [u8],
    pub card_country: &'a [u8],
    pub created_at_ms: i64,
    pub creation_session: Option<SessionView<'a>>,
    pub customer: Option<CustomerView<'a>>,
}

impl<'a> View<'a> for PaymentMethodView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use payment_method::*;
        match n {
            ID => self.id = len(v)?,
            TYPE => self.r#type = int32(v)?,
            CARD_FINGERPRINT => self.card_fingerprint = len(v)?,
            CARD_COUNTRY => self.card_country = len(v)?,
            CREATED_AT_MS => self.created_at_ms = int64(v)?,
            CREATION_SESSION => embedded(&mut self.creation_session, v)?,
            CUSTOMER => embedded(&mut self.customer, v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.Recurring`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecurringView<'a> {
    pub subscription_id: &'a [u8],
    pub initial: bool,
}

impl<'a> View<'a> for RecurringView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use recurring::*;
        match n {
            SUBSCRIPTION_ID => self.subscription_id = len(v)?,
            INITIAL => self.initial = boolean(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// One `map<string, string>` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EntryView<'a> {
    key: &'a [u8],
    value: &'a [u8],
}

impl<'a> View<'a> for EntryView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use metadata_entry::*;
        match n {
            KEY => self.key = len(v)?,
            VALUE => self.value = len(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.PaymentEvent`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentEventView<'a> {
    pub payment_id: &'a [u8],
    pub object_type: i32,
    pub amount: i64,
    pub currency: &'a [u8],
    pub created_at_ms: i64,
    pub customer: Option<CustomerView<'a>>,
    pub merchant_id: &'a [u8],
    pub payment_method: Option<PaymentMethodView<'a>>,
    pub session: Option<SessionView<'a>>,
    pub off_session: bool,
    pub recurring: Option<RecurringView<'a>>,
    /// Metadata entries in wire order (a later duplicate key wins, as in a map).
    pub metadata: Vec<(&'a [u8], &'a [u8])>,
    pub risk_assessment_opt_out: bool,
    /// Metadata entries and their bytes read so far, duplicates included:
    /// what the bounds are checked against.
    metadata_read: (usize, usize),
}

impl<'a> View<'a> for PaymentEventView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use payment_event::*;
        match n {
            PAYMENT_ID => self.payment_id = len(v)?,
            OBJECT_TYPE => self.object_type = int32(v)?,
            AMOUNT => self.amount = int64(v)?,
            CURRENCY => self.currency = len(v)?,
            CREATED_AT_MS => self.created_at_ms = int64(v)?,
            CUSTOMER => embedded(&mut self.customer, v)?,
            MERCHANT_ID => self.merchant_id = len(v)?,
            PAYMENT_METHOD => embedded(&mut self.payment_method, v)?,
            SESSION => embedded(&mut self.session, v)?,
            OFF_SESSION => self.off_session = boolean(v)?,
            RECURRING => embedded(&mut self.recurring, v)?,
            METADATA => {
                // Bounded before the entry is read: the key lookup below is
                // linear in the entries kept, so it must never see many.
                let entry = len(v)?;
                let (entries, bytes) = self.metadata_read;
                if entries >= MAX_METADATA_ENTRIES {
                    return Err(DecodeError::MetadataEntries);
                }
                let bytes = bytes.saturating_add(entry.len());
                if bytes > MAX_METADATA_BYTES {
                    return Err(DecodeError::MetadataBytes);
                }
                self.metadata_read = (entries + 1, bytes);
                let e = EntryView::parse(entry)?;
                match self.metadata.iter_mut().find(|(k, _)| *k == e.key) {
                    Some(slot) => slot.1 = e.value,
                    None => self.metadata.push((e.key, e.value)),
                }
            }
            RISK_ASSESSMENT_OPT_OUT => self.risk_assessment_opt_out = boolean(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.RegisterPaymentMethodRequest`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterView<'a> {
    pub payment_method: Option<PaymentMethodView<'a>>,
    pub customer: Option<CustomerView<'a>>,
}

impl<'a> View<'a> for RegisterView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use register::*;
        match n {
            PAYMENT_METHOD => embedded(&mut self.payment_method, v)?,
            CUSTOMER => embedded(&mut self.customer, v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.FeedbackEvent`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedbackView<'a> {
    pub payment_id: &'a [u8],
    pub kind: i32,
    pub reported_at_ms: i64,
}

impl<'a> View<'a> for FeedbackView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use feedback::*;
        match n {
            PAYMENT_ID => self.payment_id = len(v)?,
            KIND => self.kind = int32(v)?,
            REPORTED_AT_MS => self.reported_at_ms = int64(v)?,
            _ => {}
        }
        Ok(())
    }
}

/// `riskstream.v1.GetPaymentMethodRequest`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetView<'a> {
    pub payment_method_id: &'a [u8],
}

impl<'a> View<'a> for GetView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        if n == get::PAYMENT_METHOD_ID {
            self.payment_method_id = len(v)?;
        }
        Ok(())
    }
}

/// `riskstream.v1.Outcome`, the fields a client checks and tallies (the
/// replay tool reads every outcome through it; insights are skipped).
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeView<'a> {
    pub payment_id: &'a [u8],
    pub risk_score: u32,
    pub risk_level: i32,
    pub decision: i32,
    pub fraud_probability: f64,
    /// `error.code`, empty when the event was scored.
    pub error_code: &'a [u8],
    /// `error.field`.
    pub error_field: &'a [u8],
    pub model_version: &'a [u8],
}

impl<'a> View<'a> for OutcomeView<'a> {
    fn set(&mut self, n: u32, v: Value<'a>) -> Result<(), DecodeError> {
        use outcome::*;
        match n {
            PAYMENT_ID => self.payment_id = len(v)?,
            RISK_SCORE => self.risk_score = uint32(v)?,
            RISK_LEVEL => self.risk_level = int32(v)?,
            DECISION => self.decision = int32(v)?,
            MODEL_VERSION => self.model_version = len(v)?,
            FRAUD_PROBABILITY => match v {
                Value::Fixed64(x) => self.fraud_probability = f64::from_bits(x),
                _ => {
                    return Err(DecodeError::Malformed(
                        "a double field has another wire type",
                    ));
                }
            },
            ERROR => {
                let mut r = Reader::new(len(v)?);
                while let Some((n, v)) = r.field()? {
                    match n {
                        event_error::CODE => self.error_code = len(v)?,
                        event_error::FIELD => self.error_field = len(v)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Parses an `Outcome`.
pub fn outcome(buf: &[u8]) -> Result<OutcomeView<'_>, DecodeError> {
    OutcomeView::parse(buf)
}

/// Parses a `PaymentEvent`.
pub fn payment_event(buf: &[u8]) -> Result<PaymentEventView<'_>, DecodeError> {
    PaymentEventView::parse(buf)
}

/// Parses a `RegisterPaymentMethodRequest`.
pub fn register(buf: &[u8]) -> Result<RegisterView<'_>, DecodeError> {
    RegisterView::parse(buf)
}

/// Parses a `FeedbackEvent`.
pub fn feedback(buf: &[u8]) -> Result<FeedbackView<'_>, DecodeError> {
    FeedbackView::parse(buf)
}

/// Parses a `GetPaymentMethodRequest`.
pub fn get(buf: &[u8]) -> Result<GetView<'_>, DecodeError> {
    GetView::parse(buf)
}

/// The `payment_id` of a `PaymentEvent` that may not parse as a whole (the
/// last one read before the bytes go bad), so that an error outcome can
/// still name its payment; empty unless it is valid UTF-8 of at most
/// [`MAX_ID_LEN`] bytes (an outcome echoing anything else could not be
/// decoded by a standard client, or would carry an absurd id back).
pub fn salvage_payment_id(buf: &[u8]) -> &[u8] {
    let mut r = Reader::new(buf);
    let mut id: &[u8] = &[];
    while let Ok(Some((n, v))) = r.field() {
        if let (payment_event::PAYMENT_ID, Value::Len(b)) = (n, v) {
            id = b;
        }
    }
    if id.len() <= MAX_ID_LEN && std::str::from_utf8(id).is_ok() {
        id
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto as public;
    use prost::Message;

    fn session(i: u32) -> public::Session {
        public::Session {
            session_id: format!("sess_{i}"),
            captured_at_ms: 1_800_000_000_000 + i64::from(i),
            ip: "2001:db8::7".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0 é".into(),
            accept_language: "fr-FR,fr;q=0.9".into(),
            timezone: "Europe/Paris".into(),
            utc_offset_minutes: -(i as i32) * 30,
            screen_width: 1920,
            screen_height: i,
            color_depth: 24,
            device_id: "dev".into(),
            platform: "Linux".into(),
        }
    }

    fn event(i: u32) -> public::PaymentEvent {
        public::PaymentEvent {
            payment_id: format!("pay_{i}"),
            object_type: if i.is_multiple_of(3) { 77 } else { 2 },
            amount: -(i64::from(i)) * 1_000_000_007,
            currency: "eur".into(),
            created_at_ms: i64::from(i) << 40,
            customer: (i.is_multiple_of(2)).then(|| public::Customer {
                id: format!("cus_{i}"),
                email: if i.is_multiple_of(4) {
                    format!("c{i}@example.com")
                } else {
                    String::new()
                },
            }),
            merchant_id: "acct".into(),
            payment_method: Some(public::PaymentMethod {
                id: "pm".into(),
                r#type: -1,
                card_fingerprint: "fp".into(),
                card_country: "FR".into(),
                created_at_ms: 5,
                creation_session: (i % 4 == 1).then(|| session(i + 1)),
                customer: (i % 3 == 1).then(|| public::Customer {
                    id: format!("cus_{i}"),
                    email: "pm@example.com".into(),
                }),
            }),
            session: Some(session(i)),
            off_session: i.is_multiple_of(5),
            recurring: (i.is_multiple_of(7)).then(|| public::Recurring {
                subscription_id: "sub".into(),
                initial: true,
            }),
            metadata: if i % 2 == 1 {
                [
                    ("order".to_string(), format!("o{i}")),
                    ("cart".to_string(), String::new()),
                ]
                .into_iter()
                .collect()
            } else {
                Default::default()
            },
            risk_assessment_opt_out: i.is_multiple_of(11),
        }
    }

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("utf-8")
    }

    fn text(b: &[u8]) -> String {
        s(b).to_owned()
    }

    // The views as the public messages, every field of both sides named (no
    // `..`): a field added to the proto or to a view fails to compile here
    // until it is carried across, and comparing with the message prost
    // encoded checks that the view read every field back.

    fn public_session(v: &SessionView<'_>) -> public::Session {
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
        public::Session {
            session_id: text(session_id),
            captured_at_ms: *captured_at_ms,
            ip: text(ip),
            user_agent: text(user_agent),
            accept_language: text(accept_language),
            timezone: text(timezone),
            utc_offset_minutes: *utc_offset_minutes,
            screen_width: *screen_width,
            screen_height: *screen_height,
            color_depth: *color_depth,
            device_id: text(device_id),
            platform: text(platform),
        }
    }

    fn public_customer(v: &CustomerView<'_>) -> public::Customer {
        let CustomerView { id, email } = v;
        public::Customer {
            id: text(id),
            email: text(email),
        }
    }

    fn public_payment_method(v: &PaymentMethodView<'_>) -> public::PaymentMethod {
        let PaymentMethodView {
            id,
            r#type,
            card_fingerprint,
            card_country,
            created_at_ms,
            creation_session,
            customer,
        } = v;
        public::PaymentMethod {
            id: text(id),
            r#type: *r#type,
            card_fingerprint: text(card_fingerprint),
            card_country: text(card_country),
            created_at_ms: *created_at_ms,
            creation_session: creation_session.as_ref().map(public_session),
            customer: customer.as_ref().map(public_customer),
        }
    }

    fn public_event(v: &PaymentEventView<'_>) -> public::PaymentEvent {
        let PaymentEventView {
            payment_id,
            object_type,
            amount,
            currency,
            created_at_ms,
            customer,
            merchant_id,
            payment_method,
            session,
            off_session,
            recurring,
            metadata,
            risk_assessment_opt_out,
            metadata_read: _,
        } = v;
        public::PaymentEvent {
            payment_id: text(payment_id),
            object_type: *object_type,
            amount: *amount,
            currency: text(currency),
            created_at_ms: *created_at_ms,
            customer: customer.as_ref().map(public_customer),
            merchant_id: text(merchant_id),
            payment_method: payment_method.as_ref().map(public_payment_method),
            session: session.as_ref().map(public_session),
            off_session: *off_session,
            recurring: recurring.as_ref().map(|r| {
                let RecurringView {
                    subscription_id,
                    initial,
                } = r;
                public::Recurring {
                    subscription_id: text(subscription_id),
                    initial: *initial,
                }
            }),
            metadata: metadata.iter().map(|(k, v)| (text(k), text(v))).collect(),
            risk_assessment_opt_out: *risk_assessment_opt_out,
        }
    }

    fn public_register(v: &RegisterView<'_>) -> public::RegisterPaymentMethodRequest {
        let RegisterView {
            payment_method,
            customer,
        } = v;
        public::RegisterPaymentMethodRequest {
            payment_method: payment_method.as_ref().map(public_payment_method),
            customer: customer.as_ref().map(public_customer),
        }
    }

    fn public_feedback(v: &FeedbackView<'_>) -> public::FeedbackEvent {
        let FeedbackView {
            payment_id,
            kind,
            reported_at_ms,
        } = v;
        public::FeedbackEvent {
            payment_id: text(payment_id),
            kind: *kind,
            reported_at_ms: *reported_at_ms,
        }
    }

    fn public_get(v: &GetView<'_>) -> public::GetPaymentMethodRequest {
        let GetView { payment_method_id } = v;
        public::GetPaymentMethodRequest {
            payment_method_id: text(payment_method_id),
        }
    }

    /// What [`OutcomeView`] reads of an outcome; the fields it skips are
    /// left empty.
    fn public_outcome(v: &OutcomeView<'_>) -> public::Outcome {
        let OutcomeView {
            payment_id,
            risk_score,
            risk_level,
            decision,
            fraud_probability,
            error_code,
            error_field,
            model_version,
        } = v;
        public::Outcome {
            payment_id: text(payment_id),
            risk_score: *risk_score,
            risk_level: *risk_level,
            decision: *decision,
            reason: String::new(),
            seller_message: String::new(),
            fraud_probability: *fraud_probability,
            rule: String::new(),
            session_id: String::new(),
            creation_session_id: String::new(),
            model_version: text(model_version),
            insights: Vec::new(),
            error: (!error_code.is_empty() || !error_field.is_empty()).then(|| {
                public::EventError {
                    code: text(error_code),
                    field: text(error_field),
                    message: String::new(),
                }
            }),
        }
    }

    #[test]
    fn views_read_what_prost_writes() {
        for i in 0..200 {
            let p = event(i);
            let bytes = p.encode_to_vec();
            let v = payment_event(&bytes).expect("parses");
            assert_eq!(public_event(&v), p, "event {i}");
        }
    }

    mod arbitrary {
        //! Arbitrary public messages, every field drawn.

        use crate::proto as public;
        use proptest::collection::hash_map;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            "\\PC{0,12}"
        }

        pub fn session() -> impl Strategy<Value = public::Session> {
            (
                (text(), any::<i64>(), text(), text(), text(), text()),
                (any::<i32>(), any::<u32>(), any::<u32>(), any::<u32>()),
                (text(), text()),
            )
                .prop_map(
                    |(
                        (session_id, captured_at_ms, ip, user_agent, accept_language, timezone),
                        (utc_offset_minutes, screen_width, screen_height, color_depth),
                        (device_id, platform),
                    )| public::Session {
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
                    },
                )
        }

        pub fn customer() -> impl Strategy<Value = public::Customer> {
            (text(), text()).prop_map(|(id, email)| public::Customer { id, email })
        }

        pub fn payment_method() -> impl Strategy<Value = public::PaymentMethod> {
            (
                (text(), any::<i32>(), text(), text(), any::<i64>()),
                (
                    proptest::option::of(session()),
                    proptest::option::of(customer()),
                ),
            )
                .prop_map(
                    |(
                        (id, r#type, card_fingerprint, card_country, created_at_ms),
                        (creation_session, customer),
                    )| public::PaymentMethod {
                        id,
                        r#type,
                        card_fingerprint,
                        card_country,
                        created_at_ms,
                        creation_session,
                        customer,
                    },
                )
        }

        pub fn payment_event() -> impl Strategy<Value = public::PaymentEvent> {
            let recurring =
                (text(), any::<bool>()).prop_map(|(subscription_id, initial)| public::Recurring {
                    subscription_id,
                    initial,
                });
            (
                (text(), any::<i32>(), any::<i64>(), text(), any::<i64>()),
                (proptest::option::of(customer()), text()),
                (
                    proptest::option::of(payment_method()),
                    proptest::option::of(session()),
                    any::<bool>(),
                    proptest::option::of(recurring),
                ),
                (hash_map(text(), text(), 0..4), any::<bool>()),
            )
                .prop_map(
                    |(
                        (payment_id, object_type, amount, currency, created_at_ms),
                        (customer, merchant_id),
                        (payment_method, session, off_session, recurring),
                        (metadata, risk_assessment_opt_out),
                    )| public::PaymentEvent {
                        payment_id,
                        object_type,
                        amount,
                        currency,
                        created_at_ms,
                        customer,
                        merchant_id,
                        payment_method,
                        session,
                        off_session,
                        recurring,
                        metadata,
                        risk_assessment_opt_out,
                    },
                )
        }

        pub fn register() -> impl Strategy<Value = public::RegisterPaymentMethodRequest> {
            (
                proptest::option::of(payment_method()),
                proptest::option::of(customer()),
            )
                .prop_map(|(payment_method, customer)| {
                    public::RegisterPaymentMethodRequest {
                        payment_method,
                        customer,
                    }
                })
        }

        pub fn feedback() -> impl Strategy<Value = public::FeedbackEvent> {
            (text(), any::<i32>(), any::<i64>()).prop_map(|(payment_id, kind, reported_at_ms)| {
                public::FeedbackEvent {
                    payment_id,
                    kind,
                    reported_at_ms,
                }
            })
        }

        pub fn get() -> impl Strategy<Value = public::GetPaymentMethodRequest> {
            text()
                .prop_map(|payment_method_id| public::GetPaymentMethodRequest { payment_method_id })
        }
    }

    proptest::proptest! {
        #[test]
        fn every_field_of_a_payment_event_is_read_back(p in arbitrary::payment_event()) {
            let bytes = p.encode_to_vec();
            let v = payment_event(&bytes).expect("parses");
            proptest::prop_assert_eq!(public_event(&v), p);
        }

        #[test]
        fn every_field_of_a_registration_is_read_back(p in arbitrary::register()) {
            let bytes = p.encode_to_vec();
            let v = register(&bytes).expect("parses");
            proptest::prop_assert_eq!(public_register(&v), p);
        }

        #[test]
        fn every_field_of_feedback_and_get_is_read_back(
            f in arbitrary::feedback(),
            g in arbitrary::get(),
        ) {
            let bytes = f.encode_to_vec();
            proptest::prop_assert_eq!(public_feedback(&feedback(&bytes).expect("parses")), f);
            let bytes = g.encode_to_vec();
            proptest::prop_assert_eq!(public_get(&get(&bytes).expect("parses")), g);
        }
    }

    #[test]
    fn outcome_view_reads_what_prost_writes() {
        let o = public::Outcome {
            payment_id: "pay_1".into(),
            risk_score: 81,
            risk_level: public::RiskLevel::Highest as i32,
            decision: public::Decision::Block as i32,
            reason: "highest_risk_level".into(),
            seller_message: "blocked".into(),
            fraud_probability: 0.8125,
            rule: "r1".into(),
            session_id: "sess_2".into(),
            creation_session_id: "sess_1".into(),
            model_version: "m".into(),
            insights: vec![public::Insight {
                feature: "same_device".into(),
                contribution: 1.5,
            }],
            error: Some(public::EventError {
                code: "invalid_argument".into(),
                field: "amount".into(),
                message: "must not be negative".into(),
            }),
        };
        let bytes = o.encode_to_vec();
        let v = outcome(&bytes).expect("parses");
        // Everything but the fields OutcomeView skips.
        let read = public::Outcome {
            reason: String::new(),
            seller_message: String::new(),
            rule: String::new(),
            session_id: String::new(),
            creation_session_id: String::new(),
            insights: Vec::new(),
            error: o.error.clone().map(|e| public::EventError {
                message: String::new(),
                ..e
            }),
            ..o.clone()
        };
        assert_eq!(public_outcome(&v), read);
        assert_eq!(s(v.payment_id), "pay_1");
        assert_eq!(v.risk_score, 81);
        assert_eq!(v.risk_level, o.risk_level);
        assert_eq!(v.decision, o.decision);
        assert_eq!(v.fraud_probability, 0.8125);
        assert_eq!(s(v.error_code), "invalid_argument");
        assert_eq!(s(v.error_field), "amount");
        assert_eq!(s(v.model_version), "m");
        assert!(outcome(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn repeated_embedded_messages_merge_and_unknown_fields_are_skipped() {
        let mut a = public::PaymentEvent {
            session: Some(public::Session {
                session_id: "first".into(),
                device_id: "dev".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let b = public::PaymentEvent {
            session: Some(public::Session {
                session_id: "second".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        a.extend_from_slice(&b);
        // An unknown field 99 (varint) and 100 (length-delimited).
        a.extend_from_slice(&[0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, b'h', b'i']);
        let v = payment_event(&a).expect("parses");
        let sess = v.session.expect("session");
        assert_eq!(sess.session_id, b"second");
        assert_eq!(sess.device_id, b"dev", "merged, not replaced");
        let merged = public::PaymentEvent::decode(a.as_slice()).expect("prost agrees");
        assert_eq!(merged.session.expect("s").device_id, "dev");
    }

    #[test]
    fn malformed_bytes_are_errors_never_panics() {
        let good = event(3).encode_to_vec();
        // Every truncation and many corruptions of a real message.
        for cut in 0..good.len() {
            let _ = payment_event(&good[..cut]);
        }
        let mut seed = 1u64;
        for _ in 0..20_000 {
            let mut m = good.clone();
            for _ in 0..3 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = (seed >> 33) as usize % m.len();
                m[i] = (seed >> 17) as u8;
            }
            let _ = payment_event(&m);
            let _ = register(&m);
            let _ = feedback(&m);
        }
        assert!(
            payment_event(&[0x0a, 0x05, b'a']).is_err(),
            "length past the end"
        );
        assert!(payment_event(&[0x08]).is_err(), "truncated varint");
        assert!(payment_event(&[0x0b]).is_err(), "group");
        assert!(payment_event(&[0x0a; 11][..1]).is_err());
        assert!(
            payment_event(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        assert!(
            payment_event(&[0x10, 0x01, 0x10, 0x02]).is_ok(),
            "last scalar wins"
        );
        assert_eq!(
            payment_event(&[0x10, 0x01, 0x10, 0x02])
                .expect("ok")
                .object_type,
            2
        );
        assert!(
            payment_event(&[0x0d, 0, 0, 0, 0]).is_err(),
            "string field with fixed32 wire type"
        );
    }

    #[test]
    fn the_payment_id_is_salvaged_from_a_bad_message() {
        let mut bytes = public::PaymentEvent {
            payment_id: "pay_7".into(),
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend_from_slice(&[0x0b]);
        assert!(payment_event(&bytes).is_err());
        assert_eq!(salvage_payment_id(&bytes), b"pay_7");
    }

    /// A `payment_id` field holding `id`, as bytes on the wire.
    fn id_field(id: &[u8]) -> Vec<u8> {
        let mut b = vec![0x0a];
        prost::encoding::encode_varint(id.len() as u64, &mut b);
        b.extend_from_slice(id);
        b
    }

    #[test]
    fn a_salvaged_payment_id_is_echoed_only_when_a_client_can_decode_it() {
        assert_eq!(
            salvage_payment_id(&id_field(b"pay_\xc3\xa9")),
            "pay_é".as_bytes()
        );
        // Invalid UTF-8 (a lone continuation byte, a truncated sequence).
        assert_eq!(salvage_payment_id(&id_field(b"pay_\x80")), b"");
        assert_eq!(salvage_payment_id(&id_field(b"\xff\xfe")), b"");
        assert_eq!(salvage_payment_id(&id_field(b"pay_\xc3")), b"");
        // Longer than any accepted id.
        let long = vec![b'p'; MAX_ID_LEN + 1];
        assert_eq!(salvage_payment_id(&id_field(&long)), b"");
        let longest = vec![b'p'; MAX_ID_LEN];
        assert_eq!(salvage_payment_id(&id_field(&longest)), &longest[..]);
        // The last id read wins, as in a message: a bad one after a good one
        // is what the event carries.
        let both = [id_field(b"pay_1"), id_field(b"\xff")].concat();
        assert_eq!(salvage_payment_id(&both), b"");
    }

    /// One `metadata` entry (`key`, `value`), as a field on the wire.
    fn metadata_field(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut entry = vec![0x0a];
        prost::encoding::encode_varint(key.len() as u64, &mut entry);
        entry.extend_from_slice(key);
        entry.push(0x12);
        prost::encoding::encode_varint(value.len() as u64, &mut entry);
        entry.extend_from_slice(value);
        let mut field = vec![0x62];
        prost::encoding::encode_varint(entry.len() as u64, &mut field);
        field.extend_from_slice(&entry);
        field
    }

    /// Parses `bytes` and returns the outcome with the metadata entries and
    /// bytes the parser had read when it stopped.
    fn read_metadata(bytes: &[u8]) -> (Result<(), DecodeError>, (usize, usize), usize) {
        let mut v = PaymentEventView::default();
        let r = v.merge(bytes);
        (r, v.metadata_read, v.metadata.len())
    }

    #[test]
    fn metadata_is_read_up_to_its_bound_in_entries_and_no_further() {
        // 20,000 distinct keys (what once cost a quadratic key lookup).
        let mut bytes = id_field(b"pay_1");
        for i in 0..20_000 {
            bytes.extend(metadata_field(format!("k{i}").as_bytes(), b"v"));
        }
        let (r, (entries, _), kept) = read_metadata(&bytes);
        assert_eq!(r, Err(DecodeError::MetadataEntries));
        assert_eq!(
            entries, MAX_METADATA_ENTRIES,
            "no entry past the bound read"
        );
        assert_eq!(kept, MAX_METADATA_ENTRIES);
        let e = payment_event(&bytes).expect_err("refused");
        assert_eq!(e.field(), "metadata");
        assert!(
            e.to_string()
                .starts_with("metadata: has more than 50 entries"),
            "{e}"
        );

        // The same key 20,000 times: each counts.
        let mut bytes = Vec::new();
        for _ in 0..20_000 {
            bytes.extend(metadata_field(b"k", b"v"));
        }
        let (r, (entries, _), kept) = read_metadata(&bytes);
        assert_eq!(r, Err(DecodeError::MetadataEntries));
        assert_eq!((entries, kept), (MAX_METADATA_ENTRIES, 1));

        // Nothing past the bound is read: garbage right after it is never
        // reached (a malformed tail would otherwise be the error).
        let mut bytes = Vec::new();
        for i in 0..=MAX_METADATA_ENTRIES {
            bytes.extend(metadata_field(format!("k{i}").as_bytes(), b"v"));
        }
        let at_bound = bytes.len();
        bytes.extend_from_slice(&[0xff; 11]);
        assert_eq!(payment_event(&bytes), Err(DecodeError::MetadataEntries));
        assert!(payment_event(&bytes[..at_bound - 1]).is_err());
        // Exactly the bound is read whole.
        let mut bytes = Vec::new();
        for i in 0..MAX_METADATA_ENTRIES {
            bytes.extend(metadata_field(format!("k{i}").as_bytes(), b"v"));
        }
        let v = payment_event(&bytes).expect("the bound is accepted");
        assert_eq!(v.metadata.len(), MAX_METADATA_ENTRIES);
    }

    #[test]
    fn metadata_is_read_up_to_its_bound_in_bytes_and_no_further() {
        // Three entries of 12 KiB values: the third crosses 32 KiB.
        let big = vec![b'v'; 12 * 1024];
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend(metadata_field(format!("k{i}").as_bytes(), &big));
        }
        let (r, (entries, read), _) = read_metadata(&bytes);
        assert_eq!(r, Err(DecodeError::MetadataBytes));
        assert_eq!(entries, 2, "the entry past the bound is not read");
        assert!(read <= MAX_METADATA_BYTES);
        let e = payment_event(&bytes).expect_err("refused");
        assert_eq!(e.field(), "metadata");
        assert!(
            e.to_string()
                .starts_with("metadata: has more than 32768 bytes"),
            "{e}"
        );
        // An entry just within the bound is read (validation then refuses
        // its value).
        let one = metadata_field(b"k", &vec![b'v'; MAX_METADATA_BYTES - 16]);
        let v = payment_event(&one).expect("within the bound");
        assert_eq!(v.metadata.len(), 1);
    }

    /// Found by the `view_roundtrip` fuzz target: a key past 32 bits (here
    /// field 671088637, past the last field number 2^29 - 1) was read as an
    /// unknown field where prost refuses the message.
    #[test]
    fn a_key_past_32_bits_is_refused_as_prost_refuses_it() {
        let bytes = [0x06, 0xed, 0xff, 0xff, 0xff, 0x13, 0xff, 0x13, 0x92, 0x03];
        let bytes = &bytes[1..];
        assert!(public::PaymentEvent::decode(bytes).is_err());
        assert_eq!(
            payment_event(bytes),
            Err(DecodeError::Malformed("field key too large"))
        );
        // The last field number there is, on an unknown field, is skipped.
        let last = [0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01];
        assert!(public::PaymentEvent::decode(&last[..]).is_ok());
        assert!(payment_event(&last).is_ok());
    }
}
