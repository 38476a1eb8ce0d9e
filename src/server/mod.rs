//! The gRPC edge: serves `RiskScorer` with health and reflection beside it,
//! the Prometheus endpoint, periodic store sweeps, and graceful shutdown.
//!
//! - [`service`] implements the tonic trait of `RiskScorer`.
//! - [`admin`] implements `RiskAdmin`, served on its own address.
//! - [`auth`] checks every call's bearer token.
//! - [`tls`] TLS and mutual TLS, reloaded on SIGHUP.
//! - [`conn`] caps and counts client connections.
//! - [`calls`] counts every call, sets its deadline and sheds unary calls
//!   past the concurrency limit.
//! - [`codec`] hands requests to it as raw bytes.
//! - [`limit`] refuses request messages over the size limit before they
//!   are buffered, and times out half-sent ones.
//! - [`status`] maps service errors to gRPC statuses.
//! - [`metrics_http`] serves `/metrics`.
//! - [`reload`] swaps in a changed model file (or on SIGHUP).
//! - [`fixed`] a do-nothing server with the same contract (the transport
//!   ceiling of benchmarks).

pub mod admin;
pub mod auth;
pub mod calls;
pub mod codec;
pub mod conn;
pub mod fixed;
pub mod limit;
pub mod metrics_http;
pub mod reload;
pub mod service;
pub mod status;
pub mod tls;

/// The generated `RiskScorer` server (requests as raw bytes, see [`codec`]).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod generated {
    include!(concat!(
        env!("OUT_DIR"),
        "/server/riskstream.v1.RiskScorer.rs"
    ));
}

/// The methods of the manual `RiskScorer` definition (`build.rs`) as data:
/// the list that builds [`generated`], for the test that checks it against
/// the proto.
#[doc(hidden)]
pub mod manual {
    include!(concat!(env!("OUT_DIR"), "/server/methods.rs"));
}

use crate::decision_log::LogError;
use crate::engine::Engine;
use crate::metrics::{Listener, Metrics};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::risk_admin_server::RiskAdminServer;
use generated::risk_scorer_server::RiskScorerServer;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// The least time the decision log gets to flush at shutdown, even when the
/// drain used up the grace period.
const MIN_LOG_FLUSH: Duration = Duration::from_secs(1);

/// Settings of the gRPC server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest accepted request message, in bytes.
    pub max_message_bytes: usize,
    /// How long open calls get to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// How often the store forgets idle keys.
    pub sweep_interval: Duration,
    /// How often the `riskstream_policy_*` gauges are computed again.
    pub policy_metrics_interval: Duration,
    /// Where every request received is recorded (`serve --record`).
    pub recorder: Option<crate::replay::record::Recorder>,
    /// Each scored payment is answered once its record is saved
    /// (`--sync-interval 0` with a durable store).
    pub sync_each: bool,
    /// Who may call what (no token files: every service open).
    pub auth: std::sync::Arc<auth::Auth>,
    /// TLS for both gRPC addresses (none: plaintext).
    pub tls: Option<std::sync::Arc<tls::Tls>>,
    /// Unary `RiskScorer` calls in progress at once; past it a call is
    /// refused at once with `RESOURCE_EXHAUSTED`.
    pub max_concurrent_calls: usize,
    /// `RiskAdmin` calls in progress at once; past it a call is refused at
    /// once with `RESOURCE_EXHAUSTED`.
    pub admin_max_concurrent_calls: usize,
    /// HTTP/2 streams a client may open on one connection (announced in
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_streams_per_connection: u32,
    /// Open connections per gRPC address; past it a connection is closed
    /// at accept.
    pub max_connections: usize,
    /// Silence on a connection before the server pings it (HTTP/2 PING,
    /// and TCP keepalive beneath).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long a request message may take to arrive whole.
    pub message_timeout: Duration,
    /// A stream without an event this long is ended (`None`: never).
    pub stream_idle_timeout: Option<Duration>,
    /// Age at which a connection is sent GOAWAY (its calls and streams go
    /// on; it closes when they have ended); `None`: never.
    pub max_connection_age: Option<Duration>,
    /// Where calls and connections are counted (`None`: the engine's
    /// metrics when it is given ready, else nowhere).
    pub metrics: Option<Metrics>,
}

/// Default of `--max-concurrent-calls`.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 128;
/// Default of `--admin-max-concurrent-calls`: a fraud team's tools, not
/// payment traffic.
pub const DEFAULT_ADMIN_MAX_CONCURRENT_CALLS: usize = 16;
/// Default of `--max-streams-per-connection`.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The HTTP/2 flow-control window of each stream: how much a client may
/// send on a stream the server has not read yet (a stream whose outcomes
/// wait for its client is not read, see `service`).
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// The HTTP/2 flow-control window of each connection: what all its
/// streams together may have sent unread.
pub const CONNECTION_WINDOW: u32 = 512 * 1024;

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(60),
            policy_metrics_interval: Duration::from_secs(300),
            recorder: None,
            sync_each: false,
            auth: std::sync::Arc::default(),
            tls: None,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            admin_max_concurrent_calls: DEFAULT_ADMIN_MAX_CONCURRENT_CALLS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            message_timeout: Duration::from_secs(10),
            stream_idle_timeout: Some(Duration::from_secs(300)),
            max_connection_age: Some(Duration::from_secs(30 * 60)),
            metrics: None,
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not be built from the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The recorded traffic could not be flushed at shutdown.
    #[error("recorded traffic: {0}")]
    Recorder(String),
    /// The decision log could not be flushed at shutdown.
    #[error(transparent)]
    DecisionLog(#[from] LogError),
    /// The state could not be restored.
    #[error("cannot start: {0}")]
    Start(String),
}

/// Serves `engine` on `listener` until `shutdown` completes: see
/// [`serve_starting`], with a state that is ready at once.
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    mut options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if options.metrics.is_none() {
        options.metrics = Some(engine.metrics().clone());
    }
    serve_starting(async { Ok(engine) }, listener, None, options, shutdown).await
}

/// Serves on `listener` while `starting` restores the state and builds the
/// engine (health says NOT_SERVING and every RiskScorer call answers
/// `UNAVAILABLE` meanwhile), then until `shutdown` completes, and drains:
/// health turns NOT_SERVING, no new connections are accepted, open streams
/// answer the events already received and end with `UNAVAILABLE`, unary calls
/// finish, all within the grace period; then what the store has queued is
/// saved and the decision log flushed, each within what is left of the grace
/// period (at least a second): a disk that is stalled is given up on, with a
/// warning, so that the process exits.
pub async fn serve_starting(
    starting: impl Future<Output = Result<Engine, String>>,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (drain_tx, drain_rx) = watch::channel(false);
    let recorder = options.recorder.clone();
    let ready = service::Ready::default();
    let metrics = options.metrics.clone().unwrap_or_else(Metrics::noop);
    let scorer = RiskScorerServer::new(service::Service::new(
        ready.clone(),
        drain_rx.clone(),
        recorder.clone(),
        options.sync_each,
        options.stream_idle_timeout,
    ))
    .max_decoding_message_size(options.max_message_bytes);
    let body_limits = |ready: &service::Ready| {
        std::sync::Arc::new(limit::BodyLimits::new(
            options.max_message_bytes,
            options.message_timeout,
            metrics.clone(),
            ready.clone(),
        ))
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // RiskAdmin on its own address, with health and reflection beside it.
    let admin_server = match admin_listener {
        Some(l) => {
            let admin = InterceptedService::new(
                RiskAdminServer::new(admin::Admin::new(ready.clone())),
                auth::Guard::new(options.auth.clone(), auth::Role::Admin),
            );
            let calls = calls::CallsLayer::new(
                metrics.clone(),
                body_limits(&ready),
                Some(calls::Slots::admin(options.admin_max_concurrent_calls)),
            );
            let router = builder(&options)
                .layer(calls)
                .add_service(health_service.clone())
                .add_service(reflection().build_v1()?)
                .add_service(reflection().build_v1alpha()?)
                .add_service(admin);
            let conns =
                conn::ConnLimit::new(options.max_connections, Listener::Admin, metrics.clone());
            Some(tokio::spawn(run(
                router,
                l,
                conns,
                &options,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let calls = calls::CallsLayer::new(
        metrics.clone(),
        body_limits(&ready),
        Some(calls::Slots::scoring(options.max_concurrent_calls)),
    );
    let router = builder(&options)
        .layer(calls)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            scorer,
            auth::Guard::new(options.auth.clone(), auth::Role::Scoring),
        ));
    let conns = conn::ConnLimit::new(options.max_connections, Listener::Scoring, metrics.clone());
    let server = run(router, listener, conns, &options, stopped(stop_rx));
    tokio::pin!(server);
    tokio::pin!(shutdown);

    let engine = tokio::select! {
        res = &mut server => return res.map_err(ServerError::from),
        () = &mut shutdown => {
            tracing::info!("shutting down before the state was restored");
            let _ = stop_tx.send(true);
            let _ = tokio::time::timeout(options.shutdown_grace, &mut server).await;
            return Ok(());
        }
        started = starting => match started {
            Ok(engine) => engine,
            Err(message) => {
                let _ = stop_tx.send(true);
                let _ = tokio::time::timeout(options.shutdown_grace, &mut server).await;
                return Err(ServerError::Start(message));
            }
        },
    };
    // `ready` is set here only: it cannot hold an engine already.
    let _ = ready.set(engine.clone());
    set_health(&health, ServingStatus::Serving).await;
    tracing::info!("serving");
    let sweeper = tokio::spawn(sweep_loop(
        engine.clone(),
        options.sweep_interval,
        drain_rx.clone(),
    ));
    let stats = tokio::spawn(stats_loop(engine.clone(), drain_rx.clone()));
    let policy_metrics = tokio::spawn(policy_metrics_loop(
        engine.clone(),
        options.policy_metrics_interval,
        drain_rx.clone(),
    ));
    let store_health = engine
        .store()
        .remote()
        .is_some()
        .then(|| tokio::spawn(store_health_loop(engine.clone(), health.clone(), drain_rx)));

    let mut stopping_since = None;
    let result = tokio::select! {
        res = &mut server => res.map_err(ServerError::from),
        () = &mut shutdown => {
            stopping_since = Some(tokio::time::Instant::now());
            tracing::info!(grace = ?options.shutdown_grace, "shutting down");
            set_health(&health, ServingStatus::NotServing).await;
            let _ = drain_tx.send(true);
            let _ = stop_tx.send(true);
            match tokio::time::timeout(options.shutdown_grace, &mut server).await {
                Ok(res) => res.map_err(ServerError::from),
                Err(_) => {
                    tracing::warn!("grace period over; closing the remaining calls");
                    Ok(())
                }
            }
        }
    };
    sweeper.abort();
    stats.abort();
    policy_metrics.abort();
    if let Some(t) = store_health {
        t.abort();
    }
    let _ = stop_tx.send(true);
    if let Some(task) = admin_server {
        match tokio::time::timeout(MIN_LOG_FLUSH, task).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the admin server stopped with an error"),
            Err(_) => tracing::warn!("the admin server did not stop in time"),
            _ => {}
        }
    }
    // What is left of the grace period, and never less than a second.
    let budget = || {
        stopping_since
            .map_or(options.shutdown_grace, |t| {
                options.shutdown_grace.saturating_sub(t.elapsed())
            })
            .max(MIN_LOG_FLUSH)
    };
    if let Some(r) = recorder {
        let written = tokio::task::spawn_blocking(move || r.flush())
            .await
            .map_err(|_| ServerError::Recorder("the recorder flush panicked".into()))?
            .map_err(|e| ServerError::Recorder(e.to_string()))?;
        tracing::info!(records = written, "recorded traffic flushed");
    }
    let within = budget();
    let store = engine.store().clone();
    let synced = async move {
        // A remote store's sync waits for a round trip: off the workers.
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(commit) => commit.durable().await,
            Err(_) => Err(crate::state::StoreError::Unavailable(
                "the store's sync was interrupted".into(),
            )),
        }
    };
    match tokio::time::timeout(within, synced).await {
        Ok(Ok(())) => tracing::info!("state saved"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the state queued at shutdown could not be saved")
        }
        Err(_) => tracing::warn!(
            within = ?within,
            "the state queued at shutdown was not saved in time (its disk is stalled); exiting without it"
        ),
    }
    let store = engine.store().clone();
    if let Ok(stats) = tokio::task::spawn_blocking(move || store.stats()).await {
        engine.metrics().store(stats);
    }
    if let Some(log) = engine.decision_log().cloned() {
        let budget = budget();
        let flushing = log.clone();
        let flushed = tokio::task::spawn_blocking(move || flushing.flush_within(budget))
            .await
            .map_err(|_| LogError::Stopped)?;
        let c = log.counts();
        match flushed {
            Ok(()) => tracing::info!(
                written = c.written,
                dropped = c.dropped,
                failed = c.failed,
                "decision log flushed"
            ),
            Err(LogError::Timeout(_)) => tracing::warn!(
                within = ?budget,
                queued = c.queued,
                dropped = c.dropped,
                failed = c.failed,
                "decision log not flushed in time (its disk is stalled); exiting without the records queued"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!("stopped");
    result
}

/// Sets the health of the RiskScorer service and of the server as a whole
/// (service `""`, what load balancers and Kubernetes probes ask by default).
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health
        .set_service_status(
            <RiskScorerServer<service::Service> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <RiskAdminServer<admin::Admin> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// The async runtime of a server or load generator: on one core (e.g.
/// pinned with `taskset`) a single-threaded one, which spares every request
/// the work-stealing scheduler's hand-offs; otherwise one worker per core.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
}

/// A gRPC server with `options`' HTTP/2 settings: at most
/// `max_streams_per_connection` streams per connection (announced in
/// SETTINGS), flow-control windows of [`STREAM_WINDOW`] and
/// [`CONNECTION_WINDOW`], and a PING after `keepalive_interval` of silence
/// that must be answered within `keepalive_timeout`, or the connection is
/// closed; at `max_connection_age` a connection is sent GOAWAY.
fn builder(options: &ServerOptions) -> tonic::transport::Server {
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(options.max_streams_per_connection)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout));
    // Without a grace: open streams are never cut, only asked to move.
    match options.max_connection_age {
        Some(age) => server.max_connection_age(age),
        None => server,
    }
}

/// The TCP keepalive beneath HTTP/2's: probes after the same silence, three
/// within the same timeout.
fn tcp_keepalive(options: &ServerOptions) -> conn::TcpKeepalive {
    conn::TcpKeepalive {
        idle: options.keepalive_interval,
        interval: (options.keepalive_timeout / 3).max(Duration::from_secs(1)),
        retries: 3,
    }
}

/// Serves `router` on `listener` (through TLS when `options` say so), each
/// connection admitted by `conns`, until `signal`.
fn run<L>(
    router: tonic::transport::server::Router<L>,
    listener: TcpListener,
    conns: conn::ConnLimit,
    options: &ServerOptions,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>
where
    L: tower::Layer<tonic::service::Routes> + Send + 'static,
    L::Service: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<calls::Observed>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<tonic::codegen::http::Request<tonic::body::Body>>>::Future:
        Send + 'static,
{
    let accepted = conn::accepted(listener, tcp_keepalive(options), conns);
    match options.tls.clone() {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(tls.incoming(accepted), signal)),
        None => Box::pin(router.serve_with_incoming_shutdown(accepted, signal)),
    }
}

/// The connections `listener` accepts, with Nagle's algorithm off: an
/// outcome is a small write that must leave at once, not wait up to 40 ms
/// for the client's delayed ACK.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn sweep_loop(engine: Engine, every: Duration, mut draining: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.changed() => return,
        }
        let store = engine.store().clone();
        if let Ok(dropped) = tokio::task::spawn_blocking(move || store.sweep()).await {
            tracing::debug!(dropped, "store sweep");
        }
    }
}

/// Computes the live holdout estimates at the highest-risk threshold (as
/// `EvaluatePolicy` with no threshold) at start and every `every`, into
/// the `riskstream_policy_*` gauges.
async fn policy_metrics_loop(engine: Engine, every: Duration, mut draining: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.changed() => return,
        }
        match engine
            .evaluate_policy(crate::policy::live::Request::default())
            .await
        {
            Ok((report, _)) => {
                if let Some(t) = report.estimates.first() {
                    engine.metrics().policy(
                        t.recall.value,
                        t.false_positive_rate.value,
                        t.precision.value,
                    );
                }
            }
            Err(e) => {
                // A figure that could not be computed is not shown as if it were.
                engine.metrics().policy(None, None, None);
                tracing::warn!(error = %e, "the holdout estimates could not be computed");
            }
        }
    }
}

/// Publishes what the store holds (and its disk's trouble) every second.
async fn stats_loop(engine: Engine, mut draining: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(STATS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.changed() => return,
        }
        let store = engine.store().clone();
        if let Ok(stats) = tokio::task::spawn_blocking(move || store.stats()).await {
            engine.metrics().store(stats);
        }
    }
}

/// The health service name that tells whether a remote store (Redis) is
/// reachable. Only it turns `NOT_SERVING` during an outage: the server as
/// a whole (`""`) and `RiskScorer` stay `SERVING` (payments fail open), so
/// that an outage of the shared store does not take every replica out of
/// its load balancer at once.
pub const STORE_HEALTH_SERVICE: &str = "riskstream.v1.Store";

/// How often a remote store's reachability is checked.
const STORE_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// Follows whether a remote store is reachable into health
/// ([`STORE_HEALTH_SERVICE`]), the `riskstream_store_reachable` gauge, and
/// one log line per change.
async fn store_health_loop(
    engine: Engine,
    health: tonic_health::server::HealthReporter,
    mut draining: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(STORE_HEALTH_INTERVAL);
    let mut was = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = draining.changed() => return,
        }
        let Some(remote) = engine.store().remote() else {
            return;
        };
        engine.metrics().store_cache(remote.cache_lookups());
        let up = remote.reachable();
        if was == Some(up) {
            continue;
        }
        engine.metrics().store_reachable(up);
        let status = if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health
            .set_service_status(STORE_HEALTH_SERVICE, status)
            .await;
        match (was, up) {
            (Some(false), true) => tracing::info!("the store is reachable again"),
            (_, false) => tracing::warn!(
                "the store is not reachable: payments fail open, writes answer UNAVAILABLE (health {STORE_HEALTH_SERVICE} NOT_SERVING)"
            ),
            _ => {}
        }
        was = Some(up);
    }
}

/// How often store sizes and disk counters reach the metrics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
