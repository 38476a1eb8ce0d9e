//! The Prometheus endpoint: `GET /metrics` renders every riskstream metric.

use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves `/metrics` from `handle` on `listener` until `shutdown` completes.
pub async fn serve(
    handle: PrometheusHandle,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep_task.abort();
    res
}
