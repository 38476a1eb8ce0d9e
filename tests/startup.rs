//! While the state is being restored the server listens but does not serve:
//! health says NOT_SERVING and every RiskScorer call answers UNAVAILABLE;
//! once the state is ready both flip, without a restart of the listener.

mod common;

use common::*;
use riskstream::engine::{Engine, EngineConfig};
use riskstream::metrics::Metrics;
use riskstream::model::ModelHandle;
use riskstream::proto::risk_scorer_client::RiskScorerClient;
use riskstream::server::{self, ServerOptions};
use riskstream::state::{MemoryStore, StoreLimits};
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn health(channel: &tonic::transport::Channel) -> ServingStatus {
    let mut h = HealthClient::new(channel.clone());
    let r = h
        .check(HealthCheckRequest {
            service: "riskstream.v1.RiskScorer".into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    r.status()
}

#[tokio::test]
async fn nothing_is_served_until_the_state_is_restored() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let (restored, restoring) = oneshot::channel::<()>();
    let (stop, stopped) = oneshot::channel::<()>();
    let starting = async move {
        let _ = restoring.await;
        Ok(Engine::new(
            Arc::new(MemoryStore::new(StoreLimits::default(), 7)),
            ModelHandle::new(default_model()),
            EngineConfig::default(),
            Metrics::noop(),
            None,
        ))
    };
    let task = tokio::spawn(server::serve_starting(
        starting,
        listener,
        None,
        ServerOptions::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connects while restoring");
    let mut c = RiskScorerClient::new(channel.clone());

    assert_eq!(health(&channel).await, ServingStatus::NotServing);
    let err = c
        .register_payment_method(registration(
            "pm_1",
            "fp_1",
            DAY_MS,
            Some(home_session("s0")),
            customer(1),
        ))
        .await
        .expect_err("not served yet");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("restored"), "{err:?}");
    let err = c
        .score(payment("p1", "pm_1", 100, None, customer(1)))
        .await
        .expect_err("not served yet");
    assert_eq!(err.code(), tonic::Code::Unavailable);

    restored.send(()).expect("still starting");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while health(&channel).await != ServingStatus::Serving {
        assert!(std::time::Instant::now() < deadline, "never turned SERVING");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    register_home_card(&mut c).await;
    let o = score_ok(
        &mut c,
        payment("p2", "pm_1", 100, Some(home_session("s1")), customer(1)),
    )
    .await;
    assert_eq!(o.creation_session_id, "s0");
    let _ = stop.send(());
    task.await.expect("server task").expect("stops cleanly");
}
