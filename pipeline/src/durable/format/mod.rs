//! On-disk formats of durability: the write-ahead log, checkpoint snapshots and manifests.
//!
//! This module defines the files and how to write, read, repair and prune them. It does not
//! decide when to write, sync or checkpoint, and it runs no threads: the dataflow calls it.
//!
//! ```text
//! DATA/
//!   wal/
//!     0000000003-0001-0000000002.wal   generation 3, worker 1, third segment of that log
//!   checkpoints/
//!     0000000007/                      checkpoint 7
//!       worker-0000.snap               one snapshot per worker
//!       worker-0001.snap
//!       MANIFEST                       written last: the checkpoint is complete
//! ```
//!
//! Each worker of each service start (generation) appends the shadow changes it accepts to its
//! own log, a series of segment files whose records are numbered by lsn from 0. A checkpoint
//! stores every shadow, and its manifest records for each worker the lsn up to which the
//! snapshot contains the log. Recovery loads the newest complete checkpoint
//! ([`latest_checkpoint`], [`read_snapshot`]) and replays the log after it ([`replay_log`]).
//!
//! # Layout
//! - `error`: [`LogError`], which names the file and byte offset of damage, and the small
//!   decoding errors.
//! - `frame`: length- and CRC-32-prefixed frames and the field encoding inside them.
//! - `record`: [`LogRecord`] and its binary encoding.
//! - `header`: [`SegmentId`], segment file names and the segment header.
//! - `segment`: [`SegmentWriter`].
//! - `scan`: [`read_segment`], torn-tail detection and [`cut_torn_tail`].
//! - `replay`: [`replay_log`] over a folder, and [`remove_segments_covered_by`].
//! - `snapshot`: [`write_snapshot`] and [`read_snapshot`].
//! - `checkpoint`: checkpoint folders, [`CheckpointManifest`] and their cleanup.
//! - `fs`: syncing new names and renames.
//!
//! # Notes
//!
//! - All integers are little-endian, and every frame and header has a CRC-32 (ISO-HDLC).
//! - Durability relies on `fdatasync` of files and `fsync` of folders, as on Linux. The writer
//!   does not use `O_DIRECT`.
//! - A record is acknowledged only after the sync that follows its write. So damage at the end
//!   of a segment (a torn tail) is dropped with a warning. Damage before valid data is
//!   corruption, which stops recovery. `scan` lists the exact rules.
//!
//! # Example
//!
//! ```
//! use pipeline::durable::format::{LogRecord, SegmentId, SegmentWriter, replay_log};
//! use pipeline::history::{ChangeKind, Origin};
//! use pipeline::shadow::ShadowKey;
//!
//! let dir = tempfile::tempdir().expect("temporary folder");
//! let id = SegmentId { generation: 1, worker: 0, sequence: 0 };
//! let mut writer = SegmentWriter::create(dir.path(), id, 0).expect("new segment");
//! writer.push(&LogRecord {
//!     lsn: 0,
//!     key: ShadowKey::classic("lamp"),
//!     change: ChangeKind::Update,
//!     version: 1,
//!     accepted_at_ms: 1_700_000_000_000,
//!     origin: Origin::Mqtt,
//!     client_token: None,
//!     request_state: Some(r#"{"desired":{"on":true}}"#.to_owned()),
//! });
//! writer.write().expect("write");
//! writer.sync().expect("sync");
//!
//! let mut replayed = Vec::new();
//! let report = replay_log(dir.path(), None, |position, record| {
//!     replayed.push((position.lsn, record.key.thing_name));
//!     Ok::<_, std::convert::Infallible>(())
//! })
//! .expect("replay");
//! assert_eq!(replayed, [(0, "lamp".to_owned())]);
//! assert_eq!(report.last[&(1, 0)], 1);
//! ```

mod checkpoint;
mod error;
mod frame;
mod fs;
mod header;
mod record;
mod replay;
mod scan;
mod segment;
mod snapshot;

pub use checkpoint::{
    CheckpointManifest, MANIFEST_FILE_NAME, WorkerCheckpoint, checkpoint_dir,
    create_checkpoint_dir, latest_checkpoint, next_checkpoint_id, remove_checkpoints_except,
    snapshot_path,
};
pub use error::{DecodeError, FileKind, LogError, RecordTooLarge};
pub use header::{SEGMENT_HEADER_BYTES, SegmentId};
pub use record::{LogRecord, MAX_RECORD_BYTES};
pub use replay::{ReplayFrom, ReplayReport, remove_segments_covered_by, replay_log, segments};
pub use scan::{SegmentSummary, TornTail, cut_torn_tail, read_segment};
pub use segment::SegmentWriter;
pub use snapshot::{
    MAX_SNAPSHOT_ENTRY_BYTES, SnapshotEntry, SnapshotStats, read_snapshot, write_snapshot,
};

#[cfg(test)]
mod tests;
