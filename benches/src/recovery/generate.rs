//! Writing a data folder as the service leaves it: a checkpoint and the log after it.
//!
//! The folder is what generation 1 of a service with `workers` workers leaves behind when it
//! stops without a shutdown checkpoint (a crash or `kill -9`) after checkpoint 1:
//!
//! - `checkpoints/0000000001/`: one snapshot per worker with the shadows that worker owns (by
//!   [`owner`], as the dataflow routes them) and a `MANIFEST` of generation 1. Each shadow is at
//!   version 2, built by one desired and one reported update, so worker `w` had written
//!   `2 * entries` log records before the checkpoint and its `next_lsn` is that number.
//! - `wal/`: per worker, the log of generation 1 from that `next_lsn` on, in segments that
//!   start a new file at 64 MiB, as the service does.
//!
//! Without a checkpoint, the log starts at lsn 0 and the first record of each shadow creates it
//! with its full state. Files go through the same writers the service uses
//! ([`SegmentWriter`], [`write_snapshot`], [`CheckpointManifest::write`]), so they match its
//! formats exactly.
//!
//! # Notes
//! - The service deletes the segments that a checkpoint covers, and this writer never writes
//!   them. The first segment after the checkpoint has sequence 1, as if the log before it had
//!   fit in one segment. Recovery uses the sequence only to order segments.
//! - Each log record updates a shadow chosen at random (a fixed seed), so some shadows get
//!   several updates and others none.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pipeline::dataflow::ShadowVersion;
use pipeline::durable::format::{
    CheckpointManifest, LogRecord, SegmentId, SegmentWriter, WorkerCheckpoint,
    create_checkpoint_dir, snapshot_path, write_snapshot,
};
use pipeline::durable::{DurableDirs, owner};
use pipeline::history::{ChangeKind, Origin};
use pipeline::shadow::{Limits, Shadow, ShadowKey, apply_update, decode_update};

use super::sensor;

/// Size at which the service starts a new log segment (the private `SEGMENT_BYTES` of
/// `pipeline::durable::log`).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Records encoded between two writes to a segment.
const RECORDS_PER_WRITE: u64 = 4096;

/// Generation that wrote the folder.
const GENERATION: u64 = 1;

/// Id of the checkpoint.
const CHECKPOINT_ID: u64 = 1;

/// When the checkpoint was taken: 2026-01-01T00:00:00Z, in milliseconds since the Unix epoch.
const CHECKPOINT_AT_MS: i64 = 1_767_225_600_000;

/// Log records per millisecond of `accepted_at_ms`: a service accepting 10,000 updates/s.
const RECORDS_PER_MS: u64 = 10;

/// Version every shadow has in the checkpoint: one desired and one reported update.
const CHECKPOINT_VERSION: u64 = 2;

/// Contents of a data folder to write.
#[derive(Clone, Copy, Debug)]
pub struct FolderSpec {
    /// Number of shadows, one per sensor.
    pub shadows: u64,

    /// Number of log records.
    pub log_records: u64,

    /// Whether the shadows are in a checkpoint; without one the log creates them.
    pub checkpoint: bool,

    /// Number of workers, each with its own snapshot and log.
    pub workers: u32,
}

/// Sizes and time of a written folder.
#[derive(Clone, Copy, Debug, Default)]
pub struct FolderStats {
    /// Bytes of all snapshots.
    pub snapshot_bytes: u64,

    /// Bytes of all log segments.
    pub wal_bytes: u64,

    /// Number of log segments.
    pub segments: u64,

    /// Time the writing took.
    pub duration: Duration,
}

/// Writes the data folder described by `spec` into the empty folder `data_dir`.
///
/// # Errors
/// Fails when a file cannot be written, or when `spec` requests a log without a checkpoint
/// that has fewer records than shadows.
pub fn write_data_folder(data_dir: &Path, spec: FolderSpec) -> anyhow::Result<FolderStats> {
    anyhow::ensure!(spec.workers >= 1, "invalid worker count 0");
    anyhow::ensure!(
        spec.checkpoint || spec.log_records >= spec.shadows,
        "a log without a checkpoint needs at least one record per shadow: {} records for {} \
         shadows",
        spec.log_records,
        spec.shadows
    );
    let started = Instant::now();
    let dirs = DurableDirs::under(data_dir);
    dirs.create().context("creating the data folder")?;
    let owners: Vec<u32> = (0..spec.shadows)
        .map(|n| {
            owner(
                &ShadowKey::classic(sensor::thing_name(n)),
                spec.workers as usize,
            ) as u32
        })
        .collect();

    let mut stats = FolderStats::default();
    let mut next_lsns = vec![0; spec.workers as usize];
    if spec.checkpoint {
        stats.snapshot_bytes = write_checkpoint(&dirs, &owners, spec.workers, &mut next_lsns)?;
    }
    let (wal_bytes, segments) = write_log(&dirs, &owners, spec, &next_lsns)?;
    stats.wal_bytes = wal_bytes;
    stats.segments = segments;
    stats.duration = started.elapsed();
    Ok(stats)
}

/// Writes checkpoint 1 with every shadow at version 2, sets each worker's `next_lsn`, and
/// returns the snapshot bytes.
fn write_checkpoint(
    dirs: &DurableDirs,
    owners: &[u32],
    workers: u32,
    next_lsns: &mut [u64],
) -> anyhow::Result<u64> {
    let folder = create_checkpoint_dir(&dirs.checkpoints, CHECKPOINT_ID)?;
    let limits = Limits::default();
    let mut parts = Vec::new();
    let mut bytes = 0;
    // One worker at a time, so only one worker's shadows are in memory.
    for worker in 0..workers {
        let mut entries: Vec<(ShadowKey, Arc<ShadowVersion>)> = Vec::new();
        for (n, _) in owners.iter().enumerate().filter(|(_, w)| **w == worker) {
            let n = n as u64;
            entries.push((
                ShadowKey::classic(sensor::thing_name(n)),
                checkpoint_shadow(n, &limits)?,
            ));
        }
        let written = write_snapshot(
            &snapshot_path(&folder, worker),
            entries
                .iter()
                .map(|(key, live)| (key, Some(live.as_ref()), 0)),
        )?;
        bytes += written.bytes;
        next_lsns[worker as usize] = CHECKPOINT_VERSION * written.entries;
        parts.push(WorkerCheckpoint {
            worker,
            next_lsn: next_lsns[worker as usize],
            entries: written.entries,
        });
    }
    let manifest = CheckpointManifest {
        id: CHECKPOINT_ID,
        generation: GENERATION,
        workers: parts,
        created_at_ms: CHECKPOINT_AT_MS,
    };
    manifest.write(&folder)?;
    Ok(bytes)
}

/// Builds sensor `n`'s shadow as the service would after a desired update two hours before the
/// checkpoint and a full report one hour before it.
fn checkpoint_shadow(n: u64, limits: &Limits) -> anyhow::Result<Arc<ShadowVersion>> {
    let desired_at_ms = CHECKPOINT_AT_MS - 7_200_000;
    let reported_at_ms = CHECKPOINT_AT_MS - 3_600_000;
    let shadow = apply_state(
        None,
        &format!(r#"{{"desired":{}}}"#, sensor::desired_json(n)),
        desired_at_ms,
        limits,
    )?;
    let shadow = apply_state(
        Some(&shadow),
        &format!(r#"{{"reported":{}}}"#, sensor::full_reported_json(n)),
        reported_at_ms,
        limits,
    )?;
    Ok(ShadowVersion::new(
        shadow,
        reported_at_ms,
        Some(sensor::client_token(n, CHECKPOINT_VERSION)),
    ))
}

/// Applies the request state `state_json` to `current` as the service does.
fn apply_state(
    current: Option<&Shadow>,
    state_json: &str,
    accepted_at_ms: i64,
    limits: &Limits,
) -> anyhow::Result<Shadow> {
    let payload = format!(r#"{{"state":{state_json}}}"#);
    let request = decode_update(payload.as_bytes(), limits).map_err(|rejected| {
        anyhow::anyhow!("generated update {payload} is invalid: {rejected:?}")
    })?;
    apply_update(
        current,
        0,
        &request,
        accepted_at_ms.div_euclid(1000),
        limits,
    )
    .map_err(|error| anyhow::anyhow!("applying generated update {payload} failed: {error}"))
}

/// Writes the log records after the checkpoint (or from lsn 0 without one) and returns the
/// bytes and number of segments.
fn write_log(
    dirs: &DurableDirs,
    owners: &[u32],
    spec: FolderSpec,
    next_lsns: &[u64],
) -> anyhow::Result<(u64, u64)> {
    let mut logs: Vec<WorkerLogWriter> = (0..spec.workers)
        .map(|worker| WorkerLogWriter::new(worker, next_lsns[worker as usize], spec.checkpoint))
        .collect();
    let mut versions = vec![
        if spec.checkpoint {
            CHECKPOINT_VERSION
        } else {
            0
        };
        owners.len()
    ];

    for index in 0..spec.log_records {
        // Without a checkpoint, the first record of each shadow creates it.
        let creating = !spec.checkpoint && index < spec.shadows;
        let n = if creating {
            index
        } else {
            sensor::mix(index) % spec.shadows
        };
        versions[n as usize] += 1;
        let request_state = if creating {
            format!(
                r#"{{"desired":{},"reported":{}}}"#,
                sensor::desired_json(n),
                sensor::full_reported_json(n)
            )
        } else {
            format!(r#"{{"reported":{}}}"#, sensor::reading_json(n, index))
        };
        let log = &mut logs[owners[n as usize] as usize];
        log.push(
            &dirs.wal,
            LogRecord {
                lsn: log.next_lsn,
                key: ShadowKey::classic(sensor::thing_name(n)),
                change: ChangeKind::Update,
                version: versions[n as usize],
                accepted_at_ms: CHECKPOINT_AT_MS + (index / RECORDS_PER_MS) as i64,
                origin: Origin::Mqtt,
                client_token: Some(sensor::client_token(n, versions[n as usize])),
                request_state: Some(request_state),
            },
        )?;
    }

    let mut bytes = 0;
    let mut segments = 0;
    for log in &mut logs {
        log.finish()?;
        bytes += log.closed_bytes;
        segments += log.segments;
    }
    Ok((bytes, segments))
}

/// One worker's log, split into segments like the service's `WorkerLog`.
struct WorkerLogWriter {
    worker: u32,
    writer: Option<SegmentWriter>,
    next_sequence: u64,
    next_lsn: u64,
    unwritten: u64,
    closed_bytes: u64,
    segments: u64,
}

impl WorkerLogWriter {
    fn new(worker: u32, first_lsn: u64, after_checkpoint: bool) -> Self {
        WorkerLogWriter {
            worker,
            writer: None,
            next_sequence: u64::from(after_checkpoint),
            next_lsn: first_lsn,
            unwritten: 0,
            closed_bytes: 0,
            segments: 0,
        }
    }

    /// Appends `record`, opening a segment first when none is open.
    fn push(&mut self, wal_dir: &Path, record: LogRecord) -> io::Result<()> {
        if self.writer.is_none() {
            let id = SegmentId {
                generation: GENERATION,
                worker: self.worker,
                sequence: self.next_sequence,
            };
            self.writer = Some(SegmentWriter::create(wal_dir, id, self.next_lsn)?);
            self.next_sequence += 1;
            self.segments += 1;
        }
        let writer = self.writer.as_mut().expect("a segment was opened above");
        writer.push(&record);
        self.next_lsn += 1;
        self.unwritten += 1;
        if self.unwritten < RECORDS_PER_WRITE {
            return Ok(());
        }
        writer.write()?;
        self.unwritten = 0;
        if writer.len() >= SEGMENT_BYTES {
            self.finish()?;
        }
        Ok(())
    }

    /// Writes and syncs the open segment and closes it.
    fn finish(&mut self) -> io::Result<()> {
        if let Some(mut writer) = self.writer.take() {
            writer.write()?;
            writer.sync()?;
            self.closed_bytes += writer.len();
        }
        self.unwritten = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pipeline::durable::recover;

    use super::*;

    fn recover_spec(spec: FolderSpec) -> pipeline::durable::Recovered {
        let dir = tempfile::tempdir().expect("temporary folder");
        write_data_folder(dir.path(), spec).expect("write folder");
        recover(&DurableDirs::under(dir.path()), 2, &|_| true).expect("recover")
    }

    #[test]
    fn checkpoint_and_log_recover_every_shadow() {
        let recovered = recover_spec(FolderSpec {
            shadows: 300,
            log_records: 1000,
            checkpoint: true,
            workers: 2,
        });
        assert_eq!(recovered.stats.checkpoint, Some(CHECKPOINT_ID));
        assert_eq!(recovered.stats.checkpoint_entries, 300);
        assert_eq!(recovered.stats.log_records, 1000);
        assert_eq!(recovered.stats.shadows, 300);
        assert_eq!(recovered.generation, GENERATION + 1);
    }

    #[test]
    fn log_only_creates_every_shadow() {
        let recovered = recover_spec(FolderSpec {
            shadows: 500,
            log_records: 500,
            checkpoint: false,
            workers: 2,
        });
        assert_eq!(recovered.stats.checkpoint, None);
        assert_eq!(recovered.stats.log_records, 500);
        assert_eq!(recovered.stats.shadows, 500);
    }

    #[test]
    fn recovered_versions_count_every_update() {
        let recovered = recover_spec(FolderSpec {
            shadows: 50,
            log_records: 200,
            checkpoint: true,
            workers: 2,
        });
        let total: u64 = recovered
            .shards
            .iter()
            .flatten()
            .map(|(_, state)| state.live.as_ref().expect("live shadow").version())
            .sum();
        assert_eq!(total, 50 * CHECKPOINT_VERSION + 200);
    }

    #[test]
    fn log_without_checkpoint_needs_a_record_per_shadow() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let spec = FolderSpec {
            shadows: 10,
            log_records: 5,
            checkpoint: false,
            workers: 2,
        };
        assert!(write_data_folder(dir.path(), spec).is_err());
    }
}
