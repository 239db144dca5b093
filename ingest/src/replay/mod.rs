//! Replay of public sensor data sets as AWS IoT Device Shadow updates over MQTT.
//!
//! [`run`] reads the CSV files of one [`Dataset`], maps each row to shadow updates of the
//! data set's own devices, and publishes each update to `$aws/things/{thing}/shadow/update`
//! at QoS 1. It returns a [`ReplaySummary`] once the broker has acknowledged every update.
//! This is what `shadowflow replay` runs, and it is meant for a local shadowflow server or a
//! test broker, not for load against shared infrastructure.
//!
//! The data itself is not part of the repository. `datasets/README.md` describes where each
//! data set comes from, how to download it and how its rows map to updates.
//!
//! # Layout
//!
//! - `config`: [`ReplayConfig`] and [`BrokerAddress`], with defaults and validation.
//! - `dataset`: [`Dataset`], [`RowMapper`] and the helpers shared by the mappings, with
//!   one submodule per data set (`beijing`, `chicago`, `occupancy`).
//! - `timestamp`: calendar checks and RFC 3339 formatting of the data sets' local times.
//! - `reader`: [`DatasetReader`], a streaming reader over plain or gzipped CSV files.
//! - `publisher`: MQTT connections, update encoding and PubAck counting.
//! - `acks`: outstanding updates per row, connection failures and the PubAck timeout.
//! - `progress`: progress bar on stderr, or periodic INFO logs when stderr is not a terminal.
//! - `source`: [`replay_into_dataflow`], the in-process source that skips MQTT.
//! - `summary`: live counters, skipped-row logging and [`ReplaySummary`].
//! - `error`: [`ReplayError`] and [`ConfigError`].
//!
//! # Notes
//!
//! - Rows are read on a blocking thread and handed to the publisher through a bounded
//!   channel, so memory stays flat however large the input is.
//! - Per-thing order is kept: every update of a thing goes through one MQTT connection, in
//!   file order. Order between different things is not defined.
//! - With a rate, the schedule is open-loop: the i-th published row is due at
//!   `start + i / rate`, so a stall delays later rows only until the replay catches up.
//!   The schedule does not slow down when the broker does.
//! - A failed connection ends the replay with an error. Nothing is retried, so updates
//!   already acknowledged stay published.
//! - Rows that yield no update are skipped and counted by [`SkipReason`]. The first five of
//!   each reason are logged at WARN with file and line.
//!
//! # Example
//!
//! ```no_run
//! use ingest::replay::{self, Dataset, ReplayConfig};
//!
//! # async fn example() -> Result<(), ingest::replay::ReplayError> {
//! let config = ReplayConfig::new(vec!["data/occupancy".into()], Dataset::Occupancy)
//!     .with_broker("mqtt://127.0.0.1:1883".parse().expect("valid broker URL"))
//!     .with_limit(Some(200));
//! let summary = replay::run(config).await?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```

mod acks;
mod config;
mod dataset;
mod error;
mod progress;
mod publisher;
mod reader;
mod source;
mod summary;
mod timestamp;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;

pub use config::{
    BrokerAddress, DEFAULT_ACK_TIMEOUT, DEFAULT_BROKER_HOST, DEFAULT_BROKER_PORT,
    DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_LIMIT, MAX_PACKET_SIZE_BYTES, ReplayConfig,
};
pub use dataset::{
    Dataset, MAX_THING_NAME_LENGTH, RowMapper, SkipReason, ThingUpdate, sanitize_thing_name,
};
pub use error::{ConfigError, ReplayError};
pub use reader::{DatasetReader, ReplayRow, expand_paths};
pub use source::{SourceTotals, replay_into_dataflow};
pub use summary::ReplaySummary;

use acks::AckTracker;
use progress::ProgressReporter;
use publisher::{EncodedRow, Publisher, encode_row};
use summary::{ReplayCounters, SkipCounter};

/// Rows buffered between the reader thread and the publisher.
const ROW_CHANNEL_CAPACITY: usize = 1024;

/// Replays the configured files to the broker and waits for every PubAck.
///
/// The first MQTT connection is opened after every input file's header has been checked and
/// before the first row is read, so a wrong path, a wrong data set or a stopped broker fails
/// fast. Progress goes to stderr while it runs.
///
/// # Errors
///
/// Returns [`ReplayError::Config`] for invalid options, an input error ([`ReplayError::Open`],
/// [`ReplayError::NoInputFiles`], [`ReplayError::Read`], [`ReplayError::MissingColumn`]),
/// [`ReplayError::Connect`] if the broker cannot be reached, and [`ReplayError::Connection`]
/// or [`ReplayError::AckTimeout`] if publishing fails part-way.
pub async fn run(config: ReplayConfig) -> Result<ReplaySummary, ReplayError> {
    config.validate()?;
    let started_at = Instant::now();

    let paths = config.paths.clone();
    let dataset = config.dataset;
    let reader = tokio::task::spawn_blocking(move || DatasetReader::open(&paths, dataset))
        .await
        .map_err(ReplayError::ReaderTask)??;
    let files = reader.files().len();
    let reader = reader.with_limit(config.limit);
    info!(
        %dataset,
        files,
        broker = %config.broker,
        rate = ?config.rate,
        limit = ?config.limit,
        "starting replay"
    );

    let counters = Arc::new(ReplayCounters::default());
    let acks = Arc::new(AckTracker::new(Arc::clone(&counters)));
    let mut publisher = Publisher::connect(&config, acks).await?;

    let (row_sender, row_receiver) = mpsc::channel(ROW_CHANNEL_CAPACITY);
    let reader_counters = Arc::clone(&counters);
    let reader_task =
        tokio::task::spawn_blocking(move || read_rows(reader, &row_sender, &reader_counters));
    let progress = ProgressReporter::start(Arc::clone(&counters), config.limit);

    let published = publish_rows(row_receiver, &mut publisher, config.rate).await;
    let (things, connections) = (publisher.things(), publisher.connections());
    let published = match published {
        Ok(()) => publisher.finish().await,
        Err(error) => Err(error),
    };
    progress.finish();
    published?;
    let rows_skipped = reader_task.await.map_err(ReplayError::ReaderTask)??;

    let snapshot = counters.snapshot();
    let summary = ReplaySummary {
        dataset,
        broker: config.broker.clone(),
        files,
        rows_read: snapshot.rows_read,
        rows_published: snapshot.rows_published,
        updates_published: snapshot.updates_published,
        rows_skipped,
        things,
        connections,
        elapsed: started_at.elapsed(),
    };
    info!(
        rows_read = summary.rows_read,
        rows_published = summary.rows_published,
        updates_published = summary.updates_published,
        rows_skipped = summary.rows_skipped_total(),
        elapsed_s = summary.elapsed.as_secs_f64(),
        "replay finished"
    );
    Ok(summary)
}

/// Reads, maps and encodes rows on a blocking thread, and returns the skip counts.
///
/// It stops early, without an error, when the publisher has dropped the receiver.
fn read_rows(
    reader: DatasetReader,
    rows: &mpsc::Sender<EncodedRow>,
    counters: &ReplayCounters,
) -> Result<BTreeMap<SkipReason, u64>, ReplayError> {
    let mut skips = SkipCounter::default();
    for row in reader {
        let row = row?;
        counters.rows_read.fetch_add(1, Ordering::Relaxed);
        match row.outcome {
            Ok(updates) => {
                if rows
                    .blocking_send(encode_row(row.row_number, updates))
                    .is_err()
                {
                    // The publisher stopped and returns its own error.
                    break;
                }
            }
            Err(reason) => {
                counters.rows_skipped.fetch_add(1, Ordering::Relaxed);
                skips.record(reason, &row.path, row.line);
            }
        }
    }
    Ok(skips.into_counts())
}

/// Publishes rows as they arrive, on the open-loop schedule when a rate is set.
async fn publish_rows(
    mut rows: mpsc::Receiver<EncodedRow>,
    publisher: &mut Publisher,
    rate: Option<f64>,
) -> Result<(), ReplayError> {
    let schedule_start = Instant::now();
    let mut rows_scheduled: u64 = 0;
    while let Some(row) = rows.recv().await {
        if let Some(rate) = rate {
            let due = due_time(schedule_start, rows_scheduled, rate)
                .ok_or(ConfigError::InvalidRate { rate })?;
            if due > Instant::now() {
                publisher.sleep_until(due).await?;
            }
            rows_scheduled += 1;
        }
        publisher.publish_row(row).await?;
    }
    Ok(())
}

/// Returns `start + index / rate`, or `None` if that time cannot be represented.
fn due_time(start: Instant, index: u64, rate: f64) -> Option<Instant> {
    let offset = Duration::try_from_secs_f64(index as f64 / rate).ok()?;
    start.checked_add(offset)
}
