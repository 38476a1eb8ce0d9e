//! Typed domain events: what validation produces from the proto and what
//! state, features and scoring consume. Every value here has been checked.
//! On the scoring path strings borrow the request's bytes (no copy); what is
//! stored long-term owns its strings.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;

/// Kind of payment method, as far as risk assessment is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

    /// Its name in logs and list entries.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Fraudulent => "fraudulent",
            FeedbackKind::DisputeFraud => "dispute_fraud",
            FeedbackKind::Legitimate => "legitimate",
        }
    }
}

/// A validated device/browser session snapshot. On the scoring path its
/// strings borrow the request; a stored one owns them (`Session<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session<'a> {
    /// Client-side id of the session.
    pub session_id: Cow<'a, str>,
    /// When the client captured it (ms since the epoch; 0 when not given).
    pub captured_at_ms: i64,
    /// The client's address, when given.
    pub ip: Option<IpAddr>,
    /// Raw user agent (may be empty).
    pub user_agent: Cow<'a, str>,
    /// Raw Accept-Language header (may be empty).
    pub accept_language: Cow<'a, str>,
    /// IANA time zone name (may be empty).
    pub timezone: Cow<'a, str>,
    /// Offset from UTC in minutes.
    pub utc_offset_minutes: i32,
    /// Screen width in pixels (0 when unknown).
    pub screen_width: u32,
    /// Screen height in pixels (0 when unknown).
    pub screen_height: u32,
    /// Colour depth in bits (0 when unknown).
    pub color_depth: u32,
    /// Stable device hash from the client library (may be empty).
    pub device_id: Cow<'a, str>,
    /// Platform string from the client (may be empty).
    pub platform: Cow<'a, str>,
}

fn own(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

impl Session<'_> {
    /// A copy that owns its strings (for sessions kept long-term).
    pub fn into_owned(self) -> Session<'static> {
        Session {
            session_id: own(self.session_id),
            captured_at_ms: self.captured_at_ms,
            ip: self.ip,
            user_agent: own(self.user_agent),
            accept_language: own(self.accept_language),
            timezone: own(self.timezone),
            utc_offset_minutes: self.utc_offset_minutes,
            screen_width: self.screen_width,
            screen_height: self.screen_height,
            color_depth: self.color_depth,
            device_id: own(self.device_id),
            platform: own(self.platform),
        }
    }
}

/// A customer as a request names it; both parts optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer<'a> {
    /// Merchant-side customer id (may be empty).
    pub id: Cow<'a, str>,
    /// Lower-cased email address (may be empty).
    pub email: Cow<'a, str>,
}

impl Customer<'_> {
    /// A copy that owns its strings.
    pub fn into_owned(self) -> Customer<'static> {
        Customer {
            id: own(self.id),
            email: own(self.email),
        }
    }
}

/// A payment method stored by `RegisterPaymentMethod` (and saved as it is
/// by the embedded store: a change of these types changes its file format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredMethod {
    /// Payment method id.
    pub id: String,
    /// Its kind.
    pub kind: MethodKind,
    /// Card fingerprint (cards only).
    pub card_fingerprint: Option<String>,
    /// Issuer country, ISO 3166-1 alpha-2 upper case.
    pub card_country: Option<[u8; 2]>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// The session captured at creation, if the integration sent one.
    pub creation_session: Option<Session<'static>>,
    /// The customer it was registered for.
    pub customer: Customer<'static>,
}

/// The payment method as a payment event names it: possibly only an id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodRef<'a> {
    /// Registered id (may be empty when everything is inline).
    pub id: &'a str,
    /// Inline kind, when given.
    pub kind: Option<MethodKind>,
    /// Inline card fingerprint, when given.
    pub card_fingerprint: Option<&'a str>,
    /// Inline issuer country, when given.
    pub card_country: Option<[u8; 2]>,
    /// Inline creation time, when given.
    pub created_at_ms: Option<i64>,
    /// Inline creation session: takes precedence over the registered one.
    pub creation_session: Option<Session<'a>>,
}

/// Subscription information of a recurring payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring<'a> {
    /// Subscription id.
    pub subscription_id: &'a str,
    /// True for the subscription's first payment.
    pub initial: bool,
}

/// A validated payment attempt, borrowing the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment<'a> {
    /// Unique payment id.
    pub payment_id: &'a str,
    /// Object kind.
    pub object: ObjectKind,
    /// Amount in the currency's minor unit (>= 0).
    pub amount: i64,
    /// Lower-case ISO 4217 code (empty for a SetupIntent without one).
    pub currency: Cow<'a, str>,
    /// When it was attempted (ms since the epoch).
    pub created_at_ms: i64,
    /// The paying customer.
    pub customer: Customer<'a>,
    /// Merchant (business) id (may be empty).
    pub merchant_id: &'a str,
    /// The payment method used.
    pub method: MethodRef<'a>,
    /// The payment-time session (absent off-session).
    pub session: Option<Session<'a>>,
    /// Merchant-initiated payment without the customer present.
    pub off_session: bool,
    /// Subscription information, when a subscription payment.
    pub recurring: Option<Recurring<'a>>,
    /// The business opted this payment out of risk assessment.
    pub opt_out: bool,
}

/// A validated late label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback<'a> {
    /// The payment it is about.
    pub payment_id: &'a str,
    /// What it says.
    pub kind: FeedbackKind,
    /// When it was reported (ms since the epoch).
    pub reported_at_ms: i64,
}
