//! The tonic `RiskScorer` implementation: a thin adapter from RPCs to the
//! [`Engine`]. Requests arrive as raw bytes ([`RawMessage`]) and the engine
//! reads borrowed views of them. Streams score each event as it arrives, in
//! order, and end cleanly when the server drains. Until the state is
//! restored every call answers `UNAVAILABLE`; writes are acknowledged once
//! the store has saved them.
//!
//! Deadlines: a unary call whose deadline (its arrival plus the client's
//! `grpc-timeout`, see [`super::calls`]) has passed when its turn comes is
//! answered `DEADLINE_EXCEEDED` before anything is recorded; a stream ends
//! with `DEADLINE_EXCEEDED` at its deadline, and no event is scored after
//! it. A stream without an event for `--stream-idle-timeout` ends with
//! `UNAVAILABLE`.
//!
//! Backpressure: a stream's handler reads the next event only once the
//! outcome of the last one is queued, and at most [`STREAM_BUFFER`]
//! outcomes wait for a client that does not read them; then nothing more
//! is read, HTTP/2 flow control fills the stream's window and the client's
//! sends wait.

use super::calls::{check_deadline, deadline_of};
use super::codec::RawMessage;
use super::generated::risk_scorer_server::RiskScorer;
use super::status::to_status;
use crate::engine::{Engine, error_outcome};
use crate::error::ServiceError;
use crate::metrics::Timeout;
use crate::proto::wire as proto;
use crate::replay::record::Recorder;
use crate::state::{Commit, StoreError};
use crate::traffic::Kind;
use crate::validate::Clock;
use bytes::Bytes;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Outcomes buffered per stream before the handler waits for the client
/// (and stops reading events).
pub(super) const STREAM_BUFFER: usize = 128;

/// What a stream's handler hands to its response: an outcome, or the
/// status that ends the stream. Boxed, so that the channel's first block
/// of slots (allocated when a stream opens, 32 of them) holds pointers,
/// not outcomes: an idle stream costs that much less.
type Answer = Box<Result<proto::Outcome, Status>>;

/// The outcomes of a stream, as its handler queues them.
#[derive(Debug)]
pub struct Outcomes(mpsc::Receiver<Answer>);

impl tokio_stream::Stream for Outcomes {
    type Item = Result<proto::Outcome, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|a| a.map(|a| *a))
    }
}

/// The engine, once the state it serves is ready.
pub type Ready = Arc<OnceLock<Engine>>;

/// The `RiskScorer` service.
#[derive(Debug, Clone)]
pub struct Service {
    ready: Ready,
    draining: watch::Receiver<bool>,
    recorder: Option<Recorder>,
    /// Each scored payment's reply waits until its record is saved.
    sync_each: bool,
    /// A stream without an event this long is ended (`None`: never).
    stream_idle: Option<std::time::Duration>,
}

/// How long a write waits for the store to save it before it answers
/// `UNAVAILABLE` (a slow or stalled disk).
pub const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `f` on the engine where it may wait for its store: at once for a
/// store in the process, off the async workers for a remote one (its
/// writes and cache misses wait for a round trip).
pub(super) async fn off_workers<T: Send + 'static>(
    engine: &Engine,
    f: impl FnOnce(&Engine) -> T + Send + 'static,
) -> Result<T, Status> {
    if engine.store().remote().is_none() {
        return Ok(f(engine));
    }
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(|_| Status::unavailable("the store call was interrupted"))
}

/// Most events of one stream scored in one round trip of a remote store.
const STREAM_BATCH: usize = 64;

/// When a remote store must have answered for a call due at `deadline`:
/// shortly before it (a tenth of what is left, at most 20 ms), so that a
/// payment fails open in time; the store's own timeout bounds the rest.
fn store_until(deadline: Option<Instant>) -> Instant {
    let now = Instant::now();
    match deadline {
        Some(d) => {
            let left = d.saturating_duration_since(now);
            d - (left / 10).min(std::time::Duration::from_millis(20))
        }
        None => now + std::time::Duration::from_secs(3600),
    }
}

/// The next event a stream has already received, without waiting: `None`
/// when none is there yet.
async fn ready_message(
    inbound: &mut Streaming<RawMessage>,
) -> Option<Option<Result<RawMessage, Status>>> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *inbound).poll_next(cx) {
        std::task::Poll::Ready(next) => std::task::Poll::Ready(Some(next)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Waits for `commit`; a failed or late save answers `UNAVAILABLE`.
pub(super) async fn saved(commit: Commit) -> Result<(), Status> {
    match tokio::time::timeout(SAVE_TIMEOUT, commit.durable()).await {
        Ok(done) => done.map_err(|e| to_status(e.into())),
        Err(_) => Err(Status::unavailable(format!(
            "the store did not save the write within {SAVE_TIMEOUT:?} (its disk is slow or stalled); it may still be saved: retrying is safe"
        ))),
    }
}

impl Service {
    /// A service over the engine `ready` will hold; streams end when
    /// `draining` turns true, or after `stream_idle` without an event;
    /// every request received goes to `recorder` when there is one; with
    /// `sync_each`, a scored payment is answered once its record is saved.
    pub fn new(
        ready: Ready,
        draining: watch::Receiver<bool>,
        recorder: Option<Recorder>,
        sync_each: bool,
        stream_idle: Option<std::time::Duration>,
    ) -> Self {
        Service {
            ready,
            draining,
            recorder,
            sync_each,
            stream_idle,
        }
    }

    /// The engine, or `UNAVAILABLE` while the state is being restored.
    fn engine(&self) -> Result<&Engine, Status> {
        self.ready
            .get()
            .ok_or_else(|| Status::unavailable("starting: the state is being restored"))
    }

    /// The server's clock for a request of `kind` just received, recorded.
    fn arrived(&self, engine: &Engine, kind: Kind, raw: &Bytes) -> Clock {
        let clock = engine.clock();
        if let Some(r) = &self.recorder {
            r.record(kind, clock.now_ms, raw);
        }
        clock
    }

    /// After a scored payment: its record is saved first when asked to.
    async fn settle(&self, engine: &Engine) -> Result<(), StoreError> {
        if self.sync_each {
            tokio::time::timeout(SAVE_TIMEOUT, engine.store().sync().durable())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "the payment was not saved within {SAVE_TIMEOUT:?} (the disk is slow or stalled)"
                    ))
                })??;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RiskScorer for Service {
    async fn register_payment_method(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::RegisterPaymentMethodResponse>, Status> {
        let engine = self.engine()?;
        let deadline = deadline_of(&request);
        let raw = request.into_inner().0;
        check_deadline(deadline, engine.metrics())?;
        let clock = self.arrived(engine, Kind::Register, &raw);
        let (id, commit) = off_workers(engine, move |e| e.register(&raw, &clock))
            .await?
            .map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(proto::RegisterPaymentMethodResponse {
            payment_method_id: Bytes::from(id),
        }))
    }

    async fn get_payment_method(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::PaymentMethod>, Status> {
        let engine = self.engine()?;
        check_deadline(deadline_of(&request), engine.metrics())?;
        let raw = request.into_inner().0;
        off_workers(engine, move |e| e.get_payment_method(&raw))
            .await?
            .map(Response::new)
            .map_err(to_status)
    }

    async fn score(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::Outcome>, Status> {
        let engine = self.engine()?;
        let deadline = deadline_of(&request);
        let raw = request.into_inner().0;
        // Right before scoring: a payment whose client has given up is
        // neither scored nor counted in any window.
        check_deadline(deadline, engine.metrics())?;
        let clock = self.arrived(engine, Kind::Payment, &raw);
        let outcome = if engine.store().remote().is_some() {
            let mut answers = engine
                .score_batch(&[(raw, clock)], store_until(deadline))
                .await;
            answers
                .pop()
                .ok_or_else(|| Status::internal("no answer for the payment"))?
                .map_err(to_status)?
        } else {
            engine.score(&raw, &clock).map_err(to_status)?
        };
        self.settle(engine).await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(outcome))
    }

    type ScoreStreamStream = Outcomes;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawMessage>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let engine = self.engine()?.clone();
        let deadline = deadline_of(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Answer>(STREAM_BUFFER);
        let this = self.clone();
        let mut draining = self.draining.clone();
        if *draining.borrow() {
            return Err(Status::unavailable("server is shutting down"));
        }
        check_deadline(deadline, engine.metrics())?;
        tokio::spawn(async move {
            let _open = engine.metrics().stream_opened();
            let idle = this.stream_idle;
            let mut last_event = Instant::now();
            // Fires at the idle timeout after the last event (checked and
            // moved on when it fires, rather than reset at every event).
            let idle_timer = tokio::time::sleep(idle.unwrap_or_default());
            tokio::pin!(idle_timer);
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expiry);
            let end = |e: ServiceError| {
                let status = to_status(e);
                let tx = &tx;
                async move {
                    let _ = tx.send(Box::new(Err(status))).await;
                }
            };
            loop {
                tokio::select! {
                    biased;
                    _ = draining.changed() => {
                        // Every event read so far has its outcome queued; tell the
                        // client the rest must be resent elsewhere.
                        let _ = tx
                            .send(Box::new(Err(Status::unavailable(
                                "server is shutting down; events without an outcome were not scored",
                            ))))
                            .await;
                        break;
                    }
                    () = &mut expiry => {
                        engine.metrics().timed_out(Timeout::Deadline);
                        end(ServiceError::StreamDeadlineExceeded).await;
                        break;
                    }
                    () = &mut idle_timer, if idle.is_some() => {
                        let after = idle.unwrap_or_default();
                        let due = last_event + after;
                        if Instant::now() < due {
                            idle_timer.as_mut().reset(due);
                            continue;
                        }
                        engine.metrics().timed_out(Timeout::StreamIdle);
                        end(ServiceError::StreamIdle { after }).await;
                        break;
                    }
                    msg = inbound.message() => match msg {
                        Ok(Some(RawMessage(raw))) => {
                            last_event = Instant::now();
                            // No event is scored once the deadline passed.
                            if deadline.is_some_and(|d| last_event >= d) {
                                engine.metrics().timed_out(Timeout::Deadline);
                                end(ServiceError::StreamDeadlineExceeded).await;
                                break;
                            }
                            let clock = this.arrived(&engine, Kind::Payment, &raw);
                            if engine.store().remote().is_some() {
                                // The events already received go in one round trip.
                                let mut events = vec![(raw, clock)];
                                let mut after: Option<Option<Status>> = None;
                                let mut expired = false;
                                while events.len() < STREAM_BATCH {
                                    match ready_message(&mut inbound).await {
                                        Some(Some(Ok(RawMessage(raw)))) => {
                                            last_event = Instant::now();
                                            if deadline.is_some_and(|d| last_event >= d) {
                                                expired = true;
                                                break;
                                            }
                                            let clock = this.arrived(&engine, Kind::Payment, &raw);
                                            events.push((raw, clock));
                                        }
                                        Some(Some(Err(status))) => {
                                            after = Some(Some(status));
                                            break;
                                        }
                                        Some(None) => {
                                            after = Some(None);
                                            break;
                                        }
                                        None => break,
                                    }
                                }
                                let answers = engine.score_batch(&events, store_until(deadline)).await;
                                let mut gone = false;
                                for ((raw, _), answer) in events.iter().zip(answers) {
                                    let outcome = answer.unwrap_or_else(|e| engine.error_for(raw, &e));
                                    if tx.send(Box::new(Ok(outcome))).await.is_err() {
                                        gone = true;
                                        break;
                                    }
                                }
                                if gone {
                                    break;
                                }
                                if expired {
                                    engine.metrics().timed_out(Timeout::Deadline);
                                    end(ServiceError::StreamDeadlineExceeded).await;
                                    break;
                                }
                                match after {
                                    Some(Some(status)) => {
                                        let _ = tx.send(Box::new(Err(status))).await;
                                        break;
                                    }
                                    Some(None) => break,
                                    None => continue,
                                }
                            }
                            let outcome = engine.score_or_error(&raw, &clock);
                            let outcome = match this.settle(&engine).await {
                                Ok(()) => outcome,
                                Err(e) => error_outcome(outcome.payment_id, &e.into()),
                            };
                            if tx.send(Box::new(Ok(outcome))).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            let _ = tx.send(Box::new(Err(status))).await;
                            break;
                        }
                    },
                }
            }
        });
        Ok(Response::new(Outcomes(rx)))
    }

    async fn report_feedback(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let engine = self.engine()?;
        let deadline = deadline_of(&request);
        let raw = request.into_inner().0;
        check_deadline(deadline, engine.metrics())?;
        let clock = self.arrived(engine, Kind::Feedback, &raw);
        let (lists, commit) = off_workers(engine, move |e| e.feedback(&raw, &clock))
            .await?
            .map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(proto::FeedbackResponse {
            lists_updated: lists
                .into_iter()
                .map(|l| Bytes::from_static(l.as_bytes()))
                .collect(),
        }))
    }
}
