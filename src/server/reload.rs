//! Hot model reload: on SIGHUP, or when the model file changes on disk
//! (polled), the file is loaded again and swapped in atomically — a payment
//! is scored wholly by the old model or wholly by the new one. A file that
//! does not load is logged and counted; the loaded model stays.

use crate::metrics::Metrics;
use crate::model::{Model, ModelHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

async fn stamp(path: &Path) -> Stamp {
    let m = tokio::fs::metadata(path).await.ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads `path` and swaps it in; logs and counts a failure.
async fn reload(model: &ModelHandle, metrics: &Metrics, path: &Path, why: &'static str) {
    let p = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || Model::load(&p)).await;
    match loaded {
        Ok(Ok(loaded)) => {
            let (handle, model) = (model, loaded);
            let version = model.version().to_owned();
            handle.swap(model);
            metrics.model_loaded(&version);
            tracing::info!(%version, path = %path.display(), why, "model reloaded");
        }
        Ok(Err(e)) => {
            metrics.model_reload_failed();
            tracing::error!(error = %e, why, "model reload failed; the loaded model stays");
        }
        Err(e) => {
            metrics.model_reload_failed();
            tracing::error!(error = %e, why, "model reload task failed; the loaded model stays");
        }
    }
}

/// Watches `path` until `stop` resolves: reloads it into `model` on SIGHUP
/// and, when `poll` is set, whenever the file's modification time or size
/// changes.
pub async fn watch(
    model: ModelHandle,
    metrics: Metrics,
    path: PathBuf,
    poll: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) {
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by file change only");
            None
        }
    };
    let mut last = stamp(&path).await;
    let mut tick = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            () = &mut stop => return,
            () = hangup => {
                last = stamp(&path).await;
                reload(&model, &metrics, &path, "SIGHUP").await;
            }
            _ = tick.tick(), if poll.is_some() => {
                let now = stamp(&path).await;
                if now.is_some() && now != last {
                    last = now;
                    reload(&model, &metrics, &path, "file changed").await;
                }
            }
        }
    }
}
