//! Progress display on stderr while a replay runs.
//!
//! On a terminal an indicatif bar shows rows read, their rate, and rows published and
//! skipped. When stderr is not a terminal (CI logs, pipes), the bar is hidden and an INFO
//! event with the same numbers is logged every few seconds instead.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

use super::summary::ReplayCounters;

/// Time between two bar redraws.
const BAR_REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// Time between two progress log events when stderr is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Background task that reports progress until [`ProgressReporter::finish`] is called.
pub(crate) struct ProgressReporter {
    bar: Option<ProgressBar>,
    task: JoinHandle<()>,
}

impl ProgressReporter {
    /// Starts reporting. `limit` gives the bar a length, and a bar without one is a spinner.
    pub fn start(counters: Arc<ReplayCounters>, limit: Option<u64>) -> Self {
        if !std::io::stderr().is_terminal() {
            let task = tokio::spawn(log_progress(counters));
            return Self { bar: None, task };
        }

        let bar = ProgressBar::with_draw_target(limit, ProgressDrawTarget::stderr());
        // indicatif's own {per_sec} prints four decimals, so the rate is part of the message.
        let template = match limit {
            Some(_) => "{bar:30} {human_pos}/{human_len} rows read, eta {eta}: {msg}",
            None => "{spinner} [{elapsed_precise}] {human_pos} rows read: {msg}",
        };
        // The templates are constants, so the fallback style is never used in practice.
        let style =
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let task = tokio::spawn(draw_progress(bar.clone(), counters));
        Self {
            bar: Some(bar),
            task,
        }
    }

    /// Stops reporting and clears the bar, so the summary is printed on a clean line.
    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for ProgressReporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn draw_progress(bar: ProgressBar, counters: Arc<ReplayCounters>) {
    let started_at = Instant::now();
    let mut interval = tokio::time::interval(BAR_REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let snapshot = counters.snapshot();
        let rows_per_second =
            snapshot.rows_read as f64 / started_at.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(snapshot.rows_read);
        bar.set_message(format!(
            "{rows_per_second:.0} rows/s, published {} rows ({} updates), skipped {}",
            snapshot.rows_published, snapshot.updates_published, snapshot.rows_skipped
        ));
    }
}

async fn log_progress(counters: Arc<ReplayCounters>) {
    let started_at = Instant::now();
    let mut interval = tokio::time::interval_at(started_at + LOG_INTERVAL, LOG_INTERVAL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let snapshot = counters.snapshot();
        let seconds = started_at.elapsed().as_secs_f64();
        let rows_per_second = (snapshot.rows_read as f64 / seconds).round() as u64;
        info!(
            rows_read = snapshot.rows_read,
            rows_published = snapshot.rows_published,
            updates_published = snapshot.updates_published,
            rows_skipped = snapshot.rows_skipped,
            rows_per_second,
            "replay progress"
        );
    }
}
