//! The Prometheus endpoint: `GET /metrics` renders every riskstream metric,
//! and the `process_*` series read from `/proc` at that moment.

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
                let mut text = handle.render();
                // Reading /proc/self/fd walks every descriptor: off the
                // async workers.
                match tokio::task::spawn_blocking(crate::process::read).await {
                    Ok(Ok(stats)) => {
                        if !text.is_empty() && !text.ends_with("\n\n") {
                            text.push('\n');
                        }
                        text.push_str(&crate::metrics::render_process(&stats));
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "process metrics not read"),
                    Err(_) => tracing::debug!("process metrics not read"),
                }
                ([("content-type", "text/plain; version=0.0.4")], text)
            }
        }),
    );
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    upkeep_task.abort();
    res
}
