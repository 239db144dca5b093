//! Tests of the durable formats, on files in temporary folders.
//!
//! - `record`: record encoding and decoding.
//! - `segment`: the segment writer, and reading one segment with torn tails and corruption.
//! - `replay`: replay over a folder, overlap, gaps and pruning.
//! - `snapshot`: snapshots, manifests and checkpoint folders.
//! - `properties`: proptests of round trips and of damaged bytes.
//! - `speed`: ignored timing runs, for `cargo test --release -- --ignored`.

mod properties;
mod record;
mod replay;
mod segment;
mod snapshot;
mod speed;

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use super::{
    LogError, LogRecord, ReplayFrom, ReplayReport, SegmentId, SegmentSummary, SegmentWriter,
    read_segment, replay_log,
};
use crate::history::{ChangeKind, LogPosition, Origin};
use crate::shadow::{Limits, Shadow, ShadowKey, apply_update, decode_update};

/// Returns a record at `lsn` whose fields vary with `lsn`, so every optional field and enum
/// value occurs.
#[allow(
    clippy::manual_is_multiple_of,
    reason = "`is_multiple_of` needs Rust 1.87, above the workspace's rust-version"
)]
fn record(lsn: u64) -> LogRecord {
    let delete = lsn % 5 == 4;
    LogRecord {
        lsn,
        key: ShadowKey {
            thing_name: format!("thing-{}", lsn % 7),
            shadow_name: (lsn % 3 == 0).then(|| format!("shadow-{lsn}")),
        },
        change: if delete {
            ChangeKind::Delete
        } else {
            ChangeKind::Update
        },
        version: lsn + 1,
        accepted_at_ms: 1_700_000_000_000 + lsn as i64,
        origin: [Origin::Mqtt, Origin::Http, Origin::Replay][(lsn % 3) as usize],
        client_token: (lsn % 2 == 0).then(|| format!("token-{lsn}")),
        request_state: (!delete).then(|| format!(r#"{{"reported":{{"count":{lsn}}}}}"#)),
    }
}

fn segment_id(generation: u64, worker: u32, sequence: u64) -> SegmentId {
    SegmentId {
        generation,
        worker,
        sequence,
    }
}

/// Writes a synced segment with the records `first_lsn..first_lsn + count`, in batches of 4.
fn write_segment(dir: &Path, id: SegmentId, first_lsn: u64, count: u64) -> PathBuf {
    write_segment_with(dir, id, first_lsn, count, record)
}

/// Writes a synced segment with the records that `make` returns for each lsn.
fn write_segment_with(
    dir: &Path,
    id: SegmentId,
    first_lsn: u64,
    count: u64,
    make: impl Fn(u64) -> LogRecord,
) -> PathBuf {
    let mut writer = SegmentWriter::create(dir, id, first_lsn).expect("create segment");
    for lsn in first_lsn..first_lsn + count {
        writer.push(&make(lsn));
        if lsn % 4 == 3 {
            writer.write().expect("write batch");
        }
    }
    writer.write().expect("write last batch");
    writer.sync().expect("sync segment");
    writer.path().to_path_buf()
}

/// Reads a whole segment and returns its summary and records.
fn read_all(path: &Path) -> Result<(SegmentSummary, Vec<LogRecord>), LogError> {
    let mut records = Vec::new();
    let summary = read_segment(path, |record| {
        records.push(record);
        Ok::<(), Infallible>(())
    })?;
    Ok((summary, records))
}

/// Replays `dir` and returns the report and every visited position with the record's version.
fn replay_all(
    dir: &Path,
    from: Option<&ReplayFrom>,
) -> Result<(ReplayReport, Vec<(LogPosition, u64)>), LogError> {
    let mut visited = Vec::new();
    let report = replay_log(dir, from, |position, record| {
        assert_eq!(position.lsn, record.lsn, "position and record disagree");
        visited.push((position, record.version));
        Ok::<(), Infallible>(())
    })?;
    Ok((report, visited))
}

fn position(generation: u64, worker: u32, lsn: u64) -> LogPosition {
    LogPosition {
        generation,
        worker,
        lsn,
    }
}

/// Returns a shadow at `version` with a little desired and reported state.
fn shadow_at(version: u64, text: &str) -> Shadow {
    let limits = Limits::default();
    let payload = format!(r#"{{"state":{{"desired":{{"mode":"{text}","level":{version}}},"#)
        + r#""reported":{"mode":"off","tags":["a","b"]}}}"#;
    let request = decode_update(payload.as_bytes(), &limits).expect("valid update");
    apply_update(None, version - 1, &request, 1_700_000_000, &limits).expect("update applies")
}

/// Returns the offsets where each frame of the segment at `path` starts, and the file length.
fn frame_offsets(path: &Path) -> (Vec<u64>, u64) {
    let bytes = std::fs::read(path).expect("read segment");
    let mut offsets = Vec::new();
    let mut at = super::SEGMENT_HEADER_BYTES;
    while at < bytes.len() {
        offsets.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        at += 8 + len as usize;
    }
    (offsets, bytes.len() as u64)
}

/// Returns the `Corrupt` fields of `result`, or panics with what it was instead.
fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, LogError>) -> (PathBuf, u64, String) {
    match result {
        Err(LogError::Corrupt {
            path,
            offset,
            reason,
            ..
        }) => (path, offset, reason),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}
