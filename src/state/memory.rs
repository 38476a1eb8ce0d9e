//! The in-process store: concurrent maps (dashmap) of payment methods,
//! velocity windows, recent payments and lists. Windows, payments and lists
//! are keyed by keyed hashes of the customer data, so they hold no emails,
//! card fingerprints or addresses.

use super::long_window::{self, DelayedWindow, HOUR_MS, LongWindow};
use super::window::{DAY_MS, Window};
use super::{
    Key, List, Observation, PaymentRecord, Store, StoreError, StoreStats, StoredMethod, Velocity,
};
use super::{LABEL_DELAY_DAYS, LONG_WINDOW_DAYS};
use crate::domain::FeedbackKind;
#[cfg(test)]
use crate::domain::RegisteredMethod;
use dashmap::{DashMap, DashSet, mapref::entry::Entry};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Bounds on what the in-process store holds.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Most registered payment methods; registrations beyond are refused.
    pub max_payment_methods: usize,
    /// Most keys per velocity window kind (card, email, IP, device); a sweep
    /// shortens the idle horizon until the windows fit.
    pub max_window_keys: usize,
    /// Most recent payments remembered for feedback.
    pub max_payments: usize,
    /// How long a payment is remembered for feedback.
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

/// A remembered payment, packed into 40 bytes (keys of 0 mean "none").
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// 32 more bits of the payment id's hash: 96 bits tell payments apart.
    check: u32,
    /// Minutes since the epoch.
    minute: u32,
    card: u64,
    email: u64,
    merchant: u64,
    label: u8,
    /// The amount was a spike for its card ([`long_window::SPIKE_RATIO`]).
    spike: bool,
}

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

fn label_code(k: Option<FeedbackKind>) -> u8 {
    match k {
        None => 0,
        Some(FeedbackKind::Fraudulent) => 1,
        Some(FeedbackKind::DisputeFraud) => 2,
        Some(FeedbackKind::Legitimate) => 3,
    }
}

impl Slot {
    fn record(&self) -> PaymentRecord {
        let key = |k: u64| (k != 0).then_some(Key(k));
        PaymentRecord {
            at_ms: i64::from(self.minute) * 60_000,
            card: key(self.card),
            email: key(self.email),
            label: match self.label {
                1 => Some(FeedbackKind::Fraudulent),
                2 => Some(FeedbackKind::DisputeFraud),
                3 => Some(FeedbackKind::Legitimate),
                _ => None,
            },
        }
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
    lists: [DashSet<u64, PreHashedState>; List::ALL.len()],
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
    fn payment_key(&self, payment_id: &str) -> (u64, u32) {
        (
            self.ids.0.hash_one(payment_id),
            self.ids.1.hash_one(payment_id) as u32,
        )
    }

    fn slot(&self, payment_id: &str) -> Option<dashmap::mapref::one::RefMut<'_, u64, Slot>> {
        let (key, check) = self.payment_key(payment_id);
        self.payments.get_mut(&key).filter(|s| s.check == check)
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

    fn register(&self, method: StoredMethod) -> Result<(), StoreError> {
        if self.methods.len() >= self.limits.max_payment_methods
            && !self.methods.contains_key(method.method.id.as_str())
        {
            return Err(StoreError::PaymentMethodsFull(
                self.limits.max_payment_methods,
            ));
        }
        self.methods
            .insert(method.method.id.clone(), Arc::new(method));
        Ok(())
    }

    fn payment_method(&self, id: &str) -> Option<Arc<StoredMethod>> {
        self.methods.get(id).map(|m| Arc::clone(&m))
    }

    fn observe(&self, obs: &Observation<'_>) -> Velocity {
        // The watermark only steers sweeps: a write every second is enough,
        // and it spares the shared cache line on every event.
        if obs.at_ms > self.watermark.load(Ordering::Relaxed) + 1000 {
            self.watermark.fetch_max(obs.at_ms, Ordering::Relaxed);
        }
        let (key, check) = self.payment_key(obs.payment_id);
        let slot = Slot {
            check,
            minute: obs.at_ms.div_euclid(60_000).clamp(0, i64::from(u32::MAX)) as u32,
            card: obs.card.map_or(0, |k| k.0),
            email: obs.email.map_or(0, |k| k.0),
            merchant: obs.merchant.map_or(0, |k| k.0),
            label: 0,
            spike: false,
        };
        let first = match self.payments.entry(key) {
            // The same payment again (a retry) is not counted twice.
            Entry::Occupied(e) if e.get().check == check => false,
            Entry::Occupied(mut e) => {
                e.insert(slot);
                true
            }
            Entry::Vacant(v) => {
                v.insert(slot);
                true
            }
        };
        let at = obs.at_ms;
        let amount = obs.amount.max(0) as u64;
        let card = obs.card.map(|k| k.0);
        let mut v = Velocity::default();
        let mut spike = false;
        if let Some(k) = card {
            let (c, days) = if first {
                let mut w = self.card.entry(k).or_default();
                w.short.add(at, amount, None);
                // Sums of the earlier payments give this one's amount
                // ratio; the windows always hold this payment's hour.
                let before = w.long.trailing(at, 0, LONG_WINDOW_DAYS);
                let ratio = long_window::amount_ratio(amount, &before[2]);
                w.long.add(at, amount, ratio, CARD_HORIZON_HOURS);
                spike = ratio >= long_window::SPIKE_RATIO;
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
        // Rare (a spike is three standard deviations out): marked in a
        // second visit rather than holding the payment's slot locked above.
        if spike
            && let Some(mut s) = self.payments.get_mut(&key)
            && s.check == check
        {
            s.spike = true;
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
        v
    }

    fn payment(&self, payment_id: &str) -> Option<PaymentRecord> {
        self.slot(payment_id).map(|s| s.record())
    }

    fn label(&self, payment_id: &str, kind: FeedbackKind) -> bool {
        let Some(mut s) = self.slot(payment_id) else {
            return false;
        };
        let was_fraud = matches!(s.label, 1 | 2);
        s.label = label_code(Some(kind));
        let (merchant, at_ms, spike) = (s.merchant, i64::from(s.minute) * 60_000, s.spike);
        drop(s);
        // The merchant's fraud count follows the payment's label.
        let delta = i32::from(kind.is_fraud()) - i32::from(was_fraud);
        if delta != 0
            && merchant != 0
            && let Some(mut w) = self.merchant.get_mut(&merchant)
        {
            w.add_fraud(at_ms, delta, spike);
        }
        true
    }

    fn list_contains(&self, list: List, key: Key) -> bool {
        self.list(list).contains(&key.0)
    }

    fn lists_empty(&self) -> bool {
        self.list_entries.load(Ordering::Relaxed) == 0
    }

    fn list_add(&self, list: List, key: Key) -> bool {
        let added = self.list(list).insert(key.0);
        if added {
            self.list_entries.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    fn sweep(&self) -> usize {
        let now = self.watermark.load(Ordering::Relaxed);
        if now == i64::MIN {
            return 0;
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
        let alive = |s: &Slot, horizon: i64| i64::from(s.minute) * 60_000 > now - horizon;
        self.payments.retain(|_, s| alive(s, horizon));
        while self.payments.len() > self.limits.max_payments && horizon > 60_000 {
            horizon /= 2;
            self.payments.retain(|_, s| alive(s, horizon));
        }
        dropped + (before - self.payments.len())
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;

    fn obs<'a>(s: &MemoryStore, id: &'a str, at: i64, card: &str, device: &str) -> Observation<'a> {
        Observation {
            payment_id: id,
            at_ms: at,
            amount: 500,
            card: Some(s.key(card.as_bytes())),
            email: Some(s.key(b"a@example.com")),
            ip: Some(s.key(&[203, 0, 113, 7])),
            device: Some(s.key(device.as_bytes())),
            merchant: Some(s.key(b"acct_1")),
        }
    }

    #[test]
    fn counts_include_the_payment_and_retries_count_once() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let v1 = s.observe(&obs(&s, "p1", T0, "fp_1", "d1"));
        assert_eq!(v1.card_1h, 1);
        let v2 = s.observe(&obs(&s, "p2", T0 + 1000, "fp_1", "d1"));
        assert_eq!(
            (v2.card_1h, v2.email_24h, v2.ip_24h, v2.device_24h),
            (2, 2, 2, 2)
        );
        assert_eq!(v2.card_amount_24h, 1000);
        let retry = s.observe(&obs(&s, "p2", T0 + 2000, "fp_1", "d1"));
        assert_eq!(
            retry.card_1h, 2,
            "a retried payment id is not counted twice"
        );
        let rec = s.payment("p2").expect("remembered");
        assert_eq!(rec.card, Some(s.key(b"fp_1")));
        assert!(s.payment("p3").is_none());
    }

    #[test]
    fn merchant_windows_see_only_labels_that_have_arrived() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let hour = 3_600_000;
        s.observe(&obs(&s, "p0", T0, "fp_0", "d0"));
        // A week and an hour later the 1-day window ending 7 days back holds
        // p0, whose fraud report has not arrived yet.
        let v = s.observe(&obs(&s, "p1", T0 + 7 * DAY_MS + hour, "fp_1", "d1"));
        assert_eq!(v.merchant_delayed[0].count, 1);
        assert_eq!(v.merchant_delayed[0].frauds, 0);
        // The report arrives on day 10; later payments see it.
        assert!(s.label("p0", FeedbackKind::Fraudulent));
        let v = s.observe(&obs(&s, "p2", T0 + 10 * DAY_MS, "fp_2", "d2"));
        let week = v.merchant_delayed[1];
        assert_eq!((week.count, week.frauds), (1, 1));
        // A later LEGITIMATE verdict takes it back; a repeat changes nothing.
        assert!(s.label("p0", FeedbackKind::Legitimate));
        assert!(s.label("p0", FeedbackKind::Legitimate));
        let v = s.observe(&obs(&s, "p3", T0 + 10 * DAY_MS + 1, "fp_3", "d3"));
        assert_eq!(v.merchant_delayed[1].frauds, 0);
        // Card windows count the card's own payments over days.
        let v = s.observe(&obs(&s, "p4", T0 + 11 * DAY_MS, "fp_3", "d3"));
        assert_eq!(v.card_days[0].count, 1);
        assert_eq!(v.card_days[1].count, 2);
        assert_eq!(v.card_days[1].amount, 1000);
    }

    #[test]
    fn a_card_spike_is_seen_by_its_later_payments_only() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let pay = |id, at, amount| {
            let o = Observation {
                amount,
                ..obs(&s, id, at, "fp_1", "d1")
            };
            s.observe(&o)
        };
        assert_eq!(pay("p0", T0, 1_000).card_days[2].peak, 0);
        assert_eq!(pay("p1", T0 + DAY_MS, 1_000).card_days[2].peak, 0);
        let spike = pay("p2", T0 + 2 * DAY_MS, 5_000);
        assert_eq!(spike.card_days[2].peak, 1_000, "its own ratio is not in it");
        assert_eq!(spike.card_days[2].amount, 7_000, "its amount is");
        let after = pay("p3", T0 + 3 * DAY_MS, 1_000);
        let peaks = after.card_days.map(|d| d.peak);
        assert_eq!(peaks, [0, 5_000, 5_000], "five times the mean before it");
        // Fraud reports at the merchant say which frauds were spikes.
        assert!(s.label("p1", FeedbackKind::Fraudulent));
        assert!(s.label("p2", FeedbackKind::Fraudulent));
        let later = pay("p4", T0 + 10 * DAY_MS + 1, 1_000);
        let week = later.merchant_delayed[1];
        assert_eq!((week.count, week.frauds, week.spike_frauds), (4, 2, 1));
        assert!(s.label("p2", FeedbackKind::Legitimate));
        let later = pay("p5", T0 + 10 * DAY_MS + 2, 1_000);
        let week = later.merchant_delayed[1];
        assert_eq!((week.frauds, week.spike_frauds), (1, 0));
    }

    #[test]
    fn distinct_cards_per_device() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let mut last = Velocity::default();
        for i in 0..5 {
            let id = format!("p{i}");
            last = s.observe(&obs(&s, &id, T0 + i, &format!("fp_{i}"), "dev"));
        }
        assert_eq!(last.device_cards_24h, 5);
        assert_eq!(last.ip_cards_24h, 5);
    }

    #[test]
    fn sweep_forgets_idle_keys() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        s.observe(&obs(&s, "p1", T0, "fp_1", "d1"));
        s.observe(&obs(&s, "p2", T0 + 2 * DAY_MS, "fp_2", "d2"));
        // Cards 2, merchant 1, email 1, IP 1, devices 2.
        assert_eq!(s.stats().velocity_keys, 2 + 1 + 1 + 1 + 2);
        s.sweep();
        // The first device was idle for two days; cards and merchants are
        // kept for their 30-day windows; email and IP are shared.
        assert_eq!(s.stats().velocity_keys, 6);
        assert_eq!(s.stats().payments, 2, "payments are kept for feedback");
    }

    #[test]
    fn lists_and_capacity() {
        let limits = StoreLimits {
            max_payment_methods: 1,
            ..StoreLimits::default()
        };
        let s = MemoryStore::new(limits, 1);
        let k = s.key(b"a@example.com");
        assert!(s.lists_empty());
        assert!(s.list_add(List::BlockEmail, k));
        assert!(!s.list_add(List::BlockEmail, k));
        assert!(s.list_contains(List::BlockEmail, k));
        assert!(!s.list_contains(List::AllowEmail, k));
        assert!(!s.list_contains(List::BlockEmail, s.key(b"b@example.com")));
        let m = |id: &str| StoredMethod {
            method: RegisteredMethod {
                id: id.into(),
                kind: crate::domain::MethodKind::Card,
                card_fingerprint: Some("fp".into()),
                card_country: None,
                created_at_ms: T0,
                creation_session: None,
                customer: Default::default(),
            },
            creation: None,
            creation_session_id: bytes::Bytes::new(),
            card: None,
            email: None,
            customer: None,
        };
        assert!(s.register(m("pm_1")).is_ok());
        assert!(
            s.register(m("pm_1")).is_ok(),
            "replacing is allowed when full"
        );
        assert!(matches!(
            s.register(m("pm_2")),
            Err(StoreError::PaymentMethodsFull(1))
        ));
    }
}
