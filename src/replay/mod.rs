//! Replays recorded traffic against a live server over gRPC and measures it:
//! `riskstream replay FILE --target URL`.
//!
//! - [`requests`] reads the file into encoded requests before the clock starts.
//! - [`client`] sends them as they are and reads answers as raw bytes.
//! - [`driver`] paces them (closed loop, or open loop at a fixed rate or
//!   the recorded times, released by a thread that sleeps until each),
//!   spreads payments over streams or unary callers, keeps registrations and
//!   feedback in order with the payments, and checks every outcome.
//! - [`report`] tallies answers and latencies into the final report.
//! - [`progress`] shows how far a run is, [`outcomes`] writes every outcome.
//! - [`record`] is the server's side: `serve --record` appends every request
//!   received to a recorded-traffic file.

pub mod client;
pub mod driver;
pub mod outcomes;
pub mod progress;
pub mod record;
pub mod report;
pub mod requests;

use std::path::PathBuf;
use std::time::Duration;

/// How payments reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ScoreStream`: each of `concurrency` bidirectional streams carries
    /// payments, up to `in_flight` unanswered at a time.
    Stream,
    /// `Score`: `concurrency` callers, one call in flight each.
    Unary,
}

/// When each request is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// As fast as the server answers; latency is measured from each send.
    Closed,
    /// Open loop at this many requests per second; latency is measured from
    /// each request's scheduled send time, so queueing is never hidden.
    Rate(f64),
    /// Open loop at the recorded inter-arrival times divided by this factor.
    Speed(f64),
}

impl Pacing {
    /// How it reads in a report.
    pub fn describe(&self) -> String {
        match self {
            Pacing::Closed => "closed-loop".to_owned(),
            Pacing::Rate(r) => format!("rate {r}/s"),
            Pacing::Speed(x) => format!("speed {x}x"),
        }
    }
}

/// How registrations and feedback are ordered with payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// In file order: one is sent only once every earlier payment is
    /// answered, and later payments wait for its answer. The server sees
    /// what it would have seen live, so scores are reproduced exactly
    /// (with one stream or caller).
    Strict,
    /// Sent beside the payments without waiting; a payment waits only for
    /// the registration of its own payment method. For load tests.
    Relaxed,
}

/// A replay run, validated.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Recorded-traffic file (`-` for standard input).
    pub file: PathBuf,
    /// The kinds of request sent (the others are skipped).
    pub kinds: Vec<requests::Kind>,
    /// Server URL, e.g. `http://127.0.0.1:50051`.
    pub target: String,
    /// Streams or unary calls.
    pub mode: Mode,
    /// When requests are sent.
    pub pacing: Pacing,
    /// Order of registrations and feedback.
    pub order: Order,
    /// Stop sending after the warm-up plus this long (the whole file if none).
    pub duration: Option<Duration>,
    /// Answers in this first stretch are checked but not measured.
    pub warmup: Duration,
    /// HTTP/2 connections the streams or callers share.
    pub connections: usize,
    /// The token its calls carry.
    pub bearer: client::Bearer,
    /// TLS towards the target, if any.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Streams (stream mode) or callers (unary mode).
    pub concurrency: usize,
    /// Unanswered events allowed per stream.
    pub in_flight: usize,
    /// Where to write one JSON line per outcome.
    pub outcomes_out: Option<PathBuf>,
    /// How progress is shown.
    pub progress: progress::Style,
}

/// A replay could not run or found the server misbehaving.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The traffic file could not be read.
    #[error(transparent)]
    Traffic(#[from] crate::traffic::TrafficError),
    /// The target could not be reached.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The URL.
        target: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// An outcome names another payment than the one it answers.
    #[error(
        "outcome mismatch on stream {stream}: expected payment_id {expected:?}, the server answered {got:?}"
    )]
    Mismatch {
        /// Stream or caller index.
        stream: usize,
        /// The payment sent.
        expected: String,
        /// The payment named in the answer.
        got: String,
    },
    /// An answer is not a well-formed message.
    #[error("stream {stream}: malformed answer to payment_id {payment_id:?}: {source}")]
    Malformed {
        /// Stream or caller index.
        stream: usize,
        /// The payment sent.
        payment_id: String,
        /// The cause.
        source: crate::view::DecodeError,
    },
    /// A stream failed or ended with events unanswered.
    #[error("stream {stream} failed: {status}")]
    Stream {
        /// Stream index.
        stream: usize,
        /// What the server or transport said.
        status: tonic::Status,
    },
    /// A stream answered more outcomes than events were sent on it.
    #[error("stream {stream}: an outcome for payment_id {got:?} answers no event sent")]
    Unsolicited {
        /// Stream index.
        stream: usize,
        /// The payment named in the answer.
        got: String,
    },
    /// The pacing thread could not be started.
    #[error("cannot start the pacing thread: {0}")]
    Pacer(std::io::Error),
    /// The outcomes file could not be written.
    #[error("--outcomes-out {path}: {source}")]
    OutcomesOut {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An outcomes file could not be read.
    #[error("outcomes file {path}: {source}")]
    OutcomesIn {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The run was stopped by Ctrl-C (its partial report was printed).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Answers that were errors, when errors were not allowed.
#[derive(Debug, thiserror::Error)]
#[error("{0} requests were answered with errors (see the report; --allow-errors accepts them)")]
pub struct ErrorsFound(pub u64);
