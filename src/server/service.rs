//! The tonic `RiskScorer` implementation: a thin adapter from RPCs to the
//! [`Engine`]. Requests arrive as raw bytes ([`RawMessage`]) and the engine
//! reads borrowed views of them. Streams score each event as it arrives, in
//! order, and end cleanly when the server drains. Until the state is
//! restored every call answers `UNAVAILABLE`; writes are acknowledged once
//! the store has saved them.

use super::codec::RawMessage;
use super::generated::risk_scorer_server::RiskScorer;
use super::status::to_status;
use crate::engine::{Engine, error_outcome};
use crate::proto::wire as proto;
use crate::replay::record::Recorder;
use crate::state::{Commit, StoreError};
use crate::traffic::Kind;
use crate::validate::Clock;
use bytes::Bytes;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Outcomes buffered per stream before the handler waits for the client.
pub(super) const STREAM_BUFFER: usize = 1024;

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
}

/// How long a write waits for the store to save it before it answers
/// `UNAVAILABLE` (a slow or stalled disk).
pub const SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// `draining` turns true; every request received goes to `recorder`
    /// when there is one; with `sync_each`, a scored payment is answered
    /// once its record is saved.
    pub fn new(
        ready: Ready,
        draining: watch::Receiver<bool>,
        recorder: Option<Recorder>,
        sync_each: bool,
    ) -> Self {
        Service {
            ready,
            draining,
            recorder,
            sync_each,
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
        let raw = request.into_inner().0;
        let clock = self.arrived(engine, Kind::Register, &raw);
        let (id, commit) = engine.register(&raw, &clock).map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(proto::RegisterPaymentMethodResponse {
            payment_method_id: Bytes::from(id),
        }))
    }

    async fn get_payment_method(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::PaymentMethod>, Status> {
        self.engine()?
            .get_payment_method(&request.into_inner().0)
            .map(Response::new)
            .map_err(to_status)
    }

    async fn score(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::Outcome>, Status> {
        let engine = self.engine()?;
        let raw = request.into_inner().0;
        let clock = self.arrived(engine, Kind::Payment, &raw);
        let outcome = engine.score(&raw, &clock).map_err(to_status)?;
        self.settle(engine).await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(outcome))
    }

    type ScoreStreamStream = ReceiverStream<Result<proto::Outcome, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawMessage>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let engine = self.engine()?.clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let this = self.clone();
        let mut draining = self.draining.clone();
        if *draining.borrow() {
            return Err(Status::unavailable("server is shutting down"));
        }
        tokio::spawn(async move {
            let _open = engine.metrics().stream_opened();
            loop {
                tokio::select! {
                    biased;
                    _ = draining.changed() => {
                        // Every event read so far has its outcome queued; tell the
                        // client the rest must be resent elsewhere.
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "server is shutting down; events without an outcome were not scored",
                            )))
                            .await;
                        break;
                    }
                    msg = inbound.message() => match msg {
                        Ok(Some(RawMessage(raw))) => {
                            let clock = this.arrived(&engine, Kind::Payment, &raw);
                            let outcome = engine.score_or_error(&raw, &clock);
                            let outcome = match this.settle(&engine).await {
                                Ok(()) => outcome,
                                Err(e) => error_outcome(outcome.payment_id, &e.into()),
                            };
                            if tx.send(Ok(outcome)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            break;
                        }
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_feedback(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        let engine = self.engine()?;
        let raw = request.into_inner().0;
        let clock = self.arrived(engine, Kind::Feedback, &raw);
        let (lists, commit) = engine.feedback(&raw, &clock).map_err(to_status)?;
        saved(commit).await?;
        Ok(Response::new(proto::FeedbackResponse {
            lists_updated: lists
                .into_iter()
                .map(|l| Bytes::from_static(l.as_bytes()))
                .collect(),
        }))
    }
}
