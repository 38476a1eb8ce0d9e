//! The in-process store: concurrent maps (dashmap) of payment methods,
//! velocity windows, recent payments and lists. Velocity keys are 64-bit
//! keyed hashes of the customer data, so windows hold no emails or addresses.

use super::window::{DAY_MS, Window};
use super::{List, Observation, PaymentRecord, Store, StoreError, StoreStats, Velocity};
use crate::domain::{FeedbackKind, RegisteredMethod};
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
}

type Windows = DashMap<u64, Window, BuildHasherDefault<PreHashed>>;

/// The in-process [`Store`]. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    methods: DashMap<Box<str>, Arc<RegisteredMethod>>,
    card: Windows,
    email: Windows,
    ip: Windows,
    device: Windows,
    payments: DashMap<Box<str>, PaymentRecord>,
    lists: [DashSet<Box<str>>; List::ALL.len()],
    list_entries: AtomicUsize,
    watermark: AtomicI64,
    keys: foldhash::quality::FixedState,
    limits: StoreLimits,
}

impl MemoryStore {
    /// An empty store whose velocity keys are hashed with `hash_seed`.
    pub fn new(limits: StoreLimits, hash_seed: u64) -> Self {
        MemoryStore {
            methods: DashMap::new(),
            card: Windows::default(),
            email: Windows::default(),
            ip: Windows::default(),
            device: Windows::default(),
            payments: DashMap::new(),
            lists: std::array::from_fn(|_| DashSet::new()),
            list_entries: AtomicUsize::new(0),
            watermark: AtomicI64::new(i64::MIN),
            keys: foldhash::quality::FixedState::with_seed(hash_seed),
            limits,
        }
    }

    fn list(&self, list: List) -> &DashSet<Box<str>> {
        &self.lists[list as usize]
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
    fn register(&self, method: RegisteredMethod) -> Result<(), StoreError> {
        if self.methods.len() >= self.limits.max_payment_methods
            && !self.methods.contains_key(&*method.id)
        {
            return Err(StoreError::PaymentMethodsFull(
                self.limits.max_payment_methods,
            ));
        }
        self.methods.insert(method.id.clone(), Arc::new(method));
        Ok(())
    }

    fn payment_method(&self, id: &str) -> Option<Arc<RegisteredMethod>> {
        self.methods.get(id).map(|m| Arc::clone(&m))
    }

    fn observe(&self, obs: &Observation<'_>) -> Velocity {
        self.watermark.fetch_max(obs.at_ms, Ordering::Relaxed);
        let first = match self.payments.entry(Box::from(obs.payment_id)) {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(PaymentRecord {
                    at_ms: obs.at_ms,
                    card_fingerprint: obs.card_fingerprint.cloned(),
                    email: obs.email.map(Box::from),
                    label: None,
                });
                true
            }
        };
        let at = obs.at_ms;
        let amount = obs.amount.max(0) as u64;
        let card_hash = obs.card_fingerprint.map(|fp| self.keys.hash_one(&**fp));
        let mut v = Velocity::default();
        if let Some(h) = card_hash {
            let c = Self::touch(&self.card, h, first, at, amount, None);
            v.card_1h = c.count_1h;
            v.card_24h = c.count_24h;
            v.card_amount_24h = c.amount_24h;
        }
        if let Some(email) = obs.email {
            let c = Self::touch(
                &self.email,
                self.keys.hash_one(email),
                first,
                at,
                amount,
                None,
            );
            v.email_1h = c.count_1h;
            v.email_24h = c.count_24h;
        }
        if let Some(ip) = obs.ip {
            let key = self.keys.hash_one(ip.to_canonical());
            let c = Self::touch(&self.ip, key, first, at, amount, card_hash);
            v.ip_1h = c.count_1h;
            v.ip_24h = c.count_24h;
            v.ip_cards_24h = c.distinct_24h;
        }
        if let Some(device) = obs.device_id {
            let key = self.keys.hash_one(device);
            let c = Self::touch(&self.device, key, first, at, amount, card_hash);
            v.device_1h = c.count_1h;
            v.device_24h = c.count_24h;
            v.device_cards_24h = c.distinct_24h;
        }
        v
    }

    fn payment(&self, payment_id: &str) -> Option<PaymentRecord> {
        self.payments.get(payment_id).map(|r| r.clone())
    }

    fn label(&self, payment_id: &str, kind: FeedbackKind) -> bool {
        match self.payments.get_mut(payment_id) {
            Some(mut r) => {
                r.label = Some(kind);
                true
            }
            None => false,
        }
    }

    fn list_contains(&self, list: List, value: &str) -> bool {
        !value.is_empty() && self.list(list).contains(value)
    }

    fn lists_empty(&self) -> bool {
        self.list_entries.load(Ordering::Relaxed) == 0
    }

    fn list_add(&self, list: List, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        let added = self.list(list).insert(Box::from(value));
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
        self.payments.retain(|_, r| r.at_ms > now - horizon);
        while self.payments.len() > self.limits.max_payments && horizon > 60_000 {
            horizon /= 2;
            self.payments.retain(|_, r| r.at_ms > now - horizon);
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

    fn obs<'a>(id: &'a str, at: i64, card: &'a Arc<str>, device: &'a str) -> Observation<'a> {
        Observation {
            payment_id: id,
            at_ms: at,
            amount: 500,
            card_fingerprint: Some(card),
            email: Some("a@example.com"),
            customer_id: None,
            ip: "203.0.113.7".parse().ok(),
            device_id: Some(device),
            merchant_id: None,
        }
    }

    #[test]
    fn counts_include_the_payment_and_retries_count_once() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let card: Arc<str> = Arc::from("fp_1");
        let v1 = s.observe(&obs("p1", T0, &card, "d1"));
        assert_eq!(v1.card_1h, 1);
        let v2 = s.observe(&obs("p2", T0 + 1000, &card, "d1"));
        assert_eq!(
            (v2.card_1h, v2.email_24h, v2.ip_24h, v2.device_24h),
            (2, 2, 2, 2)
        );
        assert_eq!(v2.card_amount_24h, 1000);
        let retry = s.observe(&obs("p2", T0 + 2000, &card, "d1"));
        assert_eq!(
            retry.card_1h, 2,
            "a retried payment id is not counted twice"
        );
    }

    #[test]
    fn distinct_cards_per_device() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let cards: Vec<Arc<str>> = (0..5).map(|i| Arc::from(format!("fp_{i}"))).collect();
        let mut last = Velocity::default();
        for (i, c) in cards.iter().enumerate() {
            let id = format!("p{i}");
            last = s.observe(&obs(&id, T0 + i as i64, c, "dev"));
        }
        assert_eq!(last.device_cards_24h, 5);
        assert_eq!(last.ip_cards_24h, 5);
    }

    #[test]
    fn sweep_forgets_idle_keys() {
        let s = MemoryStore::new(StoreLimits::default(), 1);
        let card: Arc<str> = Arc::from("fp_1");
        s.observe(&obs("p1", T0, &card, "d1"));
        let other: Arc<str> = Arc::from("fp_2");
        s.observe(&obs("p2", T0 + 2 * DAY_MS, &other, "d2"));
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
        assert!(s.lists_empty());
        assert!(s.list_add(List::BlockEmail, "a@example.com"));
        assert!(!s.list_add(List::BlockEmail, "a@example.com"));
        assert!(s.list_contains(List::BlockEmail, "a@example.com"));
        assert!(!s.list_contains(List::AllowEmail, "a@example.com"));
        let m = |id: &str| RegisteredMethod {
            id: id.into(),
            kind: crate::domain::MethodKind::Card,
            card_fingerprint: Some(Arc::from("fp")),
            card_country: None,
            created_at_ms: T0,
            creation_session: None,
            customer: Default::default(),
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
