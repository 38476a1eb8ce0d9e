//! The tonic `RiskScorer` implementation: a thin adapter from RPCs to the
//! [`Engine`]. Requests arrive as raw bytes ([`RawMessage`]) and the engine
//! reads borrowed views of them. Streams score each event as it arrives, in
//! order, and end cleanly when the server drains.

use super::codec::RawMessage;
use super::generated::risk_scorer_server::RiskScorer;
use super::status::to_status;
use crate::engine::Engine;
use crate::proto::wire as proto;
use crate::replay::record::Recorder;
use crate::traffic::Kind;
use crate::validate::Clock;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Outcomes buffered per stream before the handler waits for the client.
pub(super) const STREAM_BUFFER: usize = 1024;

/// The `RiskScorer` service.
#[derive(Debug, Clone)]
pub struct Service {
    engine: Engine,
    draining: watch::Receiver<bool>,
    recorder: Option<Recorder>,
}

impl Service {
    /// A service over `engine`; streams end when `draining` turns true;
    /// every request received goes to `recorder` when there is one.
    pub fn new(
        engine: Engine,
        draining: watch::Receiver<bool>,
        recorder: Option<Recorder>,
    ) -> Self {
        Service {
            engine,
            draining,
            recorder,
        }
    }

    /// The server's clock for a request of `kind` just received, recorded.
    fn arrived(&self, kind: Kind, raw: &Bytes) -> Clock {
        let clock = self.engine.clock();
        if let Some(r) = &self.recorder {
            r.record(kind, clock.now_ms, raw);
        }
        clock
    }
}

#[tonic::async_trait]
impl RiskScorer for Service {
    async fn register_payment_method(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::RegisterPaymentMethodResponse>, Status> {
        let raw = request.into_inner().0;
        let clock = self.arrived(Kind::Register, &raw);
        let (id, commit) = self.engine.register(&raw, &clock).map_err(to_status)?;
        commit.durable().await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(proto::RegisterPaymentMethodResponse {
            payment_method_id: Bytes::from(id),
        }))
    }

    async fn get_payment_method(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::PaymentMethod>, Status> {
        self.engine
            .get_payment_method(&request.into_inner().0)
            .map(Response::new)
            .map_err(to_status)
    }

    async fn score(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::Outcome>, Status> {
        let raw = request.into_inner().0;
        let clock = self.arrived(Kind::Payment, &raw);
        self.engine
            .score(&raw, &clock)
            .map(Response::new)
            .map_err(to_status)
    }

    type ScoreStreamStream = ReceiverStream<Result<proto::Outcome, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawMessage>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let this = self.clone();
        let mut draining = self.draining.clone();
        if *draining.borrow() {
            return Err(Status::unavailable("server is shutting down"));
        }
        tokio::spawn(async move {
            let _open = this.engine.metrics().stream_opened();
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
                            let clock = this.arrived(Kind::Payment, &raw);
                            let outcome = this.engine.score_or_error(&raw, &clock);
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
        let raw = request.into_inner().0;
        let clock = self.arrived(Kind::Feedback, &raw);
        let (lists, commit) = self.engine.feedback(&raw, &clock).map_err(to_status)?;
        commit.durable().await.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(proto::FeedbackResponse {
            lists_updated: lists
                .into_iter()
                .map(|l| Bytes::from_static(l.as_bytes()))
                .collect(),
        }))
    }
}
