//! Progress of a running replay: a live bar on a terminal (indicatif), a
//! plain line every few seconds otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A live bar on standard error.
    Bar,
    /// A log line at this interval.
    Lines(Duration),
    /// Nothing.
    Off,
}

/// Counters the workers bump and the display reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered (warm-up included).
    pub answered: AtomicU64,
    /// Errors among them.
    pub errors: AtomicU64,
}

impl Counters {
    /// Counts an answer.
    pub fn answered(&self, error: bool) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Shows progress of `total` requests until `done` turns true.
pub async fn show(
    style: Style,
    total: u64,
    counters: Arc<Counters>,
    mut done: watch::Receiver<bool>,
) {
    let (bar, every) = match style {
        Style::Off => return,
        Style::Bar => {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} answered, {per_sec} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            (Some(bar), Duration::from_millis(200))
        }
        Style::Lines(every) => (None, every),
    };
    let start = Instant::now();
    let mut last = (start, 0u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = done.wait_for(|d| *d) => true,
        };
        let answered = counters.answered.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        match &bar {
            Some(bar) => {
                bar.set_position(answered);
                bar.set_message(format!("{errors} errors"));
                if finished {
                    bar.finish_and_clear();
                }
            }
            None if !finished => {
                let now = Instant::now();
                let rate = (answered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, answered);
                tracing::info!(
                    "replay: {answered}/{total} answered after {:.0} s, {rate:.0}/s, {errors} errors",
                    start.elapsed().as_secs_f64()
                );
            }
            None => {}
        }
        if finished {
            return;
        }
    }
}
