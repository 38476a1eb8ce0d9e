//! Snapshots: the whole state as records (payment methods, remembered
//! payments with their labels and ratios, list entries), written beside the
//! store while it serves, so that the logs before it can be deleted.
//!
//! A snapshot `snapshot-N` is begun right after log `N` is started, once
//! every change of the logs before `N` is in memory; it is read from memory
//! while changes go on, so it may also hold some of log `N` onwards. Records
//! are idempotent, so replaying log `N` onwards over it gives the state
//! whatever it caught. Methods, payments and list entries are copied out of
//! the maps before they are written: no map lock is held during I/O.

use super::files::{
    SNAPSHOT_MAGIC, io_err, listing, log_path, private_file, snapshot_path, sync_dir,
};
use super::log::LogCounters;
use super::record::{Record, frame};
use crate::state::List;
use crate::state::memory::MemoryStore;
use std::borrow::Cow;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Records read out of memory at a time.
const CHUNK: usize = 1024;

/// How long a snapshot rests after each chunk, per unit of time the chunk
/// took: at most a third of a core goes to it. A snapshot is never urgent;
/// the scoring it shares the cores with is.
const REST_PER_WORK: u32 = 2;

/// Paces a snapshot and tells it when to give up.
struct Pace<'a> {
    stop: &'a AtomicBool,
    since: Instant,
}

impl Pace<'_> {
    /// Between two chunks: rests in proportion to the last one, or gives up
    /// when the store closes.
    fn next(&mut self, dir: &std::path::Path) -> Result<(), super::OpenError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io_err(dir)(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the store is closing",
            )));
        }
        std::thread::sleep(self.since.elapsed() * REST_PER_WORK);
        self.since = Instant::now();
        Ok(())
    }
}

/// One snapshot to write.
pub(super) struct Job {
    /// The data directory.
    pub dir: PathBuf,
    /// The first log not (wholly) in it.
    pub before_log: u64,
    /// The state.
    pub memory: Arc<MemoryStore>,
    /// Where its size goes.
    pub counters: Arc<LogCounters>,
    /// Set when the job is over.
    pub done: Arc<AtomicBool>,
    /// Set when the store closes: the job gives up.
    pub stop: Arc<AtomicBool>,
}

impl Job {
    /// Writes the snapshot, then deletes what it replaces.
    pub fn run(self) {
        let started = Instant::now();
        match write(&self.dir, self.before_log, &self.memory, &self.stop) {
            Ok((bytes, records)) => {
                self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
                self.counters.snapshot_bytes.store(bytes, Ordering::Relaxed);
                let removed = remove_before(&self.dir, self.before_log);
                self.counters
                    .disk_bytes
                    .store(dir_bytes(&self.dir), Ordering::Relaxed);
                tracing::info!(
                    records,
                    bytes,
                    files_removed = removed,
                    seconds = started.elapsed().as_secs_f64(),
                    "store snapshot written"
                );
            }
            Err(e) => {
                if self.stop.load(Ordering::Relaxed) {
                    tracing::debug!("store snapshot given up: the store is closing");
                } else {
                    tracing::warn!(error = %e, "store snapshot failed; the logs are kept and it will be tried again");
                }
                let _ = fs::remove_file(tmp_path(&self.dir, self.before_log));
            }
        }
        self.done.store(true, Ordering::Release);
    }
}

fn tmp_path(dir: &std::path::Path, n: u64) -> PathBuf {
    let mut p = snapshot_path(dir, n).into_os_string();
    p.push(".tmp");
    PathBuf::from(p)
}

/// A snapshot file being written.
struct Out {
    path: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
    records: u64,
}

impl Out {
    fn put(&mut self, record: &Record<'_>) -> Result<(), super::OpenError> {
        self.buf.clear();
        frame(record, &mut self.buf).map_err(|e| io_err(&self.path)(std::io::Error::other(e)))?;
        self.records += 1;
        self.out.write_all(&self.buf).map_err(io_err(&self.path))
    }
}

/// Writes `snapshot-before` from `memory`; its size and record count.
pub(super) fn write(
    dir: &std::path::Path,
    before: u64,
    memory: &MemoryStore,
    stop: &AtomicBool,
) -> Result<(u64, u64), super::OpenError> {
    let mut pace = Pace {
        stop,
        since: Instant::now(),
    };
    let tmp = tmp_path(dir, before);
    let file = private_file().open(&tmp).map_err(io_err(&tmp))?;
    let mut out = Out {
        out: BufWriter::with_capacity(1 << 20, file),
        path: tmp.clone(),
        buf: Vec::with_capacity(1 << 16),
        records: 0,
    };
    out.out.write_all(SNAPSHOT_MAGIC).map_err(io_err(&tmp))?;
    for methods in memory.methods().chunks(CHUNK) {
        pace.next(dir)?;
        for m in methods {
            out.put(&Record::Method(Cow::Borrowed(&m.method)))?;
        }
    }
    for keys in memory.payment_keys().chunks(CHUNK) {
        pace.next(dir)?;
        let slots: Vec<_> = keys
            .iter()
            .filter_map(|k| memory.payment_slot(*k).map(|s| (*k, s)))
            .collect();
        for (key, payment) in slots {
            out.put(&Record::Payment { key, payment })?;
            if payment.decided != 0 {
                out.put(&Record::Decision {
                    key,
                    check: payment.check,
                    code: payment.decided,
                    score: payment.score,
                    propensity: payment.propensity,
                })?;
            }
        }
    }
    for (i, list) in List::ALL.into_iter().enumerate() {
        for (key, entry) in memory.list_entries_of(list) {
            out.put(&Record::ListEntry {
                list: i as u8,
                key,
                entry: Cow::Owned(entry),
            })?;
        }
    }
    let n = out.records;
    out.put(&Record::End { records: n })?;
    let file = out
        .out
        .into_inner()
        .map_err(|e| io_err(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err(&tmp))?;
    let bytes = file.metadata().map_err(io_err(&tmp))?.len();
    let path = snapshot_path(dir, before);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((bytes, n))
}

/// Deletes the logs and snapshots older than snapshot `before`; how many.
fn remove_before(dir: &std::path::Path, before: u64) -> usize {
    let Ok((logs, snapshots)) = listing(dir) else {
        return 0;
    };
    let mut removed = 0;
    let old = logs
        .iter()
        .filter(|n| **n < before)
        .map(|n| log_path(dir, *n))
        .chain(
            snapshots
                .iter()
                .filter(|n| **n < before)
                .map(|n| snapshot_path(dir, *n)),
        );
    for path in old {
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove an old store file")
            }
        }
    }
    removed
}

/// Bytes of the directory's files.
pub(super) fn dir_bytes(dir: &std::path::Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
