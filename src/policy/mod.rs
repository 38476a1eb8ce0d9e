//! Holdout measurement: recall, false-positive rate, precision and block
//! rate of any threshold on the true score, estimated without bias from the
//! payments the holdout let through, with intervals, beside the naive
//! figures that ignore the blocked payments. One estimator serves the
//! `EvaluatePolicy` call, `riskstream evaluate-policy` and the metrics.
//!
//! - [`mod@estimate`]: the estimator (pure): observations → figures.
//! - [`interval`]: the statistics behind the intervals.
//! - [`files`]: observations from a decision log and a labels or
//!   recorded-traffic file.
//! - [`live`]: observations from what the server's store remembers.
//! - [`output`]: the evaluation as text or JSON.

pub mod estimate;
pub mod files;
pub mod interval;
pub mod live;
pub mod output;

#[cfg(test)]
mod coverage;

pub use estimate::{
    Counts, Estimate, Observation, PolicyError, PolicyEstimate, Query, Report, estimate,
};
