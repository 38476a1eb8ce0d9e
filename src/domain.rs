//! Typed domain events: what validation produces from the proto and what
//! state, features and scoring consume. Every value here has been checked.
//! Strings are `ByteString`s: on the scoring path they share the request
//! buffer (no copy); what is stored long-term is detached from it.

use bytestring::ByteString;
use std::net::IpAddr;
use std::sync::Arc;

/// Kind of payment method, as far as risk assessment is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// A card payment method: assessed.
    Card,
    /// SEPA Direct Debit: assessed.
    SepaDebit,
    /// ACH Direct Debit: assessed.
    AchDebit,
    /// Anything else: not assessed.
    Other,
}

impl MethodKind {
    /// Whether payments with this kind of method get a risk score.
    pub fn is_assessed(self) -> bool {
        !matches!(self, MethodKind::Other)
    }
}

/// What kind of object the payment attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A direct charge.
    Charge,
    /// A PaymentIntent confirmation.
    PaymentIntent,
    /// A SetupIntent: saving a payment method for later, no money moves.
    SetupIntent,
}

/// The kind of a late label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackKind {
    /// Refunded as fraudulent.
    Fraudulent,
    /// A fraud dispute (chargeback).
    DisputeFraud,
    /// Confirmed legitimate.
    Legitimate,
}

impl FeedbackKind {
    /// True for the kinds that mark the payment as fraud.
    pub fn is_fraud(self) -> bool {
        matches!(self, FeedbackKind::Fraudulent | FeedbackKind::DisputeFraud)
    }
}

/// A validated device/browser session snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Client-side id of the session.
    pub session_id: ByteString,
    /// When the client captured it (ms since the epoch; 0 when not given).
    pub captured_at_ms: i64,
    /// The client's address, when given.
    pub ip: Option<IpAddr>,
    /// Raw user agent (may be empty).
    pub user_agent: ByteString,
    /// Raw Accept-Language header (may be empty).
    pub accept_language: ByteString,
    /// IANA time zone name (may be empty).
    pub timezone: ByteString,
    /// Offset from UTC in minutes.
    pub utc_offset_minutes: i32,
    /// Screen width in pixels (0 when unknown).
    pub screen_width: u32,
    /// Screen height in pixels (0 when unknown).
    pub screen_height: u32,
    /// Colour depth in bits (0 when unknown).
    pub color_depth: u32,
    /// Stable device hash from the client library (may be empty).
    pub device_id: ByteString,
    /// Platform string from the client (may be empty).
    pub platform: ByteString,
}

/// A copy of `s` in its own allocation, no longer sharing a request buffer.
pub fn detach(s: &ByteString) -> ByteString {
    if s.is_empty() {
        ByteString::new()
    } else {
        ByteString::from(&**s)
    }
}

impl Session {
    /// Copies every string out of the request buffer (for sessions kept long-term).
    pub fn detach(&mut self) {
        for s in [
            &mut self.session_id,
            &mut self.user_agent,
            &mut self.accept_language,
            &mut self.timezone,
            &mut self.device_id,
            &mut self.platform,
        ] {
            *s = detach(s);
        }
    }
}

/// A customer as the payment names it; both parts optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customer {
    /// Merchant-side customer id (may be empty).
    pub id: ByteString,
    /// Lower-cased email address (may be empty).
    pub email: ByteString,
}

/// A payment method stored by `RegisterPaymentMethod`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredMethod {
    /// Payment method id.
    pub id: ByteString,
    /// Its kind.
    pub kind: MethodKind,
    /// Card fingerprint (cards only; may be empty for other kinds).
    pub card_fingerprint: Option<ByteString>,
    /// Issuer country, ISO 3166-1 alpha-2 upper case.
    pub card_country: Option<[u8; 2]>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// The session captured at creation, if the integration sent one.
    pub creation_session: Option<Arc<Session>>,
    /// The customer it was registered for.
    pub customer: Customer,
}

/// The payment method as a payment event names it: possibly only an id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodRef {
    /// Registered id (may be empty when everything is inline).
    pub id: ByteString,
    /// Inline kind, when given.
    pub kind: Option<MethodKind>,
    /// Inline card fingerprint, when given.
    pub card_fingerprint: Option<ByteString>,
    /// Inline issuer country, when given.
    pub card_country: Option<[u8; 2]>,
    /// Inline creation time, when given.
    pub created_at_ms: Option<i64>,
    /// Inline creation session: takes precedence over the registered one.
    pub creation_session: Option<Arc<Session>>,
}

/// Subscription information of a recurring payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    /// Subscription id.
    pub subscription_id: ByteString,
    /// True for the subscription's first payment.
    pub initial: bool,
}

/// A validated payment attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// Unique payment id.
    pub payment_id: ByteString,
    /// Object kind.
    pub object: ObjectKind,
    /// Amount in the currency's minor unit (>= 0).
    pub amount: i64,
    /// Lower-case ISO 4217 code (empty for a SetupIntent without one).
    pub currency: ByteString,
    /// When it was attempted (ms since the epoch).
    pub created_at_ms: i64,
    /// The paying customer.
    pub customer: Customer,
    /// Merchant (business) id (may be empty).
    pub merchant_id: ByteString,
    /// The payment method used.
    pub method: MethodRef,
    /// The payment-time session (absent off-session).
    pub session: Option<Session>,
    /// Merchant-initiated payment without the customer present.
    pub off_session: bool,
    /// Subscription information, when a subscription payment.
    pub recurring: Option<Recurring>,
    /// The business opted this payment out of risk assessment.
    pub opt_out: bool,
}

/// A validated late label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// The payment it is about.
    pub payment_id: ByteString,
    /// What it says.
    pub kind: FeedbackKind,
    /// When it was reported (ms since the epoch).
    pub reported_at_ms: i64,
}
