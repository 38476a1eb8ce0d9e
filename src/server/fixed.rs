//! A server with riskstream's contract that does no work: every event gets
//! the same fixed outcome, naming the event's payment id. Benchmarks measure
//! the gRPC transport ceiling with it (same proto, same codec, same tonic);
//! with [`FixedService::wrong_ids`] it is a misbehaving server that a
//! client's outcome checking must catch.

use super::codec::RawMessage;
use super::generated::risk_scorer_server::{RiskScorer, RiskScorerServer};
use crate::proto::wire as proto;
use crate::view;
use bytes::Bytes;
use std::future::Future;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Answers every event with one fixed outcome.
#[derive(Debug, Clone, Default)]
pub struct FixedService {
    wrong_ids: bool,
}

impl FixedService {
    /// Outcomes name the event's payment id.
    pub fn new() -> Self {
        FixedService { wrong_ids: false }
    }

    /// Outcomes name another payment than the event's.
    pub fn wrong_ids() -> Self {
        FixedService { wrong_ids: true }
    }

    fn outcome(&self, raw: &Bytes) -> proto::Outcome {
        let id = if self.wrong_ids {
            Bytes::from_static(b"not_the_payment_sent")
        } else {
            raw.slice_ref(view::salvage_payment_id(raw))
        };
        proto::Outcome {
            payment_id: id,
            risk_score: 12,
            risk_level: proto::RiskLevel::Normal as i32,
            decision: proto::Decision::Allow as i32,
            fraud_probability: 0.001,
            model_version: Bytes::from_static(b"fixed"),
            ..proto::Outcome::default()
        }
    }
}

#[tonic::async_trait]
impl RiskScorer for FixedService {
    async fn register_payment_method(
        &self,
        _request: Request<RawMessage>,
    ) -> Result<Response<proto::RegisterPaymentMethodResponse>, Status> {
        Ok(Response::new(
            proto::RegisterPaymentMethodResponse::default(),
        ))
    }

    async fn get_payment_method(
        &self,
        _request: Request<RawMessage>,
    ) -> Result<Response<proto::PaymentMethod>, Status> {
        Err(Status::not_found(
            "the fixed server keeps no payment methods",
        ))
    }

    async fn score(
        &self,
        request: Request<RawMessage>,
    ) -> Result<Response<proto::Outcome>, Status> {
        Ok(Response::new(self.outcome(&request.into_inner().0)))
    }

    type ScoreStreamStream = ReceiverStream<Result<proto::Outcome, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<RawMessage>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let mut inbound = request.into_inner();
        // The same buffering as riskstream's streams.
        let (tx, rx) = mpsc::channel(super::service::STREAM_BUFFER);
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(RawMessage(raw))) = inbound.message().await {
                if tx.send(Ok(this.outcome(&raw))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_feedback(
        &self,
        _request: Request<RawMessage>,
    ) -> Result<Response<proto::FeedbackResponse>, Status> {
        Ok(Response::new(proto::FeedbackResponse::default()))
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn serve(
    service: FixedService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(RiskScorerServer::new(service))
        .serve_with_incoming_shutdown(super::incoming(listener), shutdown)
        .await
}
