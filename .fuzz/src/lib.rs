//! What riskstream's fuzz targets share: the fixed clock, the default model,
//! the engine the request path runs through, and the framing of a
//! request-path input (also used to write its seeds).

use riskstream::decision::holdout::Holdout;
use riskstream::engine::{Engine, EngineConfig};
use riskstream::metrics::Metrics;
use riskstream::model::{Model, ModelHandle};
use riskstream::state::{MIN_PAYMENT_RETENTION_MS, MemoryStore, StoreLimits};
use riskstream::validate::Clock;
use std::sync::Arc;

/// The fixed "now" of every fuzz run (2027-01-15T08:00:00Z): inputs are
/// judged the same way whatever day they run.
pub const NOW_MS: i64 = 1_800_000_000_000;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The validation clock at [`NOW_MS`], with the server's default skew.
pub fn clock() -> Clock {
    Clock {
        now_ms: NOW_MS,
        max_future_skew_ms: EngineConfig::default().max_future_skew_ms,
    }
}

/// The shipped default model's file.
pub const DEFAULT_MODEL: &str = include_str!("../../models/default.json");

/// The shipped default model.
pub fn default_model() -> Model {
    Model::from_json(DEFAULT_MODEL, "models/default.json").expect("models/default.json loads")
}

/// Store bounds small enough that a few requests reach them: registrations
/// past the bound are refused, sweeps shorten their horizons.
pub const LIMITS: StoreLimits = StoreLimits {
    max_payment_methods: 8,
    max_window_keys: 8,
    max_payments: 8,
    payment_retention_ms: MIN_PAYMENT_RETENTION_MS,
};

/// A fresh engine over an empty in-memory store, scoring with `model`, with
/// a holdout so that perturbed scores are exercised too.
pub fn engine(model: &ModelHandle, metrics: &Metrics) -> Engine {
    let config = EngineConfig {
        holdout: Holdout::new(0.1, b"fuzz"),
        ..EngineConfig::default()
    };
    Engine::new(
        Arc::new(MemoryStore::new(LIMITS, 7)),
        model.clone(),
        config,
        metrics.clone(),
        None,
    )
}

/// One request of a request-path input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `PaymentEvent` through `Engine::score_or_error`.
    Score,
    /// A `RegisterPaymentMethodRequest` through `Engine::register`.
    Register,
    /// A `FeedbackEvent` through `Engine::feedback`.
    Feedback,
    /// A `GetPaymentMethodRequest` through `Engine::get_payment_method`.
    Get,
    /// The store's periodic sweep (the payload is ignored).
    Sweep,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Score,
        Kind::Register,
        Kind::Feedback,
        Kind::Get,
        Kind::Sweep,
    ];

    /// The kind a frame's first byte names (every byte names one).
    pub fn of(b: u8) -> Kind {
        Kind::ALL[usize::from(b) % Kind::ALL.len()]
    }

    /// The byte that names this kind.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// Most requests read from one input.
pub const MAX_REQUESTS: usize = 64;

/// The requests of a request-path input: frames of one kind byte, a
/// little-endian `u16` length and that many bytes of message (fewer when
/// the input ends first), at most [`MAX_REQUESTS`] of them.
pub fn requests(data: &[u8]) -> impl Iterator<Item = (Kind, &[u8])> {
    let mut rest = data;
    let mut n = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() || n == MAX_REQUESTS {
            return None;
        }
        n += 1;
        let kind = Kind::of(rest[0]);
        let len = match rest.get(1..3) {
            Some(l) => usize::from(u16::from_le_bytes([l[0], l[1]])),
            None => 0,
        };
        let body = &rest[rest.len().min(3)..];
        let (message, after) = body.split_at(len.min(body.len()));
        rest = after;
        Some((kind, message))
    })
}

/// `requests` framed as one request-path input; the last frame claims the
/// longest length, so that a mutation growing its message keeps it whole.
pub fn frame(requests: &[(Kind, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (kind, message)) in requests.iter().enumerate() {
        let len = if i + 1 == requests.len() {
            u16::MAX
        } else {
            u16::try_from(message.len()).expect("a seed message under 64 KiB")
        };
        out.push(kind.byte());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back() {
        let reqs = vec![
            (Kind::Register, vec![1, 2, 3]),
            (Kind::Sweep, vec![]),
            (Kind::Score, vec![9; 300]),
        ];
        let got: Vec<(Kind, Vec<u8>)> = requests(&frame(&reqs))
            .map(|(k, m)| (k, m.to_vec()))
            .collect();
        assert_eq!(got, reqs);
        assert_eq!(requests(&[]).count(), 0);
        assert_eq!(
            requests(&[7]).collect::<Vec<_>>(),
            vec![(Kind::Feedback, &[][..])]
        );
        assert_eq!(requests(&[0; 1000]).count(), MAX_REQUESTS);
    }
}
