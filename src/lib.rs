//! riskstream: streaming payment risk scoring over gRPC.
//!
//! A payment backend registers each payment method with the device/browser
//! session captured when it was saved, then asks for a score before each
//! charge. riskstream compares the creation session with the payment session,
//! adds velocity signals, scores with a loaded model and answers with a
//! Radar-style risk score, level and decision.
//!
//! Modules, along the path of one payment:
//!
//! - [`proto`]: generated gRPC types of `riskstream.v1`.
//! - [`view`]: borrowed, allocation-free views of request messages.
//! - [`facts`]: the protocol facts restated by hand (view field tables,
//!   manual service methods, traffic record fields), as data for tests.
//! - [`validate`]: views → typed [`domain`] events, or a field error.
//! - [`fingerprint`]: parsed facts of a device/browser session.
//! - [`state`]: payment methods, velocity windows, recent payments, lists.
//! - [`features`]: session comparison and velocity features (pure functions).
//! - [`model`]: model file, inference and per-feature contributions.
//! - [`decision`]: levels, actions, lists, holdout and propensity.
//! - [`engine`]: the synchronous scoring path tying them together.
//! - [`lists`]: the default lists as operators manage them.
//! - [`decision_log`]: the line-delimited record of every decision.
//! - [`policy`]: holdout measurement: unbiased recall, false-positive rate
//!   and precision of any threshold, with intervals.
//! - [`metrics`]: every exported metric.
//! - [`process`]: the process's CPU, memory and descriptors from `/proc`.
//! - [`server`]: the tonic service, health, reflection, `/metrics`, shutdown.
//! - [`traffic`], [`convert`]: the recorded-traffic file format; public datasets converted to it.
//! - [`sim`], [`train`]: synthetic traffic and model training.
//! - [`cli`], [`config`], [`run`]: flags, validated configuration, entry points.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod convert;
pub mod decision;
pub mod decision_log;
pub mod domain;
pub mod engine;
pub mod error;
pub mod facts;
pub mod features;
pub mod fingerprint;
pub mod lists;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod process;
pub mod proto;
pub mod replay;
pub mod run;
mod scan;
pub mod server;
pub mod sim;
pub mod state;
pub mod traffic;
pub mod train;
pub mod validate;
pub mod view;
