//! Command-line flags, parsed once with clap. Every flag also reads the
//! environment variable `RISKSTREAM_<FLAG>`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// riskstream: streaming payment risk scoring over gRPC.
#[derive(Debug, Parser)]
#[command(name = "riskstream", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `riskstream=debug`.
    #[arg(long, global = true, env = "RISKSTREAM_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
pub enum Command {
    /// Serve the RiskScorer gRPC API.
    Serve(ServeArgs),
    /// Train a model and write its model file.
    // `--version` names the model version here, not the program's.
    #[command(disable_version_flag = true)]
    Train(TrainArgs),
    /// Write labelled synthetic traffic to a recorded-traffic file.
    Simulate(SimulateArgs),
    /// Convert a public dataset into a recorded-traffic file.
    Convert(ConvertArgs),
    /// Measure a model on recorded traffic replayed through the serving path.
    Evaluate(EvaluateArgs),
    /// Estimate the recall, false-positive rate and precision of block
    /// thresholds from a decision log and the labels that arrived, weighting
    /// the payments the holdout let through.
    EvaluatePolicy(EvaluatePolicyArgs),
    /// Replay recorded traffic against a running server and report its
    /// throughput and latency.
    Replay(ReplayArgs),
}

/// Modes of `riskstream replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayModeArg {
    /// Payments over bidirectional `ScoreStream` streams.
    Stream,
    /// Payments as unary `Score` calls.
    Unary,
}

/// Request kinds of a recorded-traffic file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// RegisterPaymentMethod.
    Register,
    /// Payments.
    Payment,
    /// ReportFeedback.
    Feedback,
}

/// Ordering of registrations and feedback in `riskstream replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// In file order with the payments (reproduces scores exactly).
    Strict,
    /// Beside the payments; a payment waits only for its own card's registration.
    Relaxed,
}

/// How `riskstream replay` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A live bar on a terminal, plain lines otherwise.
    Auto,
    /// A live bar.
    Bar,
    /// A plain line every --progress-interval.
    Lines,
    /// Nothing.
    Off,
}

/// Flags of `riskstream replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Recorded-traffic file ("-" for standard input).
    pub file: PathBuf,
    /// Send only these kinds of request (comma-separated).
    #[arg(
        long,
        env = "RISKSTREAM_KINDS",
        value_enum,
        value_delimiter = ',',
        default_value = "register,payment,feedback"
    )]
    pub kinds: Vec<KindArg>,
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(
        long,
        env = "RISKSTREAM_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: String,
    /// Payments over bidirectional streams or unary calls.
    #[arg(long, env = "RISKSTREAM_MODE", value_enum, default_value_t = ReplayModeArg::Stream)]
    pub mode: ReplayModeArg,
    /// Open loop at this many requests per second (latency from each
    /// scheduled send time). Without --rate or --speed: as fast as answered.
    #[arg(long, env = "RISKSTREAM_RATE", conflicts_with = "speed")]
    pub rate: Option<f64>,
    /// Open loop at the recorded inter-arrival times divided by this factor.
    #[arg(long, env = "RISKSTREAM_SPEED")]
    pub speed: Option<f64>,
    /// Order of registrations and feedback relative to payments.
    #[arg(long, env = "RISKSTREAM_ORDER", value_enum, default_value_t = OrderArg::Strict)]
    pub order: OrderArg,
    /// Stop sending after the warm-up plus this long (e.g. 60s); the whole
    /// file by default.
    #[arg(long, env = "RISKSTREAM_DURATION")]
    pub duration: Option<String>,
    /// Answers in this first stretch are checked but not measured.
    #[arg(long, env = "RISKSTREAM_WARMUP", default_value = "0s")]
    pub warmup: String,
    /// A file whose first line is the token calls carry
    /// (`authorization: Bearer <token>`).
    #[arg(long, env = "RISKSTREAM_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// CA (PEM) that signed the server's certificate: connect with TLS
    /// (the target's scheme becomes https).
    #[arg(long, env = "RISKSTREAM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a server that asks for one (mutual
    /// TLS); with --tls-client-key.
    #[arg(long, env = "RISKSTREAM_TLS_CLIENT_CERT", requires_all = ["tls_client_key", "tls_ca"])]
    pub tls_client_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "RISKSTREAM_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// HTTP/2 connections to open.
    #[arg(long, env = "RISKSTREAM_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,
    /// Streams (stream mode) or concurrent callers (unary mode).
    #[arg(long, env = "RISKSTREAM_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// Unanswered events allowed per stream.
    #[arg(long, env = "RISKSTREAM_IN_FLIGHT", default_value_t = 64)]
    pub in_flight: usize,
    /// Write one JSON line per outcome here.
    #[arg(long, env = "RISKSTREAM_OUTCOMES_OUT")]
    pub outcomes_out: Option<PathBuf>,
    /// Print the final report as JSON.
    #[arg(long, env = "RISKSTREAM_JSON")]
    pub json: bool,
    /// Succeed even if some requests were answered with errors.
    #[arg(long, env = "RISKSTREAM_ALLOW_ERRORS")]
    pub allow_errors: bool,
    /// How progress is shown (on standard error).
    #[arg(long, env = "RISKSTREAM_PROGRESS", value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Interval of plain progress lines.
    #[arg(long, env = "RISKSTREAM_PROGRESS_INTERVAL", default_value = "5s")]
    pub progress_interval: String,
}

/// Flags of `riskstream evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Recorded-traffic file (labels come from its fraud reports).
    #[arg(long, env = "RISKSTREAM_TRAFFIC")]
    pub traffic: PathBuf,
    /// Model file to evaluate.
    #[arg(long, env = "RISKSTREAM_MODEL", default_value = "models/default.json")]
    pub model: PathBuf,
    /// Evaluate the scores a running server served instead: the outcomes
    /// file `riskstream replay --outcomes-out` wrote for this traffic.
    #[arg(long, env = "RISKSTREAM_OUTCOMES", conflicts_with = "model")]
    pub outcomes: Option<PathBuf>,
    /// First day (UTC date or date-time) of the payments measured.
    #[arg(long, env = "RISKSTREAM_FROM")]
    pub from: Option<String>,
    /// The payments measured end before this day (UTC date or date-time).
    #[arg(long, env = "RISKSTREAM_TO")]
    pub to: Option<String>,
    /// Block threshold at which recall and false-positive rate are given.
    #[arg(long, env = "RISKSTREAM_THRESHOLD", default_value_t = 75)]
    pub threshold: u32,
    /// Apply the fraud-detection handbook's test-set rules (needs --from):
    /// leave out cards already known to be compromised.
    #[arg(long, env = "RISKSTREAM_HANDBOOK_TEST_SET")]
    pub handbook_test_set: bool,
    /// Print the figures as JSON.
    #[arg(long, env = "RISKSTREAM_JSON")]
    pub json: bool,
}

/// Flags of `riskstream evaluate-policy`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("label_source").required(true)))]
pub struct EvaluatePolicyArgs {
    /// The decision log a server wrote (`serve --decision-log`).
    #[arg(long, env = "RISKSTREAM_DECISION_LOG")]
    pub decision_log: PathBuf,
    /// Labels as JSON lines of `{payment_id, kind, reported_at_ms}`
    /// (`kind`: fraudulent, dispute_fraud or legitimate).
    #[arg(long, env = "RISKSTREAM_LABELS", group = "label_source")]
    pub labels: Option<PathBuf>,
    /// Labels from a recorded-traffic file's fraud reports instead.
    #[arg(long, env = "RISKSTREAM_TRAFFIC", group = "label_source")]
    pub traffic: Option<PathBuf>,
    /// Thresholds on the true score (0–100) to estimate at; repeat the flag
    /// or separate them with commas.
    #[arg(
        long = "threshold",
        env = "RISKSTREAM_THRESHOLD",
        value_delimiter = ',',
        default_values_t = [65, 70, 75, 80, 85]
    )]
    pub thresholds: Vec<u32>,
    /// First day (UTC date or date-time) of the payments counted.
    #[arg(long, env = "RISKSTREAM_FROM")]
    pub from: Option<String>,
    /// The payments counted end before this day (UTC date or date-time).
    #[arg(long, env = "RISKSTREAM_TO")]
    pub to: Option<String>,
    /// Leave out payments younger than this at --as-of: their labels may
    /// be yet to come (e.g. `30days`).
    #[arg(long, env = "RISKSTREAM_MIN_LABEL_AGE", default_value = "0s")]
    pub min_label_age: String,
    /// The time the labels are known up to (UTC date or date-time); labels
    /// reported later are ignored. Default: the latest time in the files.
    #[arg(long, env = "RISKSTREAM_AS_OF")]
    pub as_of: Option<String>,
    /// The share of draws each interval covers.
    #[arg(long, env = "RISKSTREAM_CONFIDENCE", default_value_t = crate::policy::estimate::DEFAULT_CONFIDENCE)]
    pub confidence: f64,
    /// Print the figures as JSON.
    #[arg(long, env = "RISKSTREAM_JSON")]
    pub json: bool,
}

/// Flags of `riskstream simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Seed of the random generator: the same seed gives the same file.
    #[arg(long, env = "RISKSTREAM_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Customers in the population.
    #[arg(long, env = "RISKSTREAM_CUSTOMERS", default_value_t = 20_000)]
    pub customers: u32,
    /// Days of traffic.
    #[arg(long, env = "RISKSTREAM_DAYS", default_value_t = 30)]
    pub days: u32,
    /// Fraudulent payments per legitimate one.
    #[arg(long, env = "RISKSTREAM_FRAUD_RATE", default_value_t = 0.01)]
    pub fraud_rate: f64,
    /// Start of the traffic (UTC date or date-time, e.g. 2026-01-01).
    #[arg(long, env = "RISKSTREAM_START", default_value = "2026-01-01")]
    pub start: String,
    /// Recorded-traffic file to write ("-" for standard output).
    #[arg(long, env = "RISKSTREAM_OUT")]
    pub out: PathBuf,
}

/// Estimator families `riskstream train --traffic` fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EstimatorArg {
    /// Logistic regression (linfa).
    LogisticRegression,
    /// Gradient-boosted trees (pure Rust).
    GradientBoostedTrees,
}

/// How the holdout share depends on the true score (`serve --holdout-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HoldoutPolicyArg {
    /// Every payment at --holdout-rate.
    Flat,
    /// Most just above the block threshold, less far above it, with a floor.
    Score,
}

/// How `riskstream train --served-decision-log` weights the payments let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServedWeightingArg {
    /// By the inverse of the probability that each was let through.
    InversePropensity,
    /// Each once.
    None,
}

/// Datasets `riskstream convert` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvertFormat {
    /// Transactions CSV (optionally gzipped) of the fraud-detection handbook's simulator.
    HandbookCsv,
}

/// Flags of `riskstream convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Format of the input.
    #[arg(long, env = "RISKSTREAM_FORMAT", value_enum)]
    pub format: ConvertFormat,
    /// How long after a fraudulent transaction its fraud report arrives.
    #[arg(long, env = "RISKSTREAM_FEEDBACK_DELAY", default_value = "7days")]
    pub feedback_delay: String,
    /// Input file.
    pub input: PathBuf,
    /// Recorded-traffic file to write ("-" for standard output).
    pub output: PathBuf,
}

/// Flags of `riskstream serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "RISKSTREAM_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Prometheus listen address for /metrics ("off" to disable).
    #[arg(
        long,
        env = "RISKSTREAM_METRICS_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_listen: String,
    /// TLS certificate chain (PEM) of both gRPC addresses; with --tls-key.
    /// Read again on SIGHUP.
    #[arg(long, env = "RISKSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "RISKSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) whose certificates clients must present: mutual TLS.
    #[arg(long, env = "RISKSTREAM_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Scoring tokens (one per line): RiskScorer calls must carry one
    /// (`authorization: Bearer <token>`). Read again when the file changes.
    #[arg(long, env = "RISKSTREAM_SCORING_TOKENS_FILE")]
    pub scoring_tokens_file: Option<PathBuf>,
    /// Admin tokens (one per line): RiskAdmin calls must carry one.
    #[arg(long, env = "RISKSTREAM_ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Listen on a non-loopback address without token files (anyone who
    /// reaches the port may call).
    #[arg(long, env = "RISKSTREAM_INSECURE")]
    pub insecure: bool,
    /// RiskAdmin's address (list management, for operators), with health
    /// and reflection; `off` disables it.
    #[arg(
        long,
        env = "RISKSTREAM_ADMIN_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub admin_listen: String,
    /// Model file to load.
    #[arg(long, env = "RISKSTREAM_MODEL", default_value = "models/default.json")]
    pub model: PathBuf,
    /// How often the model file is checked for changes and reloaded ("off":
    /// only on SIGHUP).
    #[arg(long, env = "RISKSTREAM_MODEL_POLL_INTERVAL", default_value = "2s")]
    pub model_poll_interval: String,
    /// Scores at or above it are elevated risk.
    #[arg(long, env = "RISKSTREAM_ELEVATED_THRESHOLD", default_value_t = 65)]
    pub elevated_threshold: u32,
    /// Scores at or above it are highest risk.
    #[arg(long, env = "RISKSTREAM_HIGHEST_THRESHOLD", default_value_t = 75)]
    pub highest_threshold: u32,
    /// Action for elevated risk: allow, review (the elevated-review setting) or request-3ds.
    #[arg(long, env = "RISKSTREAM_ELEVATED_ACTION", default_value = "allow")]
    pub elevated_action: String,
    /// Action for highest risk: block, review, request-3ds or allow.
    #[arg(long, env = "RISKSTREAM_HIGHEST_ACTION", default_value = "block")]
    pub highest_action: String,
    /// Share of payments (0–1) in the holdout, whose reported score is perturbed.
    #[arg(long, env = "RISKSTREAM_HOLDOUT_RATE", default_value_t = 0.01)]
    pub holdout_rate: f64,
    /// How the holdout share depends on the true score: flat (every payment
    /// at --holdout-rate) or score (--holdout-rate over the ten scores from
    /// the block threshold, 1/√2 of it for each further ten, never below
    /// --holdout-min-rate; --holdout-min-rate below the threshold).
    #[arg(
        long,
        env = "RISKSTREAM_HOLDOUT_POLICY",
        value_enum,
        default_value_t = HoldoutPolicyArg::Flat
    )]
    pub holdout_policy: HoldoutPolicyArg,
    /// With --holdout-policy score: the least share held out at any score
    /// (0 to --holdout-rate).
    #[arg(long, env = "RISKSTREAM_HOLDOUT_MIN_RATE", default_value_t = 0.001)]
    pub holdout_min_rate: f64,
    /// Secret key of the holdout draw (random per process when absent).
    #[arg(long, env = "RISKSTREAM_HOLDOUT_KEY", hide_env_values = true)]
    pub holdout_key: Option<String>,
    /// Append one JSON line per scored payment (true and reported score, propensity) to this file.
    /// Written off the scoring path; records that do not fit the queue, or
    /// whose write fails, are dropped and counted.
    #[arg(long, env = "RISKSTREAM_DECISION_LOG")]
    pub decision_log: Option<PathBuf>,
    /// Most decision-log records waiting for the disk; past it records are
    /// dropped (and counted) rather than slowing scoring down.
    #[arg(long, env = "RISKSTREAM_DECISION_LOG_QUEUE", default_value_t = 65_536)]
    pub decision_log_queue: usize,
    /// Longest time a scored payment's record (its velocity counts, the
    /// record late feedback needs) and its decision-log line wait before
    /// they are synced to disk (0s: each reply waits for its sync).
    #[arg(long, env = "RISKSTREAM_SYNC_INTERVAL", default_value = "100ms")]
    pub sync_interval: String,
    /// Where state is kept: `embedded` (durable, under --data-dir),
    /// `memory` (nothing survives the process), or a Redis shared by
    /// replicas: `redis://HOST:PORT[/DB]` (`rediss://` for TLS), or a
    /// Redis Cluster: `redis+cluster://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, env = "RISKSTREAM_STATE", default_value = "embedded")]
    pub state: String,
    /// The namespace every key of the Redis store starts with (replicas of
    /// one service share it).
    #[arg(long, env = "RISKSTREAM_REDIS_PREFIX", default_value = "riskstream:")]
    pub redis_prefix: String,
    /// Longest wait for one Redis round trip (writes past it answer
    /// UNAVAILABLE; payments fail open sooner when their deadline is).
    #[arg(long, env = "RISKSTREAM_REDIS_TIMEOUT", default_value = "1s")]
    pub redis_timeout: String,
    /// Directory of the embedded store (created if missing; one process at
    /// a time).
    #[arg(long, env = "RISKSTREAM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Append every request received, with its arrival time, to this
    /// recorded-traffic file (for `riskstream replay`). Written off the
    /// request path; records that do not fit the queue are dropped and counted.
    #[arg(long, env = "RISKSTREAM_RECORD")]
    pub record: Option<PathBuf>,
    /// How long open calls get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "RISKSTREAM_SHUTDOWN_GRACE", default_value = "10s")]
    pub shutdown_grace: String,
    /// Largest accepted request message in bytes; larger ones are rejected with RESOURCE_EXHAUSTED.
    #[arg(long, env = "RISKSTREAM_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// Most insights per outcome (at most 8).
    #[arg(long, env = "RISKSTREAM_MAX_INSIGHTS", default_value_t = 5)]
    pub max_insights: usize,
    /// How far in the future a timestamp may be before it is rejected.
    #[arg(long, env = "RISKSTREAM_MAX_CLOCK_SKEW", default_value = "5m")]
    pub max_clock_skew: String,
    /// JSON file of initial list entries: {"block_email": ["a@example.com"], "allow_ip": [...]}.
    #[arg(long, env = "RISKSTREAM_LISTS")]
    pub lists: Option<PathBuf>,
    /// Most registered payment methods; further registrations get RESOURCE_EXHAUSTED.
    #[arg(
        long,
        env = "RISKSTREAM_MAX_PAYMENT_METHODS",
        default_value_t = 20_000_000
    )]
    pub max_payment_methods: usize,
    /// Most velocity keys per kind (card, email, IP, device) before idle keys are evicted early.
    #[arg(long, env = "RISKSTREAM_MAX_WINDOW_KEYS", default_value_t = 5_000_000)]
    pub max_window_keys: usize,
    /// Most recent payments remembered for feedback.
    #[arg(long, env = "RISKSTREAM_MAX_PAYMENTS", default_value_t = 20_000_000)]
    pub max_payments: usize,
    /// How long a payment is remembered for feedback.
    #[arg(long, env = "RISKSTREAM_PAYMENT_RETENTION", default_value = "120days")]
    pub payment_retention: String,
    /// How often idle velocity keys and old payments are forgotten.
    #[arg(long, env = "RISKSTREAM_SWEEP_INTERVAL", default_value = "60s")]
    pub sweep_interval: String,
    /// How often the riskstream_policy_* gauges (holdout estimates at the
    /// live threshold over every remembered payment) are computed again.
    #[arg(
        long,
        env = "RISKSTREAM_POLICY_METRICS_INTERVAL",
        default_value = "60s"
    )]
    pub policy_metrics_interval: String,
    /// Unary RiskScorer calls in progress at once; a call past it is
    /// refused at once with RESOURCE_EXHAUSTED (nothing queues). Streams
    /// take no slot.
    #[arg(long, env = "RISKSTREAM_MAX_CONCURRENT_CALLS", default_value_t = crate::server::DEFAULT_MAX_CONCURRENT_CALLS)]
    pub max_concurrent_calls: usize,
    /// RiskAdmin calls in progress at once (on --admin-listen); a call past
    /// it is refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "RISKSTREAM_ADMIN_MAX_CONCURRENT_CALLS", default_value_t = crate::server::DEFAULT_ADMIN_MAX_CONCURRENT_CALLS)]
    pub admin_max_concurrent_calls: usize,
    /// HTTP/2 streams a client may open at once on one connection
    /// (announced in SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "RISKSTREAM_MAX_STREAMS_PER_CONNECTION", default_value_t = crate::server::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    pub max_streams_per_connection: u32,
    /// Open client connections per gRPC address; a connection past it is
    /// closed as soon as it is accepted.
    #[arg(long, env = "RISKSTREAM_MAX_CONNECTIONS", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Silence on a connection before the server pings it (HTTP/2 PING,
    /// TCP keepalive beneath).
    #[arg(long, env = "RISKSTREAM_KEEPALIVE_INTERVAL", default_value = "60s")]
    pub keepalive_interval: String,
    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "RISKSTREAM_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub keepalive_timeout: String,
    /// How long a request message may take to arrive whole (a unary call's
    /// request from the call's start; on a stream, each message from its
    /// first byte); past it the call ends with DEADLINE_EXCEEDED.
    #[arg(long, env = "RISKSTREAM_MESSAGE_TIMEOUT", default_value = "10s")]
    pub message_timeout: String,
    /// A ScoreStream without an event this long is ended with UNAVAILABLE
    /// ("off": never).
    #[arg(long, env = "RISKSTREAM_STREAM_IDLE_TIMEOUT", default_value = "5m")]
    pub stream_idle_timeout: String,
    /// Age at which a client connection is asked to go (HTTP/2 GOAWAY): it
    /// takes no new calls, its calls in progress and open streams go on,
    /// and it closes once they have ended; clients reconnect (to any
    /// replica). Closes connections that stay idle ("off": never).
    #[arg(long, env = "RISKSTREAM_MAX_CONNECTION_AGE", default_value = "30m")]
    pub max_connection_age: String,
}

/// Flags of `riskstream train`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["synthetic", "traffic"])))]
pub struct TrainArgs {
    /// Train on synthetic sessions generated in process from --seed.
    #[arg(long, env = "RISKSTREAM_SYNTHETIC")]
    pub synthetic: bool,
    /// Train on a recorded-traffic file, replayed through the serving path.
    #[arg(long, env = "RISKSTREAM_TRAFFIC")]
    pub traffic: Option<PathBuf>,
    /// With --traffic: first day (UTC date or date-time) of the payments trained on.
    #[arg(long, env = "RISKSTREAM_FROM")]
    pub from: Option<String>,
    /// With --traffic: the payments trained on end before this day (UTC date or date-time).
    #[arg(long, env = "RISKSTREAM_TO")]
    pub to: Option<String>,
    /// With --traffic: the feature set to train on (1: sessions and short
    /// velocity; 2: plus long windows, calendar, amount ratios; 3: plus the
    /// card's recent amount spikes; 4: plus merchant fraud rates without the
    /// frauds a card spike explains; 5: plus the age of the merchant's
    /// fraud wave; default the newest).
    #[arg(long, env = "RISKSTREAM_FEATURE_SET")]
    pub feature_set: Option<usize>,
    /// With --traffic: the estimator family.
    #[arg(
        long,
        env = "RISKSTREAM_ESTIMATOR",
        value_enum,
        default_value = "logistic-regression"
    )]
    pub estimator: EstimatorArg,
    /// With --traffic: the traffic is what a server took in (`serve
    /// --record`) and this is the decision log it wrote; train only on the
    /// payments it let through, as a deployment sees labels, weighted as
    /// --served-weighting says.
    #[arg(long, env = "RISKSTREAM_SERVED_DECISION_LOG", requires = "traffic")]
    pub served_decision_log: Option<PathBuf>,
    /// With --served-decision-log: weight each payment let through by the
    /// inverse of the probability that it was (inverse-propensity), or
    /// count each once (none).
    #[arg(
        long,
        env = "RISKSTREAM_SERVED_WEIGHTING",
        value_enum,
        default_value_t = ServedWeightingArg::InversePropensity,
        requires = "served_decision_log"
    )]
    pub served_weighting: ServedWeightingArg,
    /// Gradient-boosted trees: most boosting rounds.
    #[arg(long, env = "RISKSTREAM_GBT_ROUNDS")]
    pub gbt_rounds: Option<usize>,
    /// Gradient-boosted trees: shrinkage of every leaf.
    #[arg(long, env = "RISKSTREAM_GBT_LEARNING_RATE")]
    pub gbt_learning_rate: Option<f64>,
    /// Gradient-boosted trees: deepest split level.
    #[arg(long, env = "RISKSTREAM_GBT_MAX_DEPTH")]
    pub gbt_max_depth: Option<usize>,
    /// Gradient-boosted trees: L2 penalty on leaf values.
    #[arg(long, env = "RISKSTREAM_GBT_LAMBDA")]
    pub gbt_lambda: Option<f64>,
    /// Gradient-boosted trees: least hessian sum in a child.
    #[arg(long, env = "RISKSTREAM_GBT_MIN_CHILD_WEIGHT")]
    pub gbt_min_child_weight: Option<f64>,
    /// Gradient-boosted trees: most histogram bins per feature (2–4096).
    #[arg(long, env = "RISKSTREAM_GBT_BINS")]
    pub gbt_bins: Option<usize>,
    /// Gradient-boosted trees: rounds without a better held-out loss before stopping.
    #[arg(long, env = "RISKSTREAM_GBT_PATIENCE")]
    pub gbt_patience: Option<usize>,
    /// Gradient-boosted trees: after choosing the number of rounds on the
    /// calibration split, fit again on the whole window (calibration then
    /// sees trees fitted on it).
    #[arg(long, env = "RISKSTREAM_GBT_REFIT")]
    pub gbt_refit: bool,
    /// Gradient-boosted trees: share of the rows each tree is grown on,
    /// drawn anew per tree (0–1; default 1, every row).
    #[arg(long, env = "RISKSTREAM_GBT_SUBSAMPLE")]
    pub gbt_subsample: Option<f64>,
    /// Gradient-boosted trees: share of the features each tree may split
    /// on, drawn anew per tree (0–1; default 1, every feature).
    #[arg(long, env = "RISKSTREAM_GBT_COLSAMPLE")]
    pub gbt_colsample: Option<f64>,
    /// Gradient-boosted trees: seed of the row and feature draws (default 1).
    #[arg(long, env = "RISKSTREAM_GBT_SEED")]
    pub gbt_seed: Option<u64>,
    /// Gradient-boosted trees: average this many boosted models, each drawn
    /// from its own seed (bagging; default 1).
    #[arg(long, env = "RISKSTREAM_GBT_BAGS")]
    pub gbt_bags: Option<usize>,
    /// Seed of the synthetic traffic.
    #[arg(long, env = "RISKSTREAM_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Customers in the synthetic population.
    #[arg(long, env = "RISKSTREAM_CUSTOMERS", default_value_t = 20_000)]
    pub customers: u32,
    /// Days of synthetic traffic.
    #[arg(long, env = "RISKSTREAM_DAYS", default_value_t = 30)]
    pub days: u32,
    /// Model version to write (default: derived from the seed).
    #[arg(long, env = "RISKSTREAM_VERSION")]
    pub version: Option<String>,
    /// Where to write the model file.
    #[arg(long, env = "RISKSTREAM_OUT")]
    pub out: PathBuf,
}
