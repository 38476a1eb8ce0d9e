//! `serve --record FILE`: every request received is appended, with its
//! arrival time, to a recorded-traffic file by a thread of its own. The
//! request path only queues a reference to the bytes it received; when the
//! queue is full the record is dropped and counted
//! (`riskstream_record_dropped_total`) instead of slowing scoring down.

use crate::metrics::Metrics;
use crate::traffic::{Kind, TrafficError, TrafficWriter};
use crate::view;
use bytes::Bytes;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// Records queued between the request path and the writer thread.
pub const QUEUE: usize = 65_536;

enum Msg {
    Record(i64, Kind, Bytes),
    Flush(SyncSender<Result<u64, TrafficError>>),
}

/// Handle to the recorder. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<Msg>,
    metrics: Metrics,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Opens `path` for appending and starts the writer thread; a queue of
    /// `queue` records sits between them.
    pub fn open(path: &Path, queue: usize, metrics: Metrics) -> Result<Recorder, TrafficError> {
        let out = TrafficWriter::append(path)?;
        let (tx, rx) = sync_channel(queue);
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer(rx, out, m))
            .map_err(|source| TrafficError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Recorder { tx, metrics })
    }

    /// Queues `message`, a request of `kind` that arrived at `at_ms`; never
    /// waits.
    pub fn record(&self, kind: Kind, at_ms: i64, message: &Bytes) {
        match self.tx.try_send(Msg::Record(at_ms, kind, message.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.record_dropped();
            }
        }
    }

    /// Writes out everything queued before this call; the records written
    /// so far.
    pub fn flush(&self) -> Result<u64, TrafficError> {
        let stopped = || TrafficError::Io {
            path: "recorded traffic".into(),
            source: std::io::Error::other("the recorder thread has stopped"),
        };
        let (ack_tx, ack_rx) = sync_channel(1);
        self.tx.send(Msg::Flush(ack_tx)).map_err(|_| stopped())?;
        ack_rx.recv().map_err(|_| stopped())?
    }
}

/// Whether `message` parses as a request of `kind` (a record that does not
/// would make the file unreadable past it).
fn parses(kind: Kind, message: &[u8]) -> bool {
    match kind {
        Kind::Register => view::register(message).is_ok(),
        Kind::Payment => view::payment_event(message).is_ok(),
        Kind::Feedback => view::feedback(message).is_ok(),
    }
}

fn writer(rx: Receiver<Msg>, mut out: TrafficWriter, metrics: Metrics) {
    loop {
        // Flush whenever the queue goes quiet, so the file is never far behind.
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = out.flush() {
                    tracing::error!(error = %e, "recorded traffic: flush failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Record(at_ms, kind, message) => {
                if !parses(kind, &message) {
                    metrics.record_dropped();
                    continue;
                }
                match out.write_encoded(at_ms, kind, &message) {
                    Ok(()) => metrics.recorded(),
                    Err(e) => {
                        metrics.record_dropped();
                        tracing::error!(error = %e, "recorded traffic: write failed");
                    }
                }
            }
            Msg::Flush(ack) => {
                let _ = ack.send(out.flush().map(|()| out.written()));
            }
        }
    }
    if let Err(e) = out.flush() {
        tracing::error!(error = %e, "recorded traffic: final flush failed");
    }
}
