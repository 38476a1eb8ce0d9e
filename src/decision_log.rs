//! The decision log: one JSON line per scored payment with its true score,
//! reported score, what decided it, the propensity of the decision taken
//! and the probability that it was let through, so that precision and
//! recall of any threshold can be estimated by inverse propensity weighting
//! once labels arrive ([`crate::policy`]).
//!
//! Records are written by a thread of its own behind a bounded queue, and the
//! scoring path never waits for it: when the queue is full (the disk is slow
//! or stalled) a record is dropped and counted
//! (`riskstream_decision_log_dropped_total`), as payments fail open. The
//! writer turns records into complete lines, writes them in batches and, when
//! a batch fails (disk full, file too large, I/O error), cuts a regular file
//! back to its length before the batch, so the file only ever holds whole
//! lines; the batch's records are counted
//! (`riskstream_decision_log_failed_total`) and writing goes on with the next
//! batch. Written records are synced to disk within the sync interval, and
//! [`DecisionLog::flush`] writes and syncs everything queued before it.

use crate::decision::DecidedBy;
use crate::metrics::Metrics;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::time::{Duration, Instant};

/// Default of [`LogOptions::queue`]: records waiting for the writer.
pub const DEFAULT_QUEUE: usize = 65_536;
/// Default of [`LogOptions::sync_interval`].
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// The writer stops adding queued records to a batch past this size.
const BATCH_BYTES: usize = 256 * 1024;
/// A partial last line longer than this is not cut at open: the file is
/// probably not a decision log.
const TAIL_BYTES: u64 = 64 * 1024;
/// Trouble (records dropped, writes or syncs failing) ends once none has
/// happened for this long: then one line says how many records were lost.
const QUIET: Duration = Duration::from_secs(1);

/// One line of the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DecisionRecord {
    /// When the payment was attempted (ms since the epoch).
    pub ts_ms: i64,
    /// The payment.
    pub payment_id: String,
    /// Version of the model that scored it (empty when none did).
    pub model_version: String,
    /// Risk level reported.
    pub risk_level: String,
    /// Decision reported.
    pub decision: String,
    /// Reason reported.
    pub reason: String,
    /// The model's score.
    pub true_score: u32,
    /// The score reported (differs only in the holdout).
    pub reported_score: u32,
    /// The model's calibrated probability.
    pub true_probability: f64,
    /// The probability reported.
    pub reported_probability: f64,
    /// Whether the payment was in the holdout.
    pub holdout: bool,
    /// Probability that this payment gets the decision it got, over the holdout draw.
    pub propensity: f64,
    /// What decided: `model` (the level of the reported score), `list`,
    /// `not_assessed` or `scoring_failed`. Absent from records written
    /// before it was added.
    #[serde(default)]
    pub decided_by: Option<DecidedBy>,
    /// Probability, over the holdout draw, that this payment is let through
    /// (decision not `block`) given its true score: what weights its label
    /// in holdout measurement (0 or 1 when the model's policy did not
    /// decide). Absent from records written before it was added.
    #[serde(default)]
    pub allowed_propensity: Option<f64>,
}

/// Settings of the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Most records waiting for the writer; past it records are dropped
    /// (at least 1).
    pub queue: usize,
    /// Longest time a written record waits before it is synced to disk
    /// (zero: after every batch).
    pub sync_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            queue: DEFAULT_QUEUE,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

/// What the decision log did with the records it was given, since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounts {
    /// Records written to the file.
    pub written: u64,
    /// Records dropped because the queue was full.
    pub dropped: u64,
    /// Records not written because their write failed.
    pub failed: u64,
    /// Records waiting in the queue now.
    pub queued: u64,
}

/// Why the decision log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened.
    #[error("cannot open decision log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The writer thread is gone.
    #[error("the decision log writer has stopped")]
    Stopped,
    /// The writer did not finish a flush in time (its disk is stalled).
    #[error("the decision log was not flushed within {0:?}")]
    Timeout(Duration),
    /// Syncing the file failed.
    #[error("decision log sync failed: {0}")]
    Io(#[from] std::io::Error),
}

enum Msg {
    Record(Box<DecisionRecord>),
    Flush(SyncSender<std::io::Result<()>>),
}

/// State shared by the handles and the writer thread.
struct Shared {
    /// Most records in the queue.
    capacity: usize,
    /// Records in the queue now.
    queued: AtomicUsize,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Records dropped in the current burst (none dropped for [`QUIET`]
    /// ends it).
    dropped_in_burst: AtomicU64,
    /// When the last record was dropped, in ms since `epoch`.
    last_drop_ms: AtomicU64,
    epoch: Instant,
    metrics: Metrics,
}

impl Shared {
    fn drop_record(&self) {
        self.dropped.fetch_add(1, Relaxed);
        self.metrics.log_dropped();
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_drop_ms.store(ms, Relaxed);
        if self.dropped_in_burst.fetch_add(1, Relaxed) == 0 {
            tracing::warn!(
                queue = self.capacity,
                "decision log queue full: records are dropped until its writer catches up \
                 (counted in riskstream_decision_log_dropped_total)"
            );
        }
    }
}

/// Handle to the decision log. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("queue", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// Opens (appending to) `path`, creating it if needed, and starts the
    /// writer thread. A regular file whose last line was left partial (a
    /// crash mid-write) is first cut back to its last whole line.
    ///
    /// `path` may also be a FIFO or a device. Opening a FIFO for writing
    /// blocks until a reader opens it: this call then waits, at startup.
    pub fn open(
        path: &Path,
        options: LogOptions,
        metrics: Metrics,
    ) -> Result<DecisionLog, LogError> {
        let open_err = |source| LogError::Open {
            path: path.to_owned(),
            source,
        };
        // Read access (to check the last line) only for a regular file: a
        // FIFO opened for reading and writing would be its own reader.
        let regular_path = match std::fs::metadata(path) {
            Ok(m) => {
                if m.file_type().is_fifo() {
                    tracing::info!(path = %path.display(), "decision log is a FIFO: opening it waits for a reader");
                }
                m.file_type().is_file()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(open_err(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(regular_path)
            .open(path)
            .map_err(open_err)?;
        let regular = file.metadata().map_err(open_err)?.file_type().is_file();
        if regular && regular_path {
            match cut_partial_tail(&file) {
                Ok(0) => {}
                Ok(bytes) => tracing::warn!(
                    path = %path.display(),
                    bytes,
                    "decision log: cut a partial last line left by an earlier run"
                ),
                Err(e) => return Err(open_err(e)),
            }
        }
        let shared = Arc::new(Shared {
            capacity: options.queue.max(1),
            queued: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped_in_burst: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        });
        // Unbounded: `shared.queued` bounds the records; flush requests
        // must get in even when the queue is full.
        let (tx, rx) = channel();
        let writer = Writer {
            file,
            regular,
            sync_interval: options.sync_interval,
            shared: shared.clone(),
            batch: Vec::with_capacity(BATCH_BYTES + 4096),
            batch_records: 0,
            unsynced_since: None,
            cut_to: None,
            failing: None,
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))
            .map_err(LogError::Io)?;
        Ok(DecisionLog { tx, shared })
    }

    /// Queues one record; never waits. When the queue is full the record
    /// is dropped and counted.
    pub fn write(&self, record: DecisionRecord) {
        let s = &*self.shared;
        let admitted = s
            .queued
            .fetch_update(Relaxed, Relaxed, |n| (n < s.capacity).then_some(n + 1))
            .is_ok();
        if admitted {
            if self.tx.send(Msg::Record(Box::new(record))).is_ok() {
                return;
            }
            // The writer thread is gone.
            s.queued.fetch_sub(1, Relaxed);
        }
        s.drop_record();
    }

    /// Writes out and syncs to disk everything queued before this call,
    /// waiting as long as that takes (forever if the disk is stalled; see
    /// [`DecisionLog::flush_within`]). Records whose write fails are
    /// counted, not reported here; an error means the sync failed or the
    /// writer is gone.
    pub fn flush(&self) -> Result<(), LogError> {
        let ack = self.request_flush()?;
        ack.recv()
            .map_err(|_| LogError::Stopped)?
            .map_err(LogError::Io)
    }

    /// [`DecisionLog::flush`], giving up after `timeout` with
    /// [`LogError::Timeout`] (the records stay queued).
    pub fn flush_within(&self, timeout: Duration) -> Result<(), LogError> {
        let ack = self.request_flush()?;
        match ack.recv_timeout(timeout) {
            Ok(res) => res.map_err(LogError::Io),
            Err(RecvTimeoutError::Timeout) => Err(LogError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(LogError::Stopped),
        }
    }

    /// What happened to the records given so far.
    pub fn counts(&self) -> LogCounts {
        let s = &*self.shared;
        LogCounts {
            written: s.written.load(Relaxed),
            dropped: s.dropped.load(Relaxed),
            failed: s.failed.load(Relaxed),
            queued: s.queued.load(Relaxed) as u64,
        }
    }

    fn request_flush(&self) -> Result<Receiver<std::io::Result<()>>, LogError> {
        let (ack_tx, ack_rx) = sync_channel(1);
        self.tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| LogError::Stopped)?;
        Ok(ack_rx)
    }
}

/// Cuts `file` back to its last newline when it does not end with one and
/// that newline is within [`TAIL_BYTES`] of the end (or the whole file is
/// shorter than that); the bytes cut.
fn cut_partial_tail(file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let start = len.saturating_sub(TAIL_BYTES);
    let mut tail = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    if tail.last() == Some(&b'\n') {
        return Ok(0);
    }
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        // No newline in the last TAIL_BYTES: not a log of ours; leave it.
        None => return Ok(0),
    };
    file.set_len(keep)?;
    Ok(len - keep)
}

/// The writer thread's state.
struct Writer {
    file: File,
    /// A regular file (synced, and cut back after a failed write); not a
    /// FIFO or a device.
    regular: bool,
    sync_interval: Duration,
    shared: Arc<Shared>,
    /// Complete lines not yet written.
    batch: Vec<u8>,
    batch_records: u64,
    /// When the oldest record not yet synced was written.
    unsynced_since: Option<Instant>,
    /// A failed write left bytes past this length that could not be cut
    /// yet: nothing is written until they are.
    cut_to: Option<u64>,
    /// The current burst of failed writes or syncs.
    failing: Option<Failing>,
}

/// A burst of failed writes or syncs: it ends once a write or sync has
/// succeeded and none has failed for [`QUIET`].
struct Failing {
    /// Records whose write failed in the burst.
    lost: u64,
    /// When the last failure happened.
    last: Instant,
    /// Whether a write or sync succeeded since.
    recovered: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut next = None;
        loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match self.wait(&rx) {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Msg::Record(r) => {
                    self.take(&r);
                    while self.batch.len() < BATCH_BYTES {
                        match rx.try_recv() {
                            Ok(Msg::Record(r)) => self.take(&r),
                            Ok(m) => {
                                next = Some(m);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch();
                    if self.sync_due(Instant::now()) {
                        let _ = self.sync();
                    }
                }
                // Every record queued before the request is written (or
                // counted as failed) by now.
                Msg::Flush(ack) => {
                    let _ = ack.send(self.sync());
                }
            }
        }
        // Every handle is gone.
        let _ = self.sync();
    }

    /// The next message, syncing when the sync interval elapses and ending
    /// trouble bursts while waiting; `None` when every handle is gone.
    fn wait(&mut self, rx: &Receiver<Msg>) -> Option<Msg> {
        loop {
            let sync_due = self
                .unsynced_since
                .and_then(|t| t.checked_add(self.sync_interval));
            let due = match (sync_due, self.burst_due()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return rx.recv().ok(),
                },
            };
            match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(m) => return Some(m),
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if self.sync_due(now) {
                        let _ = self.sync();
                    }
                    self.end_bursts(now);
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn sync_due(&self, now: Instant) -> bool {
        self.unsynced_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.sync_interval)
    }

    /// When the current bursts of trouble end if nothing more goes wrong.
    fn burst_due(&self) -> Option<Instant> {
        let failing = self
            .failing
            .as_ref()
            .filter(|f| f.recovered)
            .map(|f| f.last + QUIET);
        let dropping = (self.shared.dropped_in_burst.load(Relaxed) > 0).then(|| {
            self.shared.epoch
                + Duration::from_millis(self.shared.last_drop_ms.load(Relaxed))
                + QUIET
        });
        match (failing, dropping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the bursts of trouble that have been quiet for [`QUIET`], each
    /// with one line saying how many records were lost.
    fn end_bursts(&mut self, now: Instant) {
        if let Some(f) = &self.failing
            && f.recovered
            && now.saturating_duration_since(f.last) >= QUIET
        {
            tracing::warn!(
                lost = f.lost,
                "decision log writing again; records lost while it failed"
            );
            self.failing = None;
        }
        let s = &*self.shared;
        let last_drop = s.epoch + Duration::from_millis(s.last_drop_ms.load(Relaxed));
        if s.dropped_in_burst.load(Relaxed) > 0 && now.saturating_duration_since(last_drop) >= QUIET
        {
            let dropped = s.dropped_in_burst.swap(0, Relaxed);
            tracing::warn!(
                dropped,
                "decision log writer caught up; records dropped while its queue was full"
            );
        }
    }

    /// Adds `r` to the batch as one complete line.
    fn take(&mut self, r: &DecisionRecord) {
        self.shared.queued.fetch_sub(1, Relaxed);
        let start = self.batch.len();
        match serde_json::to_writer(&mut self.batch, r) {
            Ok(()) => {
                self.batch.push(b'\n');
                self.batch_records += 1;
            }
            Err(e) => {
                self.batch.truncate(start);
                self.failed(1, "serialization", &std::io::Error::other(e));
            }
        }
    }

    /// Writes the batch whole, or counts its records as failed.
    fn write_batch(&mut self) {
        let n = std::mem::take(&mut self.batch_records);
        if n > 0 {
            match self.append() {
                Ok(()) => {
                    self.shared.written.fetch_add(n, Relaxed);
                    self.shared.metrics.log_records(n);
                    self.unsynced_since.get_or_insert_with(Instant::now);
                    self.succeeded();
                }
                Err(e) => self.failed(n, "write", &e),
            }
        }
        self.batch.clear();
        self.end_bursts(Instant::now());
    }

    /// Appends the batch; on failure a regular file is cut back to its
    /// length before the batch, so no partial line stays.
    fn append(&mut self) -> std::io::Result<()> {
        if !self.regular {
            return self.file.write_all(&self.batch);
        }
        if let Some(len) = self.cut_to {
            self.cut_back(len)?;
            self.cut_to = None;
        }
        // The file is opened with O_APPEND: every write lands at its end,
        // wherever that is (also after the file was cut, by us or by a log
        // rotation), so the length is read afresh rather than tracked.
        let len = self.file.metadata()?.len();
        self.file.write_all(&self.batch).inspect_err(|_| {
            if self.cut_back(len).is_err() {
                self.cut_to = Some(len);
            }
        })
    }

    /// Truncates the file to `len` if it is longer.
    fn cut_back(&self, len: u64) -> std::io::Result<()> {
        if self.file.metadata()?.len() > len {
            self.file.set_len(len)?;
        }
        Ok(())
    }

    /// Counts `n` records whose write failed (none for a failed sync); logs
    /// the first failure of a burst.
    fn failed(&mut self, n: u64, what: &'static str, e: &std::io::Error) {
        self.shared.failed.fetch_add(n, Relaxed);
        self.shared.metrics.log_failed(n);
        self.shared.metrics.log_error();
        let now = Instant::now();
        match &mut self.failing {
            Some(f) => {
                f.lost += n;
                f.last = now;
                f.recovered = false;
            }
            None => {
                tracing::error!(
                    error = %e,
                    "decision log {what} failed: records that cannot be written are dropped \
                     (counted in riskstream_decision_log_failed_total)"
                );
                self.failing = Some(Failing {
                    lost: n,
                    last: now,
                    recovered: false,
                });
            }
        }
    }

    fn succeeded(&mut self) {
        if let Some(f) = &mut self.failing {
            f.recovered = true;
        }
    }

    /// Syncs what was written (a regular file only).
    fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced_since.take().is_none() || !self.regular {
            return Ok(());
        }
        self.file
            .sync_data()
            .inspect(|()| self.succeeded())
            .inspect_err(|e| self.failed(0, "sync", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn record(i: i64) -> DecisionRecord {
        DecisionRecord {
            ts_ms: i,
            payment_id: format!("p{i}"),
            model_version: "m".into(),
            risk_level: "normal".into(),
            decision: "allow".into(),
            reason: String::new(),
            true_score: 3,
            reported_score: 3,
            true_probability: 0.01,
            reported_probability: 0.01,
            holdout: false,
            propensity: 1.0,
            decided_by: Some(DecidedBy::Model),
            allowed_propensity: Some(1.0),
        }
    }

    /// Runs `f` on a thread of its own and returns what it returns; fails
    /// (instead of hanging) if it takes longer than `limit`.
    fn returns_within<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit)
            .expect("finished in time (a panic is reported above)")
    }

    fn lines(path: &Path) -> Vec<DecisionRecord> {
        let text = std::fs::read_to_string(path).expect("read");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "a partial last line"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn records_are_lines_of_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.jsonl");
        let log = DecisionLog::open(&path, LogOptions::default(), Metrics::noop()).expect("open");
        for i in 0..3 {
            log.write(record(i));
        }
        log.flush().expect("flush");
        let recs = lines(&path);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2], record(2));
        assert_eq!(
            log.counts(),
            LogCounts {
                written: 3,
                ..LogCounts::default()
            }
        );
    }

    #[test]
    fn a_flush_writes_everything_queued_across_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.jsonl");
        // A sync interval that never elapses: only the flush syncs.
        let options = LogOptions {
            queue: 100_000,
            sync_interval: Duration::from_secs(3600),
        };
        let log = DecisionLog::open(&path, options, Metrics::noop()).expect("open");
        // Several batches' worth.
        for i in 0..5_000 {
            log.write(record(i));
        }
        log.flush().expect("flush");
        let recs = lines(&path);
        assert_eq!(recs.len(), 5_000);
        assert!(recs.iter().enumerate().all(|(i, r)| r.ts_ms == i as i64));
        assert_eq!(log.counts().written, 5_000);
    }

    #[test]
    fn a_partial_last_line_of_an_earlier_run_is_cut_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.jsonl");
        let whole = format!("{}\n", serde_json::to_string(&record(1)).expect("json"));
        std::fs::write(&path, format!("{whole}{{\"ts_ms\":2,\"paym")).expect("write");
        let log = DecisionLog::open(&path, LogOptions::default(), Metrics::noop()).expect("open");
        log.write(record(3));
        log.flush().expect("flush");
        assert_eq!(lines(&path), vec![record(1), record(3)]);
    }

    #[test]
    fn failed_writes_are_counted_not_written() {
        // Every write to /dev/full fails with ENOSPC.
        let log = DecisionLog::open(
            Path::new("/dev/full"),
            LogOptions::default(),
            Metrics::noop(),
        )
        .expect("open /dev/full");
        for i in 0..10 {
            log.write(record(i));
        }
        log.flush().expect("a device is not synced");
        let c = log.counts();
        assert_eq!((c.written, c.failed, c.dropped), (0, 10, 0));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("stalled.fifo");
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo failed");
        // The reader that never reads: opening a FIFO for reading and
        // writing does not wait for the other side (Linux), and makes the
        // log's open below not wait either.
        let reader = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .expect("open fifo");
        let options = LogOptions {
            queue: 16,
            ..LogOptions::default()
        };
        let log = DecisionLog::open(&fifo, options, Metrics::noop()).expect("open");
        // Fill the pipe, the writer's batch and the queue until the writer
        // is stuck: the queue stays full and nothing more is written.
        let filling = log.clone();
        let last = returns_within(Duration::from_secs(60), move || {
            let mut i = 0;
            let mut still = 0;
            let mut last = filling.counts();
            while still < 20 {
                assert!(i < 1_000_000, "the writer never stalled: {last:?}");
                for _ in 0..64 {
                    filling.write(record(i));
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
                let c = filling.counts();
                still = if c.written == last.written && c.queued == 16 {
                    still + 1
                } else {
                    0
                };
                last = c;
            }
            last
        });
        assert!(last.written > 0 && last.failed == 0, "{last:?}");
        // Now every write is dropped, at once.
        const N: u64 = 10_000;
        let writer = log.clone();
        returns_within(Duration::from_secs(30), move || {
            for i in 0..N {
                writer.write(record(i as i64));
            }
        });
        let c = log.counts();
        assert_eq!(c.dropped, last.dropped + N, "{c:?}");
        assert_eq!((c.written, c.queued), (last.written, 16), "{c:?}");
        let flushed = log.flush_within(Duration::from_millis(200));
        assert!(
            matches!(flushed, Err(LogError::Timeout(_))),
            "{flushed:?} {:?}",
            log.counts()
        );
        drop(reader);
    }
}
