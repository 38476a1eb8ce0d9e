//! The data directory: its lock, its hash key, and the names of its
//! snapshot and log files.
//!
//! ```text
//! data/
//!   LOCK                        held (flock) by the process using the directory
//!   hash.key                    the key of the store's keyed hashes (0600)
//!   snapshot-00000000000000000007.rsnap   the state before log 7
//!   log-00000000000000000007.rlog         changes since, in order
//!   log-00000000000000000008.rlog
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of a log file.
pub(super) const LOG_MAGIC: &[u8; 8] = b"RSLOG01\n";
/// First bytes of a snapshot file.
pub(super) const SNAPSHOT_MAGIC: &[u8; 8] = b"RSSNP01\n";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory.
    #[error(
        "the data directory {dir} is in use by another riskstream process (it holds the lock {lock}); stop it or pass another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// An I/O error on a file of the directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The hash key file is not a key.
    #[error("{0}: not a riskstream hash key (16 hex digits expected)")]
    BadKey(PathBuf),
    /// Store files without their hash key.
    #[error(
        "{0} is missing beside the store's files: without it their payments and list entries cannot be found; restore it from a backup of the directory"
    )]
    MissingKey(PathBuf),
}

/// `Io` for `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The exclusive hold on a data directory, released when dropped.
#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

/// Options that create (or truncate) a file readable by its owner only:
/// the store's files hold registered payment methods as they were sent.
pub(super) fn private_file() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts
}

/// Takes the directory's lock (creating the directory, for its owner only,
/// if missing).
pub(super) fn lock(dir: &Path) -> Result<DirLock, OpenError> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io_err(dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let path = dir.join("LOCK");
    let mut file = private_file()
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                dir: dir.to_owned(),
                lock: path,
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    // The pid, for people looking at the directory.
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DirLock { _file: file })
}

/// The store's hash key: read from `hash.key`, or drawn by `fresh` and
/// saved there (readable by the owner only) on first use. A directory that
/// holds store files but no key is refused: a new key would make every
/// saved payment and list entry unreachable.
pub(super) fn hash_key(dir: &Path, fresh: impl FnOnce() -> u64) -> Result<u64, OpenError> {
    let path = dir.join("hash.key");
    match File::open(&path) {
        Ok(mut f) => {
            let mut text = String::new();
            f.read_to_string(&mut text).map_err(io_err(&path))?;
            let t = text.trim();
            if t.len() != 16 {
                return Err(OpenError::BadKey(path));
            }
            u64::from_str_radix(t, 16).map_err(|_| OpenError::BadKey(path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (logs, snapshots) = listing(dir)?;
            if !logs.is_empty() || !snapshots.is_empty() {
                return Err(OpenError::MissingKey(path));
            }
            let key = fresh();
            let tmp = dir.join("hash.key.tmp");
            let mut f = private_file().open(&tmp).map_err(io_err(&tmp))?;
            writeln!(f, "{key:016x}").map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
            sync_dir(dir)?;
            Ok(key)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Makes the directory's entries (renames, new files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), OpenError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The log file numbered `n`.
pub(super) fn log_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("log-{n:020}.rlog"))
}

/// The snapshot taken before log `n`.
pub(super) fn snapshot_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("snapshot-{n:020}.rsnap"))
}

/// The numbers of the directory's logs and snapshots, ascending.
pub(super) fn listing(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), OpenError> {
    let mut logs = Vec::new();
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(suffix))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = number("log-", ".rlog") {
            logs.push(n);
        } else if let Some(n) = number("snapshot-", ".rsnap") {
            snapshots.push(n);
        }
    }
    logs.sort_unstable();
    snapshots.sort_unstable();
    Ok((logs, snapshots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("first lock");
        let err = lock(dir.path()).expect_err("second lock");
        let msg = err.to_string();
        assert!(
            msg.contains("in use by another riskstream process"),
            "{msg}"
        );
        assert!(msg.contains("LOCK"), "{msg}");
        drop(held);
        lock(dir.path()).expect("free again once released");
    }

    #[test]
    fn the_hash_key_is_drawn_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(hash_key(dir.path(), || 42).expect("new"), 42);
        assert_eq!(hash_key(dir.path(), || 7).expect("kept"), 42);
        fs::write(dir.path().join("hash.key"), "nonsense").expect("write");
        assert!(matches!(
            hash_key(dir.path(), || 7),
            Err(OpenError::BadKey(_))
        ));
        fs::remove_file(dir.path().join("hash.key")).expect("remove");
        fs::write(log_path(dir.path(), 1), LOG_MAGIC).expect("write");
        assert!(matches!(
            hash_key(dir.path(), || 7),
            Err(OpenError::MissingKey(_))
        ));
    }
}
