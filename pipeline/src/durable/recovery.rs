//! Rebuilding the shadows at start-up from the latest checkpoint and the log after it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::Hashable;

use super::DurableDirs;
use super::format::{
    LogError, LogRecord, ReplayReport, latest_checkpoint, next_checkpoint_id, read_snapshot,
    replay_log, snapshot_path,
};
use crate::dataflow::{KeyState, ShadowVersion, delete_row, history_row};
use crate::history::{ChangeKind, HistoryRow, LogPosition};
use crate::shadow::{Limits, ShadowKey, apply_update, decode_update};

/// The shadows and pending history rows recovered at start-up.
pub struct Recovered {
    /// Shadows and tombstones per worker, partitioned as the dataflow routes requests.
    pub shards: Vec<Vec<(ShadowKey, KeyState)>>,
    /// Accepted changes that the archive does not hold yet, in log order per worker.
    pub unarchived: Vec<(HistoryRow, LogPosition)>,
    /// Generation of this start: one more than any before.
    pub generation: u64,
    /// Id of the next checkpoint.
    pub next_checkpoint_id: u64,
    /// Counts and duration of the recovery.
    pub stats: RecoveryStats,
}

/// Counts and time of a recovery, for the start-up log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Checkpoint recovery started from, if any.
    pub checkpoint: Option<u64>,
    /// Shadows and tombstones read from the checkpoint.
    pub checkpoint_entries: u64,
    /// Log records applied after the checkpoint.
    pub log_records: u64,
    /// Live shadows after recovery.
    pub shadows: u64,
    /// Torn log tails that were cut.
    pub torn_tails: usize,
    /// Wall time of the recovery.
    pub duration: Duration,
}

/// Recovery failed; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A log, snapshot or manifest could not be read.
    #[error(transparent)]
    Log(#[from] LogError<String>),
    /// A log record does not fit the shadow it changes.
    #[error(
        "log record {position:?} does not apply to shadow {key}: {reason}. Recovery stopped so \
         that no accepted update is skipped; keep the data folder for analysis and restore it \
         from a backup"
    )]
    Diverged {
        /// Position of the record.
        position: LogPosition,
        /// Shadow it changes.
        key: String,
        /// Reason the record does not apply.
        reason: String,
    },
    /// A folder could not be read.
    #[error("reading {path} failed: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Rebuilds the shadows from the latest checkpoint and the log, and partitions them over
/// `workers`. `archived` returns whether the history archive already contains a change.
///
/// # Errors
/// Returns [`RecoveryError`] when a file is corrupt or a record does not apply.
pub fn recover(
    dirs: &DurableDirs,
    workers: usize,
    archived: &dyn Fn(LogPosition) -> bool,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let mut stats = RecoveryStats::default();
    let mut shadows: HashMap<ShadowKey, KeyState> = HashMap::new();

    let checkpoint = latest_checkpoint(&dirs.checkpoints).map_err(LogError::into_string)?;
    if let Some((manifest, folder)) = &checkpoint {
        stats.checkpoint = Some(manifest.id);
        for part in &manifest.workers {
            let path = snapshot_path(folder, part.worker);
            let read = read_snapshot(&path, |entry| {
                let state = KeyState {
                    live: entry.live,
                    deleted_version: entry.deleted_version,
                };
                shadows.insert(entry.key, state);
                Ok::<(), String>(())
            })
            .map_err(LogError::into_string)?;
            stats.checkpoint_entries += read;
        }
    }
    let from = checkpoint
        .as_ref()
        .map(|(manifest, _)| manifest.replay_from());

    let limits = Limits::unbounded();
    let mut unarchived = Vec::new();
    let report: ReplayReport = replay_log(&dirs.wal, from.as_ref(), |position, record| {
        let current = apply_record(&mut shadows, &record, &limits).map_err(|reason| {
            format!(
                "{}",
                RecoveryError::Diverged {
                    position,
                    key: describe(&record.key),
                    reason,
                }
            )
        })?;
        if !archived(position) {
            unarchived.push((record_row(record, current.as_deref()), position));
        }
        Ok::<(), String>(())
    })
    .map_err(LogError::into_string)?;
    stats.log_records = report.records_visited;
    stats.torn_tails = report.torn_tails.len();

    let checkpoint_generation = checkpoint
        .as_ref()
        .map_or(0, |(manifest, _)| manifest.generation);
    let generation = report.max_generation.max(checkpoint_generation) + 1;
    let next_checkpoint_id =
        next_checkpoint_id(&dirs.checkpoints).map_err(|source| RecoveryError::Io {
            path: dirs.checkpoints.clone(),
            source,
        })?;

    let workers = workers.max(1);
    let mut shards: Vec<Vec<(ShadowKey, KeyState)>> = vec![Vec::new(); workers];
    for (key, state) in shadows {
        if state.live.is_some() {
            stats.shadows += 1;
        }
        let worker = owner(&key, workers);
        shards[worker].push((key, state));
    }
    stats.duration = started.elapsed();
    Ok(Recovered {
        shards,
        unarchived,
        generation,
        next_checkpoint_id,
        stats,
    })
}

/// Returns the worker that owns `key`: the one the dataflow's exchange sends its requests to.
pub fn owner(key: &ShadowKey, workers: usize) -> usize {
    // Timely routes by `hash & (workers - 1)` for a power of two and `hash % workers`
    // otherwise, which agree.
    (key.thing_name.hashed() % workers as u64) as usize
}

/// Applies one log record to the recovered shadows and returns the shadow after it.
fn apply_record(
    shadows: &mut HashMap<ShadowKey, KeyState>,
    record: &LogRecord,
    limits: &Limits,
) -> Result<Option<Arc<ShadowVersion>>, String> {
    let state = shadows.entry(record.key.clone()).or_default();
    match record.change {
        ChangeKind::Update => {
            let request_state = record
                .request_state
                .as_deref()
                .ok_or("an update record has no request state")?;
            let payload = format!("{{\"state\":{request_state}}}");
            let decoded = decode_update(payload.as_bytes(), limits)
                .map_err(|rejected| format!("its request state is invalid: {rejected}"))?;
            let shadow = apply_update(
                state.live.as_ref().map(|live| &live.shadow),
                state.deleted_version,
                &decoded,
                record.accepted_at_ms.div_euclid(1000),
                limits,
            )
            .map_err(|error| format!("applying it failed: {error}"))?;
            if shadow.version() != record.version {
                return Err(format!(
                    "it produces version {} but records version {}",
                    shadow.version(),
                    record.version
                ));
            }
            let current =
                ShadowVersion::new(shadow, record.accepted_at_ms, record.client_token.clone());
            state.live = Some(Arc::clone(&current));
            Ok(Some(current))
        }
        ChangeKind::Delete => {
            let live_version = state.live.as_ref().map(|live| live.version());
            if live_version != Some(record.version) {
                return Err(format!(
                    "it deletes version {} but the shadow is at {live_version:?}",
                    record.version
                ));
            }
            state.live = None;
            state.deleted_version = record.version;
            Ok(None)
        }
    }
}

/// Returns the history row of a replayed record.
fn record_row(record: LogRecord, current: Option<&ShadowVersion>) -> HistoryRow {
    match (record.change, current) {
        (ChangeKind::Update, Some(current)) => history_row(
            record.key,
            current,
            record.request_state.unwrap_or_default(),
            record.origin,
        ),
        _ => delete_row(
            record.key,
            record.version,
            record.accepted_at_ms,
            record.origin,
            record.client_token,
        ),
    }
}

/// Names a shadow as `thing` or `thing/shadow` for messages.
fn describe(key: &ShadowKey) -> String {
    match &key.shadow_name {
        Some(shadow) => format!("{}/{shadow}", key.thing_name),
        None => key.thing_name.clone(),
    }
}
