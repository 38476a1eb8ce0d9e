//! What a replay measured: per-worker tallies merged into one report with
//! latency percentiles from an HDR histogram, printed for people or as JSON.

use crate::proto;
use crate::view::OutcomeView;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Tallies of one worker (a stream, a unary caller or the side calls).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of answered payments, in nanoseconds.
    latency: Histogram<u64>,
    /// Latency of the payment calls among them that failed with a status
    /// (refused ones among them), made on the first failure.
    failed: Option<Histogram<u64>>,
    /// Answered requests per kind (measured ones only).
    pub answered: BTreeMap<&'static str, u64>,
    /// Requests answered during the warm-up (checked, not measured).
    pub warmup: u64,
    /// Errors by code: an outcome's `error.code`, or a failed call's gRPC code.
    pub errors: BTreeMap<String, u64>,
    decisions: BTreeMap<i32, u64>,
    levels: BTreeMap<i32, u64>,
    /// When the last measured answer arrived.
    pub last: Option<Instant>,
}

/// A latency histogram: up to an hour at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant, valid histogram bounds")
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: histogram(),
            failed: None,
            answered: BTreeMap::new(),
            warmup: 0,
            errors: BTreeMap::new(),
            decisions: BTreeMap::new(),
            levels: BTreeMap::new(),
            last: None,
        }
    }
}

impl Stats {
    /// Counts an answer to a request of `kind`; `measured` is false during
    /// the warm-up. Returns whether it is counted as measured.
    pub fn answer(&mut self, kind: &'static str, measured: bool, at: Instant) -> bool {
        if measured {
            *self.answered.entry(kind).or_default() += 1;
            self.last = Some(self.last.map_or(at, |l| l.max(at)));
        } else {
            self.warmup += 1;
        }
        measured
    }

    /// Counts a payment's outcome, answered `latency` after its start.
    /// Errors count during the warm-up too, so none is hidden.
    pub fn outcome(&mut self, measured: bool, at: Instant, latency: Duration, o: &OutcomeView<'_>) {
        if !o.error_code.is_empty() {
            self.error(String::from_utf8_lossy(o.error_code).into_owned());
        }
        if !self.answer("payment", measured, at) {
            return;
        }
        self.record_latency(latency);
        if o.error_code.is_empty() {
            *self.decisions.entry(o.decision).or_default() += 1;
            *self.levels.entry(o.risk_level).or_default() += 1;
        }
    }

    /// Counts a call of `kind` that failed with `code` after `latency`
    /// (payment latencies go into the histogram, failed or not, and into
    /// that of failed calls).
    pub fn failure(
        &mut self,
        kind: &'static str,
        measured: bool,
        at: Instant,
        latency: Duration,
        code: String,
    ) {
        self.error(code);
        if self.answer(kind, measured, at) && kind == "payment" {
            self.record_latency(latency);
            let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
            self.failed
                .get_or_insert_with(histogram)
                .saturating_record(ns);
        }
    }

    fn record_latency(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
    }

    /// Counts an error.
    pub fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    /// Adds `other`'s tallies to these.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds; adding cannot fail.
        let _ = self.latency.add(&other.latency);
        if let Some(f) = &other.failed {
            let _ = self.failed.get_or_insert_with(histogram).add(f);
        }
        for (k, v) in &other.answered {
            *self.answered.entry(k).or_default() += v;
        }
        self.warmup += other.warmup;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.decisions {
            *self.decisions.entry(*k).or_default() += v;
        }
        for (k, v) in &other.levels {
            *self.levels.entry(*k).or_default() += v;
        }
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Errors in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The snake-case name of a gRPC status code, as error codes are reported.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The proto name of a decision number (`DECISION_ALLOW`), or the number.
pub fn decision_name(n: i32) -> Cow<'static, str> {
    proto::Decision::try_from(n).map_or_else(|_| n.to_string().into(), |d| d.as_str_name().into())
}

/// The proto name of a risk level number (`RISK_LEVEL_NORMAL`), or the number.
pub fn level_name(n: i32) -> Cow<'static, str> {
    proto::RiskLevel::try_from(n).map_or_else(|_| n.to_string().into(), |l| l.as_str_name().into())
}

/// Latency percentiles of answered payments, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Payments measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}, {} payments)",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean, self.count
        )
    }
}

/// The final report of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server replayed against.
    pub target: String,
    /// `stream` or `unary`.
    pub mode: String,
    /// How events were paced, e.g. `closed-loop`, `rate 5000/s`, `speed 60x`.
    pub pacing: String,
    /// The run was stopped early (Ctrl-C); the figures cover what was answered.
    pub interrupted: bool,
    /// Seconds from the end of the warm-up to the last answer.
    pub elapsed_s: f64,
    /// Requests answered after the warm-up, all kinds.
    pub events: u64,
    /// `events` per second of `elapsed_s`.
    pub events_per_s: f64,
    /// Answered requests per kind (`payment`, `register`, `feedback`).
    pub by_kind: BTreeMap<String, u64>,
    /// Requests answered during the warm-up (checked, not measured).
    pub warmup_events: u64,
    /// Requests sent that got no answer (interrupted runs only).
    pub unanswered: u64,
    /// Payment latency, from the scheduled send time under open-loop pacing.
    pub latency_us: Latency,
    /// When some payment calls failed with a status (e.g. refused with
    /// `RESOURCE_EXHAUSTED` by an overloaded server): the latency of the
    /// others, answered with an outcome.
    pub answered_latency_us: Option<Latency>,
    /// The latency of those failed payment calls.
    pub failed_latency_us: Option<Latency>,
    /// Errors by code (warm-up included).
    pub errors: BTreeMap<String, u64>,
    /// Scored payments per decision.
    pub decisions: BTreeMap<String, u64>,
    /// Scored payments per risk level.
    pub risk_levels: BTreeMap<String, u64>,
}

/// How a run ended, besides its tallies.
#[derive(Debug, Clone)]
pub struct Ending {
    /// Stopped early by the stop signal.
    pub interrupted: bool,
    /// Requests sent that got no answer.
    pub unanswered: u64,
    /// End of the warm-up.
    pub measure_from: Instant,
}

/// What describes a run besides its tallies.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Target URL.
    pub target: String,
    /// Mode name.
    pub mode: String,
    /// Pacing description.
    pub pacing: String,
    /// How it ended.
    pub ending: Ending,
}

impl Report {
    /// The report of a run with merged tallies `stats`.
    pub fn new(info: RunInfo, stats: &Stats) -> Report {
        let elapsed = stats.last.map_or(0.0, |l| {
            l.saturating_duration_since(info.ending.measure_from)
                .as_secs_f64()
        });
        let events: u64 = stats.answered.values().sum();
        let latency = Latency::of(&stats.latency);
        let answered = stats.failed.as_ref().map(|f| {
            let mut answered = stats.latency.clone();
            // `failed` holds a subset of `latency`'s records.
            let _ = answered.subtract(f);
            Latency::of(&answered)
        });
        Report {
            target: info.target,
            mode: info.mode,
            pacing: info.pacing,
            interrupted: info.ending.interrupted,
            elapsed_s: elapsed,
            events,
            events_per_s: if elapsed > 0.0 {
                events as f64 / elapsed
            } else {
                0.0
            },
            by_kind: stats
                .answered
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            warmup_events: stats.warmup,
            unanswered: info.ending.unanswered,
            latency_us: latency,
            answered_latency_us: answered,
            failed_latency_us: stats.failed.as_ref().map(Latency::of),
            errors: stats.errors.clone(),
            decisions: stats
                .decisions
                .iter()
                .map(|(k, v)| (decision_name(*k).into_owned(), *v))
                .collect(),
            risk_levels: stats
                .levels
                .iter()
                .map(|(k, v)| (level_name(*k).into_owned(), *v))
                .collect(),
        }
    }

    /// Errors in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report for people.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "replay of {}: {}, {}{}",
            self.target,
            self.mode,
            self.pacing,
            if self.interrupted {
                " — interrupted, partial figures"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "  events:     {} in {:.3} s = {:.0} events/s ({} warm-up events not counted)",
            self.events, self.elapsed_s, self.events_per_s, self.warmup_events
        );
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(s, "  by kind:    {}", kinds.join(", "));
        let _ = writeln!(s, "  latency µs: {}", l.line());
        if let (Some(a), Some(f)) = (&self.answered_latency_us, &self.failed_latency_us) {
            let _ = writeln!(s, "    answered: {}", a.line());
            let _ = writeln!(s, "    failed:   {}", f.line());
        }
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(s, "  errors:     {}", list(&self.errors));
        let _ = writeln!(s, "  decisions:  {}", list(&self.decisions));
        let _ = writeln!(s, "  risk level: {}", list(&self.risk_levels));
        if self.unanswered > 0 {
            let _ = writeln!(s, "  unanswered: {}", self.unanswered);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(decision: i32, level: i32, code: &'static [u8]) -> OutcomeView<'static> {
        OutcomeView {
            decision,
            risk_level: level,
            error_code: code,
            ..OutcomeView::default()
        }
    }

    #[test]
    fn merged_tallies_give_percentiles_rates_and_counts() {
        let t0 = Instant::now();
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100u64 {
            let s = if i % 2 == 0 { &mut a } else { &mut b };
            let at = t0 + Duration::from_millis(i * 10);
            s.outcome(true, at, Duration::from_micros(i), &outcome(1, 1, b""));
        }
        a.outcome(false, t0, Duration::from_secs(9), &outcome(1, 1, b""));
        b.outcome(
            true,
            t0,
            Duration::from_micros(50),
            &outcome(0, 0, b"invalid_argument"),
        );
        a.answer("register", true, t0);
        a.merge(&b);
        let r = Report::new(
            RunInfo {
                target: "t".into(),
                mode: "stream".into(),
                pacing: "closed-loop".into(),
                ending: Ending {
                    interrupted: false,
                    measure_from: t0,
                    unanswered: 0,
                },
            },
            &a,
        );
        assert_eq!(r.events, 102);
        assert_eq!(r.warmup_events, 1);
        assert_eq!(r.by_kind["payment"], 101);
        assert_eq!(r.by_kind["register"], 1);
        assert!((r.elapsed_s - 1.0).abs() < 1e-9, "{}", r.elapsed_s);
        assert!((r.events_per_s - 102.0).abs() < 1e-6);
        assert_eq!(r.latency_us.count, 101);
        assert!(
            (r.latency_us.p50 - 50.0).abs() < 0.1,
            "{}",
            r.latency_us.p50
        );
        assert!(
            (r.latency_us.p99 - 99.0).abs() < 0.1,
            "{}",
            r.latency_us.p99
        );
        assert!((r.latency_us.max - 100.0).abs() < 0.1);
        assert_eq!(r.errors["invalid_argument"], 1);
        assert_eq!(r.answered_latency_us, None, "no call failed");
        assert_eq!(r.decisions["DECISION_ALLOW"], 100);
        assert_eq!(r.risk_levels["RISK_LEVEL_NORMAL"], 100);
        assert!(r.text().contains("p99.9"));
    }

    #[test]
    fn failed_calls_are_measured_apart_from_answered_ones() {
        let t0 = Instant::now();
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=90u64 {
            a.outcome(true, t0, Duration::from_millis(i), &outcome(1, 1, b""));
        }
        for _ in 0..10 {
            b.failure(
                "payment",
                true,
                t0,
                Duration::from_micros(100),
                "resource_exhausted".into(),
            );
        }
        a.merge(&b);
        let r = Report::new(
            RunInfo {
                target: "t".into(),
                mode: "unary".into(),
                pacing: "rate 100/s".into(),
                ending: Ending {
                    interrupted: false,
                    measure_from: t0,
                    unanswered: 0,
                },
            },
            &a,
        );
        assert_eq!(r.latency_us.count, 100);
        let answered = r.answered_latency_us.clone().expect("some failed");
        let failed = r.failed_latency_us.clone().expect("some failed");
        assert_eq!((answered.count, failed.count), (90, 10));
        assert!((failed.p99 - 100.0).abs() < 0.1, "{}", failed.p99);
        assert!((answered.p50 - 45_000.0).abs() < 100.0, "{}", answered.p50);
        assert_eq!(r.errors["resource_exhausted"], 10);
        assert!(r.text().contains("failed:"));
    }

    #[test]
    fn status_codes_read_like_outcome_error_codes() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Unavailable), "unavailable");
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "deadline_exceeded"
        );
    }
}
