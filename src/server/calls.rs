//! Every gRPC call, on its way in and out of a server (one tower layer
//! around each gRPC server, outside its routes):
//!
//! - counted: `grpc_server_started_total` when it arrives;
//!   `grpc_server_handled_total` by the status code it ends with (read from
//!   the response's trailers, or its headers for a trailers-only response;
//!   a response its client dropped first ends `Canceled`) and
//!   `grpc_server_handling_seconds` from its arrival to its status;
//! - its deadline: the client's `grpc-timeout` from its arrival becomes a
//!   [`Deadline`] in the request's extensions, which the handlers check
//!   before they score; a call still unanswered at its deadline is answered
//!   `DEADLINE_EXCEEDED` (a millisecond before tonic's own timer would
//!   answer `CANCELLED`);
//! - its request body goes through the [`limit`](super::limit) rules
//!   (size, time, bytes being received);
//! - load shedding: unary `RiskScorer` calls take one of
//!   `--max-concurrent-calls` slots (tower's `GlobalConcurrencyLimit`,
//!   shared by every connection) from when the server first runs them
//!   until their response is ready, and a call that finds none free is
//!   refused at once with `RESOURCE_EXHAUSTED` (tower's `LoadShed`):
//!   nothing queues. An admitted call waits its turn once ([`WaitTurn`])
//!   before its work, holding its slot, so that calls waiting for the CPU
//!   count too: scoring is done in one go, and without that turn a server
//!   short of CPU would only ever count the call it is running. Streams
//!   take no slot: they are bounded by `--max-streams-per-connection` and
//!   `--max-connections` instead, and an idle one must not starve unary
//!   calls. Health and reflection take none either, so probes answer under
//!   load. On the admin address `RiskAdmin` calls take one of
//!   `--admin-max-concurrent-calls` slots the same way.

use super::limit::{BodyLimits, FrameLimit};
use super::status::to_status;
use crate::error::ServiceError;
use crate::metrics::{
    GRPC_CODES, Metrics, RISK_ADMIN, RISK_SCORER, RPCS, RpcType, Timeout, rpc_index,
};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tower::ServiceExt as _;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShed;
use tower::load_shed::error::Overloaded;
use tower::{Layer, Service};

/// When a call must have been answered: its arrival plus the client's
/// `grpc-timeout`. In the request's extensions of every call that sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// The deadline of `request`, if its client set one.
pub fn deadline_of<T>(request: &tonic::Request<T>) -> Option<Instant> {
    request.extensions().get::<Deadline>().map(|d| d.0)
}

/// `Err(DEADLINE_EXCEEDED)` (counted) once `deadline` has passed.
pub fn check_deadline(deadline: Option<Instant>, metrics: &Metrics) -> Result<(), tonic::Status> {
    match deadline {
        Some(d) if Instant::now() >= d => {
            metrics.timed_out(Timeout::Deadline);
            Err(to_status(ServiceError::DeadlineExceeded))
        }
        _ => Ok(()),
    }
}

/// The `grpc-timeout` header: 1 to 8 ASCII digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`). `None` when absent or malformed (as tonic takes it).
pub fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How much before its deadline a waiting call is answered
/// `DEADLINE_EXCEEDED`: enough for this timer to come before tonic's own
/// (set a few microseconds earlier), whose answer would be `CANCELLED`.
const DEADLINE_LEAD: Duration = Duration::from_millis(1);

/// The concurrency limit of one server: how many unary calls of which
/// service may be in progress at once, and the flag that sets it.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    max: usize,
    service: &'static str,
    flag: &'static str,
}

impl Slots {
    /// `max` unary `RiskScorer` calls (`--max-concurrent-calls`).
    pub fn scoring(max: usize) -> Slots {
        Slots {
            max,
            service: RISK_SCORER,
            flag: "max-concurrent-calls",
        }
    }

    /// `max` `RiskAdmin` calls (`--admin-max-concurrent-calls`).
    pub fn admin(max: usize) -> Slots {
        Slots {
            max,
            service: RISK_ADMIN,
            flag: "admin-max-concurrent-calls",
        }
    }

    /// Whether calls of `RPCS[rpc]` take a slot.
    fn taken_by(&self, rpc: usize) -> bool {
        RPCS[rpc].service == self.service && RPCS[rpc].kind == RpcType::Unary
    }
}

/// What every call of one server goes through.
#[derive(Debug)]
struct Shared {
    metrics: Metrics,
    body: Arc<BodyLimits>,
    /// The server's slots and their semaphore (`None`: no limit).
    slots: Option<(Arc<Semaphore>, Slots)>,
}

/// The layer around one gRPC server.
#[derive(Debug, Clone)]
pub struct CallsLayer {
    shared: Arc<Shared>,
}

impl CallsLayer {
    /// Calls counted in `metrics`, bodies within `body`; with `slots`, the
    /// unary calls of their service are limited to that many at once and
    /// refused past it.
    pub fn new(metrics: Metrics, body: Arc<BodyLimits>, slots: Option<Slots>) -> CallsLayer {
        CallsLayer {
            shared: Arc::new(Shared {
                metrics,
                body,
                slots: slots.map(|s| (Arc::new(Semaphore::new(s.max)), s)),
            }),
        }
    }
}

type Limited<S> = LoadShed<tower::limit::ConcurrencyLimit<WaitTurn<S>>>;

/// A service whose calls, once admitted, first wait their turn: they yield
/// to the runtime once before any work is done. Holding their slot while
/// they do, the calls waiting for the CPU are counted against the limit,
/// not only the one running: a server that is short of CPU (every call
/// done in one go, the queue in front of it) sheds too.
#[derive(Debug, Clone)]
pub struct WaitTurn<S>(S);

impl<S, R> Service<R> for WaitTurn<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // Only makes the future: nothing runs before the turn comes.
        let call = self.0.call(req);
        Box::pin(async move {
            tokio::task::yield_now().await;
            call.await
        })
    }
}

impl<S: Clone> Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        let limited = self.shared.slots.as_ref().map(|(slots, _)| {
            LoadShed::new(
                GlobalConcurrencyLimitLayer::with_semaphore(slots.clone())
                    .layer(WaitTurn(inner.clone())),
            )
        });
        Calls {
            inner,
            limited,
            shared: self.shared.clone(),
        }
    }
}

/// A gRPC server's routes, with every call going through [`CallsLayer`].
#[derive(Debug, Clone)]
pub struct Calls<S> {
    inner: S,
    /// `inner` behind the server's slots.
    limited: Option<Limited<S>>,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Calls<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    type Response = Response<Observed>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Observed>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's routes are always ready; an error is answered per call.
        let _ = std::task::ready!(self.inner.poll_ready(cx));
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let rpc = rpc_index(req.uri().path());
        shared.metrics.rpc_started(rpc);
        let deadline = grpc_timeout(req.headers()).and_then(|t| started.checked_add(t));
        if let Some(d) = deadline {
            req.extensions_mut().insert(Deadline(d));
        }
        let body = shared.body.clone();
        let req = req.map(|b| Body::new(FrameLimit::new(b, body, rpc, started)));
        let response: Pin<
            Box<dyn Future<Output = Result<Response<Body>, tower::BoxError>> + Send>,
        > = match (&self.limited, &shared.slots) {
            (Some(limited), Some((_, slots))) if slots.taken_by(rpc) => {
                Box::pin(limited.clone().oneshot(req))
            }
            _ => {
                let f = self.inner.call(req);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        };
        Box::pin(async move {
            let answered = match deadline {
                Some(d) => {
                    let at = d.checked_sub(DEADLINE_LEAD).unwrap_or(d);
                    tokio::select! {
                        biased;
                        r = response => Some(r),
                        () = tokio::time::sleep_until(at) => None,
                    }
                }
                None => Some(response.await),
            };
            let response = match answered {
                Some(Ok(response)) => response,
                Some(Err(e)) if e.is::<Overloaded>() => {
                    shared.metrics.shed();
                    let (max, flag) = shared
                        .slots
                        .as_ref()
                        .map_or((0, ""), |(_, s)| (s.max, s.flag));
                    to_status(ServiceError::Overloaded { max, flag }).into_http()
                }
                Some(Err(e)) => tonic::Status::from_error(e).into_http(),
                None => {
                    shared.metrics.timed_out(Timeout::Deadline);
                    to_status(ServiceError::DeadlineExceeded).into_http()
                }
            };
            Ok(observe(response, rpc, started, shared.metrics.clone()))
        })
    }
}

/// The gRPC status code in `headers` (a trailers-only response's headers,
/// or trailers).
fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<usize>()
        .ok()?;
    // A number outside gRPC's codes is Unknown.
    Some(if code < GRPC_CODES.len() { code } else { 2 })
}

/// The numbers of the codes this layer records without reading them.
const CANCELLED: usize = 1;
const UNKNOWN: usize = 2;

/// A call not yet counted as handled.
#[derive(Debug)]
struct Unfinished {
    rpc: usize,
    started: Instant,
    metrics: Metrics,
}

impl Unfinished {
    fn finish(self, code: usize) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.rpc_handled(self.rpc, code, seconds);
    }
}

fn observe(
    response: Response<Body>,
    rpc: usize,
    started: Instant,
    metrics: Metrics,
) -> Response<Observed> {
    let call = Unfinished {
        rpc,
        started,
        metrics,
    };
    let call = match grpc_status(response.headers()) {
        Some(code) => {
            call.finish(code);
            None
        }
        None => Some(call),
    };
    response.map(|inner| Observed { inner, call })
}

/// A response body that counts its call as handled when its status (in
/// the trailers) passes, or as `Canceled` if it is dropped before.
#[derive(Debug)]
pub struct Observed {
    inner: Body,
    call: Option<Unfinished>,
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(end) = &polled {
            let code = match end {
                Some(Ok(frame)) => frame
                    .trailers_ref()
                    .map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
                Some(Err(status)) => Some(status.code() as usize),
                None => Some(UNKNOWN),
            };
            if let Some(code) = code
                && let Some(call) = self.call.take()
            {
                call.finish(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(CANCELLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    fn timeout(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_str(v).expect("header"));
        grpc_timeout(&h)
    }

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "1x", "-1S", "1.5S", " 1S", "1 S"] {
            assert_eq!(timeout(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn only_unary_calls_of_the_servers_service_take_a_slot() {
        let slotted = |slots: Slots| -> Vec<&str> {
            (0..RPCS.len())
                .filter(|&i| slots.taken_by(i))
                .map(|i| RPCS[i].method)
                .collect()
        };
        assert_eq!(
            slotted(Slots::scoring(1)),
            [
                "RegisterPaymentMethod",
                "GetPaymentMethod",
                "Score",
                "ReportFeedback"
            ]
        );
        assert_eq!(
            slotted(Slots::admin(1)),
            [
                "AddListItems",
                "RemoveListItems",
                "ListItems",
                "EvaluatePolicy"
            ]
        );
    }

    #[test]
    fn a_status_is_read_from_headers_or_trailers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("8"));
        assert_eq!(grpc_status(&h), Some(8));
        h.insert("grpc-status", HeaderValue::from_static("99"));
        assert_eq!(grpc_status(&h), Some(UNKNOWN));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_is_refused_and_counted() {
        let metrics = Metrics::noop();
        assert!(check_deadline(None, &metrics).is_ok());
        let later = Instant::now() + Duration::from_millis(5);
        assert!(check_deadline(Some(later), &metrics).is_ok());
        tokio::time::advance(Duration::from_millis(5)).await;
        let refused = check_deadline(Some(later), &metrics).expect_err("expired");
        assert_eq!(refused.code(), tonic::Code::DeadlineExceeded);
    }
}
