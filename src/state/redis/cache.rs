//! The local cache of the Redis store: payment methods and every list entry,
//! kept fresh by the replicas' change messages (Redis pub/sub).
//!
//! - Payment methods are cached when read; a registration through any
//!   replica publishes `m <id hash>` and every replica drops its copy. A
//!   method not held is never cached as absent: a registration made through
//!   another replica is read from Redis by the next payment that names it.
//!   A read that raced a change is not cached (a generation counter tells).
//! - Lists are held whole. Every list change increments the lists version
//!   in Redis and publishes `<version> a <list> <key> <entry>` or
//!   `<version> r <list> <key>`; a replica applies them in order, and reads
//!   every list again (with the version, atomically) when it subscribes,
//!   resubscribes, or misses a version.

use crate::state::{Key, List, ListEntry, StoredMethod};
use dashmap::DashMap;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use tokio::sync::watch;

/// What a replica holds of the shared state.
#[derive(Debug)]
pub(super) struct Cache {
    /// Payment methods, by the hash of their id.
    methods: DashMap<String, Arc<StoredMethod>>,
    /// Moves on each invalidation: a read that started before one is not cached.
    generation: AtomicU64,
    /// Each list's entries, by key.
    lists: [RwLock<BTreeMap<u64, ListEntry>>; List::ALL.len()],
    /// Entries over all lists.
    entries: AtomicUsize,
    /// The lists version applied.
    version: watch::Sender<u64>,
    /// Whether change messages are being received (subscribed, lists read).
    pub(super) live: AtomicBool,
    /// Method lookups answered here, and missed.
    lookups: [AtomicU64; 2],
}

/// The wall clock, in ms since the epoch (list entries expire by it).
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What applying a change message did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Applied {
    /// Applied, or already seen.
    Done,
    /// A version was missed: every list must be read again.
    Gap,
    /// Not a message this store sends.
    Unknown,
}

impl Cache {
    /// An empty cache.
    pub(super) fn new() -> Cache {
        Cache {
            methods: DashMap::new(),
            generation: AtomicU64::new(0),
            lists: std::array::from_fn(|_| RwLock::default()),
            entries: AtomicUsize::new(0),
            version: watch::channel(0).0,
            live: AtomicBool::new(false),
            lookups: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The generation to hand back to [`Cache::put_method`].
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The cached method whose id hashes to `id` (a lookup, counted).
    pub(super) fn method(&self, id: &str) -> Option<Arc<StoredMethod>> {
        let found = self.methods.get(id).map(|m| Arc::clone(&m));
        self.lookups[usize::from(found.is_none())].fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Lookups answered here, and missed.
    pub(super) fn lookups(&self) -> (u64, u64) {
        (
            self.lookups[0].load(Ordering::Relaxed),
            self.lookups[1].load(Ordering::Relaxed),
        )
    }

    /// Caches a method read at `generation`, unless a change came since.
    pub(super) fn put_method(&self, id: String, method: Arc<StoredMethod>, generation: u64) {
        if self.generation() == generation && self.live.load(Ordering::Acquire) {
            self.methods.insert(id, method);
        }
    }

    /// Drops the method whose id hashes to `id`.
    pub(super) fn drop_method(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.methods.remove(id);
    }

    /// Drops every cached method (change messages may have been missed).
    pub(super) fn drop_methods(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.methods.clear();
    }

    fn list(&self, list: List) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, ListEntry>> {
        self.lists[list as usize]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn list_mut(&self, list: List) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, ListEntry>> {
        self.lists[list as usize]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `list` holds `key` in an entry that has not expired.
    pub(super) fn contains(&self, list: List, key: Key) -> bool {
        self.list(list)
            .get(&key.0)
            .is_some_and(|e| !e.expired(wall_clock_ms()))
    }

    /// Whether every list is empty.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.load(Ordering::Relaxed) == 0
    }

    /// Up to `limit` entries of `list` after `after`, in key order.
    pub(super) fn items(
        &self,
        list: List,
        after: Option<Key>,
        limit: usize,
    ) -> Vec<(Key, ListEntry)> {
        let from = after.map_or(std::ops::Bound::Unbounded, |k| {
            std::ops::Bound::Excluded(k.0)
        });
        self.list(list)
            .range((from, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(k, e)| (Key(*k), e.clone()))
            .collect()
    }

    /// Puts an entry on a list (a change this replica made, or was told of).
    pub(super) fn put(&self, list: List, key: u64, entry: ListEntry) {
        if self.list_mut(list).insert(key, entry).is_none() {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes an entry off a list.
    pub(super) fn remove(&self, list: List, key: u64) {
        if self.list_mut(list).remove(&key).is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The lists version applied.
    pub(super) fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Waits until the lists version applied is at least `version`.
    pub(super) async fn reached(&self, version: u64) {
        let mut rx = self.version.subscribe();
        let _ = rx.wait_for(|v| *v >= version).await;
    }

    /// Replaces every list with what was read at `version`.
    pub(super) fn replace(&self, version: u64, lists: Vec<(List, BTreeMap<u64, ListEntry>)>) {
        let mut total = 0;
        for (list, entries) in lists {
            total += entries.len();
            *self.list_mut(list) = entries;
        }
        self.entries.store(total, Ordering::Relaxed);
        self.version.send_replace(version);
    }

    /// Applies one change message.
    pub(super) fn apply(&self, message: &str) -> Applied {
        if let Some(id) = message.strip_prefix("m ") {
            self.drop_method(id);
            return Applied::Done;
        }
        let Some((version, change)) = message.split_once(' ') else {
            return Applied::Unknown;
        };
        let Ok(version) = version.parse::<u64>() else {
            return Applied::Unknown;
        };
        let applied = self.version();
        if version <= applied {
            return Applied::Done;
        }
        if version != applied + 1 {
            return Applied::Gap;
        }
        if !self.apply_change(change) {
            return Applied::Unknown;
        }
        self.version.send_replace(version);
        Applied::Done
    }

    /// Applies `a <list> <key> <entry>` or `r <list> <key>`; false when it
    /// is neither.
    pub(super) fn apply_change(&self, change: &str) -> bool {
        let mut parts = change.splitn(4, ' ');
        let (Some(op), Some(list), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let (Some(list), Ok(key)) = (List::from_name(list), u64::from_str_radix(key, 16)) else {
            return false;
        };
        match (op, parts.next()) {
            ("a", Some(entry)) => match serde_json::from_str::<ListEntry>(entry) {
                Ok(entry) => {
                    self.put(list, key, entry);
                    true
                }
                Err(_) => false,
            },
            ("r", _) => {
                self.remove(list, key);
                true
            }
            _ => false,
        }
    }
}

/// The message telling of an entry added (after the version).
pub(super) fn added(list: List, key: u64, entry_json: &str) -> String {
    format!("a {} {key:016x} {entry_json}", list.name())
}

/// The message telling of an entry taken off (after the version).
pub(super) fn removed(list: List, key: u64) -> String {
    format!("r {} {key:016x}", list.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ListSource;

    fn entry(value: &str) -> ListEntry {
        ListEntry {
            value: value.into(),
            added_at_ms: 1,
            reason: "r".into(),
            expires_at_ms: 0,
            source: ListSource::Admin,
            payment_id: String::new(),
        }
    }

    #[test]
    fn changes_apply_in_order_and_a_missed_one_asks_for_a_reload() {
        let c = Cache::new();
        let json = serde_json::to_string(&entry("a@example.com")).expect("json");
        let add = format!("1 {}", added(List::BlockEmail, 7, &json));
        assert_eq!(c.apply(&add), Applied::Done);
        assert!(c.contains(List::BlockEmail, Key(7)));
        assert_eq!(c.apply(&add), Applied::Done, "seen already");
        assert_eq!(c.items(List::BlockEmail, None, 10).len(), 1);
        let gap = format!("3 {}", removed(List::BlockEmail, 7));
        assert_eq!(c.apply(&gap), Applied::Gap);
        assert!(c.contains(List::BlockEmail, Key(7)));
        let remove = format!("2 {}", removed(List::BlockEmail, 7));
        assert_eq!(c.apply(&remove), Applied::Done);
        assert!(c.is_empty() && c.version() == 2);
        assert_eq!(c.apply("2 x"), Applied::Done, "an old version is skipped");
        assert_eq!(c.apply("9 x y z"), Applied::Gap);
        assert_eq!(c.apply("nonsense"), Applied::Unknown);
    }
}
