//! The embedded store: the memory store's working set, made durable in a
//! data directory by a log of every change (checksummed records, written
//! and synced by one thread in group commits) and by snapshots that let old
//! logs go. Reads never touch the disk.
//!
//! What is saved, and when:
//! - registrations, labels and list entries are saved (synced) before
//!   their commit completes, and only then applied, so that what the
//!   service acknowledges is on disk and what failed to save leaves no
//!   trace;
//! - scored payments (what their windows count, and the record late
//!   feedback needs) are counted at once and saved within the sync interval.
//!
//! On open the newest snapshot and the logs after it are read back (a torn
//! or corrupt frame ends a file with one warning naming it and the offset),
//! and the velocity windows are rebuilt from the remembered payments.
//!
//! - [`files`]: the directory, its lock and hash key.
//! - [`record`]: the records and their framing.
//! - [`log`]: the writer thread and group commit.
//! - [`snapshot`]: the snapshots.

mod files;
mod log;
mod record;
mod snapshot;

pub use files::OpenError;

use super::memory::{MemoryStore, Slot, label_code, label_of};
use super::{
    Commit, Decided, DecidedPayment, DiskStats, Key, Labelled, List, ListEntry, ListSource,
    Observation, Observed, PaymentRecord, Store, StoreError, StoreLimits, StoreStats, StoredMethod,
};
use crate::domain::FeedbackKind;
use files::{DirLock, LOG_MAGIC, SNAPSHOT_MAGIC, io_err, listing, log_path, snapshot_path};
use log::{Apply, Log, LogCounters, LogOptions, Start};
use record::Record;
use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// Bounds on what the store holds.
    pub limits: StoreLimits,
    /// How long a scored payment's record may wait to be synced.
    pub sync_interval: Duration,
    /// Bytes allowed to wait for the disk; past them scored payments are not
    /// saved (counted) and durable writes answer `UNAVAILABLE`.
    pub max_pending_bytes: usize,
    /// Size at which a log file is closed and the next begun.
    pub max_file_bytes: u64,
    /// Log bytes after which a snapshot is taken (or the last snapshot's
    /// size, if larger).
    pub snapshot_after_bytes: u64,
}

impl EmbeddedOptions {
    /// The defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> EmbeddedOptions {
        EmbeddedOptions {
            dir: dir.into(),
            limits: StoreLimits::default(),
            sync_interval: Duration::from_millis(100),
            max_pending_bytes: 256 << 20,
            max_file_bytes: 64 << 20,
            snapshot_after_bytes: 64 << 20,
        }
    }
}

/// What opening the store read back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    /// Payment methods restored.
    pub payment_methods: usize,
    /// Remembered payments restored.
    pub payments: usize,
    /// List entries restored.
    pub list_entries: usize,
    /// Velocity keys rebuilt from the payments.
    pub velocity_keys: usize,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Files that ended in a torn or corrupt frame.
    pub damaged_files: usize,
    /// How long it took.
    pub seconds: f64,
}

/// The durable store. Closing it (or dropping it) saves what is queued.
pub struct EmbeddedStore {
    /// Each reply waits for its sync (`--sync-interval 0`): a retried
    /// payment's record is queued again, so that its sync covers it even
    /// if the first one's save failed.
    resave_retries: bool,
    memory: Arc<MemoryStore>,
    log: Log,
    counters: Arc<LogCounters>,
    _lock: Arc<DirLock>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

/// A random 64-bit value from the OS-seeded hasher keys.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// A data directory locked for this process, not read yet.
#[derive(Debug)]
pub struct Locked {
    options: EmbeddedOptions,
    lock: DirLock,
    seed: u64,
}

impl Locked {
    /// Reads back what the directory holds and starts the writer. Blocks
    /// while it reads.
    pub fn open(self) -> Result<(EmbeddedStore, Restored), OpenError> {
        let started = Instant::now();
        let Locked {
            options,
            lock,
            seed,
        } = self;
        let dir = &options.dir;
        let lock = Arc::new(lock);
        let memory = Arc::new(MemoryStore::new(options.limits, seed));
        let (mut restored, start) = restore(dir, &memory)?;
        let counters = Arc::new(LogCounters::default());
        let log = Log::start(
            start,
            Arc::clone(&lock),
            Arc::clone(&memory),
            LogOptions {
                sync_interval: options.sync_interval,
                max_pending_bytes: options.max_pending_bytes,
                max_file_bytes: options.max_file_bytes,
                snapshot_after_bytes: options.snapshot_after_bytes,
            },
            Arc::clone(&counters),
        )
        .map_err(io_err(dir))?;
        let stats = memory.stats();
        restored.payment_methods = stats.payment_methods;
        restored.payments = stats.payments;
        restored.list_entries = stats.list_entries;
        restored.velocity_keys = stats.velocity_keys;
        restored.seconds = started.elapsed().as_secs_f64();
        Ok((
            EmbeddedStore {
                resave_retries: options.sync_interval.is_zero(),
                memory,
                log,
                counters,
                _lock: lock,
            },
            restored,
        ))
    }
}

impl EmbeddedStore {
    /// Takes the lock of `options.dir` (created if missing): a directory in
    /// use by another process is refused, naming its lock.
    pub fn lock(options: EmbeddedOptions) -> Result<Locked, OpenError> {
        let lock = files::lock(&options.dir)?;
        let seed = files::hash_key(&options.dir, random_u64)?;
        Ok(Locked {
            options,
            lock,
            seed,
        })
    }

    /// [`EmbeddedStore::lock`], then [`Locked::open`].
    pub fn open(options: EmbeddedOptions) -> Result<(EmbeddedStore, Restored), OpenError> {
        EmbeddedStore::lock(options)?.open()
    }

    /// Saves what is queued and stops the writer; later writes are refused.
    pub fn close(&self) {
        self.log.close();
    }

    /// Queues durable records, saved in one batch, whose changes `applies`
    /// take once they are saved.
    fn durable(&self, records: &[Record<'_>], applies: Vec<Apply>) -> Result<Commit, StoreError> {
        let (commit, ack) = Commit::pending();
        self.log.append(records, Some((ack, applies)))?;
        Ok(commit)
    }

    /// Queues a record saved within the sync interval.
    fn lazy(&self, record: Record<'_>) {
        // Refused only when the store is closed: the change is in memory.
        let _ = self.log.append(&[record], None);
    }
}

/// What reading one store file found.
enum FileRead {
    /// Shorter than its header: created, never written (a crash while a new
    /// log was being started).
    Empty,
    /// Not a store file of this version: left untouched.
    Foreign,
    /// Its frames (and its size).
    Read(record::Reading, u64),
}

/// Reads `path` (a file starting with `magic`), calling `f` on each record.
fn read_file(
    path: &Path,
    magic: &[u8; 8],
    f: impl FnMut(Record<'static>),
) -> Result<FileRead, OpenError> {
    let file = File::open(path).map_err(io_err(path))?;
    let bytes = file.metadata().map_err(io_err(path))?.len();
    if bytes < magic.len() as u64 {
        return Ok(FileRead::Empty);
    }
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 8];
    if input.read_exact(&mut head).is_err() || &head != magic {
        return Ok(FileRead::Foreign);
    }
    let reading = record::read_frames(&mut input, magic.len() as u64, f);
    Ok(FileRead::Read(reading, bytes))
}

/// Reports what was damaged in a file read back; the damaged tail to cut
/// off, if any (no sound frame follows it).
fn report(path: &Path, read: &FileRead, restored: &mut Restored) -> Option<record::Damage> {
    match read {
        FileRead::Empty => None,
        FileRead::Foreign => {
            restored.damaged_files += 1;
            tracing::error!(
                file = %path.display(),
                "not a riskstream store file of this version: left as it is and not read"
            );
            None
        }
        FileRead::Read(reading, _) => {
            if let Some(d) = reading.first_skip {
                tracing::warn!(
                    file = %path.display(),
                    offset = d.offset,
                    found = d.what,
                    damaged = reading.skipped,
                    "store file damaged: its damaged records are skipped, the records after them read"
                );
            }
            if let Some(d) = reading.tail {
                tracing::warn!(
                    file = %path.display(),
                    offset = d.offset,
                    found = d.what,
                    "store file damaged (a torn or corrupt tail): the rest of the file is skipped"
                );
            }
            if reading.first_skip.is_some() || reading.tail.is_some() {
                restored.damaged_files += 1;
            }
            restored.records += reading.records;
            reading.tail
        }
    }
}

/// Applies the records read back to the memory store.
struct Restorer<'a> {
    memory: &'a MemoryStore,
    /// Labels read before their payment's record (a fraud report racing the
    /// payment's own record into the log): applied when it comes.
    early_labels: std::collections::HashMap<(u64, u32), FeedbackKind>,
}

impl Restorer<'_> {
    /// Applies `record`; true for a snapshot's end.
    fn apply(&mut self, record: Record<'static>) -> bool {
        let memory = self.memory;
        match record {
            Record::Method(m) => {
                let m = StoredMethod::of(m.into_owned(), |v| memory.key(v));
                memory.put_method(Arc::new(m));
            }
            Record::Payment { key, payment } => {
                memory.restore_payment(key, payment);
                if let Some(kind) = self.early_labels.remove(&(key, payment.check)) {
                    memory.label_slot(key, payment.check, kind, false);
                }
            }
            Record::Ratio {
                key,
                check,
                ratio,
                spike,
            } => memory.restore_ratio(key, check, ratio, spike),
            Record::Decision {
                key,
                check,
                code,
                score,
                propensity,
            } => {
                if let Some(decided) = Decided::of_code(code, score, propensity) {
                    memory.decide_slot(key, check, decided);
                }
            }
            Record::Label { key, check, label } => {
                if let Some(kind) = label_of(label)
                    && !memory.label_slot(key, check, kind, false)
                {
                    self.early_labels.insert((key, check), kind);
                }
            }
            Record::ListAdd { list, key } => {
                // The first format's entries, without what was said of them.
                if let Some(list) = List::ALL.get(usize::from(list)) {
                    let entry = ListEntry {
                        value: String::new(),
                        added_at_ms: 0,
                        reason: String::new(),
                        expires_at_ms: 0,
                        source: ListSource::Feedback,
                        payment_id: String::new(),
                    };
                    memory.put_list_entry(*list, key, entry);
                }
            }
            Record::ListEntry { list, key, entry } => {
                if let Some(list) = List::ALL.get(usize::from(list)) {
                    memory.put_list_entry(*list, key, entry.into_owned());
                }
            }
            Record::ListRemove { list, key } => {
                if let Some(list) = List::ALL.get(usize::from(list)) {
                    memory.remove_list_entry(*list, key);
                }
            }
            Record::End { .. } => return true,
        }
        false
    }
}

/// Reads the newest snapshot and the logs after it into `memory`, then
/// rebuilds the windows; what was read and where the writer starts.
fn restore(dir: &Path, memory: &MemoryStore) -> Result<(Restored, Start), OpenError> {
    let (logs, snapshots) = listing(dir)?;
    remove_leftovers(dir);
    let mut restored = Restored::default();
    let mut restorer = Restorer {
        memory,
        early_labels: Default::default(),
    };
    let base = snapshots.last().copied();
    let mut snapshot_bytes = 0;
    if let Some(n) = base {
        let path = snapshot_path(dir, n);
        let mut ended = false;
        let read = read_file(&path, SNAPSHOT_MAGIC, |r| {
            ended |= restorer.apply(r);
        })?;
        let tail = report(&path, &read, &mut restored);
        if let FileRead::Read(_, bytes) = read {
            snapshot_bytes = bytes;
            if !ended && tail.is_none() {
                restored.damaged_files += 1;
                tracing::warn!(file = %path.display(), offset = bytes, "the snapshot ends early; what it holds is used");
            }
        }
    }
    let mut log_bytes = 0;
    let mut expected = base;
    for n in logs.iter().copied().filter(|n| *n >= base.unwrap_or(0)) {
        if let Some(e) = expected
            && n != e
        {
            tracing::error!(
                dir = %dir.display(),
                missing_from = e,
                missing_to = n - 1,
                "store logs are missing: the changes they held are lost"
            );
        }
        expected = Some(n + 1);
        let path = log_path(dir, n);
        let read = read_file(&path, LOG_MAGIC, |r| {
            restorer.apply(r);
        })?;
        if let FileRead::Read(_, bytes) = read {
            log_bytes += bytes;
        }
        if matches!(read, FileRead::Empty) {
            // Never written: nothing to keep.
            let _ = std::fs::remove_file(&path);
        }
        if let Some(tail) = report(&path, &read, &mut restored) {
            // Cut it there (no sound frame follows), so that the next start
            // reads a whole file.
            let cut = OpenOptions::new().write(true).open(&path).and_then(|f| {
                f.set_len(tail.offset.max(LOG_MAGIC.len() as u64))?;
                f.sync_all()
            });
            if let Err(e) = cut {
                tracing::warn!(file = %path.display(), error = %e, "cannot cut the damaged log");
            }
        }
    }
    restored.bytes = snapshot_bytes + log_bytes;
    memory.sweep_expired_entries();
    memory.rebuild_windows();
    memory.sweep();
    let next_file = logs.last().copied().max(base).map_or(1, |n| n + 1);
    Ok((
        restored,
        Start {
            dir: dir.to_owned(),
            next_file,
            snapshot_bytes,
            log_bytes,
        },
    ))
}

/// Deletes the temporary files of snapshots that did not finish.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".rsnap.tmp"))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Store for EmbeddedStore {
    fn key(&self, value: &[u8]) -> Key {
        self.memory.key(value)
    }

    fn register(&self, method: StoredMethod) -> Result<Commit, StoreError> {
        self.memory.has_room_for(&method.method.id)?;
        let method = Arc::new(method);
        let record = Record::Method(Cow::Borrowed(&method.method));
        self.durable(&[record], vec![Apply::Method(Arc::clone(&method))])
    }

    fn payment_method(&self, id: &str) -> Result<Option<Arc<StoredMethod>>, StoreError> {
        self.memory.payment_method(id)
    }

    fn observe(&self, obs: &Observation<'_>) -> Observed {
        let observed = self.memory.observe(obs);
        let (key, check) = self.memory.payment_key(obs.payment_id);
        let payment = if observed.first {
            Some(Slot::of(obs, check))
        } else if self.resave_retries {
            self.memory.payment_slot(key).filter(|s| s.check == check)
        } else {
            None
        };
        if let Some(payment) = payment {
            self.lazy(Record::Payment { key, payment });
        }
        observed
    }

    fn record_amount_ratio(&self, obs: &Observation<'_>, ratio: u32, spike: bool) {
        self.memory.record_amount_ratio(obs, ratio, spike);
        let (key, check) = self.memory.payment_key(obs.payment_id);
        self.lazy(Record::Ratio {
            key,
            check,
            ratio,
            spike,
        });
    }

    fn payment(&self, payment_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.memory.payment(payment_id)
    }

    fn record_decision(&self, payment_id: &str, _at_ms: i64, decided: Decided) {
        let (key, check) = self.memory.payment_key(payment_id);
        if self.memory.decide_slot(key, check, decided) {
            self.lazy(Record::Decision {
                key,
                check,
                code: decided.code(),
                score: decided.true_score,
                propensity: decided.allowed_propensity,
            });
        }
    }

    fn decisions(&self) -> Result<Vec<DecidedPayment>, StoreError> {
        self.memory.decisions()
    }

    fn label(
        &self,
        payment_id: &str,
        kind: FeedbackKind,
        block: &[(List, Key, ListEntry)],
    ) -> Result<Option<Labelled>, StoreError> {
        if self.memory.payment(payment_id)?.is_none() {
            return Ok(None);
        }
        let (key, check) = self.memory.payment_key(payment_id);
        let mut records = vec![Record::Label {
            key,
            check,
            label: label_code(Some(kind)),
        }];
        let mut applies = vec![Apply::Label { key, check, kind }];
        let mut lists_added = Vec::new();
        for (list, k, entry) in block {
            if !self.memory.has_list_entry(*list, k.0) {
                records.push(Record::ListEntry {
                    list: *list as u8,
                    key: k.0,
                    entry: Cow::Borrowed(entry),
                });
                applies.push(Apply::List {
                    list: *list,
                    key: k.0,
                    entry: entry.clone(),
                });
                lists_added.push(*list);
            }
        }
        let commit = self.durable(&records, applies)?;
        Ok(Some(Labelled {
            lists_added,
            commit,
        }))
    }

    fn list_contains(&self, list: List, key: Key) -> bool {
        self.memory.list_contains(list, key)
    }

    fn lists_empty(&self) -> bool {
        self.memory.lists_empty()
    }

    fn list_add(
        &self,
        list: List,
        key: Key,
        entry: ListEntry,
    ) -> Result<Option<Commit>, StoreError> {
        if self.memory.has_list_entry(list, key.0) {
            return Ok(None);
        }
        let record = Record::ListEntry {
            list: list as u8,
            key: key.0,
            entry: Cow::Borrowed(&entry),
        };
        let apply = Apply::List {
            list,
            key: key.0,
            entry: entry.clone(),
        };
        self.durable(&[record], vec![apply]).map(Some)
    }

    fn list_remove(&self, list: List, key: Key) -> Result<Option<Commit>, StoreError> {
        if !self.memory.has_list_entry(list, key.0) {
            return Ok(None);
        }
        let record = Record::ListRemove {
            list: list as u8,
            key: key.0,
        };
        self.durable(&[record], vec![Apply::Unlist { list, key: key.0 }])
            .map(Some)
    }

    fn list_items(&self, list: List, after: Option<Key>, limit: usize) -> Vec<(Key, ListEntry)> {
        self.memory.list_items(list, after, limit)
    }

    fn sync(&self) -> Commit {
        let (commit, ack) = Commit::pending();
        self.log.sync(ack);
        commit
    }

    fn sweep(&self) -> usize {
        self.memory.sweep()
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            disk: Some(DiskStats {
                bytes: c.disk_bytes.load(Ordering::Relaxed),
                write_errors: c.write_errors.load(Ordering::Relaxed),
                unsaved_records: c.unsaved.load(Ordering::Relaxed),
                commits: c.commits.load(Ordering::Relaxed),
                snapshots: c.snapshots.load(Ordering::Relaxed),
            }),
            ..self.memory.stats()
        }
    }
}
