//! The decision log: one JSON line per scored payment with its true score,
//! reported score and the propensity of the decision taken, so that precision
//! and recall of any threshold can be estimated by inverse propensity
//! weighting once labels arrive. Records are written by a dedicated thread;
//! when it falls behind, scoring waits rather than dropping records.

use crate::metrics::Metrics;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

/// Records buffered between the scoring path and the writer thread.
const QUEUE: usize = 65_536;

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
}

enum Msg {
    Record(Box<DecisionRecord>),
    Flush(SyncSender<std::io::Result<()>>),
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
    /// Writing or syncing failed.
    #[error("decision log write failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Handle to the decision log. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    tx: SyncSender<Msg>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").finish_non_exhaustive()
    }
}

impl DecisionLog {
    /// Opens (appending to) `path` and starts the writer thread.
    pub fn open(path: &Path, metrics: Metrics) -> Result<DecisionLog, LogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LogError::Open {
                path: path.to_owned(),
                source,
            })?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer(rx, BufWriter::with_capacity(1 << 16, file), metrics))
            .map_err(LogError::Io)?;
        Ok(DecisionLog { tx })
    }

    /// Queues one record; waits if the writer is behind.
    pub fn write(&self, record: DecisionRecord) {
        // A send error means the writer died; it has logged why.
        let _ = self.tx.send(Msg::Record(Box::new(record)));
    }

    /// Writes out and syncs to disk everything queued before this call.
    pub fn flush(&self) -> Result<(), LogError> {
        let (ack_tx, ack_rx) = sync_channel(1);
        self.tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| LogError::Stopped)?;
        ack_rx
            .recv()
            .map_err(|_| LogError::Stopped)?
            .map_err(LogError::Io)
    }
}

fn write_line(out: &mut BufWriter<File>, r: &DecisionRecord) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, r)?;
    out.write_all(b"\n")
}

fn writer(rx: Receiver<Msg>, mut out: BufWriter<File>, metrics: Metrics) {
    loop {
        // Flush whenever the queue goes quiet, so the file is never far behind.
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = out.flush() {
                    metrics.log_error();
                    tracing::error!(error = %e, "decision log flush failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Record(r) => match write_line(&mut out, &r) {
                Ok(()) => metrics.log_record(),
                Err(e) => {
                    metrics.log_error();
                    tracing::error!(error = %e, "decision log write failed");
                }
            },
            Msg::Flush(ack) => {
                let res = out.flush().and_then(|()| out.get_ref().sync_data());
                let _ = ack.send(res);
            }
        }
    }
    if let Err(e) = out.flush().and_then(|()| out.get_ref().sync_data()) {
        tracing::error!(error = %e, "decision log final flush failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_lines_of_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.jsonl");
        let log = DecisionLog::open(&path, Metrics::noop()).expect("open");
        for i in 0..3 {
            log.write(DecisionRecord {
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
            });
        }
        log.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read");
        let recs: Vec<DecisionRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[2].payment_id, "p2");
    }
}
