//! The log writer: records are framed into a shared queue by the callers
//! and written by one thread, which appends each batch to the current log
//! file and syncs it (group commit: every write waiting when a sync starts
//! shares it). Writes that must be durable before their reply wake it at
//! once and are applied to the memory store only once saved; scored
//! payments wait at most the sync interval. The same thread cuts the log
//! into files and starts the snapshots that let old files go.

use super::files::{DirLock, LOG_MAGIC, log_path, private_file, sync_dir};
use super::record::{Record, frame};
use super::snapshot;
use crate::domain::FeedbackKind;
use crate::state::memory::MemoryStore;
use crate::state::{CommitSender, List, ListEntry, StoreError, StoredMethod};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the writer pauses after a failed write.
const FAILURE_PAUSE: Duration = Duration::from_millis(20);

/// A burst of write failures ends after this long without one.
const BURST_QUIET: Duration = Duration::from_secs(1);

/// A change the memory store takes once its record is saved.
#[derive(Debug)]
pub(super) enum Apply {
    /// A registration.
    Method(Arc<StoredMethod>),
    /// A label on the payment `(key, check)`.
    Label {
        /// Map key of the payment id.
        key: u64,
        /// Its check bits.
        check: u32,
        /// The label.
        kind: FeedbackKind,
    },
    /// A list entry.
    List {
        /// Which list.
        list: List,
        /// The key.
        key: u64,
        /// The entry.
        entry: ListEntry,
    },
    /// A key taken off a list.
    Unlist {
        /// Which list.
        list: List,
        /// The key.
        key: u64,
    },
}

impl Apply {
    fn to(self, memory: &MemoryStore) {
        match self {
            Apply::Method(m) => memory.put_method(m),
            Apply::Label { key, check, kind } => {
                memory.label_slot(key, check, kind, true);
            }
            Apply::List { list, key, entry } => {
                memory.put_list_entry(list, key, entry);
            }
            Apply::Unlist { list, key } => {
                memory.remove_list_entry(list, key);
            }
        }
    }
}

/// Settings of the log.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogOptions {
    /// How long a scored payment's record may wait for its sync.
    pub sync_interval: Duration,
    /// Bytes waiting for the writer beyond which scored payments are not
    /// saved and durable writes are refused (the disk is not keeping up).
    pub max_pending_bytes: usize,
    /// A log file is closed and a new one started past this size.
    pub max_file_bytes: u64,
    /// A snapshot is taken once the logs since the last one hold this many
    /// bytes, or as many as the last snapshot if that is more.
    pub snapshot_after_bytes: u64,
}

/// Counters of the log, read for metrics.
#[derive(Debug, Default)]
pub(super) struct LogCounters {
    /// Batches whose write or sync failed.
    pub write_errors: AtomicU64,
    /// Records not saved: in a failed batch, or past the pending bound.
    pub unsaved: AtomicU64,
    /// Bytes in the data directory's logs and snapshot.
    pub disk_bytes: AtomicU64,
    /// Snapshots written.
    pub snapshots: AtomicU64,
    /// Bytes of the newest snapshot.
    pub snapshot_bytes: AtomicU64,
    /// Batches committed.
    pub commits: AtomicU64,
}

#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    records: u64,
    /// Acks of durable writes (false) and of syncs (true).
    acks: Vec<(CommitSender, bool)>,
    applies: Vec<Apply>,
    /// Records were dropped (past the pending bound) since the last batch.
    dropped: bool,
    /// A caller waits for its commit: write at once.
    urgent: bool,
    /// When the oldest record not yet taken by the writer was queued.
    since: Option<Instant>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    options: LogOptions,
    counters: Arc<LogCounters>,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The handle callers append through. Closing it (or dropping it) writes
/// out what is queued and stops the writer.
pub(super) struct Log {
    shared: Arc<Shared>,
    /// The writer thread, and the channel that disconnects when it ends.
    writer: Mutex<Option<(JoinHandle<()>, std::sync::mpsc::Receiver<()>)>>,
}

/// How long closing waits for the writer to save what is queued (and for a
/// snapshot being written) before it leaves it behind: a stalled disk must
/// not hold up the process's exit.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Where the writer starts.
pub(super) struct Start {
    /// The data directory.
    pub dir: PathBuf,
    /// The number of the first log file to write.
    pub next_file: u64,
    /// Bytes of the snapshot the state was restored from (0: none).
    pub snapshot_bytes: u64,
    /// Bytes of the logs replayed after it.
    pub log_bytes: u64,
}

impl Log {
    /// Starts the writer thread on a new log file.
    pub fn start(
        start: Start,
        lock: Arc<DirLock>,
        memory: Arc<MemoryStore>,
        options: LogOptions,
        counters: Arc<LogCounters>,
    ) -> std::io::Result<Log> {
        let file = LogFile::create(&start.dir, start.next_file)?;
        counters
            .disk_bytes
            .store(start.snapshot_bytes + start.log_bytes, Ordering::Relaxed);
        counters
            .snapshot_bytes
            .store(start.snapshot_bytes, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            options,
            counters,
        });
        let writer = Writer {
            _lock: lock,
            shared: Arc::clone(&shared),
            memory,
            dir: start.dir,
            file,
            since_snapshot: start.log_bytes,
            snapshot: None,
            stop_snapshot: Arc::new(AtomicBool::new(false)),
            failing: None,
            spare: Vec::new(),
            last_ok: true,
            rotate_failed: false,
        };
        let (running, ended) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("store-log".into())
            .spawn(move || {
                let _running = running;
                writer.run();
            })?;
        Ok(Log {
            shared,
            writer: Mutex::new(Some((handle, ended))),
        })
    }

    /// Queues `records`, together: they land in one batch. With `durable`,
    /// the commit completes once they are saved (and `applies` have been
    /// applied); a write refused at once is an error. Without, records past
    /// the pending bound are only counted as not saved.
    pub fn append(
        &self,
        records: &[Record<'_>],
        durable: Option<(CommitSender, Vec<Apply>)>,
    ) -> Result<(), StoreError> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            for record in records {
                frame(record, &mut scratch)
                    .map_err(|e| StoreError::Unavailable(format!("cannot encode a record: {e}")))?;
            }
            let mut q = self.shared.queue();
            if q.closed {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            let limit = self.shared.options.max_pending_bytes;
            if q.buf.len() + scratch.len() > limit {
                if durable.is_some() {
                    return Err(StoreError::Unavailable(format!(
                        "the disk is not keeping up: {} MiB wait to be written",
                        q.buf.len() >> 20
                    )));
                }
                self.shared
                    .counters
                    .unsaved
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                q.dropped = true;
                return Ok(());
            }
            let was_empty = q.buf.is_empty() && q.acks.is_empty();
            q.buf.extend_from_slice(&scratch);
            q.records += records.len() as u64;
            if q.since.is_none() {
                q.since = Some(Instant::now());
            }
            match durable {
                Some((ack, applies)) => {
                    q.acks.push((ack, false));
                    q.applies.extend(applies);
                    q.urgent = true;
                    drop(q);
                    self.shared.wake.notify_one();
                }
                None if was_empty => {
                    drop(q);
                    self.shared.wake.notify_one();
                }
                None => {}
            }
            Ok(())
        })
    }

    /// Completes `ack` once everything queued before it is saved.
    pub fn sync(&self, ack: CommitSender) {
        let mut q = self.shared.queue();
        if q.closed {
            drop(q);
            ack.complete(Ok(()));
            return;
        }
        q.acks.push((ack, true));
        q.urgent = true;
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Writes out everything queued and stops the writer; gives up waiting
    /// after [`CLOSE_WAIT`] (a stalled disk), leaving the writer behind.
    pub fn close(&self) {
        self.shared.queue().closed = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((handle, ended)) = writer {
            match ended.recv_timeout(CLOSE_WAIT) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tracing::warn!(
                    waited = ?CLOSE_WAIT,
                    "the store's writer did not finish (its disk is stalled); closing without it"
                ),
                _ => {
                    let _ = handle.join();
                }
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

/// The log file being appended to.
struct LogFile {
    number: u64,
    path: PathBuf,
    file: File,
    /// Bytes known to be whole records (the length to cut back to).
    len: u64,
    /// A write failed: the file may end in bytes that are not records.
    dirty: bool,
}

impl LogFile {
    fn create(dir: &Path, number: u64) -> std::io::Result<LogFile> {
        let path = log_path(dir, number);
        let mut file = private_file().open(&path)?;
        file.write_all(LOG_MAGIC)?;
        file.sync_all()?;
        sync_dir(dir).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Appends from here; a failed write is cut back with set_len, and
        // the file position must not stay past the cut.
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(LogFile {
            number,
            path,
            file,
            len: LOG_MAGIC.len() as u64,
            dirty: false,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let res = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Never leave part of a batch behind whole records; the
                // next batch goes into a new file all the same.
                let _ = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                self.dirty = true;
                Err(e)
            }
        }
    }
}

struct Writer {
    /// The directory stays locked while the writer (or a snapshot, which
    /// it joins) may still touch it.
    _lock: Arc<DirLock>,
    shared: Arc<Shared>,
    memory: Arc<MemoryStore>,
    dir: PathBuf,
    file: LogFile,
    /// Log bytes written since the last snapshot began.
    since_snapshot: u64,
    /// The snapshot being written, and whether it is done.
    snapshot: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// Tells a snapshot under way to give up (the store is closing).
    stop_snapshot: Arc<AtomicBool>,
    /// A failure burst: when it began, when it last failed, and how many
    /// records were not saved in it. It ends after a second without failure.
    failing: Option<(Instant, Instant, u64)>,
    spare: Vec<u8>,
    last_ok: bool,
    /// Starting a new log file failed (warned once until it works).
    rotate_failed: bool,
}

/// One batch taken from the queue.
struct Batch {
    buf: Vec<u8>,
    records: u64,
    acks: Vec<(CommitSender, bool)>,
    applies: Vec<Apply>,
    dropped: bool,
    closed: bool,
}

impl Writer {
    fn run(mut self) {
        loop {
            let batch = self.take();
            let closed = batch.closed;
            self.commit(batch);
            if closed {
                break;
            }
            self.maybe_snapshot();
        }
        // A snapshot under way is given up: the next start reads the logs.
        self.stop_snapshot.store(true, Ordering::Relaxed);
        if let Some((h, _)) = self.snapshot.take() {
            let _ = h.join();
        }
    }

    /// Waits until a batch is due and takes it.
    fn take(&mut self) -> Batch {
        let interval = self.shared.options.sync_interval;
        let mut q = self.shared.queue();
        loop {
            if q.closed || q.urgent {
                break;
            }
            match q.since {
                Some(since) => {
                    let waited = since.elapsed();
                    if waited >= interval {
                        break;
                    }
                    q = self
                        .shared
                        .wake
                        .wait_timeout(q, interval - waited)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                None => {
                    // Idle: look again now and then, for snapshots.
                    let (g, _) = self
                        .shared
                        .wake
                        .wait_timeout(q, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner);
                    q = g;
                    if q.since.is_none() && !q.urgent && !q.closed {
                        drop(q);
                        self.maybe_snapshot();
                        q = self.shared.queue();
                    }
                }
            }
        }
        let mut buf = std::mem::take(&mut self.spare);
        std::mem::swap(&mut buf, &mut q.buf);
        let batch = Batch {
            buf,
            records: std::mem::take(&mut q.records),
            acks: std::mem::take(&mut q.acks),
            applies: std::mem::take(&mut q.applies),
            dropped: std::mem::take(&mut q.dropped),
            closed: q.closed,
        };
        q.urgent = false;
        q.since = None;
        batch
    }

    fn commit(&mut self, mut batch: Batch) {
        let saved = if batch.buf.is_empty() {
            // Only syncs wait: everything before them was in earlier batches.
            if self.last_ok {
                Ok(())
            } else {
                Err(StoreError::Unavailable(
                    "an earlier write to the store's log failed".into(),
                ))
            }
        } else {
            self.write(&batch.buf, batch.records)
        };
        // A sync also answers for the records dropped while it waited.
        let synced = match (&saved, batch.dropped) {
            (Ok(()), true) => Err(StoreError::Unavailable(
                "records were not saved: the disk is not keeping up".into(),
            )),
            _ => saved.clone(),
        };
        if saved.is_ok() {
            for apply in batch.applies.drain(..) {
                apply.to(&self.memory);
            }
        }
        for (ack, sync) in batch.acks.drain(..) {
            ack.complete(if sync { synced.clone() } else { saved.clone() });
        }
        batch.buf.clear();
        self.spare = batch.buf;
        if self.last_ok && self.file.len >= self.shared.options.max_file_bytes {
            self.rotate();
        }
    }

    /// Appends a batch to the log and syncs it.
    fn write(&mut self, buf: &[u8], records: u64) -> Result<(), StoreError> {
        let counters = &self.shared.counters;
        // After a failed write the file may end in a cut that did not take:
        // nothing more goes into it.
        if self.file.dirty {
            match LogFile::create(&self.dir, self.file.number + 1) {
                Ok(next) => self.file = next,
                Err(e) => {
                    self.last_ok = false;
                    counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    counters.unsaved.fetch_add(records, Ordering::Relaxed);
                    self.failed(&e, records);
                    std::thread::sleep(FAILURE_PAUSE);
                    return Err(StoreError::Unavailable(format!(
                        "cannot start a new log file in {}: {e}",
                        self.dir.display()
                    )));
                }
            }
        }
        match self.file.append(buf) {
            Ok(()) => {
                let n = buf.len() as u64;
                self.since_snapshot += n;
                counters.disk_bytes.fetch_add(n, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                self.recovered();
                self.last_ok = true;
                Ok(())
            }
            Err(e) => {
                self.last_ok = false;
                counters.write_errors.fetch_add(1, Ordering::Relaxed);
                counters.unsaved.fetch_add(records, Ordering::Relaxed);
                let message = format!("cannot write {}: {e}", self.file.path.display());
                self.failed(&e, records);
                // A pause spares a failing disk.
                std::thread::sleep(FAILURE_PAUSE);
                Err(StoreError::Unavailable(message))
            }
        }
    }

    /// Starts a new log file; the old one stays whole.
    fn rotate(&mut self) -> bool {
        match LogFile::create(&self.dir, self.file.number + 1) {
            Ok(next) => {
                self.file = next;
                self.rotate_failed = false;
                true
            }
            Err(e) => {
                if !self.rotate_failed {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot start a new log file; appending to the current one (logged once until it works)");
                }
                self.rotate_failed = true;
                false
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error, records: u64) {
        match &mut self.failing {
            Some((_, last, lost)) => {
                *last = Instant::now();
                *lost += records;
            }
            None => {
                tracing::error!(
                    file = %self.file.path.display(),
                    error = %e,
                    "the store cannot write its log: durable writes answer UNAVAILABLE, scoring goes on \
                     (logged once per burst of failures; counted in riskstream_store_write_errors_total)"
                );
                let now = Instant::now();
                self.failing = Some((now, now, records));
            }
        }
    }

    /// A write worked: the burst of failures ends once a second has passed
    /// without one.
    fn recovered(&mut self) {
        if let Some((since, last, lost)) = self.failing
            && last.elapsed() >= BURST_QUIET
        {
            self.failing = None;
            tracing::warn!(
                seconds = since.elapsed().as_secs_f64(),
                records_not_saved = lost,
                "the store writes its log again"
            );
        }
    }

    /// Starts a snapshot when the logs since the last one outgrow it, and
    /// forgets one that has finished.
    fn maybe_snapshot(&mut self) {
        if let Some((_, done)) = &self.snapshot
            && done.load(Ordering::Acquire)
            && let Some((h, _)) = self.snapshot.take()
        {
            let _ = h.join();
        }
        let last = self.shared.counters.snapshot_bytes.load(Ordering::Relaxed);
        let due = self.shared.options.snapshot_after_bytes.max(last);
        if self.snapshot.is_some() || self.since_snapshot < due || !self.last_ok {
            return;
        }
        // Everything in the logs before the new file is in memory now (this
        // thread applied the durable writes; scored payments are counted
        // before their records are queued): the snapshot, read from memory
        // from now on, holds at least all of it.
        if !self.rotate() {
            return;
        }
        self.since_snapshot = 0;
        let done = Arc::new(AtomicBool::new(false));
        let job = snapshot::Job {
            dir: self.dir.clone(),
            before_log: self.file.number,
            memory: Arc::clone(&self.memory),
            counters: Arc::clone(&self.shared.counters),
            done: Arc::clone(&done),
            stop: Arc::clone(&self.stop_snapshot),
        };
        match std::thread::Builder::new()
            .name("store-snapshot".into())
            .spawn(move || job.run())
        {
            Ok(h) => self.snapshot = Some((h, done)),
            Err(e) => tracing::warn!(error = %e, "cannot start a snapshot thread"),
        }
    }
}
