//! The in-process store: concurrent maps (dashmap) of payment methods,
//! velocity windows, recent payments and lists. Windows, payments and lists
//! are keyed by keyed hashes of the customer data, so they hold no emails,
//! card fingerprints or addresses.

use super::window::{DAY_MS, Window};
use super::{
    Key, List, Observation, PaymentRecord, Store, StoreError, StoreStats, StoredMethod, Velocity,
};
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

/// A remembered payment, packed into 32 bytes (keys of 0 mean "none").
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// 32 more bits of the payment id's hash: 96 bits tell payments apart.
    check: u32,
    /// Minutes since the epoch.
    minute: u32,
    card: u64,
    email: u64,
    label: u8,
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
type Strings = foldhash::quality::RandomState;

/// The in-process [`Store`]. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    methods: DashMap<String, Arc<StoredMethod>, Strings>,
    card: Windows,
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
            card: Windows::default(),
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

    fn sweep_windows(map: &Windows, now: i64, max_keys: usize) -> usize {
        let before = map.len();
        let mut horizon = DAY_MS;
        map.retain(|_, w| w.last_ms() > now - horizon);
        while map.len() > max_keys && horizon > 60_000 {
            horizon /= 2;
            map.retain(|_, w| w.last_ms() > now - horizon);
        }
        before - map.len()
    }
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
            label: 0,
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
        if let Some(k) = card {
            let c = Self::touch(&self.card, k, first, at, amount, None);
            v.card_1h = c.count_1h;
            v.card_24h = c.count_24h;
            v.card_amount_24h = c.amount_24h;
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
        match self.slot(payment_id) {
            Some(mut s) => {
                s.label = label_code(Some(kind));
                true
            }
            None => false,
        }
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
        for map in [&self.card, &self.email, &self.ip, &self.device] {
            dropped += Self::sweep_windows(map, now, max);
        }
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
            velocity_keys: self.card.len() + self.email.len() + self.ip.len() + self.device.len(),
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
        assert_eq!(s.stats().velocity_keys, 2 + 1 + 1 + 2);
        s.sweep();
        // The first card and device were idle for two days; email and IP are shared.
        assert_eq!(s.stats().velocity_keys, 4);
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
