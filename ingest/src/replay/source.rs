//! The in-process replay source: feeds a data set straight into the dataflow, without MQTT.
//!
//! `shadowflow serve --replay PATH --replay-dataset NAME` uses it to load a data set into the
//! shadows at start-up, for back-fills and for measuring the dataflow without a broker. Each
//! update enters the dataflow as an MQTT update would, with origin `replay` in the history and
//! no response sent anywhere.
//!
//! # Notes
//! - Requests wait while the dataflow's queue is full, so memory stays flat.
//! - Progress is logged at INFO every few seconds; the closing line has the totals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pipeline::dataflow::{Operation, ReplyTo, Request, RequestSender};
use pipeline::history::Origin;
use pipeline::shadow::ShadowKey;

use super::publisher::encode_row;
use super::{Dataset, DatasetReader, ReplayError};
use crate::mqtt::now_ms;

/// How often the source logs its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Totals of one in-process replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceTotals {
    /// Data rows read.
    pub rows_read: u64,
    /// Rows that yielded no update.
    pub rows_skipped: u64,
    /// Update requests sent into the dataflow.
    pub updates_sent: u64,
}

/// Reads `paths` as `dataset` and sends every update into the dataflow through `requests`.
///
/// Runs on the calling thread, which must not be an async runtime thread (it blocks while the
/// request queue is full); use `tokio::task::spawn_blocking`.
///
/// # Errors
/// Returns [`ReplayError`] when a file cannot be opened or read. Rows sent before the error
/// stay applied. Stops early, without error, when the dataflow shuts down or `stop` turns true.
pub fn replay_into_dataflow(
    paths: &[PathBuf],
    dataset: Dataset,
    limit: Option<u64>,
    requests: &RequestSender,
    stop: &AtomicBool,
) -> Result<SourceTotals, ReplayError> {
    let reader = DatasetReader::open(paths, dataset)?.with_limit(limit);
    let started = Instant::now();
    let mut last_log = started;
    let mut totals = SourceTotals::default();
    tracing::info!(%dataset, files = reader.files().len(), "in-process replay started");
    for row in reader {
        if stop.load(Ordering::Relaxed) {
            tracing::warn!(
                rows_read = totals.rows_read,
                "in-process replay stopped early"
            );
            return Ok(totals);
        }
        let row = row?;
        totals.rows_read += 1;
        let updates = match row.outcome {
            Ok(updates) => updates,
            Err(_) => {
                totals.rows_skipped += 1;
                continue;
            }
        };
        for update in encode_row(row.row_number, updates).updates {
            let request = Request {
                key: ShadowKey::classic(update.thing_name),
                operation: Operation::Update,
                payload: update.payload.to_vec(),
                origin: Origin::Replay,
                reply_to: ReplyTo::Nobody,
                received_at_ms: now_ms(),
            };
            if requests.blocking_send(request).is_err() {
                tracing::warn!(
                    rows_read = totals.rows_read,
                    "dataflow stopped; in-process replay ends early"
                );
                return Ok(totals);
            }
            totals.updates_sent += 1;
        }
        if last_log.elapsed() >= PROGRESS_INTERVAL {
            last_log = Instant::now();
            tracing::info!(
                rows_read = totals.rows_read,
                updates_sent = totals.updates_sent,
                "in-process replay progress"
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        rows_read = totals.rows_read,
        rows_skipped = totals.rows_skipped,
        updates_sent = totals.updates_sent,
        elapsed_s = seconds,
        rows_per_second = totals.rows_read as f64 / seconds.max(f64::EPSILON),
        "in-process replay finished"
    );
    Ok(totals)
}
