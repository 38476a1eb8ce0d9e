//! State: registered payment methods with their creation sessions, velocity
//! windows, recent payments (so late feedback can find them) and block/allow
//! lists, as raw facts: counts and sums over windows, what each payment was,
//! labels, list entries. Turning them into feature values is the job of
//! `features`, never of a store. [`Store`] is the one trait the scoring path
//! talks to; [`MemoryStore`] keeps everything in the process,
//! [`EmbeddedStore`] makes it durable in a data directory, and
//! [`RedisStore`] shares it between replicas in one Redis.

mod commit;
pub mod embedded;
pub mod long_window;
mod memory;
pub mod redis;
pub mod window;

pub use self::redis::{RedisOpenError, RedisOptions, RedisStore};

pub use commit::{Commit, CommitSender};
pub use embedded::{EmbeddedOptions, EmbeddedStore, Locked, OpenError, Restored};
pub use memory::{MIN_PAYMENT_RETENTION_MS, MemoryStore, StoreLimits};

use crate::decision::DecidedBy;
use crate::domain::{FeedbackKind, RegisteredMethod};
use crate::fingerprint::Facts;
use std::sync::Arc;

/// Velocity counts of one payment, the payment itself included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Velocity {
    /// Payments with this card fingerprint in the last hour.
    pub card_1h: u32,
    /// Payments with this card fingerprint in the last 24 hours.
    pub card_24h: u32,
    /// Amount (minor units) with this card fingerprint in the last 24 hours.
    pub card_amount_24h: u64,
    /// Payments with this email in the last hour.
    pub email_1h: u32,
    /// Payments with this email in the last 24 hours.
    pub email_24h: u32,
    /// Payments from this IP in the last hour.
    pub ip_1h: u32,
    /// Payments from this IP in the last 24 hours.
    pub ip_24h: u32,
    /// Payments from this device in the last hour.
    pub device_1h: u32,
    /// Payments from this device in the last 24 hours.
    pub device_24h: u32,
    /// Distinct card fingerprints used from this device in the last 24 hours.
    pub device_cards_24h: u32,
    /// Distinct card fingerprints used from this IP in the last 24 hours.
    pub ip_cards_24h: u32,
    /// This card's payments over the last 1, 7 and 30 days (hourly buckets),
    /// this one included; their `peak` is the largest amount ratio recorded
    /// for the card's earlier payments ([`Store::record_amount_ratio`]).
    pub card_days: [long_window::Sums; 3],
    /// This merchant's payments, and the frauds reported among them, over
    /// 1, 7 and 30 days ending [`LABEL_DELAY_DAYS`] before the payment.
    pub merchant_delayed: [long_window::Sums; 3],
}

/// The day spans of the long windows.
pub const LONG_WINDOW_DAYS: [i64; 3] = [1, 7, 30];
/// How far back merchant windows end: fraud reports for older payments have
/// mostly arrived by then.
pub const LABEL_DELAY_DAYS: i64 = 7;

/// A keyed 64-bit hash of a customer value (card fingerprint, email, IP,
/// device id, customer id). The store keeps keys, never the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

/// A registered payment method as the store keeps it: the method, the facts
/// of its creation session and the keys of its customer values, computed
/// once at registration so that scoring touches no strings of it.
#[derive(Debug, Clone)]
pub struct StoredMethod {
    /// The method as registered.
    pub method: RegisteredMethod,
    /// Facts of its creation session, when it has one.
    pub creation: Option<Facts>,
    /// Id of its creation session, ready for outcomes (empty when none).
    pub creation_session_id: bytes::Bytes,
    /// Key of its card fingerprint.
    pub card: Option<Key>,
    /// Key of its customer's email.
    pub email: Option<Key>,
    /// Key of its customer id.
    pub customer: Option<Key>,
}

impl StoredMethod {
    /// A method as registered, with the facts of its creation session and
    /// the keys of its values (`key` of each non-empty value).
    pub fn of(method: RegisteredMethod, key: impl Fn(&[u8]) -> Key) -> StoredMethod {
        let text = |v: &str| (!v.is_empty()).then(|| key(v.as_bytes()));
        StoredMethod {
            creation: method.creation_session.as_ref().map(Facts::of),
            creation_session_id: method
                .creation_session
                .as_ref()
                .map(|s| bytes::Bytes::copy_from_slice(s.session_id.as_bytes()))
                .unwrap_or_default(),
            card: method.card_fingerprint.as_deref().and_then(text),
            email: text(&method.customer.email),
            customer: text(&method.customer.id),
            method,
        }
    }
}

/// One payment as the store records it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Unique payment id: a payment already recorded is not counted twice.
    pub payment_id: &'a str,
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
    /// Amount in minor units.
    pub amount: i64,
    /// Card fingerprint key, when a card.
    pub card: Option<Key>,
    /// Customer email key, when given.
    pub email: Option<Key>,
    /// Payment session IP key, when given.
    pub ip: Option<Key>,
    /// Payment session device key, when given.
    pub device: Option<Key>,
    /// Merchant key, when given.
    pub merchant: Option<Key>,
}

/// What [`Store::observe`] tells of one payment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Its velocity counts, itself included.
    pub velocity: Velocity,
    /// False when the payment id was already recorded (a retry): nothing
    /// was counted again.
    pub first: bool,
}

/// What [`Store::label`] did.
#[derive(Debug)]
pub struct Labelled {
    /// The lists that gained an entry.
    pub lists_added: Vec<List>,
    /// Done once the label and the entries are saved.
    pub commit: Commit,
}

/// What the store remembers of a recent payment, for late feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentRecord {
    /// When it happened.
    pub at_ms: i64,
    /// Card fingerprint key, when a card.
    pub card: Option<Key>,
    /// Customer email key, when given.
    pub email: Option<Key>,
    /// The latest label reported for it.
    pub label: Option<FeedbackKind>,
}

/// What was decided of a payment, kept with it for the holdout estimates
/// (`RiskAdmin.EvaluatePolicy`): the estimator's inputs but for the label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided {
    /// What decided it.
    pub decided_by: DecidedBy,
    /// The model's score (0–100; 0 when not scored).
    pub true_score: u8,
    /// Whether it was let through (decision not `block`).
    pub allowed: bool,
    /// Whether it fell in the holdout.
    pub holdout: bool,
    /// The probability, over the holdout draw, that it is let through
    /// given its true score (single precision: it only tells payments of
    /// different chances apart).
    pub allowed_propensity: f32,
}

impl Decided {
    /// One byte for `decided_by`, `allowed` and `holdout`; never 0 (which
    /// stores use for "nothing decided yet").
    pub fn code(&self) -> u8 {
        let by = match self.decided_by {
            DecidedBy::Model => 1,
            DecidedBy::List => 2,
            DecidedBy::NotAssessed => 3,
            DecidedBy::ScoringFailed => 4,
        };
        by | u8::from(self.allowed) << 4 | u8::from(self.holdout) << 5
    }

    /// The decision whose [`Decided::code`] is `code`; `None` for 0 (or a
    /// code no version wrote).
    pub fn of_code(code: u8, true_score: u8, allowed_propensity: f32) -> Option<Decided> {
        let decided_by = match code & 0x0f {
            1 => DecidedBy::Model,
            2 => DecidedBy::List,
            3 => DecidedBy::NotAssessed,
            4 => DecidedBy::ScoringFailed,
            _ => return None,
        };
        Some(Decided {
            decided_by,
            true_score,
            allowed: code & 0x10 != 0,
            holdout: code & 0x20 != 0,
            allowed_propensity,
        })
    }
}

/// A remembered payment's decision and latest label
/// ([`Store::decisions`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecidedPayment {
    /// When it was attempted (ms since the epoch).
    pub at_ms: i64,
    /// What was decided.
    pub decided: Decided,
    /// The latest label reported for it.
    pub label: Option<FeedbackKind>,
}

/// A block or allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// Blocked card fingerprints (fed by fraud feedback).
    BlockCardFingerprint,
    /// Blocked emails (fed by fraud feedback).
    BlockEmail,
    /// Blocked IP addresses.
    BlockIp,
    /// Blocked device ids.
    BlockDeviceId,
    /// Blocked customer ids.
    BlockCustomerId,
    /// Allowed card fingerprints.
    AllowCardFingerprint,
    /// Allowed emails.
    AllowEmail,
    /// Allowed IP addresses.
    AllowIp,
    /// Allowed device ids.
    AllowDeviceId,
    /// Allowed customer ids.
    AllowCustomerId,
}

impl List {
    /// Every list, in a fixed order.
    pub const ALL: [List; 10] = [
        List::BlockCardFingerprint,
        List::BlockEmail,
        List::BlockIp,
        List::BlockDeviceId,
        List::BlockCustomerId,
        List::AllowCardFingerprint,
        List::AllowEmail,
        List::AllowIp,
        List::AllowDeviceId,
        List::AllowCustomerId,
    ];

    /// Stable name: what `lists_updated`, `rule` and the lists file use.
    pub fn name(self) -> &'static str {
        match self {
            List::BlockCardFingerprint => "block_card_fingerprint",
            List::BlockEmail => "block_email",
            List::BlockIp => "block_ip",
            List::BlockDeviceId => "block_device_id",
            List::BlockCustomerId => "block_customer_id",
            List::AllowCardFingerprint => "allow_card_fingerprint",
            List::AllowEmail => "allow_email",
            List::AllowIp => "allow_ip",
            List::AllowDeviceId => "allow_device_id",
            List::AllowCustomerId => "allow_customer_id",
        }
    }

    /// The list named `name`.
    pub fn from_name(name: &str) -> Option<List> {
        List::ALL.into_iter().find(|l| l.name() == name)
    }

    /// What the list holds, for messages ("card fingerprint", "email", …).
    pub fn subject(self) -> &'static str {
        match self {
            List::BlockCardFingerprint | List::AllowCardFingerprint => "card fingerprint",
            List::BlockEmail | List::AllowEmail => "email",
            List::BlockIp | List::AllowIp => "IP address",
            List::BlockDeviceId | List::AllowDeviceId => "device id",
            List::BlockCustomerId | List::AllowCustomerId => "customer id",
        }
    }

    /// True for allow lists.
    pub fn is_allow(self) -> bool {
        matches!(
            self,
            List::AllowCardFingerprint
                | List::AllowEmail
                | List::AllowIp
                | List::AllowDeviceId
                | List::AllowCustomerId
        )
    }
}

/// Who put an entry on a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListSource {
    /// An operator, through `RiskAdmin`.
    Admin,
    /// A fraud report (`ReportFeedback`).
    Feedback,
    /// The `--lists` file given at start.
    File,
}

impl ListSource {
    /// Its name in `ListItems`.
    pub fn name(self) -> &'static str {
        match self {
            ListSource::Admin => "admin",
            ListSource::Feedback => "feedback",
            ListSource::File => "lists_file",
        }
    }
}

/// A list entry as the store keeps it, for listing it back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListEntry {
    /// The value as it was added; empty when it was not given (a fraud
    /// report names the payment, whose values the store keeps only hashed).
    pub value: String,
    /// When it was added (ms since the epoch).
    pub added_at_ms: i64,
    /// Why.
    pub reason: String,
    /// When it stops applying (ms since the epoch; 0: never).
    pub expires_at_ms: i64,
    /// Who added it.
    pub source: ListSource,
    /// The payment a fraud report named (empty otherwise).
    pub payment_id: String,
}

impl ListEntry {
    /// Whether it no longer applies at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// Why the store refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many payment methods as it is allowed to.
    #[error("the store holds its maximum of {0} payment methods")]
    PaymentMethodsFull(usize),
    /// The write could not be made durable (an I/O error, a full disk, a
    /// store that is not keeping up); nothing of it was kept.
    #[error("the store could not save the write: {0}")]
    Unavailable(String),
}

/// Sizes of what the store holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Registered payment methods.
    pub payment_methods: usize,
    /// Velocity keys over all windows.
    pub velocity_keys: usize,
    /// Recent payments remembered for feedback.
    pub payments: usize,
    /// Entries over all lists.
    pub list_entries: usize,
    /// What a store that keeps state on disk reports of it.
    pub disk: Option<DiskStats>,
}

/// The disk side of a durable store, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Bytes of its files.
    pub bytes: u64,
    /// Writes (batches of records) that failed.
    pub write_errors: u64,
    /// Records not saved: in a failed write, or past the bound of what
    /// may wait for the disk.
    pub unsaved_records: u64,
    /// Group commits made.
    pub commits: u64,
    /// Snapshots written.
    pub snapshots: u64,
}

/// The state the scoring path needs. Implementations are shared across
/// threads; no method blocks for long or awaits. Writes that must be durable
/// before they are acknowledged return a [`Commit`]: the caller awaits it
/// before answering (an in-memory store's commits are done at once).
///
/// A store keeps raw facts only: the caller computes what they mean (the
/// amount ratio of a payment, whether it was a spike) and hands the result
/// back as a fact ([`Store::record_amount_ratio`]).
pub trait Store: Send + Sync + 'static {
    /// The key of a value (card fingerprint, email, canonical IP octets, …).
    fn key(&self, value: &[u8]) -> Key;
    /// Stores (or replaces) a payment method; visible once committed.
    fn register(&self, method: StoredMethod) -> Result<Commit, StoreError>;
    /// The payment method registered as `id` (`Ok(None)` when none is; an
    /// error when the store could not be asked).
    fn payment_method(&self, id: &str) -> Result<Option<Arc<StoredMethod>>, StoreError>;
    /// Records a payment and returns its velocity counts, itself included.
    /// A payment id already recorded is counted once.
    fn observe(&self, obs: &Observation<'_>) -> Observed;
    /// Records the amount ratio of a payment just observed for the first
    /// time (thousandths of its card's mean amount before it), seen by the
    /// card's later payments as their windows' `peak`, and whether it was a
    /// spike (counted apart in its merchant's fraud reports).
    fn record_amount_ratio(&self, obs: &Observation<'_>, ratio: u32, spike: bool);
    /// The recent payment `payment_id`, if remembered (an error when the
    /// store could not be asked).
    fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError>;
    /// Records a label on a remembered payment (its merchant's fraud counts
    /// follow) and adds the `block` entries to their lists (those not there
    /// yet), all saved together or not at all; `Ok(None)` when the payment
    /// is unknown.
    fn label(
        &self,
        payment_id: &str,
        kind: FeedbackKind,
        block: &[(List, Key, ListEntry)],
    ) -> Result<Option<Labelled>, StoreError>;
    /// Records what was decided of a payment just observed for the first
    /// time (a retry keeps the first decision), for the holdout estimates;
    /// kept as long as the payment is remembered.
    fn record_decision(&self, payment_id: &str, at_ms: i64, decided: Decided);
    /// Every remembered payment that has a decision, with its latest label
    /// (an error when the store could not be asked). It reads the whole
    /// store: call it off async workers.
    fn decisions(&self) -> Result<Vec<DecidedPayment>, StoreError>;
    /// Whether `list` holds `key` in an entry that has not expired.
    fn list_contains(&self, list: List, key: Key) -> bool;
    /// Whether every list is empty (lets the scoring path skip lookups).
    fn lists_empty(&self) -> bool;
    /// Adds `key` to `list` with `entry`; `None` when it was there already
    /// (its entry stays as it was).
    fn list_add(
        &self,
        list: List,
        key: Key,
        entry: ListEntry,
    ) -> Result<Option<Commit>, StoreError>;
    /// Takes `key` off `list`; `None` when it was not there.
    fn list_remove(&self, list: List, key: Key) -> Result<Option<Commit>, StoreError>;
    /// Up to `limit` entries of `list` after the key `after`, in key order
    /// (a stable order for paging).
    fn list_items(&self, list: List, after: Option<Key>, limit: usize) -> Vec<(Key, ListEntry)>;
    /// A commit that completes once everything written before this call is
    /// durable (scored payments included).
    fn sync(&self) -> Commit;
    /// Forgets what is older than the retention horizons, relative to the
    /// latest event time seen; returns how many entries were dropped.
    fn sweep(&self) -> usize;
    /// Sizes, for metrics.
    fn stats(&self) -> StoreStats;
    /// The batched, asynchronous side of a store whose state is in another
    /// process: its synchronous methods wait for round trips, so a server
    /// calls them off its async workers and scores through this instead.
    /// `None` (the default) for a store in the process.
    fn remote(&self) -> Option<&dyn Remote> {
        None
    }
}

/// The payment methods a batch names (`None` for one not registered), and
/// whether finding them took a round trip.
pub type Methods = (Vec<Option<Arc<StoredMethod>>>, bool);

/// A boxed future that can cross threads.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What one round trip for a batch of payments brought back.
#[derive(Debug, Clone, Default)]
pub struct ObservedBatch {
    /// Each payment's velocity, in the order given.
    pub observed: Vec<Observed>,
    /// The version of the lists when they were read: list changes
    /// acknowledged before it apply to these payments.
    pub lists_version: u64,
}

/// A store reached over the network, used by scoring in batches: payment
/// methods resolved from a local cache (one round trip for those it
/// misses), a batch's windows read and updated (amount ratios included) in
/// one round trip. Every future is bounded by the store's
/// timeout and never waits on an async worker's thread.
pub trait Remote: Send + Sync {
    /// The payment methods `ids` name (`None` for one not registered), and
    /// whether it took a round trip (some were not in the cache).
    fn methods(&self, ids: Vec<String>) -> BoxFuture<'static, Result<Methods, StoreError>>;
    /// Records a batch of payments ([`Store::observe`] for each) in one
    /// round trip, and each new payment's amount ratio with its card
    /// ([`Store::record_amount_ratio`] with
    /// [`crate::features::card_amount_ratio`]) before the next payment is
    /// read: the card's next payment sees it, in the batch or elsewhere.
    fn observe_batch(
        &self,
        batch: &[Observation<'_>],
    ) -> BoxFuture<'static, Result<ObservedBatch, StoreError>>;
    /// Records what was decided of a batch's payments (ids and decisions;
    /// [`Store::record_decision`] for each) in one round trip.
    fn record_decisions(
        &self,
        batch: Vec<(&str, Decided)>,
    ) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Waits until this replica's lists hold every change up to `version`.
    fn lists_at_least(&self, version: u64) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Whether the store is reachable now (for health and metrics).
    fn reachable(&self) -> bool;
    /// Payment method lookups answered by the local cache, and those that
    /// needed a round trip, since the store opened.
    fn cache_lookups(&self) -> (u64, u64);
}
