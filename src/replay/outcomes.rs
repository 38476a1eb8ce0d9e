//! `--outcomes-out`: one JSON line per answered payment, written by a
//! thread of its own so that the file never paces the load. Lines of one
//! stream keep that stream's order.

use super::ReplayError;
use super::report::{decision_name, level_name};
use crate::proto;
use crate::view::OutcomeView;
use serde::Serialize;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One line of the outcomes file.
#[derive(Debug, Serialize)]
struct Line<'a> {
    /// Stream (or unary caller) that carried the payment.
    stream: usize,
    payment_id: Cow<'a, str>,
    risk_score: u32,
    fraud_probability: f64,
    risk_level: Cow<'static, str>,
    decision: Cow<'static, str>,
    latency_us: f64,
    model_version: Cow<'a, str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: Cow<'a, str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_field: Cow<'a, str>,
}

/// The JSON line (with its newline) of outcome `o`, answered on `stream`
/// after `latency`.
pub fn line(stream: usize, o: &OutcomeView<'_>, latency: Duration) -> Vec<u8> {
    let l = Line {
        stream,
        payment_id: String::from_utf8_lossy(o.payment_id),
        risk_score: o.risk_score,
        fraud_probability: o.fraud_probability,
        risk_level: level_name(o.risk_level),
        decision: decision_name(o.decision),
        latency_us: latency.as_nanos() as f64 / 1000.0,
        model_version: String::from_utf8_lossy(o.model_version),
        error: String::from_utf8_lossy(o.error_code),
        error_field: String::from_utf8_lossy(o.error_field),
    };
    let mut out = serde_json::to_vec(&l).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Writes the lines it is sent to a file.
pub struct OutcomeWriter {
    tx: mpsc::Sender<Vec<u8>>,
    thread: JoinHandle<std::io::Result<u64>>,
    path: PathBuf,
}

impl OutcomeWriter {
    /// Creates (truncates) `path` and starts the writing thread.
    pub fn create(path: &Path) -> Result<Self, ReplayError> {
        let file = File::create(path).map_err(|source| ReplayError::OutcomesOut {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::spawn(move || {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut lines = 0u64;
            for line in rx {
                out.write_all(&line)?;
                lines += 1;
            }
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(lines)
        });
        Ok(OutcomeWriter {
            tx,
            thread,
            path: path.to_owned(),
        })
    }

    /// A handle to send lines with.
    pub fn sender(&self) -> mpsc::Sender<Vec<u8>> {
        self.tx.clone()
    }

    /// Waits until every line sent is on disk (all senders must be
    /// dropped); returns the number of lines.
    pub fn finish(self) -> Result<u64, ReplayError> {
        drop(self.tx);
        let path = self.path;
        match self.thread.join() {
            Ok(result) => result.map_err(|source| ReplayError::OutcomesOut { path, source }),
            Err(_) => Err(ReplayError::OutcomesOut {
                path,
                source: std::io::Error::other("the writing thread panicked"),
            }),
        }
    }
}

/// One outcome as read back from an outcomes file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Served {
    /// The payment answered.
    pub payment_id: String,
    /// Reported score.
    pub risk_score: u32,
    /// Calibrated probability.
    pub fraud_probability: f64,
    /// Proto name of the risk level.
    pub risk_level: String,
    /// Model that scored it.
    #[serde(default)]
    pub model_version: String,
    /// Error code, empty when scored.
    #[serde(default)]
    pub error: String,
}

impl Served {
    /// Scored by a model (not rejected, not `NOT_ASSESSED` or `UNKNOWN`).
    pub fn assessed(&self) -> bool {
        self.error.is_empty()
            && self.risk_level != proto::RiskLevel::NotAssessed.as_str_name()
            && self.risk_level != proto::RiskLevel::Unknown.as_str_name()
    }
}

/// Reads an outcomes file written by `--outcomes-out`.
pub fn read(path: &Path) -> Result<Vec<Served>, ReplayError> {
    use std::io::BufRead;
    let err = |source| ReplayError::OutcomesIn {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(err)?;
        if line.trim().is_empty() {
            continue;
        }
        let served: Served = serde_json::from_str(&line).map_err(|e| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {e}", i + 1),
            ))
        })?;
        out.push(served);
    }
    Ok(out)
}
