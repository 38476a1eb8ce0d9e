//! The store conformance suite: the semantics every `Store` keeps, written
//! once and run against each implementation (`memory`, `embedded`,
//! `redis`, on a redis-server of the test binary's own):
//! registration and replacement, payments counted once per id, velocity
//! windows and their expiry, amount ratios, labels and merchant fraud
//! counts, lists, sweeps and limits. A store that keeps state on disk also
//! runs it across a reopen.

use riskstream::decision::DecidedBy;
use riskstream::domain::{Customer, FeedbackKind, MethodKind, RegisteredMethod};
use riskstream::state::{
    Commit, Decided, DecidedPayment, EmbeddedOptions, EmbeddedStore, List, ListEntry, ListSource,
    MemoryStore, Observation, Observed, RedisOptions, RedisStore, Store, StoreError, StoreLimits,
    StoredMethod,
};
use std::sync::Arc;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// One store under test; `reopen` (where the store keeps state) closes it
/// and opens it again on what it saved.
trait Harness {
    fn store(&self) -> &Arc<dyn Store>;
}

/// Waits for a commit; the suite fails if the write was not saved.
fn saved(c: Commit) {
    c.wait().expect("the write is saved");
}

struct Memory(Arc<dyn Store>);

impl Harness for Memory {
    fn store(&self) -> &Arc<dyn Store> {
        &self.0
    }
}

fn memory(limits: StoreLimits) -> Memory {
    Memory(Arc::new(MemoryStore::new(limits, 1)))
}

/// An embedded store in a temporary directory.
struct Embedded {
    store: Arc<dyn Store>,
    options: EmbeddedOptions,
    _dir: tempfile::TempDir,
}

impl Harness for Embedded {
    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl Embedded {
    /// Closes the store (saving what is queued) and opens it again.
    fn reopen(&mut self) -> riskstream::state::Restored {
        self.store = Arc::new(MemoryStore::new(StoreLimits::default(), 0));
        let (store, restored) = EmbeddedStore::open(self.options.clone()).expect("reopens");
        self.store = Arc::new(store);
        restored
    }
}

fn embedded(limits: StoreLimits) -> Embedded {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        limits,
        ..EmbeddedOptions::new(dir.path().join("data"))
    };
    let (store, restored) = EmbeddedStore::open(options.clone()).expect("opens");
    assert_eq!(restored.records, 0, "a new directory holds nothing");
    Embedded {
        store: Arc::new(store),
        options,
        _dir: dir,
    }
}

/// A Redis store in a namespace of its own on the test binary's server.
struct Redis(Arc<dyn Store>);

impl Harness for Redis {
    fn store(&self) -> &Arc<dyn Store> {
        &self.0
    }
}

fn redis(limits: StoreLimits) -> Redis {
    let options = RedisOptions {
        prefix: redis_server::prefix(),
        limits,
        ..RedisOptions::new(redis_server::shared().url())
    };
    Redis(Arc::new(RedisStore::open(options).expect("opens")))
}

/// A Redis store in a namespace of its own on the test binary's cluster of
/// three masters.
fn redis_cluster(limits: StoreLimits) -> Redis {
    let options = RedisOptions {
        prefix: redis_server::prefix(),
        limits,
        ..RedisOptions::new(redis_server::shared_cluster().url())
    };
    Redis(Arc::new(RedisStore::open(options).expect("opens")))
}

fn method(id: &str, fingerprint: &str, session: Option<&str>) -> RegisteredMethod {
    RegisteredMethod {
        id: id.into(),
        kind: MethodKind::Card,
        card_fingerprint: Some(fingerprint.into()),
        card_country: Some(*b"FR"),
        created_at_ms: T0 - 30 * DAY,
        creation_session: session.map(|sid| riskstream::domain::Session {
            session_id: sid.to_owned().into(),
            captured_at_ms: T0 - 30 * DAY,
            ip: "203.0.113.7".parse().ok(),
            user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Safari/605.1.15".into(),
            accept_language: "fr-FR,fr;q=0.9".into(),
            timezone: "Europe/Paris".into(),
            utc_offset_minutes: 60,
            screen_width: 1440,
            screen_height: 900,
            color_depth: 24,
            device_id: "dev_1".into(),
            platform: "MacIntel".into(),
        }),
        customer: Customer {
            id: "cus_1".into(),
            email: "jane@example.com".into(),
        },
    }
}

fn stored(s: &dyn Store, m: RegisteredMethod) -> StoredMethod {
    StoredMethod {
        creation: m
            .creation_session
            .as_ref()
            .map(riskstream::fingerprint::Facts::of),
        creation_session_id: m
            .creation_session
            .as_ref()
            .map(|c| bytes::Bytes::copy_from_slice(c.session_id.as_bytes()))
            .unwrap_or_default(),
        card: m.card_fingerprint.as_deref().map(|f| s.key(f.as_bytes())),
        email: Some(s.key(m.customer.email.as_bytes())),
        customer: Some(s.key(m.customer.id.as_bytes())),
        method: m,
    }
}

/// A payment of 5.00 with card `card` from device `device`, at `at`.
fn pay<'a>(s: &dyn Store, id: &'a str, at: i64, card: &str, device: &str) -> Observation<'a> {
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

fn observe(s: &dyn Store, o: &Observation<'_>) -> Observed {
    s.observe(o)
}

fn label(s: &dyn Store, id: &str, kind: FeedbackKind) {
    saved(
        s.label(id, kind, &[])
            .expect("label accepted")
            .expect("payment known")
            .commit,
    );
}

// ---- the suite --------------------------------------------------------

fn registration_replaces_and_keeps_the_creation_session(h: &dyn Harness) {
    let s = &**h.store();
    assert!(
        s.payment_method("pm_1")
            .expect("the store answers")
            .is_none()
    );
    saved(
        s.register(stored(s, method("pm_1", "fp_1", Some("sess_a"))))
            .expect("registered"),
    );
    let m = s
        .payment_method("pm_1")
        .expect("the store answers")
        .expect("registered method");
    assert_eq!(&m.creation_session_id[..], b"sess_a");
    assert!(m.creation.is_some());
    assert_eq!(m.card, Some(s.key(b"fp_1")));
    assert_eq!(m.method, method("pm_1", "fp_1", Some("sess_a")));
    saved(
        s.register(stored(s, method("pm_1", "fp_2", None)))
            .expect("replaced"),
    );
    let m = s
        .payment_method("pm_1")
        .expect("the store answers")
        .expect("replaced method");
    assert_eq!(m.method.card_fingerprint.as_deref(), Some("fp_2"));
    assert!(m.creation.is_none() && m.creation_session_id.is_empty());
    assert_eq!(s.stats().payment_methods, 1);
}

fn payments_count_once_per_id(h: &dyn Harness) {
    let s = &**h.store();
    let v1 = observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    assert!(v1.first);
    assert_eq!(v1.velocity.card_1h, 1);
    let v2 = observe(s, &pay(s, "p2", T0 + 1000, "fp_1", "d1"));
    let v = v2.velocity;
    assert_eq!(
        (v.card_1h, v.email_24h, v.ip_24h, v.device_24h),
        (2, 2, 2, 2)
    );
    assert_eq!(v.card_amount_24h, 1000);
    let retry = observe(s, &pay(s, "p2", T0 + 2000, "fp_1", "d1"));
    assert!(!retry.first, "a retried payment id is not counted twice");
    assert_eq!(retry.velocity.card_1h, 2);
    let rec = s
        .payment("p2")
        .expect("the store answers")
        .expect("remembered");
    assert_eq!(rec.card, Some(s.key(b"fp_1")));
    assert_eq!(rec.email, Some(s.key(b"a@example.com")));
    assert_eq!(rec.at_ms, T0 + 1000);
    assert_eq!(rec.label, None);
    assert!(s.payment("p3").expect("the store answers").is_none());
    assert_eq!(s.stats().payments, 2);
}

fn windows_count_the_last_hour_and_day(h: &dyn Harness) {
    let s = &**h.store();
    observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    observe(s, &pay(s, "p2", T0 + 10 * MIN, "fp_1", "d1"));
    let v = observe(s, &pay(s, "p3", T0 + 3 * HOUR, "fp_1", "d1")).velocity;
    assert_eq!((v.card_1h, v.card_24h, v.card_amount_24h), (1, 3, 1500));
    assert_eq!((v.email_1h, v.email_24h), (1, 3));
    // A day later the first two have left the 24-hour windows.
    let v = observe(s, &pay(s, "p4", T0 + DAY + HOUR, "fp_1", "d1")).velocity;
    assert_eq!((v.card_1h, v.card_24h, v.card_amount_24h), (1, 2, 1000));
    assert_eq!((v.ip_24h, v.device_24h), (2, 2));
    // Long windows still hold them.
    assert_eq!(v.card_days.map(|d| d.count), [2, 4, 4]);
    assert_eq!(v.card_days[2].amount, 2000);
}

fn distinct_cards_per_device_and_ip(h: &dyn Harness) {
    let s = &**h.store();
    let mut last = Observed::default();
    for i in 0..5 {
        let id = format!("p{i}");
        last = observe(s, &pay(s, &id, T0 + i, &format!("fp_{i}"), "dev"));
    }
    assert_eq!(last.velocity.device_cards_24h, 5);
    assert_eq!(last.velocity.ip_cards_24h, 5);
    let later = observe(s, &pay(s, "p9", T0 + DAY + MIN, "fp_9", "dev"));
    assert_eq!(
        later.velocity.device_cards_24h, 1,
        "a day later only the new card"
    );
}

fn amount_ratios_are_seen_by_later_payments_only(h: &dyn Harness) {
    let s = &**h.store();
    let payment = |id, at, amount| {
        let o = Observation {
            amount,
            ..pay(s, id, at, "fp_1", "d1")
        };
        (o, s.observe(&o))
    };
    payment("p0", T0, 1_000);
    payment("p1", T0 + DAY, 1_000);
    let (o, spike) = payment("p2", T0 + 2 * DAY, 5_000);
    assert_eq!(spike.velocity.card_days[2].peak, 0);
    assert_eq!(
        spike.velocity.card_days[2].amount, 7_000,
        "its amount is in"
    );
    s.record_amount_ratio(&o, 5_000, true);
    let (_, after) = payment("p3", T0 + 3 * DAY, 1_000);
    assert_eq!(after.velocity.card_days.map(|d| d.peak), [0, 5_000, 5_000]);
    // Frauds at the merchant are told apart by whether they were spikes.
    label(s, "p1", FeedbackKind::Fraudulent);
    label(s, "p2", FeedbackKind::Fraudulent);
    let (_, later) = payment("p4", T0 + 10 * DAY + 1, 1_000);
    let week = later.velocity.merchant_delayed[1];
    assert_eq!((week.count, week.frauds, week.spike_frauds), (4, 2, 1));
    label(s, "p2", FeedbackKind::Legitimate);
    let (_, later) = payment("p5", T0 + 10 * DAY + 2, 1_000);
    let week = later.velocity.merchant_delayed[1];
    assert_eq!((week.frauds, week.spike_frauds), (1, 0));
}

fn merchant_windows_see_only_labels_that_have_arrived(h: &dyn Harness) {
    let s = &**h.store();
    observe(s, &pay(s, "p0", T0, "fp_0", "d0"));
    // A week and an hour later the day ending 7 days back holds p0, whose
    // fraud report has not arrived yet.
    let v = observe(s, &pay(s, "p1", T0 + 7 * DAY + HOUR, "fp_1", "d1")).velocity;
    assert_eq!(
        (v.merchant_delayed[0].count, v.merchant_delayed[0].frauds),
        (1, 0)
    );
    label(s, "p0", FeedbackKind::Fraudulent);
    assert_eq!(
        s.payment("p0")
            .expect("the store answers")
            .and_then(|r| r.label),
        Some(FeedbackKind::Fraudulent)
    );
    let v = observe(s, &pay(s, "p2", T0 + 10 * DAY, "fp_2", "d2")).velocity;
    assert_eq!(
        (v.merchant_delayed[1].count, v.merchant_delayed[1].frauds),
        (1, 1)
    );
    assert!(v.merchant_delayed[1].oldest_plain_fraud_hour.is_some());
    // A later LEGITIMATE verdict takes it back; a repeat changes nothing.
    label(s, "p0", FeedbackKind::Legitimate);
    label(s, "p0", FeedbackKind::Legitimate);
    let v = observe(s, &pay(s, "p3", T0 + 10 * DAY + 1, "fp_3", "d3")).velocity;
    assert_eq!(v.merchant_delayed[1].frauds, 0);
    assert!(
        s.label("nope", FeedbackKind::Fraudulent, &[])
            .expect("accepted")
            .is_none(),
        "an unknown payment cannot be labelled"
    );
}

/// An entry an operator adds, expiring at `expires_at_ms` (0: never).
fn entry(value: &str, expires_at_ms: i64) -> ListEntry {
    ListEntry {
        value: value.into(),
        added_at_ms: T0,
        reason: "ticket 1".into(),
        expires_at_ms,
        source: ListSource::Admin,
        payment_id: String::new(),
    }
}

/// Adds `value` to `list`; true when it was not there.
fn list_add(s: &dyn Store, list: List, value: &str, expires_at_ms: i64) -> bool {
    let added = s
        .list_add(list, s.key(value.as_bytes()), entry(value, expires_at_ms))
        .expect("accepted");
    added.map(saved).is_some()
}

fn lists_hold_entries_until_removed_or_expired(h: &dyn Harness) {
    let s = &**h.store();
    let k = s.key(b"a@example.com");
    assert!(s.lists_empty());
    assert!(list_add(s, List::BlockEmail, "a@example.com", 0));
    assert!(
        !list_add(s, List::BlockEmail, "a@example.com", 0),
        "listed once"
    );
    assert!(s.list_contains(List::BlockEmail, k));
    assert!(!s.lists_empty());
    assert!(!s.list_contains(List::AllowEmail, k));
    assert!(!s.list_contains(List::BlockEmail, s.key(b"b@example.com")));
    assert_eq!(s.stats().list_entries, 1);
    // What was said of it is listed back.
    let items = s.list_items(List::BlockEmail, None, 10);
    assert_eq!(items, [(k, entry("a@example.com", 0))]);
    // Taken off, it no longer applies; taking it off again does nothing.
    saved(
        s.list_remove(List::BlockEmail, k)
            .expect("accepted")
            .expect("was there"),
    );
    assert!(
        s.list_remove(List::BlockEmail, k)
            .expect("accepted")
            .is_none()
    );
    assert!(!s.list_contains(List::BlockEmail, k));
    assert!(s.lists_empty());
    // An entry whose expiry has passed does not apply, and a sweep forgets it.
    assert!(list_add(s, List::BlockIp, "203.0.113.9", 1_000));
    assert!(!s.list_contains(List::BlockIp, s.key(b"203.0.113.9")));
    s.sweep();
    assert!(s.list_items(List::BlockIp, None, 10).is_empty());
}

fn list_items_come_a_page_at_a_time(h: &dyn Harness) {
    let s = &**h.store();
    for i in 0..25 {
        assert!(list_add(s, List::AllowCustomerId, &format!("cus_{i}"), 0));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_items(List::AllowCustomerId, after, 10);
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        seen.extend(page.into_iter().map(|(_, e)| e.value));
    }
    seen.sort_unstable();
    let mut all: Vec<String> = (0..25).map(|i| format!("cus_{i}")).collect();
    all.sort_unstable();
    assert_eq!(seen, all, "every entry once, in three pages");
    assert!(s.list_items(List::AllowEmail, None, 10).is_empty());
}

fn a_fraud_label_adds_its_block_entries_once(h: &dyn Harness) {
    let s = &**h.store();
    observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    observe(s, &pay(s, "p2", T0 + MIN, "fp_1", "d1"));
    let reported = ListEntry {
        source: ListSource::Feedback,
        payment_id: "p1".into(),
        ..entry("", 0)
    };
    let block = [
        (List::BlockCardFingerprint, s.key(b"fp_1"), reported.clone()),
        (List::BlockEmail, s.key(b"a@example.com"), reported.clone()),
    ];
    let first = s
        .label("p1", FeedbackKind::Fraudulent, &block)
        .expect("accepted")
        .expect("payment known");
    assert_eq!(
        first.lists_added,
        [List::BlockCardFingerprint, List::BlockEmail]
    );
    saved(first.commit);
    assert!(block.iter().all(|(l, k, _)| s.list_contains(*l, *k)));
    let listed = s.list_items(List::BlockEmail, None, 10);
    assert_eq!(listed.first().map(|(_, e)| e), Some(&reported));
    let again = s
        .label("p2", FeedbackKind::DisputeFraud, &block)
        .expect("accepted")
        .expect("payment known");
    assert!(again.lists_added.is_empty(), "already listed");
    saved(again.commit);
    assert_eq!(s.stats().list_entries, 2);
    assert_eq!(
        s.payment("p2")
            .expect("the store answers")
            .and_then(|r| r.label),
        Some(FeedbackKind::DisputeFraud)
    );
}

fn sweep_forgets_idle_keys_and_old_payments(h: &dyn Harness) {
    let s = &**h.store();
    observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    observe(s, &pay(s, "p2", T0 + 2 * DAY, "fp_2", "d2"));
    // Cards 2, merchant 1, email 1, IP 1, devices 2.
    assert_eq!(s.stats().velocity_keys, 7);
    s.sweep();
    // The first device was idle for two days; cards and merchants are
    // kept for their 30-day windows; email and IP are shared.
    assert_eq!(s.stats().velocity_keys, 6);
    assert_eq!(s.stats().payments, 2, "payments are kept for feedback");
    observe(s, &pay(s, "p3", T0 + 200 * DAY, "fp_3", "d3"));
    s.sweep();
    assert!(
        s.payment("p1").expect("the store answers").is_none(),
        "past the retention"
    );
    assert!(s.payment("p3").expect("the store answers").is_some());
    assert_eq!(s.stats().payments, 1);
}

fn limits_refuse_new_methods_when_full(h: &dyn Harness) {
    let s = &**h.store();
    saved(
        s.register(stored(s, method("pm_1", "fp_1", None)))
            .expect("registered"),
    );
    saved(
        s.register(stored(s, method("pm_1", "fp_9", None)))
            .expect("replacing is allowed when full"),
    );
    assert!(matches!(
        s.register(stored(s, method("pm_2", "fp_2", None))),
        Err(StoreError::PaymentMethodsFull(1))
    ));
    assert!(
        s.payment_method("pm_2")
            .expect("the store answers")
            .is_none()
    );
}

/// A decision the holdout estimates read back.
fn decided(score: u8, allowed: bool, holdout: bool, propensity: f32) -> Decided {
    Decided {
        decided_by: DecidedBy::Model,
        true_score: score,
        allowed,
        holdout,
        allowed_propensity: propensity,
    }
}

/// Every remembered decision, oldest first.
fn decisions(s: &dyn Store) -> Vec<DecidedPayment> {
    let mut d = s.decisions().expect("the store answers");
    d.sort_by_key(|p| p.at_ms);
    d
}

fn decisions_are_kept_with_their_payments_and_labels(h: &dyn Harness) {
    let s = &**h.store();
    assert!(decisions(s).is_empty());
    observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    observe(s, &pay(s, "p2", T0 + MIN, "fp_2", "d2"));
    observe(s, &pay(s, "p3", T0 + 2 * MIN, "fp_3", "d3"));
    let list = Decided {
        decided_by: DecidedBy::List,
        ..decided(0, false, false, 0.0)
    };
    s.record_decision("p1", T0, decided(81, true, true, 0.05 / 2f32.sqrt()));
    s.record_decision("p2", T0 + MIN, list);
    // A retry keeps the first decision; an unknown payment gets none.
    s.record_decision("p1", T0, decided(20, false, false, 1.0));
    s.record_decision("p9", T0, decided(20, true, false, 1.0));
    label(s, "p1", FeedbackKind::Fraudulent);
    saved(s.sync());
    assert_eq!(
        decisions(s),
        [
            DecidedPayment {
                at_ms: T0,
                decided: decided(81, true, true, 0.05 / 2f32.sqrt()),
                label: Some(FeedbackKind::Fraudulent),
            },
            DecidedPayment {
                at_ms: T0 + MIN,
                decided: list,
                label: None,
            },
        ],
        "p3 has no decision and is left out"
    );
}

fn sync_completes(h: &dyn Harness) {
    let s = &**h.store();
    observe(s, &pay(s, "p1", T0, "fp_1", "d1"));
    saved(s.sync());
}

/// Instantiates the suite for one store kind: `$make(limits)` returns its harness.
macro_rules! conformance {
    ($make:expr) => {
        use super::*;

        fn run(limits: StoreLimits, case: fn(&dyn Harness)) {
            let h = $make(limits);
            case(&h);
        }

        #[test]
        fn registration_replaces_and_keeps_the_creation_session() {
            run(
                StoreLimits::default(),
                super::registration_replaces_and_keeps_the_creation_session,
            );
        }
        #[test]
        fn payments_count_once_per_id() {
            run(StoreLimits::default(), super::payments_count_once_per_id);
        }
        #[test]
        fn windows_count_the_last_hour_and_day() {
            run(
                StoreLimits::default(),
                super::windows_count_the_last_hour_and_day,
            );
        }
        #[test]
        fn distinct_cards_per_device_and_ip() {
            run(
                StoreLimits::default(),
                super::distinct_cards_per_device_and_ip,
            );
        }
        #[test]
        fn amount_ratios_are_seen_by_later_payments_only() {
            run(
                StoreLimits::default(),
                super::amount_ratios_are_seen_by_later_payments_only,
            );
        }
        #[test]
        fn merchant_windows_see_only_labels_that_have_arrived() {
            run(
                StoreLimits::default(),
                super::merchant_windows_see_only_labels_that_have_arrived,
            );
        }
        #[test]
        fn lists_hold_entries_until_removed_or_expired() {
            run(
                StoreLimits::default(),
                super::lists_hold_entries_until_removed_or_expired,
            );
        }
        #[test]
        fn list_items_come_a_page_at_a_time() {
            run(
                StoreLimits::default(),
                super::list_items_come_a_page_at_a_time,
            );
        }
        #[test]
        fn a_fraud_label_adds_its_block_entries_once() {
            run(
                StoreLimits::default(),
                super::a_fraud_label_adds_its_block_entries_once,
            );
        }
        #[test]
        fn sweep_forgets_idle_keys_and_old_payments() {
            run(
                StoreLimits::default(),
                super::sweep_forgets_idle_keys_and_old_payments,
            );
        }
        #[test]
        fn limits_refuse_new_methods_when_full() {
            let limits = StoreLimits {
                max_payment_methods: 1,
                ..StoreLimits::default()
            };
            run(limits, super::limits_refuse_new_methods_when_full);
        }
        #[test]
        fn decisions_are_kept_with_their_payments_and_labels() {
            run(
                StoreLimits::default(),
                super::decisions_are_kept_with_their_payments_and_labels,
            );
        }
        #[test]
        fn sync_completes() {
            run(StoreLimits::default(), super::sync_completes);
        }
    };
}

mod memory {
    conformance!(memory);
}

mod embedded {
    conformance!(embedded);
}

mod redis {
    conformance!(redis);
}

mod redis_cluster {
    conformance!(redis_cluster);
}

// ---- what an embedded store keeps across a reopen -----------------------

/// The velocity a store gives the payment `id` (already recorded) at `at`:
/// a retry is counted once, so this reads without changing anything.
fn probe(s: &dyn Store, id: &str, at: i64, card: &str, device: &str) -> Observed {
    let o = s.observe(&pay(s, id, at, card, device));
    assert!(!o.first, "{id} was recorded before");
    o
}

#[test]
fn everything_acknowledged_and_every_window_survives_a_reopen() {
    let mut h = embedded(StoreLimits::default());
    {
        let s = &**h.store();
        saved(
            s.register(stored(s, method("pm_1", "fp_1", Some("sess_a"))))
                .expect("registered"),
        );
        saved(
            s.register(stored(s, method("pm_2", "fp_2", None)))
                .expect("registered"),
        );
        for (i, at) in [T0, T0 + HOUR, T0 + DAY, T0 + 8 * DAY]
            .into_iter()
            .enumerate()
        {
            let id = format!("p{i}");
            let o = pay(s, &id, at, "fp_1", "d1");
            s.observe(&o);
            s.record_amount_ratio(&o, 1_000 + i as u32, i == 3);
            s.record_decision(&id, at, decided(70 + i as u8, i != 2, i == 1, 0.5));
        }
        label(s, "p1", FeedbackKind::Fraudulent);
        assert!(list_add(s, List::BlockEmail, "bad@example.com", 0));
        assert!(list_add(s, List::BlockEmail, "gone@example.com", 0));
        saved(
            s.list_remove(List::BlockEmail, s.key(b"gone@example.com"))
                .expect("accepted")
                .expect("was there"),
        );
        saved(s.sync());
    }
    let before = {
        let s = &**h.store();
        (
            probe(s, "p3", T0 + 8 * DAY, "fp_1", "d1"),
            s.payment("p1").expect("the store answers"),
            s.stats(),
            decisions(s),
        )
    };
    assert_eq!(before.3.len(), 4);
    let restored = h.reopen();
    let s = &**h.store();
    assert_eq!(restored.payment_methods, 2);
    assert_eq!(restored.payments, 4);
    assert_eq!(restored.list_entries, 1);
    assert_eq!(restored.damaged_files, 0);
    let m = s
        .payment_method("pm_1")
        .expect("the store answers")
        .expect("registration kept");
    assert_eq!(&m.creation_session_id[..], b"sess_a");
    assert!(m.creation.is_some());
    assert_eq!(s.payment("p1").expect("the store answers"), before.1);
    assert_eq!(decisions(s), before.3, "decisions and labels come back");
    assert_eq!(
        s.payment("p1")
            .expect("the store answers")
            .and_then(|r| r.label),
        Some(FeedbackKind::Fraudulent)
    );
    assert!(s.list_contains(List::BlockEmail, s.key(b"bad@example.com")));
    assert!(!s.list_contains(List::BlockEmail, s.key(b"gone@example.com")));
    assert_eq!(
        s.list_items(List::BlockEmail, None, 10)
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
        [entry("bad@example.com", 0)],
        "entries come back with what was said of them"
    );
    let after = probe(s, "p3", T0 + 8 * DAY, "fp_1", "d1");
    assert_eq!(after, before.0, "windows rebuilt as they were");
    assert_eq!(after.velocity.card_days[2].count, 4);
    assert_eq!(after.velocity.card_days[2].peak, 1_003, "ratios kept");
    assert_eq!(after.velocity.merchant_delayed[1].frauds, 1, "labels kept");
    let stats = s.stats();
    assert_eq!(
        (stats.payment_methods, stats.payments, stats.velocity_keys),
        (
            before.2.payment_methods,
            before.2.payments,
            before.2.velocity_keys
        )
    );
    // A second reopen reads the same again.
    let again = h.reopen();
    assert_eq!(again.payments, 4);
}

#[test]
fn snapshots_replace_old_logs_and_keep_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        snapshot_after_bytes: 4 << 10,
        max_file_bytes: 2 << 10,
        ..EmbeddedOptions::new(dir.path())
    };
    let (store, _) = EmbeddedStore::open(options.clone()).expect("opens");
    for i in 0..300 {
        let id = format!("pm_{i}");
        saved(
            store
                .register(stored(&store, method(&id, &format!("fp_{i}"), Some("s"))))
                .expect("registered"),
        );
        let pid = format!("p{i}");
        store.observe(&pay(&store, &pid, T0 + i * MIN, &format!("fp_{i}"), "d"));
        store.record_decision(
            &pid,
            T0 + i * MIN,
            decided((i % 100) as u8, true, false, 1.0),
        );
    }
    saved(store.sync());
    // Let the writer start its snapshot, then close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.stats().disk.map_or(0, |d| d.snapshots) == 0 && std::time::Instant::now() < deadline
    {
        saved(store.sync());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        store.stats().disk.map_or(0, |d| d.snapshots) > 0,
        "a snapshot was taken"
    );
    drop(store);
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("snapshot-")),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|f| f == "log-00000000000000000001.rlog"),
        "logs before the snapshot are gone: {files:?}"
    );
    let (store, restored) = EmbeddedStore::open(options).expect("reopens");
    assert_eq!(restored.payment_methods, 300);
    assert_eq!(restored.payments, 300);
    let kept = decisions(&store);
    assert_eq!(kept.len(), 300, "every decision is kept");
    assert!(
        kept.iter()
            .enumerate()
            .all(|(i, d)| d.decided == decided((i % 100) as u8, true, false, 1.0))
    );
    assert!(
        store
            .payment_method("pm_299")
            .expect("the store answers")
            .is_some()
    );
    assert!(store.payment("p0").expect("the store answers").is_some());
}

// ---- the Redis store's own server ------------------------------------------

#[path = "common/redis_server.rs"]
#[allow(dead_code)]
mod redis_server;

#[test]
fn a_test_redis_server_starts_answers_and_stops() {
    let mut server = redis_server::RedisServer::start(&[]);
    assert!(server.ping());
    let port = server.port;
    server.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is gone"
    );
    assert!(redis_server::shared().ping());
}

// ---- what the Redis store keeps in Redis, and two replicas on one Redis ----

/// Where the replicas' Redis is: the test binary's server or its cluster.
#[derive(Debug, Clone, Copy)]
enum Place {
    One,
    Cluster,
}

impl Place {
    fn url(self) -> String {
        match self {
            Place::One => redis_server::shared().url(),
            Place::Cluster => redis_server::shared_cluster().url(),
        }
    }

    /// A connection to each server (each master of the cluster).
    fn connections(self) -> Vec<::redis::Connection> {
        match self {
            Place::One => vec![redis_server::shared().connection()],
            Place::Cluster => redis_server::shared_cluster()
                .nodes
                .iter()
                .map(|n| n.connection())
                .collect(),
        }
    }
}

/// Two Redis stores on one namespace at `place`: two replicas.
fn replicas_at(place: Place) -> (RedisStore, RedisStore, String) {
    let prefix = redis_server::prefix();
    let open = || {
        RedisStore::open(RedisOptions {
            prefix: prefix.clone(),
            ..RedisOptions::new(place.url())
        })
        .expect("opens")
    };
    (open(), open(), prefix)
}

/// Runs `body` on one Redis (`$one`) and on the cluster (`$cluster`).
macro_rules! on_both {
    ($one:ident, $cluster:ident, $body:ident) => {
        #[test]
        fn $one() {
            $body(Place::One);
        }
        #[test]
        fn $cluster() {
            $body(Place::Cluster);
        }
    };
}

on_both!(
    redis_keys_are_namespaced_hashed_and_expire,
    redis_cluster_keys_are_namespaced_hashed_and_expire,
    keys_are_namespaced_hashed_and_expire
);

fn keys_are_namespaced_hashed_and_expire(place: Place) {
    let (s, _, prefix) = replicas_at(place);
    saved(
        s.register(stored(&s, method("pm_1", "fp_1", Some("sess_a"))))
            .expect("registered"),
    );
    s.observe(&pay(&s, "pay_1", T0, "fp_1", "dev_1"));
    assert!(list_add(&s, List::BlockEmail, "jane@example.com", 0));
    let mut keys = Vec::new();
    for mut c in place.connections() {
        let held: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut c)
            .expect("keys");
        keys.extend(held.into_iter().map(|k| {
            let ttl: i64 = ::redis::cmd("PTTL").arg(&k).query(&mut c).expect("pttl");
            (k, ttl)
        }));
    }
    assert!(keys.len() >= 10, "{keys:?}");
    for (k, ttl) in &keys {
        for raw in [
            "fp_1",
            "jane",
            "example.com",
            "dev_1",
            "pay_1",
            "pm_1",
            "acct_1",
        ] {
            assert!(!k.contains(raw), "{k} names a raw value");
        }
        // One hash tag per entity: its keys share a cluster slot.
        assert_eq!(k.matches('{').count(), 1, "{k}");
        let windows_or_payment = k.contains("{p:") || k.ends_with(":s") || k.ends_with(":l");
        if windows_or_payment {
            assert!(*ttl > 0, "{k} has no expiry");
        }
    }
}

#[test]
fn redis_cluster_keys_are_spread_over_the_three_masters() {
    let (s, _, prefix) = replicas_at(Place::Cluster);
    for i in 0..100 {
        s.observe(&pay(&s, &format!("p{i}"), T0 + i, &format!("fp_{i}"), "d"));
    }
    let held: Vec<usize> = Place::Cluster
        .connections()
        .into_iter()
        .map(|mut c| {
            ::redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query::<Vec<String>>(&mut c)
                .expect("keys")
                .len()
        })
        .collect();
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|n| *n > 20), "keys per master: {held:?}");
    let v = s.observe(&pay(&s, "p0", T0 + 1_000, "fp_0", "d")).velocity;
    assert_eq!(
        (v.card_1h, v.device_1h),
        (1, 100),
        "a retry reads them back"
    );
}

on_both!(
    redis_replicas_count_every_payment_of_a_card_under_concurrent_updates,
    redis_cluster_replicas_count_every_payment_of_a_card_under_concurrent_updates,
    replicas_count_every_payment_of_a_card_under_concurrent_updates
);

fn replicas_count_every_payment_of_a_card_under_concurrent_updates(place: Place) {
    let (a, b, _) = replicas_at(place);
    let per_replica = 200;
    std::thread::scope(|scope| {
        for (name, s) in [("a", &a), ("b", &b)] {
            scope.spawn(move || {
                for i in 0..per_replica {
                    let id = format!("{name}{i}");
                    s.observe(&pay(s, &id, T0 + i, "fp_shared", "d1"));
                }
            });
        }
    });
    let v = a
        .observe(&pay(&a, "last", T0 + 1_000, "fp_shared", "d1"))
        .velocity;
    assert_eq!(v.card_1h, 2 * per_replica as u32 + 1, "no lost increment");
    assert_eq!(v.device_24h, 2 * per_replica as u32 + 1);
    assert_eq!(v.card_days[2].count, 2 * per_replica as u32 + 1);
    let again = b.observe(&pay(&b, "a7", T0 + 2_000, "fp_shared", "d1"));
    assert!(
        !again.first,
        "a payment recorded by one replica is a retry on the other"
    );
}

/// Waits up to `within` for `cond`; how long it took.
fn within(within: std::time::Duration, cond: impl Fn() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    None
}

on_both!(
    redis_a_change_through_one_replica_reaches_the_others_cache_within_100_ms,
    redis_cluster_a_change_through_one_replica_reaches_the_others_cache_within_100_ms,
    a_change_through_one_replica_reaches_the_others_cache_within_100_ms
);

fn a_change_through_one_replica_reaches_the_others_cache_within_100_ms(place: Place) {
    let (a, b, _) = replicas_at(place);
    let limit = std::time::Duration::from_millis(100);
    // A registration made on A is read by B (absences are never cached).
    saved(
        a.register(stored(&a, method("pm_1", "fp_1", Some("sess_a"))))
            .expect("registered"),
    );
    let m = b
        .payment_method("pm_1")
        .expect("the store answers")
        .expect("B reads A's registration");
    assert_eq!(&m.creation_session_id[..], b"sess_a");
    // Replaced on A, B's cached copy goes.
    saved(
        a.register(stored(&a, method("pm_1", "fp_2", Some("sess_b"))))
            .expect("replaced"),
    );
    let took = within(limit, || {
        b.payment_method("pm_1")
            .expect("the store answers")
            .is_some_and(|m| &m.creation_session_id[..] == b"sess_b")
    });
    assert!(
        took.is_some(),
        "B still holds the old registration after {limit:?}"
    );
    // A list entry added, labelled and taken off on A applies on B.
    let k = b.key(b"jane@example.com");
    assert!(list_add(&a, List::BlockEmail, "jane@example.com", 0));
    let took = within(limit, || b.list_contains(List::BlockEmail, k));
    assert!(took.is_some(), "B does not see the entry after {limit:?}");
    eprintln!("a list entry reached the other replica in {took:?}");
    assert_eq!(
        b.list_items(List::BlockEmail, None, 10),
        a.list_items(List::BlockEmail, None, 10),
        "the value and history listed back agree"
    );
    a.observe(&pay(&a, "p1", T0, "fp_9", "d9"));
    let labelled = a
        .label(
            "p1",
            FeedbackKind::Fraudulent,
            &[(
                List::BlockCardFingerprint,
                a.key(b"fp_9"),
                ListEntry {
                    source: ListSource::Feedback,
                    payment_id: "p1".into(),
                    ..entry("", 0)
                },
            )],
        )
        .expect("labelled")
        .expect("payment known");
    assert_eq!(labelled.lists_added, [List::BlockCardFingerprint]);
    let took = within(limit, || {
        b.list_contains(List::BlockCardFingerprint, b.key(b"fp_9"))
    });
    assert!(took.is_some(), "a fraud report's entry did not reach B");
    saved(
        a.list_remove(List::BlockEmail, k)
            .expect("accepted")
            .expect("was there"),
    );
    assert!(within(limit, || !b.list_contains(List::BlockEmail, k)).is_some());
    assert_eq!(
        b.payment("p1")
            .expect("the store answers")
            .and_then(|r| r.label),
        Some(FeedbackKind::Fraudulent)
    );
}

on_both!(
    redis_payments_without_some_keys_are_counted_and_read_back,
    redis_cluster_payments_without_some_keys_are_counted_and_read_back,
    payments_without_some_keys_are_counted_and_read_back
);

fn payments_without_some_keys_are_counted_and_read_back(place: Place) {
    let (s, _, _) = replicas_at(place);
    let only_card = |id| Observation {
        payment_id: id,
        at_ms: T0,
        amount: 700,
        card: Some(s.key(b"fp_1")),
        email: None,
        ip: None,
        device: None,
        merchant: None,
    };
    let first = s.observe(&only_card("p1"));
    assert!(first.first);
    assert_eq!(first.velocity.card_1h, 1);
    let retry = s.observe(&only_card("p1"));
    assert!(!retry.first);
    assert_eq!(
        (retry.velocity.card_1h, retry.velocity.card_days[2].count),
        (1, 1)
    );
    let none = s.observe(&Observation {
        card: None,
        ..only_card("p2")
    });
    assert!(none.first);
    assert_eq!(none.velocity, Default::default());
}

on_both!(
    redis_batches_record_each_amount_ratio_as_the_engine_computes_it,
    redis_cluster_batches_record_each_amount_ratio_as_the_engine_computes_it,
    batches_record_each_amount_ratio_as_the_engine_computes_it
);

fn batches_record_each_amount_ratio_as_the_engine_computes_it(place: Place) {
    // One card's payments, some in one batch, with amounts from cents to
    // the largest accepted (where amount x count x 1000 passes 2^53 and the
    // script's arithmetic must stay exact), against a memory store to which
    // the engine's ratio is given one by one.
    let (s, _, _) = replicas_at(place);
    let remote = riskstream::state::Store::remote(&s).expect("Redis is remote");
    let memory = MemoryStore::new(StoreLimits::default(), 1);
    // Ten payments of 4,300,001 in all, then one whose exact ratio,
    // 2,147,490,000, is one below what dividing in doubles gives.
    let mut amounts: Vec<i64> = vec![430_000; 9];
    amounts.extend([430_001, 923_420_915_179]);
    amounts.extend(
        [
            1_000,
            999_999_999_999,
            1,
            7,
            1_000_000_000_000,
            333_333_333_333,
            2_500,
            999_999_999_999,
            1_000_000_000_000,
            3,
        ]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
        .map(|(i, a)| a - i as i64 % 3),
    );
    let ids: Vec<String> = (0..amounts.len()).map(|i| format!("p{i}")).collect();
    let obs = |st: &dyn Store, i: usize| Observation {
        amount: amounts[i],
        ..pay(st, &ids[i], T0 + i as i64 * MIN, "fp_1", "d1")
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut on_redis = Vec::new();
    for chunk in (0..amounts.len()).collect::<Vec<_>>().chunks(7) {
        let batch: Vec<Observation<'_>> = chunk.iter().map(|&i| obs(&s, i)).collect();
        let got = rt.block_on(remote.observe_batch(&batch)).expect("observed");
        on_redis.extend(got.observed);
    }
    let mut ratios = Vec::new();
    for (i, redis) in on_redis.iter().enumerate() {
        let o = obs(&memory, i);
        let v = memory.observe(&o);
        let ratio = riskstream::features::card_amount_ratio(&o, &v.velocity);
        memory.record_amount_ratio(&o, ratio, ratio >= riskstream::features::SPIKE_RATIO);
        ratios.push(ratio);
        assert_eq!(
            redis.velocity.card_days, v.velocity.card_days,
            "payment {i}: the card's windows, peaks included"
        );
    }
    assert!(ratios.iter().any(|r| *r >= 2_500) && ratios.iter().any(|r| (1..2_500).contains(r)));
    assert_eq!(ratios[10], 2_147_490_000);
    // A retry records nothing again.
    let again = rt
        .block_on(remote.observe_batch(&[obs(&s, 3)]))
        .expect("observed");
    assert!(!again.observed[0].first);
}
