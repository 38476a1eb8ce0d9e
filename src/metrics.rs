//! Every metric riskstream exports, in one place: names, descriptions,
//! buckets, and typed helpers that the rest of the code calls. Handles are
//! registered once, so recording costs an atomic add. No label ever carries
//! customer data: labels are drawn from fixed sets (event kind, decision,
//! risk level, list name, feedback kind, the RPCs the servers serve and
//! gRPC's status codes, timeout reason, listener) or the model version.
//! The `process_*` series are read from `/proc` when `/metrics` is
//! scraped ([`render_process`]).

use crate::decision::{Action, RiskLevel};
use crate::domain::FeedbackKind;
use crate::state::{List, StoreStats};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, Mutex, PoisonError};

/// `riskstream_events_total{kind}`: requests received, by kind.
pub const EVENTS_TOTAL: &str = "riskstream_events_total";
/// `riskstream_decisions_total{decision,risk_level}`: outcomes returned.
pub const DECISIONS_TOTAL: &str = "riskstream_decisions_total";
/// `riskstream_score_duration_seconds`: in-process scoring time per event.
pub const SCORE_DURATION_SECONDS: &str = "riskstream_score_duration_seconds";
/// `riskstream_risk_score`: distribution of reported scores.
pub const RISK_SCORE: &str = "riskstream_risk_score";
/// `riskstream_holdout_total`: payments whose reported score was perturbed.
pub const HOLDOUT_TOTAL: &str = "riskstream_holdout_total";
/// `riskstream_invalid_events_total{kind}`: requests rejected by validation.
pub const INVALID_EVENTS_TOTAL: &str = "riskstream_invalid_events_total";
/// `riskstream_active_streams`: open `ScoreStream` calls.
pub const ACTIVE_STREAMS: &str = "riskstream_active_streams";
/// `riskstream_model_info{version}`: 1 for the loaded model.
pub const MODEL_INFO: &str = "riskstream_model_info";
/// `riskstream_model_errors_total`: assessments that failed open (`UNKNOWN`).
pub const MODEL_ERRORS_TOTAL: &str = "riskstream_model_errors_total";
/// `riskstream_model_reload_errors_total`: model files that failed to reload.
pub const MODEL_RELOAD_ERRORS_TOTAL: &str = "riskstream_model_reload_errors_total";
/// `riskstream_feedback_total{kind}`: labels received.
pub const FEEDBACK_TOTAL: &str = "riskstream_feedback_total";
/// `riskstream_list_additions_total{list}`: entries added to lists.
pub const LIST_ADDITIONS_TOTAL: &str = "riskstream_list_additions_total";
/// `riskstream_list_removals_total{list}`: entries taken off lists.
pub const LIST_REMOVALS_TOTAL: &str = "riskstream_list_removals_total";
/// `riskstream_store_entries{kind}`: what the store holds.
pub const STORE_ENTRIES: &str = "riskstream_store_entries";
/// `riskstream_store_disk_bytes`: bytes of the embedded store's files.
pub const STORE_DISK_BYTES: &str = "riskstream_store_disk_bytes";
/// `riskstream_store_write_errors_total`: writes of the store's log that
/// failed (disk full, I/O error).
pub const STORE_WRITE_ERRORS_TOTAL: &str = "riskstream_store_write_errors_total";
/// `riskstream_store_unsaved_records_total`: changes the store could not
/// save (in a failed write, or past what may wait for the disk).
pub const STORE_UNSAVED_RECORDS_TOTAL: &str = "riskstream_store_unsaved_records_total";
/// `riskstream_store_commits_total`: group commits of the store's log.
pub const STORE_COMMITS_TOTAL: &str = "riskstream_store_commits_total";
/// `riskstream_store_snapshots_total`: snapshots written by the store.
pub const STORE_SNAPSHOTS_TOTAL: &str = "riskstream_store_snapshots_total";
/// `riskstream_decision_log_records_total`: records written to the decision log.
pub const DECISION_LOG_RECORDS_TOTAL: &str = "riskstream_decision_log_records_total";
/// `riskstream_decision_log_errors_total`: decision-log writes or syncs that
/// failed (operations, not records).
pub const DECISION_LOG_ERRORS_TOTAL: &str = "riskstream_decision_log_errors_total";
/// `riskstream_decision_log_dropped_total`: records not written because the
/// decision log's queue was full.
pub const DECISION_LOG_DROPPED_TOTAL: &str = "riskstream_decision_log_dropped_total";
/// `riskstream_decision_log_failed_total`: records not written because their
/// write failed (disk full, file too large, I/O error).
pub const DECISION_LOG_FAILED_TOTAL: &str = "riskstream_decision_log_failed_total";

/// `riskstream_recorded_total`: requests appended by `serve --record`.
pub const RECORDED_TOTAL: &str = "riskstream_recorded_total";
/// `riskstream_record_dropped_total`: requests not recorded (queue full,
/// unparseable or a write failure).
pub const RECORD_DROPPED_TOTAL: &str = "riskstream_record_dropped_total";

/// `riskstream_unknown_payment_methods_total`: payments naming a payment
/// method id the store does not hold (scored without a creation session).
pub const UNKNOWN_PAYMENT_METHODS_TOTAL: &str = "riskstream_unknown_payment_methods_total";

/// `riskstream_store_reachable`: 1 while a remote store is reachable, 0
/// during an outage (absent for a store in the process).
pub const STORE_REACHABLE: &str = "riskstream_store_reachable";

/// `riskstream_policy_recall`: the holdout estimate of recall at the live
/// highest-risk threshold over the payments the store remembers (what
/// `RiskAdmin.EvaluatePolicy` answers with no threshold), refreshed every
/// `--policy-metrics-interval`; NaN until known.
pub const POLICY_RECALL: &str = "riskstream_policy_recall";
/// `riskstream_policy_false_positive_rate`: the same, false-positive rate.
pub const POLICY_FALSE_POSITIVE_RATE: &str = "riskstream_policy_false_positive_rate";
/// `riskstream_policy_precision`: the same, precision.
pub const POLICY_PRECISION: &str = "riskstream_policy_precision";

/// `riskstream_store_cache_lookups_total{result}`: payment method lookups
/// of a remote store, answered by the local cache (`hit`) or by a round
/// trip (`miss`).
pub const STORE_CACHE_LOOKUPS_TOTAL: &str = "riskstream_store_cache_lookups_total";

/// The kinds of [`STORE_ERRORS_TOTAL`].
const STORE_ERROR_KINDS: [&str; 2] = ["timeout", "unavailable"];

/// `riskstream_store_fail_open_total`: payments that failed open (`UNKNOWN`,
/// allowed) because a remote store did not answer in time.
pub const STORE_FAIL_OPEN_TOTAL: &str = "riskstream_store_fail_open_total";
/// `riskstream_store_round_trip_seconds`: round trips of a remote store for
/// a batch of payments (successful ones): payment methods the cache lacks,
/// windows, and the decisions recorded after the answers.
pub const STORE_ROUND_TRIP_SECONDS: &str = "riskstream_store_round_trip_seconds";
/// `riskstream_store_errors_total{kind}`: failed round trips of a remote
/// store, by kind (`timeout`, `unavailable`).
pub const STORE_ERRORS_TOTAL: &str = "riskstream_store_errors_total";

/// `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`: calls
/// started (go-grpc-prometheus names and labels).
pub const GRPC_SERVER_STARTED_TOTAL: &str = "grpc_server_started_total";
/// `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`:
/// calls finished, by the gRPC status code they ended with.
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";
/// `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`: time
/// from a call's arrival to its status (a stream's whole life).
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// `riskstream_calls_shed_total`: calls refused at once with
/// `RESOURCE_EXHAUSTED` because the server was at a limit
/// (`--max-concurrent-calls`, or the bytes of messages being received).
pub const CALLS_SHED_TOTAL: &str = "riskstream_calls_shed_total";
/// `riskstream_calls_timed_out_total{reason}`: calls ended by a timeout:
/// `deadline` (the client's `grpc-timeout`), `message` (a request message
/// that did not arrive whole within `--message-timeout`), `stream_idle` (a
/// stream without an event for `--stream-idle-timeout`).
pub const CALLS_TIMED_OUT_TOTAL: &str = "riskstream_calls_timed_out_total";
/// `riskstream_open_connections{listener}`: open client connections of the
/// scoring and admin addresses.
pub const OPEN_CONNECTIONS: &str = "riskstream_open_connections";
/// `riskstream_connections_refused_total{listener}`: connections closed at
/// accept because `--max-connections` were open.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "riskstream_connections_refused_total";

/// `process_cpu_seconds_total`: user and system CPU time of the process.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// `process_resident_memory_bytes`: resident memory (VmRSS).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
/// `process_virtual_memory_bytes`: virtual memory (VmSize).
pub const PROCESS_VIRTUAL_MEMORY_BYTES: &str = "process_virtual_memory_bytes";
/// `process_open_fds`: open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// `process_max_fds`: the limit of open file descriptors (soft `RLIMIT_NOFILE`).
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// `process_start_time_seconds`: when the process started, in seconds since
/// the Unix epoch.
pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";

/// How an RPC streams, as the `grpc_type` label of go-grpc-prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcType {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl RpcType {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::ClientStream => "client_stream",
            RpcType::ServerStream => "server_stream",
            RpcType::BidiStream => "bidi_stream",
        }
    }

    /// Whether the client sends a stream of messages.
    pub fn client_streams(self) -> bool {
        matches!(self, RpcType::ClientStream | RpcType::BidiStream)
    }
}

/// One RPC the servers serve: the labels of its `grpc_server_*` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc {
    /// The full service name (`riskstream.v1.RiskScorer`).
    pub service: &'static str,
    /// The method (`Score`).
    pub method: &'static str,
    /// How it streams.
    pub kind: RpcType,
}

/// The `RiskScorer` service's full name.
pub const RISK_SCORER: &str = "riskstream.v1.RiskScorer";
/// The `RiskAdmin` service's full name.
pub const RISK_ADMIN: &str = "riskstream.v1.RiskAdmin";

const fn rpc(service: &'static str, method: &'static str, kind: RpcType) -> Rpc {
    Rpc {
        service,
        method,
        kind,
    }
}

/// Every RPC the servers serve (our proto's, health and reflection), and
/// last, `unknown`/`unknown` for any other path: the only label values of
/// the `grpc_server_*` series (a path a client makes up never becomes a
/// label).
pub const RPCS: [Rpc; 14] = [
    rpc(RISK_SCORER, "RegisterPaymentMethod", RpcType::Unary),
    rpc(RISK_SCORER, "GetPaymentMethod", RpcType::Unary),
    rpc(RISK_SCORER, "Score", RpcType::Unary),
    rpc(RISK_SCORER, "ScoreStream", RpcType::BidiStream),
    rpc(RISK_SCORER, "ReportFeedback", RpcType::Unary),
    rpc(RISK_ADMIN, "AddListItems", RpcType::Unary),
    rpc(RISK_ADMIN, "RemoveListItems", RpcType::Unary),
    rpc(RISK_ADMIN, "ListItems", RpcType::Unary),
    rpc(RISK_ADMIN, "EvaluatePolicy", RpcType::Unary),
    rpc("grpc.health.v1.Health", "Check", RpcType::Unary),
    rpc("grpc.health.v1.Health", "Watch", RpcType::ServerStream),
    rpc(
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        RpcType::BidiStream,
    ),
    rpc(
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        RpcType::BidiStream,
    ),
    rpc("unknown", "unknown", RpcType::Unary),
];

/// The index in [`RPCS`] of the RPC at `path` (`/service/method`), or of
/// `unknown`.
pub fn rpc_index(path: &str) -> usize {
    let parts = path.strip_prefix('/').and_then(|p| p.split_once('/'));
    parts
        .and_then(|(service, method)| {
            RPCS[..RPCS.len() - 1]
                .iter()
                .position(|r| r.service == service && r.method == method)
        })
        .unwrap_or(RPCS.len() - 1)
}

/// gRPC status code names by code number, as go-grpc-prometheus's
/// `grpc_code` label spells them.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Why a call timed out ([`CALLS_TIMED_OUT_TOTAL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The client's deadline (`grpc-timeout`) passed.
    Deadline = 0,
    /// A request message did not arrive whole within `--message-timeout`.
    Message = 1,
    /// A stream had no event for `--stream-idle-timeout`.
    StreamIdle = 2,
}

const TIMEOUT_REASONS: [&str; 3] = ["deadline", "message", "stream_idle"];

/// The gRPC addresses whose connections are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: RiskScorer.
    Scoring = 0,
    /// `--admin-listen`: RiskAdmin.
    Admin = 1,
}

const LISTENERS: [&str; 2] = ["scoring", "admin"];

/// Buckets of [`GRPC_SERVER_HANDLING_SECONDS`]: 100 µs to 10 s.
const HANDLING_BUCKETS: [f64; 16] = [
    100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,
    2.5, 5.0, 10.0,
];

/// Event kinds counted by [`EVENTS_TOTAL`] and [`INVALID_EVENTS_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `RegisterPaymentMethod`.
    Register = 0,
    /// A payment event (unary or streamed).
    Payment = 1,
    /// `ReportFeedback`.
    Feedback = 2,
    /// `GetPaymentMethod`.
    Get = 3,
}

const EVENT_KINDS: [&str; 4] = ["register", "payment", "feedback", "get"];
const FEEDBACK_KINDS: [&str; 3] = ["fraudulent", "dispute_fraud", "legitimate"];
const STORE_KINDS: [&str; 4] = [
    "payment_methods",
    "velocity_keys",
    "payments",
    "list_entries",
];

/// Buckets of [`SCORE_DURATION_SECONDS`]: 250 ns to 10 ms.
const DURATION_BUCKETS: [f64; 14] = [
    250e-9, 500e-9, 1e-6, 2e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3,
    10e-3,
];

const META: Metadata<'static> = Metadata::new("riskstream", Level::INFO, Some(module_path!()));

struct Inner {
    recorder: Arc<dyn Recorder + Send + Sync>,
    events: [Counter; 4],
    invalid: [Counter; 4],
    decisions: [[Counter; 5]; 4],
    score_duration: Histogram,
    risk_score: Histogram,
    holdout: Counter,
    active_streams: Gauge,
    model_errors: Counter,
    model_reload_errors: Counter,
    feedback: [Counter; 3],
    list_additions: [Counter; List::ALL.len()],
    list_removals: [Counter; List::ALL.len()],
    store: [Gauge; 4],
    disk_bytes: Gauge,
    disk: [Counter; 4],
    log_records: Counter,
    log_errors: Counter,
    log_dropped: Counter,
    log_failed: Counter,
    recorded: Counter,
    record_dropped: Counter,
    unknown_methods: Counter,
    store_fail_open: Counter,
    store_round_trip: Histogram,
    store_errors: [Counter; STORE_ERROR_KINDS.len()],
    store_reachable: Gauge,
    policy: [Gauge; 3],
    store_cache: [Counter; 2],
    rpc_started: [Counter; RPCS.len()],
    rpc_handled: [[Counter; GRPC_CODES.len()]; RPCS.len()],
    rpc_seconds: [Histogram; RPCS.len()],
    shed: Counter,
    timed_out: [Counter; TIMEOUT_REASONS.len()],
    open_connections: [Gauge; LISTENERS.len()],
    connections_refused: [Counter; LISTENERS.len()],
    model_info: Mutex<Option<(String, Gauge)>>,
}

/// Typed handles to every metric. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    /// Metrics recorded into a Prometheus registry, and the handle that renders it.
    pub fn prometheus() -> (Metrics, PrometheusHandle) {
        let score_buckets: Vec<f64> = (1..=20).map(|i| f64::from(i * 5) - 0.5).collect();
        let buckets = |b: PrometheusBuilder| {
            b.set_buckets_for_metric(
                Matcher::Full(SCORE_DURATION_SECONDS.into()),
                &DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Full(RISK_SCORE.into()), &score_buckets)?
            .set_buckets_for_metric(
                Matcher::Full(STORE_ROUND_TRIP_SECONDS.into()),
                &DURATION_BUCKETS,
            )?
            .set_buckets_for_metric(
                Matcher::Full(GRPC_SERVER_HANDLING_SECONDS.into()),
                &HANDLING_BUCKETS,
            )
        };
        // Only empty bucket lists are refused, and these are constants.
        let builder = buckets(PrometheusBuilder::new()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "histogram buckets refused; using summaries");
            PrometheusBuilder::new()
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        (Metrics::with_recorder(Arc::new(recorder)), handle)
    }

    /// Metrics that go nowhere (tools, benches, tests).
    pub fn noop() -> Metrics {
        Metrics::with_recorder(Arc::new(metrics::NoopRecorder))
    }

    fn with_recorder(recorder: Arc<dyn Recorder + Send + Sync>) -> Metrics {
        let r = &*recorder;
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            r.describe_counter(KeyName::from_const_str(name), unit, help.into());
        };
        describe(EVENTS_TOTAL, None, "Requests received, by kind.");
        describe(
            DECISIONS_TOTAL,
            None,
            "Outcomes returned, by decision and risk level.",
        );
        describe(
            HOLDOUT_TOTAL,
            None,
            "Payments whose reported score was perturbed (holdout).",
        );
        describe(
            INVALID_EVENTS_TOTAL,
            None,
            "Requests rejected by validation, by kind.",
        );
        describe(
            MODEL_ERRORS_TOTAL,
            None,
            "Assessments that failed open with risk level unknown.",
        );
        describe(
            MODEL_RELOAD_ERRORS_TOTAL,
            None,
            "Model reloads that failed (the loaded model stayed).",
        );
        describe(FEEDBACK_TOTAL, None, "Labels received, by kind.");
        describe(
            LIST_ADDITIONS_TOTAL,
            None,
            "Entries added to block and allow lists.",
        );
        describe(
            LIST_REMOVALS_TOTAL,
            None,
            "Entries taken off block and allow lists.",
        );
        describe(
            DECISION_LOG_RECORDS_TOTAL,
            None,
            "Records written to the decision log.",
        );
        describe(
            DECISION_LOG_ERRORS_TOTAL,
            None,
            "Decision-log writes or syncs that failed.",
        );
        describe(
            DECISION_LOG_DROPPED_TOTAL,
            None,
            "Decision-log records dropped because its queue was full.",
        );
        describe(
            DECISION_LOG_FAILED_TOTAL,
            None,
            "Decision-log records not written because their write failed.",
        );
        describe(
            RECORDED_TOTAL,
            None,
            "Requests appended to the recorded-traffic file (serve --record).",
        );
        describe(
            RECORD_DROPPED_TOTAL,
            None,
            "Requests not recorded: queue full, unparseable, or a write failure.",
        );
        describe(
            UNKNOWN_PAYMENT_METHODS_TOTAL,
            None,
            "Payments naming a payment method id the store does not hold, scored without a creation session.",
        );
        describe(
            STORE_FAIL_OPEN_TOTAL,
            None,
            "Payments that failed open (risk level unknown, allowed) because a remote store did not answer in time.",
        );
        describe(
            STORE_CACHE_LOOKUPS_TOTAL,
            None,
            "Payment method lookups of a remote store, by result: hit (the local cache), miss (a round trip).",
        );
        describe(
            STORE_ERRORS_TOTAL,
            None,
            "Failed round trips of a remote store, by kind: timeout, unavailable.",
        );
        r.describe_gauge(
            KeyName::from_const_str(STORE_REACHABLE),
            None,
            "1 while a remote store (Redis) is reachable, 0 during an outage.".into(),
        );
        for (name, what) in [
            (POLICY_RECALL, "recall"),
            (POLICY_FALSE_POSITIVE_RATE, "false-positive rate"),
            (POLICY_PRECISION, "precision"),
        ] {
            r.describe_gauge(
                KeyName::from_const_str(name),
                None,
                format!("Holdout estimate of the {what} at the live highest-risk threshold over the remembered payments (EvaluatePolicy with no threshold); NaN until known.").into(),
            );
        }
        r.describe_histogram(
            KeyName::from_const_str(STORE_ROUND_TRIP_SECONDS),
            Some(Unit::Seconds),
            "Round trips of a remote store for a batch of payments.".into(),
        );
        r.describe_histogram(
            KeyName::from_const_str(SCORE_DURATION_SECONDS),
            Some(Unit::Seconds),
            "In-process scoring time per event (validation to decision).".into(),
        );
        r.describe_histogram(
            KeyName::from_const_str(RISK_SCORE),
            None,
            "Reported risk scores (0-99) of assessed payments.".into(),
        );
        r.describe_gauge(
            KeyName::from_const_str(ACTIVE_STREAMS),
            None,
            "Open ScoreStream calls.".into(),
        );
        r.describe_gauge(
            KeyName::from_const_str(MODEL_INFO),
            None,
            "1 for the loaded model, labelled with its version.".into(),
        );
        describe(
            STORE_WRITE_ERRORS_TOTAL,
            None,
            "Writes of the store's log that failed (disk full, I/O error): durable writes answered UNAVAILABLE.",
        );
        describe(
            STORE_UNSAVED_RECORDS_TOTAL,
            None,
            "Changes the store could not save: in a failed write, or past what may wait for the disk.",
        );
        describe(
            STORE_COMMITS_TOTAL,
            None,
            "Group commits of the store's log.",
        );
        describe(
            STORE_SNAPSHOTS_TOTAL,
            None,
            "Snapshots written by the store.",
        );
        r.describe_gauge(
            KeyName::from_const_str(STORE_DISK_BYTES),
            Some(Unit::Bytes),
            "Bytes of the embedded store's files (logs and snapshot).".into(),
        );
        r.describe_gauge(
            KeyName::from_const_str(STORE_ENTRIES),
            None,
            "What the in-process store holds, by kind.".into(),
        );
        describe(
            GRPC_SERVER_STARTED_TOTAL,
            None,
            "Total number of RPCs started on the server.",
        );
        describe(
            GRPC_SERVER_HANDLED_TOTAL,
            None,
            "Total number of RPCs completed on the server, regardless of success or failure.",
        );
        r.describe_histogram(
            KeyName::from_const_str(GRPC_SERVER_HANDLING_SECONDS),
            Some(Unit::Seconds),
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.".into(),
        );
        describe(
            CALLS_SHED_TOTAL,
            None,
            "Calls refused at once with RESOURCE_EXHAUSTED because the server was at a limit (--max-concurrent-calls, or the bytes of messages being received).",
        );
        describe(
            CALLS_TIMED_OUT_TOTAL,
            None,
            "Calls ended by a timeout: deadline (the client's grpc-timeout), message (--message-timeout), stream_idle (--stream-idle-timeout).",
        );
        r.describe_gauge(
            KeyName::from_const_str(OPEN_CONNECTIONS),
            None,
            "Open client connections, by gRPC address.".into(),
        );
        describe(
            CONNECTIONS_REFUSED_TOTAL,
            None,
            "Connections closed at accept because --max-connections were open, by gRPC address.",
        );
        let counter = |name, labels: &[(&'static str, &'static str)]| {
            r.register_counter(&key(name, labels), &META)
        };
        let events = EVENT_KINDS.map(|k| counter(EVENTS_TOTAL, &[("kind", k)]));
        let invalid = EVENT_KINDS.map(|k| counter(INVALID_EVENTS_TOTAL, &[("kind", k)]));
        let decisions = Action::ALL.map(|a| {
            RiskLevel::ALL.map(|l| {
                counter(
                    DECISIONS_TOTAL,
                    &[("decision", a.as_str()), ("risk_level", l.as_str())],
                )
            })
        });
        let feedback = FEEDBACK_KINDS.map(|k| counter(FEEDBACK_TOTAL, &[("kind", k)]));
        let list_additions =
            List::ALL.map(|l| counter(LIST_ADDITIONS_TOTAL, &[("list", l.name())]));
        let list_removals = List::ALL.map(|l| counter(LIST_REMOVALS_TOTAL, &[("list", l.name())]));
        let store =
            STORE_KINDS.map(|k| r.register_gauge(&key(STORE_ENTRIES, &[("kind", k)]), &META));
        let rpc_labels = |r: &Rpc| {
            [
                ("grpc_type", r.kind.as_str()),
                ("grpc_service", r.service),
                ("grpc_method", r.method),
            ]
        };
        let rpc_started = RPCS.map(|r| counter(GRPC_SERVER_STARTED_TOTAL, &rpc_labels(&r)));
        let rpc_handled = RPCS.map(|r| {
            GRPC_CODES.map(|code| {
                let [t, s, m] = rpc_labels(&r);
                counter(GRPC_SERVER_HANDLED_TOTAL, &[t, s, m, ("grpc_code", code)])
            })
        });
        let rpc_seconds = RPCS.map(|rpc| {
            r.register_histogram(&key(GRPC_SERVER_HANDLING_SECONDS, &rpc_labels(&rpc)), &META)
        });
        let timed_out = TIMEOUT_REASONS.map(|t| counter(CALLS_TIMED_OUT_TOTAL, &[("reason", t)]));
        let open_connections =
            LISTENERS.map(|l| r.register_gauge(&key(OPEN_CONNECTIONS, &[("listener", l)]), &META));
        let connections_refused =
            LISTENERS.map(|l| counter(CONNECTIONS_REFUSED_TOTAL, &[("listener", l)]));
        let inner = Inner {
            events,
            invalid,
            decisions,
            score_duration: r.register_histogram(&key(SCORE_DURATION_SECONDS, &[]), &META),
            risk_score: r.register_histogram(&key(RISK_SCORE, &[]), &META),
            holdout: counter(HOLDOUT_TOTAL, &[]),
            active_streams: r.register_gauge(&key(ACTIVE_STREAMS, &[]), &META),
            model_errors: counter(MODEL_ERRORS_TOTAL, &[]),
            model_reload_errors: counter(MODEL_RELOAD_ERRORS_TOTAL, &[]),
            feedback,
            list_additions,
            list_removals,
            store,
            disk_bytes: r.register_gauge(&key(STORE_DISK_BYTES, &[]), &META),
            disk: [
                STORE_WRITE_ERRORS_TOTAL,
                STORE_UNSAVED_RECORDS_TOTAL,
                STORE_COMMITS_TOTAL,
                STORE_SNAPSHOTS_TOTAL,
            ]
            .map(|name| counter(name, &[])),
            log_records: counter(DECISION_LOG_RECORDS_TOTAL, &[]),
            log_errors: counter(DECISION_LOG_ERRORS_TOTAL, &[]),
            log_dropped: counter(DECISION_LOG_DROPPED_TOTAL, &[]),
            log_failed: counter(DECISION_LOG_FAILED_TOTAL, &[]),
            recorded: counter(RECORDED_TOTAL, &[]),
            record_dropped: counter(RECORD_DROPPED_TOTAL, &[]),
            unknown_methods: counter(UNKNOWN_PAYMENT_METHODS_TOTAL, &[]),
            store_fail_open: counter(STORE_FAIL_OPEN_TOTAL, &[]),
            store_round_trip: r.register_histogram(&key(STORE_ROUND_TRIP_SECONDS, &[]), &META),
            store_errors: STORE_ERROR_KINDS.map(|k| counter(STORE_ERRORS_TOTAL, &[("kind", k)])),
            store_reachable: r.register_gauge(&key(STORE_REACHABLE, &[]), &META),
            policy: [POLICY_RECALL, POLICY_FALSE_POSITIVE_RATE, POLICY_PRECISION].map(|name| {
                let g = r.register_gauge(&key(name, &[]), &META);
                g.set(f64::NAN);
                g
            }),
            store_cache: ["hit", "miss"]
                .map(|k| counter(STORE_CACHE_LOOKUPS_TOTAL, &[("result", k)])),
            rpc_started,
            rpc_handled,
            rpc_seconds,
            shed: counter(CALLS_SHED_TOTAL, &[]),
            timed_out,
            open_connections,
            connections_refused,
            model_info: Mutex::new(None),
            recorder,
        };
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// One request of `kind` received.
    pub fn event(&self, kind: EventKind) {
        self.inner.events[kind as usize].increment(1);
    }

    /// One request of `kind` rejected by validation.
    pub fn invalid(&self, kind: EventKind) {
        self.inner.invalid[kind as usize].increment(1);
    }

    /// One outcome returned.
    pub fn decision(&self, action: Action, level: RiskLevel) {
        let a = Action::ALL.iter().position(|x| *x == action).unwrap_or(0);
        let l = RiskLevel::ALL.iter().position(|x| *x == level).unwrap_or(0);
        self.inner.decisions[a][l].increment(1);
    }

    /// Scoring time of one event, in seconds.
    pub fn score_duration(&self, seconds: f64) {
        self.inner.score_duration.record(seconds);
    }

    /// The reported score of one assessed payment.
    pub fn risk_score(&self, score: u32) {
        self.inner.risk_score.record(f64::from(score));
    }

    /// One payment put in the holdout.
    pub fn holdout(&self) {
        self.inner.holdout.increment(1);
    }

    /// One assessment failed open.
    pub fn model_error(&self) {
        self.inner.model_errors.increment(1);
    }

    /// One model reload failed.
    pub fn model_reload_failed(&self) {
        self.inner.model_reload_errors.increment(1);
    }

    /// One label received.
    pub fn feedback(&self, kind: FeedbackKind) {
        let i = match kind {
            FeedbackKind::Fraudulent => 0,
            FeedbackKind::DisputeFraud => 1,
            FeedbackKind::Legitimate => 2,
        };
        self.inner.feedback[i].increment(1);
    }

    /// One entry added to `list`.
    pub fn list_addition(&self, list: List) {
        self.inner.list_additions[list as usize].increment(1);
    }

    /// One entry taken off `list`.
    pub fn list_removal(&self, list: List) {
        self.inner.list_removals[list as usize].increment(1);
    }

    /// Current store sizes.
    pub fn store(&self, s: StoreStats) {
        let v = [
            s.payment_methods,
            s.velocity_keys,
            s.payments,
            s.list_entries,
        ];
        for (g, v) in self.inner.store.iter().zip(v) {
            g.set(v as f64);
        }
        if let Some(d) = s.disk {
            self.inner.disk_bytes.set(d.bytes as f64);
            let totals = [d.write_errors, d.unsaved_records, d.commits, d.snapshots];
            for (c, v) in self.inner.disk.iter().zip(totals) {
                c.absolute(v);
            }
        }
    }

    /// `n` decision-log records written.
    pub fn log_records(&self, n: u64) {
        self.inner.log_records.increment(n);
    }

    /// One decision-log write or sync failed.
    pub fn log_error(&self) {
        self.inner.log_errors.increment(1);
    }

    /// One decision-log record dropped: its queue was full.
    pub fn log_dropped(&self) {
        self.inner.log_dropped.increment(1);
    }

    /// `n` decision-log records not written: their write failed.
    pub fn log_failed(&self, n: u64) {
        self.inner.log_failed.increment(n);
    }

    /// One request recorded.
    pub fn recorded(&self) {
        self.inner.recorded.increment(1);
    }

    /// One request not recorded.
    pub fn record_dropped(&self) {
        self.inner.record_dropped.increment(1);
    }

    /// One payment named a payment method id the store does not hold.
    pub fn unknown_payment_method(&self) {
        self.inner.unknown_methods.increment(1);
    }

    /// A payment failed open: a remote store did not answer in time.
    pub fn store_fail_open(&self) {
        self.inner.store_fail_open.increment(1);
    }

    /// One round trip of a remote store, answered in `seconds`.
    pub fn store_round_trip(&self, seconds: f64) {
        self.inner.store_round_trip.record(seconds);
    }

    /// One failed round trip of a remote store: `timeout` when it did not
    /// answer in time, else `unavailable`.
    pub fn store_error(&self, timeout: bool) {
        self.inner.store_errors[usize::from(!timeout)].increment(1);
    }

    /// A remote store's payment method lookups so far: cache hits, misses.
    pub fn store_cache(&self, (hits, misses): (u64, u64)) {
        self.inner.store_cache[0].absolute(hits);
        self.inner.store_cache[1].absolute(misses);
    }

    /// Whether a remote store is reachable now.
    pub fn store_reachable(&self, up: bool) {
        self.inner.store_reachable.set(f64::from(u8::from(up)));
    }

    /// The live holdout estimates (NaN for one the data cannot tell).
    pub fn policy(
        &self,
        recall: Option<f64>,
        false_positive_rate: Option<f64>,
        precision: Option<f64>,
    ) {
        for (g, v) in self
            .inner
            .policy
            .iter()
            .zip([recall, false_positive_rate, precision])
        {
            g.set(v.unwrap_or(f64::NAN));
        }
    }

    /// Marks `version` as the loaded model (and the previous one as not).
    pub fn model_loaded(&self, version: &str) {
        let mut current = self
            .inner
            .model_info
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, old)) = current.take() {
            old.set(0.0);
        }
        let labels = vec![Label::new("version", version.to_owned())];
        let g = self
            .inner
            .recorder
            .register_gauge(&Key::from_parts(MODEL_INFO, labels), &META);
        g.set(1.0);
        *current = Some((version.to_owned(), g));
    }

    /// One call of `RPCS[rpc]` started.
    pub fn rpc_started(&self, rpc: usize) {
        if let Some(c) = self.inner.rpc_started.get(rpc) {
            c.increment(1);
        }
    }

    /// One call of `RPCS[rpc]` finished with the status `code` (its
    /// number), `seconds` after it started.
    pub fn rpc_handled(&self, rpc: usize, code: usize, seconds: f64) {
        // A code number outside gRPC's is counted as Unknown.
        let code = if code < GRPC_CODES.len() { code } else { 2 };
        if let Some(row) = self.inner.rpc_handled.get(rpc) {
            row[code].increment(1);
        }
        if let Some(h) = self.inner.rpc_seconds.get(rpc) {
            h.record(seconds);
        }
    }

    /// One call refused at once: the server was at a limit.
    pub fn shed(&self) {
        self.inner.shed.increment(1);
    }

    /// One call ended by a timeout.
    pub fn timed_out(&self, why: Timeout) {
        self.inner.timed_out[why as usize].increment(1);
    }

    /// Counts one open connection of `listener` until the guard is dropped.
    pub fn connection_opened(&self, listener: Listener) -> GaugeGuard {
        let gauge = self.inner.open_connections[listener as usize].clone();
        gauge.increment(1.0);
        GaugeGuard { gauge }
    }

    /// One connection of `listener` closed at accept (too many open).
    pub fn connection_refused(&self, listener: Listener) {
        self.inner.connections_refused[listener as usize].increment(1);
    }

    /// Counts one open stream until the returned guard is dropped.
    pub fn stream_opened(&self) -> GaugeGuard {
        self.inner.active_streams.increment(1.0);
        GaugeGuard {
            gauge: self.inner.active_streams.clone(),
        }
    }
}

/// Decrements a gauge (open streams, open connections) when dropped.
pub struct GaugeGuard {
    gauge: Gauge,
}

impl std::fmt::Debug for GaugeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeGuard").finish_non_exhaustive()
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// The `process_*` series, in the Prometheus text format, for `stats` (read
/// from `/proc` when `/metrics` is scraped). Written here rather than
/// through the recorder because `process_cpu_seconds_total` is a counter of
/// fractional seconds.
pub fn render_process(stats: &crate::process::ProcessStats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut series = |name: &str, kind: &str, help: &str, value: f64| {
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    };
    series(
        PROCESS_CPU_SECONDS_TOTAL,
        "counter",
        "Total user and system CPU time spent in seconds.",
        stats.cpu_seconds,
    );
    series(
        PROCESS_RESIDENT_MEMORY_BYTES,
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_bytes as f64,
    );
    series(
        PROCESS_VIRTUAL_MEMORY_BYTES,
        "gauge",
        "Virtual memory size in bytes.",
        stats.virtual_bytes as f64,
    );
    series(
        PROCESS_OPEN_FDS,
        "gauge",
        "Number of open file descriptors.",
        stats.open_fds as f64,
    );
    if let Some(max) = stats.max_fds {
        series(
            PROCESS_MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    series(
        PROCESS_START_TIME_SECONDS,
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stats.start_time_seconds,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_rpc_or_unknown() {
        assert_eq!(
            RPCS[rpc_index("/riskstream.v1.RiskScorer/Score")].method,
            "Score"
        );
        assert_eq!(
            RPCS[rpc_index("/grpc.health.v1.Health/Watch")].kind,
            RpcType::ServerStream
        );
        let unknown = RPCS.len() - 1;
        for path in [
            "",
            "/",
            "/riskstream.v1.RiskScorer",
            "/riskstream.v1.RiskScorer/score",
            "/riskstream.v1.RiskScorer/Score/x",
            "riskstream.v1.RiskScorer/Score",
            "/x/Score",
            "/unknown/unknown",
        ] {
            assert_eq!(rpc_index(path), unknown, "{path:?}");
        }
    }

    #[test]
    fn code_names_follow_grpc_numbering() {
        for (i, name) in GRPC_CODES.iter().enumerate() {
            let expected = match tonic::Code::from_i32(i as i32) {
                tonic::Code::Ok => "OK".to_owned(),
                tonic::Code::Cancelled => "Canceled".to_owned(),
                other => format!("{other:?}"),
            };
            assert_eq!(*name, expected);
        }
    }

    #[test]
    fn process_series_render_with_their_types() {
        let text = render_process(&crate::process::ProcessStats {
            cpu_seconds: 1.25,
            resident_bytes: 4096,
            virtual_bytes: 8192,
            open_fds: 7,
            max_fds: Some(1024),
            start_time_seconds: 1.7e9,
        });
        assert!(text.contains(
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.25\n"
        ));
        assert!(text.contains("process_resident_memory_bytes 4096\n"));
        assert!(text.contains("process_max_fds 1024\n"));
        assert!(text.contains("process_start_time_seconds 1700000000\n"));
    }
}
