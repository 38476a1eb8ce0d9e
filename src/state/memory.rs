//! The in-process store: concurrent maps (dashmap) of payment methods,
//! velocity windows, recent payments and lists. Windows, payments and lists
//! are keyed by keyed hashes of the customer data, so they hold no emails,
//! card fingerprints or addresses. Each remembered payment keeps every fact
//! the windows are made of, so the windows can be rebuilt from the payments
//! alone (what the embedded store does on start).

use super::long_window::{DelayedWindow, HOUR_MS, LongWindow};
use super::window::{DAY_MS, Window};
use super::{
    Commit, Decided, DecidedPayment, Key, Labelled, List, ListEntry, Observation, Observed,
    PaymentRecord, Store, StoreError, StoreStats, StoredMethod, Velocity,
};
use super::{LABEL_DELAY_DAYS, LONG_WINDOW_DAYS};
use crate::domain::FeedbackKind;
use dashmap::mapref::{entry::Entry, one::RefMut};
use dashmap::{DashMap, DashSet};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bounds on what the in-process store holds.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most registered payment methods; registrations beyond are refused.
    pub max_payment_methods: usize,
    /// Most keys per velocity window kind (card, email, IP, device); a sweep
    /// shortens the idle horizon until the windows fit.
    pub max_window_keys: usize,
    /// Most recent payments remembered for feedback; past it older ones
    /// are forgotten first, but never those of the last 37 days (which the
    /// windows count).
    pub max_payments: usize,
    /// How long a payment is remembered for feedback (at least
    /// [`MIN_PAYMENT_RETENTION_MS`]).
    pub payment_retention_ms: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_payment_methods: 20_000_000,
            max_window_keys: 5_000_000,
            max_payments: 20_000_000,
            payment_retention_ms: 120 * DAY_MS,
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (list entries
/// expire by the wall clock their expiry was given in).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Hasher for keys that already are well-mixed 64-bit hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

type PreHashedState = BuildHasherDefault<PreHashed>;

/// A remembered payment: what it was (keys of 0 mean "none"), its label,
/// the amount ratio recorded for it and what was decided of it. 72 bytes
/// in memory; what the embedded store saves of each payment (the decision
/// apart, in a record of its own written once it is known).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Slot {
    /// 32 more bits of the payment id's hash: 96 bits tell payments apart.
    pub check: u32,
    /// Its amount ratio (thousandths of its card's mean before it; 0 none).
    pub ratio: u32,
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
    /// Amount in minor units.
    pub amount: u64,
    #[serde(with = "postcard::fixint::le")]
    pub card: u64,
    #[serde(with = "postcard::fixint::le")]
    pub email: u64,
    #[serde(with = "postcard::fixint::le")]
    pub ip: u64,
    #[serde(with = "postcard::fixint::le")]
    pub device: u64,
    #[serde(with = "postcard::fixint::le")]
    pub merchant: u64,
    /// 0 none, then [`label_code`].
    pub label: u8,
    /// The amount was recorded as a spike for its card.
    pub spike: bool,
    /// [`Decided::code`] of its decision (0: none recorded).
    #[serde(skip)]
    pub decided: u8,
    /// Its true score, when decided.
    #[serde(skip)]
    pub score: u8,
    /// Its allowed propensity, when decided.
    #[serde(skip)]
    pub propensity: f32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 72);

/// The shortest time payments are remembered: as long as the longest
/// window counts them (a merchant's 30 days, a label delay back).
pub const MIN_PAYMENT_RETENTION_MS: i64 = MERCHANT_HORIZON_HOURS * HOUR_MS;

/// Hours a card's long window holds (its longest span).
const CARD_HORIZON_HOURS: i64 = 30 * 24;
/// Hours a merchant's long window holds (its longest span, a label delay back).
const MERCHANT_HORIZON_HOURS: i64 = (30 + LABEL_DELAY_DAYS) * 24;

/// A card's windows: the short ones (hour, day, distinct) and the long one.
#[derive(Debug, Clone, Default)]
struct CardWindows {
    short: Window,
    long: LongWindow,
}

/// The stored code of a label.
pub(super) fn label_code(k: Option<FeedbackKind>) -> u8 {
    match k {
        None => 0,
        Some(FeedbackKind::Fraudulent) => 1,
        Some(FeedbackKind::DisputeFraud) => 2,
        Some(FeedbackKind::Legitimate) => 3,
    }
}

/// The label of a stored code.
pub(super) fn label_of(code: u8) -> Option<FeedbackKind> {
    match code {
        1 => Some(FeedbackKind::Fraudulent),
        2 => Some(FeedbackKind::DisputeFraud),
        3 => Some(FeedbackKind::Legitimate),
        _ => None,
    }
}

impl Slot {
    fn record(&self) -> PaymentRecord {
        let key = |k: u64| (k != 0).then_some(Key(k));
        PaymentRecord {
            at_ms: self.at_ms,
            card: key(self.card),
            email: key(self.email),
            label: label_of(self.label),
        }
    }

    /// The slot of a payment observed now.
    pub(super) fn of(obs: &Observation<'_>, check: u32) -> Slot {
        let key = |k: Option<Key>| k.map_or(0, |k| k.0);
        Slot {
            check,
            ratio: 0,
            at_ms: obs.at_ms,
            amount: obs.amount.max(0) as u64,
            card: key(obs.card),
            email: key(obs.email),
            ip: key(obs.ip),
            device: key(obs.device),
            merchant: key(obs.merchant),
            label: 0,
            spike: false,
            decided: 0,
            score: 0,
            propensity: 0.0,
        }
    }

    /// What was decided of it, if recorded.
    fn decided(&self) -> Option<Decided> {
        Decided::of_code(self.decided, self.score, self.propensity)
    }
}
type Windows = DashMap<u64, Window, PreHashedState>;
type CardMap = DashMap<u64, CardWindows, PreHashedState>;
type DelayedWindows = DashMap<u64, DelayedWindow, PreHashedState>;
type Strings = foldhash::quality::RandomState;

/// The in-process [`Store`]. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    methods: DashMap<String, Arc<StoredMethod>, Strings>,
    card: CardMap,
    merchant: DelayedWindows,
    email: Windows,
    ip: Windows,
    device: Windows,
    /// Keyed by a 64-bit keyed hash of the payment id (32 more bits in the slot).
    payments: DashMap<u64, Slot, PreHashedState>,
    /// The keys of each list (the scoring path's lookups).
    lists: [DashSet<u64, PreHashedState>; List::ALL.len()],
    /// The entries of each list, by key (what is listed back; rare writes).
    entries: [RwLock<BTreeMap<u64, ListEntry>>; List::ALL.len()],
    list_entries: AtomicUsize,
    watermark: AtomicI64,
    keys: foldhash::quality::FixedState,
    ids: (foldhash::quality::FixedState, foldhash::quality::FixedState),
    limits: StoreLimits,
}

impl MemoryStore {
    /// An empty store whose velocity keys are hashed with `hash_seed`.
    pub fn new(limits: StoreLimits, hash_seed: u64) -> Self {
        MemoryStore {
            methods: DashMap::with_hasher(Strings::default()),
            card: CardMap::default(),
            merchant: DelayedWindows::default(),
            email: Windows::default(),
            ip: Windows::default(),
            device: Windows::default(),
            payments: DashMap::default(),
            lists: std::array::from_fn(|_| DashSet::default()),
            entries: std::array::from_fn(|_| RwLock::default()),
            list_entries: AtomicUsize::new(0),
            watermark: AtomicI64::new(i64::MIN),
            keys: foldhash::quality::FixedState::with_seed(hash_seed),
            ids: (
                foldhash::quality::FixedState::with_seed(hash_seed ^ 0x9e37_79b9_7f4a_7c15),
                foldhash::quality::FixedState::with_seed(
                    hash_seed.rotate_left(32) ^ 0x632b_e59b_d9b4_e019,
                ),
            ),
            limits,
        }
    }

    fn list(&self, list: List) -> &DashSet<u64, PreHashedState> {
        &self.lists[list as usize]
    }

    /// The map key and the check bits of a payment id.
    pub(super) fn payment_key(&self, payment_id: &str) -> (u64, u32) {
        (
            self.ids.0.hash_one(payment_id),
            self.ids.1.hash_one(payment_id) as u32,
        )
    }

    fn slot_mut(&self, key: u64, check: u32) -> Option<RefMut<'_, u64, Slot>> {
        self.payments.get_mut(&key).filter(|s| s.check == check)
    }

    /// Moves the latest event time seen forward to `at_ms`.
    fn advance(&self, at_ms: i64) {
        // The watermark only steers sweeps: a write every second is enough,
        // and it spares the shared cache line on every event.
        if at_ms > self.watermark.load(Ordering::Relaxed) + 1000 {
            self.watermark.fetch_max(at_ms, Ordering::Relaxed);
        }
    }

    /// Adds one event to the window of `key` (or only reads it when `add` is
    /// false) and returns its counts at `at_ms`.
    fn touch(
        map: &Windows,
        key: u64,
        add: bool,
        at_ms: i64,
        amount: u64,
        card: Option<u64>,
    ) -> super::window::Counts {
        if add {
            let mut w = map.entry(key).or_default();
            w.add(at_ms, amount, card);
            w.counts(at_ms)
        } else {
            map.get(&key).map(|w| w.counts(at_ms)).unwrap_or_default()
        }
    }

    /// Refuses a new payment method id once the store is full.
    pub(super) fn has_room_for(&self, id: &str) -> Result<(), StoreError> {
        if self.methods.len() >= self.limits.max_payment_methods && !self.methods.contains_key(id) {
            return Err(StoreError::PaymentMethodsFull(
                self.limits.max_payment_methods,
            ));
        }
        Ok(())
    }

    /// Stores (or replaces) a payment method, whatever the limit.
    pub(super) fn put_method(&self, method: Arc<StoredMethod>) {
        self.methods.insert(method.method.id.clone(), method);
    }

    /// Labels the payment `(key, check)`; its merchant's fraud counts follow
    /// when `windows` is true. False when the payment is unknown.
    pub(super) fn label_slot(
        &self,
        key: u64,
        check: u32,
        kind: FeedbackKind,
        windows: bool,
    ) -> bool {
        let Some(mut s) = self.slot_mut(key, check) else {
            return false;
        };
        let was_fraud = label_of(s.label).is_some_and(FeedbackKind::is_fraud);
        s.label = label_code(Some(kind));
        let (merchant, at_ms, spike) = (s.merchant, s.at_ms, s.spike);
        drop(s);
        let delta = i32::from(kind.is_fraud()) - i32::from(was_fraud);
        if windows
            && delta != 0
            && merchant != 0
            && let Some(mut w) = self.merchant.get_mut(&merchant)
        {
            w.add_fraud(at_ms, delta, spike);
        }
        true
    }

    /// The entries of `list`, locked for reading.
    fn entries(&self, list: List) -> RwLockReadGuard<'_, BTreeMap<u64, ListEntry>> {
        self.entries[list as usize]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries of `list`, locked for writing.
    fn entries_mut(&self, list: List) -> RwLockWriteGuard<'_, BTreeMap<u64, ListEntry>> {
        self.entries[list as usize]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `key` to `list` with `entry`; true when it was not there yet
    /// (an entry already there stays as it was).
    pub(super) fn put_list_entry(&self, list: List, key: u64, entry: ListEntry) -> bool {
        let mut entries = self.entries_mut(list);
        if entries.contains_key(&key) {
            return false;
        }
        entries.insert(key, entry);
        self.list(list).insert(key);
        self.list_entries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Takes `key` off `list`; true when it was there.
    pub(super) fn remove_list_entry(&self, list: List, key: u64) -> bool {
        let mut entries = self.entries_mut(list);
        if entries.remove(&key).is_none() {
            return false;
        }
        self.list(list).remove(&key);
        self.list_entries.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Forgets the list entries whose expiry has passed (by the wall clock,
    /// so a store reopened later forgets them too); how many went.
    pub(super) fn sweep_expired_entries(&self) -> usize {
        let now = wall_clock_ms();
        let mut dropped = 0;
        for list in List::ALL {
            let expired: Vec<u64> = self
                .entries(list)
                .iter()
                .filter(|(_, e)| e.expired(now))
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                dropped += usize::from(self.remove_list_entry(list, key));
            }
        }
        dropped
    }

    /// Whether `list` holds `key` (expired entries included).
    pub(super) fn has_list_entry(&self, list: List, key: u64) -> bool {
        self.list(list).contains(&key)
    }

    /// Remembers a payment as it was saved, without counting it in any
    /// window ([`MemoryStore::rebuild_windows`] does, once all are back);
    /// the same payment already held is kept as it is (with its label).
    pub(super) fn restore_payment(&self, key: u64, slot: Slot) {
        self.advance(slot.at_ms);
        match self.payments.entry(key) {
            // Another payment id under the same key: the later one wins, as
            // it did when it was observed.
            Entry::Occupied(mut e) if e.get().check != slot.check => {
                e.insert(slot);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }

    /// Records the decision of the payment `(key, check)` in its slot, unless
    /// one is there (a retry keeps the first); true when it was recorded.
    pub(super) fn decide_slot(&self, key: u64, check: u32, decided: Decided) -> bool {
        match self.slot_mut(key, check) {
            Some(mut s) if s.decided == 0 => {
                s.decided = decided.code();
                s.score = decided.true_score;
                s.propensity = decided.allowed_propensity;
                true
            }
            _ => false,
        }
    }

    /// Records the amount ratio of the payment `(key, check)` in its slot.
    pub(super) fn restore_ratio(&self, key: u64, check: u32, ratio: u32, spike: bool) {
        if let Some(mut s) = self.slot_mut(key, check) {
            s.ratio = ratio;
            s.spike = spike;
        }
    }

    /// Builds every window from the remembered payments, oldest first (as
    /// they were counted), forgetting what the windows held before. Only
    /// the payments a window can still count, relative to the latest event
    /// seen, are read: 37 days for merchants, 30 for cards, one day for
    /// emails, IPs and devices. Card and merchant windows are built on one
    /// thread, the others on a second.
    pub(super) fn rebuild_windows(&self) {
        for m in [&self.email, &self.ip, &self.device] {
            m.clear();
        }
        self.card.clear();
        self.merchant.clear();
        let now = self.watermark.load(Ordering::Relaxed);
        if now == i64::MIN {
            return;
        }
        let since = |horizon_ms: i64| now.saturating_sub(horizon_ms);
        let (merchant_from, card_from, short_from) = (
            since(MERCHANT_HORIZON_HOURS * HOUR_MS),
            since(CARD_HORIZON_HOURS * HOUR_MS),
            since(DAY_MS),
        );
        let mut recent: Vec<Slot> = self
            .payments
            .iter()
            .filter(|s| s.at_ms > merchant_from)
            .map(|s| *s)
            .collect();
        recent.sort_unstable_by_key(|s| s.at_ms);
        let long = |s: &Slot| {
            if s.card != 0 && s.at_ms > card_from {
                let mut w = self.card.entry(s.card).or_default();
                w.short.add(s.at_ms, s.amount, None);
                w.long.add(s.at_ms, s.amount, s.ratio, CARD_HORIZON_HOURS);
            }
            if s.merchant != 0 {
                let mut w = self.merchant.entry(s.merchant).or_default();
                w.add(s.at_ms, s.amount, MERCHANT_HORIZON_HOURS);
                if label_of(s.label).is_some_and(FeedbackKind::is_fraud) {
                    w.add_fraud(s.at_ms, 1, s.spike);
                }
            }
        };
        let short = |s: &Slot| {
            let card = (s.card != 0).then_some(s.card);
            for (map, k, cards) in [
                (&self.email, s.email, None),
                (&self.ip, s.ip, card),
                (&self.device, s.device, card),
            ] {
                if k != 0 {
                    map.entry(k).or_default().add(s.at_ms, s.amount, cards);
                }
            }
        };
        let first_short = recent.partition_point(|s| s.at_ms <= short_from);
        std::thread::scope(|scope| {
            scope.spawn(|| recent.iter().for_each(long));
            recent[first_short..].iter().for_each(short);
        });
    }

    /// Every payment method (the store may change meanwhile).
    pub(super) fn methods(&self) -> Vec<Arc<StoredMethod>> {
        self.methods.iter().map(|m| Arc::clone(m.value())).collect()
    }

    /// The keys of every remembered payment.
    pub(super) fn payment_keys(&self) -> Vec<u64> {
        self.payments.iter().map(|s| *s.key()).collect()
    }

    /// The remembered payment under `key`.
    pub(super) fn payment_slot(&self, key: u64) -> Option<Slot> {
        self.payments.get(&key).map(|s| *s)
    }

    /// The entries `list` holds.
    pub(super) fn list_entries_of(&self, list: List) -> Vec<(u64, ListEntry)> {
        self.entries(list)
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect()
    }
}

/// Forgets the keys of `map` idle for `horizon_ms` before `now`, shortening
/// the horizon until at most `max_keys` remain; returns how many went.
fn sweep_idle<V>(
    map: &DashMap<u64, V, PreHashedState>,
    now: i64,
    horizon_ms: i64,
    max_keys: usize,
    last_ms: impl Fn(&V) -> i64,
) -> usize {
    let before = map.len();
    let mut horizon = horizon_ms;
    map.retain(|_, w| last_ms(w) > now - horizon);
    while map.len() > max_keys && horizon > 60_000 {
        horizon /= 2;
        map.retain(|_, w| last_ms(w) > now - horizon);
    }
    before - map.len()
}

impl Store for MemoryStore {
    fn key(&self, value: &[u8]) -> Key {
        // Never 0: slots use 0 for "none".
        Key(self.keys.hash_one(value) | 1)
    }

    fn register(&self, method: StoredMethod) -> Result<Commit, StoreError> {
        self.has_room_for(&method.method.id)?;
        self.put_method(Arc::new(method));
        Ok(Commit::done())
    }

    fn payment_method(&self, id: &str) -> Result<Option<Arc<StoredMethod>>, StoreError> {
        Ok(self.methods.get(id).map(|m| Arc::clone(&m)))
    }

    fn observe(&self, obs: &Observation<'_>) -> Observed {
        self.advance(obs.at_ms);
        let (key, check) = self.payment_key(obs.payment_id);
        let first = match self.payments.entry(key) {
            // The same payment again (a retry) is not counted twice.
            Entry::Occupied(e) if e.get().check == check => false,
            Entry::Occupied(mut e) => {
                e.insert(Slot::of(obs, check));
                true
            }
            Entry::Vacant(v) => {
                v.insert(Slot::of(obs, check));
                true
            }
        };
        let at = obs.at_ms;
        let amount = obs.amount.max(0) as u64;
        let card = obs.card.map(|k| k.0);
        let mut v = Velocity::default();
        if let Some(k) = card {
            let (c, days) = if first {
                let mut w = self.card.entry(k).or_default();
                w.short.add(at, amount, None);
                // The sums of the earlier payments, plus this one: the
                // windows always hold this payment's hour.
                let before = w.long.trailing(at, 0, LONG_WINDOW_DAYS);
                w.long.add(at, amount, 0, CARD_HORIZON_HOURS);
                (w.short.counts(at), before.map(|s| s.plus(amount)))
            } else {
                self.card
                    .get(&k)
                    .map(|w| (w.short.counts(at), w.long.trailing(at, 0, LONG_WINDOW_DAYS)))
                    .unwrap_or_default()
            };
            v.card_1h = c.count_1h;
            v.card_24h = c.count_24h;
            v.card_amount_24h = c.amount_24h;
            v.card_days = days;
        }
        if let Some(k) = obs.merchant {
            v.merchant_delayed = if first {
                let mut w = self.merchant.entry(k.0).or_default();
                w.add(at, amount, MERCHANT_HORIZON_HOURS);
                w.trailing(at, LABEL_DELAY_DAYS, LONG_WINDOW_DAYS)
            } else {
                self.merchant
                    .get_mut(&k.0)
                    .map(|mut w| w.trailing(at, LABEL_DELAY_DAYS, LONG_WINDOW_DAYS))
                    .unwrap_or_default()
            };
        }
        if let Some(k) = obs.email {
            let c = Self::touch(&self.email, k.0, first, at, amount, None);
            v.email_1h = c.count_1h;
            v.email_24h = c.count_24h;
        }
        if let Some(k) = obs.ip {
            let c = Self::touch(&self.ip, k.0, first, at, amount, card);
            v.ip_1h = c.count_1h;
            v.ip_24h = c.count_24h;
            v.ip_cards_24h = c.distinct_24h;
        }
        if let Some(k) = obs.device {
            let c = Self::touch(&self.device, k.0, first, at, amount, card);
            v.device_1h = c.count_1h;
            v.device_24h = c.count_24h;
            v.device_cards_24h = c.distinct_24h;
        }
        Observed { velocity: v, first }
    }

    fn record_amount_ratio(&self, obs: &Observation<'_>, ratio: u32, spike: bool) {
        let (key, check) = self.payment_key(obs.payment_id);
        if let Some(mut s) = self.slot_mut(key, check) {
            s.ratio = ratio;
            s.spike = spike;
        }
        if let Some(k) = obs.card
            && let Some(mut w) = self.card.get_mut(&k.0)
        {
            w.long.raise_peak(obs.at_ms, ratio);
        }
    }

    fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let (key, check) = self.payment_key(payment_id);
        Ok(self
            .payments
            .get(&key)
            .filter(|s| s.check == check)
            .map(|s| s.record()))
    }

    fn label(
        &self,
        payment_id: &str,
        kind: FeedbackKind,
        block: &[(List, Key, ListEntry)],
    ) -> Result<Option<Labelled>, StoreError> {
        let (key, check) = self.payment_key(payment_id);
        if !self.label_slot(key, check, kind, true) {
            return Ok(None);
        }
        let lists_added = block
            .iter()
            .filter(|(list, k, entry)| self.put_list_entry(*list, k.0, entry.clone()))
            .map(|(list, _, _)| *list)
            .collect();
        Ok(Some(Labelled {
            lists_added,
            commit: Commit::done(),
        }))
    }

    fn record_decision(&self, payment_id: &str, _at_ms: i64, decided: Decided) {
        let (key, check) = self.payment_key(payment_id);
        self.decide_slot(key, check, decided);
    }

    fn decisions(&self) -> Result<Vec<DecidedPayment>, StoreError> {
        Ok(self
            .payments
            .iter()
            .filter_map(|s| {
                Some(DecidedPayment {
                    at_ms: s.at_ms,
                    decided: s.decided()?,
                    label: label_of(s.label),
                })
            })
            .collect())
    }

    fn list_contains(&self, list: List, key: Key) -> bool {
        // Hits are rare: only then is the entry read for its expiry.
        self.list(list).contains(&key.0)
            && !self
                .entries(list)
                .get(&key.0)
                .is_some_and(|e| e.expired(wall_clock_ms()))
    }

    fn lists_empty(&self) -> bool {
        self.list_entries.load(Ordering::Relaxed) == 0
    }

    fn list_add(
        &self,
        list: List,
        key: Key,
        entry: ListEntry,
    ) -> Result<Option<Commit>, StoreError> {
        Ok(self.put_list_entry(list, key.0, entry).then(Commit::done))
    }

    fn list_remove(&self, list: List, key: Key) -> Result<Option<Commit>, StoreError> {
        Ok(self.remove_list_entry(list, key.0).then(Commit::done))
    }

    fn list_items(&self, list: List, after: Option<Key>, limit: usize) -> Vec<(Key, ListEntry)> {
        let entries = self.entries(list);
        let from = after.map_or(std::ops::Bound::Unbounded, |k| {
            std::ops::Bound::Excluded(k.0)
        });
        entries
            .range((from, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(k, e)| (Key(*k), e.clone()))
            .collect()
    }

    fn sync(&self) -> Commit {
        Commit::done()
    }

    fn sweep(&self) -> usize {
        let expired = self.sweep_expired_entries();
        let now = self.watermark.load(Ordering::Relaxed);
        if now == i64::MIN {
            return expired;
        }
        let max = self.limits.max_window_keys;
        let mut dropped = 0;
        for map in [&self.email, &self.ip, &self.device] {
            dropped += sweep_idle(map, now, DAY_MS, max, Window::last_ms);
        }
        dropped += sweep_idle(&self.card, now, CARD_HORIZON_HOURS * HOUR_MS, max, |w| {
            w.short.last_ms()
        });
        dropped += sweep_idle(
            &self.merchant,
            now,
            MERCHANT_HORIZON_HOURS * HOUR_MS,
            max,
            DelayedWindow::last_ms,
        );
        let before = self.payments.len();
        let mut horizon = self.limits.payment_retention_ms;
        let alive = |s: &Slot, horizon: i64| s.at_ms > now - horizon;
        self.payments.retain(|_, s| alive(s, horizon));
        // Past the bound, older payments go first, but never those the
        // windows still count (their rebuild and fraud counts need them).
        while self.payments.len() > self.limits.max_payments && horizon > MIN_PAYMENT_RETENTION_MS {
            horizon = (horizon / 2).max(MIN_PAYMENT_RETENTION_MS);
            self.payments.retain(|_, s| alive(s, horizon));
        }
        dropped + (before - self.payments.len()) + expired
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            payment_methods: self.methods.len(),
            velocity_keys: self.card.len()
                + self.merchant.len()
                + self.email.len()
                + self.ip.len()
                + self.device.len(),
            payments: self.payments.len(),
            list_entries: self.list_entries.load(Ordering::Relaxed),
            disk: None,
        }
    }
}
