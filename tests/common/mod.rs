//! Test harness: a real riskstream server on a free loopback port, the
//! generated gRPC client, and builders for sessions and events.
#![allow(dead_code)]

pub mod flood;
pub mod redis_server;
pub mod served;
#[allow(unused_imports)]
pub use served::*;

use riskstream::decision::holdout::Holdout;
use riskstream::decision_log::{DecisionLog, LogOptions};
use riskstream::engine::{Engine, EngineConfig, system_now_ms};
use riskstream::metrics::Metrics;
use riskstream::model::{Model, ModelHandle};
use riskstream::proto::{self, risk_scorer_client::RiskScorerClient};
use riskstream::server::{self, ServerOptions};
use riskstream::state::{MemoryStore, StoreLimits};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Path of the shipped default model.
pub fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json")
}

/// The shipped default model.
pub fn default_model() -> Model {
    Model::load(&default_model_path()).expect("models/default.json loads")
}

/// A running in-process server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: RiskScorerClient<Channel>,
    pub engine: Engine,
    /// Renders the engine's metrics.
    pub prometheus: metrics_exporter_prometheus::PrometheusHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), server::ServerError>>>,
}

/// What to start a test server with.
pub struct Setup {
    pub model: ModelHandle,
    pub config: EngineConfig,
    pub decision_log: Option<PathBuf>,
    pub options: ServerOptions,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            model: ModelHandle::new(default_model()),
            config: EngineConfig::default(),
            decision_log: None,
            options: ServerOptions::default(),
        }
    }
}

impl Setup {
    pub fn holdout(mut self, rate: f64) -> Self {
        self.config.holdout = Holdout::new(rate, b"test-key");
        self
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> TestServer {
        let (metrics, prometheus) = Metrics::prometheus();
        let log = setup.decision_log.as_ref().map(|p| {
            DecisionLog::open(p, LogOptions::default(), metrics.clone())
                .expect("decision log opens")
        });
        let engine = Engine::new(
            Arc::new(MemoryStore::new(StoreLimits::default(), 7)),
            setup.model,
            setup.config,
            metrics,
            log,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(
            engine.clone(),
            listener,
            setup.options,
            async {
                let _ = stopped.await;
            },
        ));
        let client = RiskScorerClient::connect(format!("http://{addr}"))
            .await
            .expect("client connects");
        TestServer {
            addr,
            client,
            engine,
            prometheus,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The value of the series `name` (with its labels, as Prometheus
    /// prints them), 0 when it was never recorded.
    pub fn metric(&self, name: &str) -> f64 {
        parse_metrics(&self.prometheus.render())
            .get(name)
            .copied()
            .unwrap_or(0.0)
    }

    /// Stops the server and waits for it (decision log flushed).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub const MAC_SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15";
pub const ANDROID_CHROME: &str = "Mozilla/5.0 (Linux; Android 14; SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Mobile Safari/537.36";

/// The customer's own laptop at home in Paris.
pub fn home_session(id: &str) -> proto::Session {
    proto::Session {
        session_id: id.into(),
        captured_at_ms: system_now_ms() - 1000,
        ip: "37.164.20.41".into(),
        user_agent: MAC_SAFARI.into(),
        accept_language: "fr-FR,fr;q=0.9,en;q=0.7".into(),
        timezone: "Europe/Paris".into(),
        utc_offset_minutes: 60,
        screen_width: 1440,
        screen_height: 900,
        color_depth: 24,
        device_id: "dev_home_laptop".into(),
        platform: "MacIntel".into(),
    }
}

/// Someone else's phone, on another continent's network.
pub fn foreign_session(id: &str) -> proto::Session {
    proto::Session {
        session_id: id.into(),
        captured_at_ms: system_now_ms() - 1000,
        ip: "114.122.7.200".into(),
        user_agent: ANDROID_CHROME.into(),
        accept_language: "id-ID,id;q=0.9".into(),
        timezone: "Asia/Jakarta".into(),
        utc_offset_minutes: 420,
        screen_width: 412,
        screen_height: 915,
        color_depth: 32,
        device_id: "dev_unknown_phone".into(),
        platform: "Linux armv8l".into(),
    }
}

pub fn customer(n: u32) -> proto::Customer {
    proto::Customer {
        id: format!("cus_{n}"),
        email: format!("customer{n}@example.com"),
    }
}

/// A card registered `age_ms` ago from `session`.
pub fn registration(
    method_id: &str,
    fingerprint: &str,
    age_ms: i64,
    session: Option<proto::Session>,
    customer: proto::Customer,
) -> proto::RegisterPaymentMethodRequest {
    proto::RegisterPaymentMethodRequest {
        payment_method: Some(proto::PaymentMethod {
            id: method_id.into(),
            r#type: proto::PaymentMethodType::Card as i32,
            card_fingerprint: fingerprint.into(),
            card_country: "FR".into(),
            created_at_ms: system_now_ms() - age_ms,
            creation_session: session,
            customer: None,
        }),
        customer: Some(customer),
    }
}

/// A PaymentIntent of `amount` cents with the registered method `method_id`.
pub fn payment(
    payment_id: &str,
    method_id: &str,
    amount: i64,
    session: Option<proto::Session>,
    customer: proto::Customer,
) -> proto::PaymentEvent {
    proto::PaymentEvent {
        payment_id: payment_id.into(),
        object_type: proto::ObjectType::PaymentIntent as i32,
        amount,
        currency: "eur".into(),
        created_at_ms: 0,
        customer: Some(customer),
        merchant_id: "acct_1".into(),
        payment_method: Some(proto::PaymentMethod {
            id: method_id.into(),
            ..Default::default()
        }),
        session,
        ..Default::default()
    }
}

pub const DAY_MS: i64 = 86_400_000;

/// A client codec that sends raw bytes and reads outcomes: what a broken
/// client library would put on the wire.
#[derive(Debug, Default, Clone)]
pub struct RawClientCodec;

#[derive(Debug, Default)]
pub struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawClientCodec {
    type Encode = bytes::Bytes;
    type Decode = proto::Outcome;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::Outcome>;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::default())
    }
}

/// The generated client the tests talk through.
pub type Client = RiskScorerClient<Channel>;

/// Registers `req`; the test fails if the server refuses it.
pub async fn register(c: &mut Client, req: proto::RegisterPaymentMethodRequest) {
    c.register_payment_method(req).await.expect("registered");
}

/// Registers the card most tests use: `pm_1` (fingerprint `fp_1`) of
/// customer 1, saved 30 days ago from the home session `s0`.
pub async fn register_home_card(c: &mut Client) {
    register(
        c,
        registration(
            "pm_1",
            "fp_1",
            30 * DAY_MS,
            Some(home_session("s0")),
            customer(1),
        ),
    )
    .await;
}

/// Scores `ev`; the test fails if the RPC fails.
pub async fn score_ok(c: &mut Client, ev: proto::PaymentEvent) -> proto::Outcome {
    c.score(ev).await.expect("scored").into_inner()
}

/// Reports `kind` feedback on `payment_id`, reported now.
pub async fn feedback(
    c: &mut Client,
    payment_id: &str,
    kind: proto::FeedbackKind,
) -> Result<proto::FeedbackResponse, tonic::Status> {
    c.report_feedback(proto::FeedbackEvent {
        payment_id: payment_id.into(),
        kind: kind as i32,
        reported_at_ms: 0,
    })
    .await
    .map(tonic::Response::into_inner)
}
