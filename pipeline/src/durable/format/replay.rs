//! Recovery over a whole write-ahead log folder: listing, replaying and pruning segments.
//!
//! The folder contains the segments of every `(generation, worker)` log. [`replay_log`] visits
//! their records in order, starting after the latest checkpoint, cuts torn tails and removes
//! segments torn while they were created. [`remove_segments_covered_by`] deletes what a
//! checkpoint has made unnecessary.
//!
//! # Notes
//!
//! - Order: generations ascending, then worker by worker, then segments by sequence. Workers own
//!   disjoint shadows, so the order between two workers' logs does not matter.
//! - Overlap: a writer abandons a segment after a failed write or sync and starts the next one
//!   at its synced lsn, so a later segment can start at an lsn that an earlier one also contains.
//!   The later segment wins: records of the earlier one from that lsn on were never
//!   acknowledged and are skipped without being read.
//! - Gap: a segment that starts after the lsn where the records before it end means that
//!   acknowledged records are missing, which is corruption of the later segment.
//! - [`replay_log`] assumes that no writer appends to the folder while it runs.
//!   [`remove_segments_covered_by`] may run beside writers of the current generation, because
//!   in the checkpoint's generation and later ones it never removes the newest segment of a
//!   log.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::error::{FileKind, LogError, with_path};
use super::fs::{list_dir, parent_dir, sync_dir, sync_dir_named};
use super::header::{HEADER_FIRST_LSN_OFFSET, SegmentId};
use super::record::LogRecord;
use super::scan::{TornTail, read_first_lsn, read_segment, scan_segment, truncate_file};
use crate::history::LogPosition;

/// Replay start: the log positions that a checkpoint already contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayFrom {
    /// Generation in which the checkpoint was taken. Logs of older generations are skipped.
    pub generation: u64,

    /// For each worker, the lsn of the first record of `generation` that the checkpoint does
    /// not contain. A worker that is missing here replays its log of `generation` from lsn 0.
    pub next_lsn: BTreeMap<u32, u64>,
}

impl ReplayFrom {
    /// Returns the first lsn to replay in the log of `(generation, worker)`, or `None` when the
    /// whole log is older than the checkpoint.
    fn start_lsn(&self, generation: u64, worker: u32) -> Option<u64> {
        match generation.cmp(&self.generation) {
            Ordering::Less => None,
            Ordering::Equal => Some(self.next_lsn.get(&worker).copied().unwrap_or(0)),
            Ordering::Greater => Some(0),
        }
    }
}

/// Summary of one [`replay_log`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segments read, not counting those skipped as older than the checkpoint or superseded.
    pub segments: usize,

    /// Records passed to the visitor.
    pub records_visited: u64,

    /// Records read but not visited because the checkpoint already contains them.
    pub records_skipped: u64,

    /// Torn tails found, as (segment path, offset where the torn data started). The tails were
    /// cut, and segments torn at offset 0 were removed.
    pub torn_tails: Vec<(PathBuf, u64)>,

    /// For each `(generation, worker)` log replayed, the lsn after its last record.
    pub last: BTreeMap<(u64, u32), u64>,

    /// Highest generation among all segments in the folder, including skipped ones, or 0 when
    /// there are none.
    pub max_generation: u64,
}

/// Lists the segments in `wal_dir`, sorted by [`SegmentId`]: the replay order.
///
/// A folder that does not exist has no segments. Other files are ignored, with one warning per
/// call that counts them.
///
/// # Errors
///
/// Fails, naming the folder, when it cannot be listed.
pub fn segments(wal_dir: &Path) -> io::Result<Vec<(SegmentId, PathBuf)>> {
    list_segments(wal_dir)
        .map_err(|error| with_path(error, "listing write-ahead log folder", wal_dir))
}

/// Lists segments like [`segments`], returning the OS error as it is.
fn list_segments(wal_dir: &Path) -> io::Result<Vec<(SegmentId, PathBuf)>> {
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for (name, path) in list_dir(wal_dir)? {
        match name.to_str().and_then(SegmentId::parse) {
            Some(id) => found.push((id, path)),
            None => unknown.push(name),
        }
    }
    if let Some(example) = unknown.first() {
        warn!(
            folder = %wal_dir.display(),
            count = unknown.len(),
            example = %example.to_string_lossy(),
            "ignoring files in the write-ahead log folder that are not segments"
        );
    }
    found.sort_unstable();
    Ok(found)
}

/// Replays the write-ahead log in `wal_dir`: passes every record that `from` does not already
/// contain to `visit`, in the order described in the module notes.
///
/// Without `from` (no checkpoint), every record is visited. Torn tails are cut and logged as
/// warnings, and segments torn while they were created are removed.
///
/// # Errors
///
/// Returns [`LogError::Corrupt`] for damage that is not a torn tail and for a gap between
/// segments, [`LogError::Io`] when listing, reading, cutting or removing fails, and
/// [`LogError::Visit`] with the first error of `visit`. Records visited before the error stay
/// visited.
pub fn replay_log<E>(
    wal_dir: &Path,
    from: Option<&ReplayFrom>,
    mut visit: impl FnMut(LogPosition, LogRecord) -> Result<(), E>,
) -> Result<ReplayReport, LogError<E>> {
    let all = list_segments(wal_dir)
        .map_err(|error| LogError::io("listing write-ahead log folder", wal_dir, error))?;
    let mut report = ReplayReport {
        max_generation: all.iter().map(|(id, _)| id.generation).max().unwrap_or(0),
        ..ReplayReport::default()
    };

    for log in all.chunk_by(|(a, _), (b, _)| (a.generation, a.worker) == (b.generation, b.worker)) {
        let id = log[0].0;
        let start_lsn = match from {
            None => 0,
            Some(from) => match from.start_lsn(id.generation, id.worker) {
                Some(start_lsn) => start_lsn,
                None => continue,
            },
        };
        let next_lsn = replay_worker_log(log, start_lsn, &mut visit, &mut report)?;
        report.last.insert((id.generation, id.worker), next_lsn);
    }
    Ok(report)
}

/// Replays the segments of one `(generation, worker)` log from `start_lsn` and returns the lsn
/// after its last record.
fn replay_worker_log<E>(
    log: &[(SegmentId, PathBuf)],
    start_lsn: u64,
    visit: &mut impl FnMut(LogPosition, LogRecord) -> Result<(), E>,
    report: &mut ReplayReport,
) -> Result<u64, LogError<E>> {
    // Read every header first, because a segment's records end where a later segment starts.
    let mut first_lsns = Vec::with_capacity(log.len());
    for (id, path) in log {
        first_lsns.push(read_first_lsn(*id, path)?);
    }
    let limits = superseding_lsns(&first_lsns);

    let mut next_lsn = start_lsn;
    for (((id, path), first_lsn), limit) in log.iter().zip(first_lsns).zip(limits) {
        let Some(first_lsn) = first_lsn else {
            remove_torn_segment(path)?;
            report.torn_tails.push((path.clone(), 0));
            continue;
        };
        if first_lsn >= limit {
            debug!(segment = %path.display(), "skipping segment superseded by a later one");
            continue;
        }
        if first_lsn > next_lsn {
            let missing = match first_lsn - next_lsn {
                1 => format!("record {next_lsn} is"),
                _ => format!("records {next_lsn} to {} are", first_lsn - 1),
            };
            let reason = format!(
                "the segment starts at lsn {first_lsn}, but the records before it end at lsn \
                 {next_lsn}, so {missing} missing"
            );
            let offset = HEADER_FIRST_LSN_OFFSET;
            return Err(LogError::corrupt(FileKind::Segment, path, offset, reason));
        }

        let summary = scan_segment(path, limit, |record| {
            if record.lsn < start_lsn {
                report.records_skipped += 1;
                return Ok(());
            }
            report.records_visited += 1;
            let position = LogPosition {
                generation: id.generation,
                worker: id.worker,
                lsn: record.lsn,
            };
            visit(position, record)
        })?;
        report.segments += 1;
        if let Some(torn) = summary.torn {
            cut_torn_tail_of(path, torn, summary.good_len)?;
            report.torn_tails.push((path.clone(), torn.offset));
        }
        next_lsn = next_lsn.max(summary.next_lsn);
    }
    Ok(next_lsn)
}

/// Cuts a segment back to `good_len` and logs the torn tail it had.
fn cut_torn_tail_of<E>(path: &Path, torn: TornTail, good_len: u64) -> Result<(), LogError<E>> {
    truncate_file(path, good_len)
        .map_err(|error| LogError::io("cutting the torn tail of", path, error))?;
    warn!(
        segment = %path.display(),
        offset = torn.offset,
        bytes = torn.bytes,
        "cut torn tail of write-ahead log segment"
    );
    Ok(())
}

/// Returns, for each segment of one log, the lowest first lsn of any later segment: the lsn
/// from which its records are superseded. A torn header (`None`) supersedes nothing.
///
/// Example: first lsns `[0, 40, 40, 90]` give `[40, 40, 90, u64::MAX]`.
fn superseding_lsns(first_lsns: &[Option<u64>]) -> Vec<u64> {
    let mut limits = vec![u64::MAX; first_lsns.len()];
    let mut lowest = u64::MAX;
    for (index, first_lsn) in first_lsns.iter().enumerate().rev() {
        limits[index] = lowest;
        if let Some(first_lsn) = *first_lsn {
            lowest = lowest.min(first_lsn);
        }
    }
    limits
}

/// Removes a segment torn while it was created, which contains no records.
fn remove_torn_segment<E>(path: &Path) -> Result<(), LogError<E>> {
    let bytes = fs::metadata(path)
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    fs::remove_file(path)
        .map_err(|error| LogError::io("removing torn write-ahead log segment", path, error))?;
    sync_dir(parent_dir(path))
        .map_err(|error| LogError::io("syncing the folder of", path, error))?;
    warn!(
        segment = %path.display(),
        bytes,
        "removed write-ahead log segment that was torn while it was created"
    );
    Ok(())
}

/// Deletes the segments whose records the checkpoint `from` contains, and returns how many.
///
/// Removes every segment of a generation older than `from.generation`. In `from.generation`,
/// removes a segment when a later segment of the same log starts at or below
/// `from.next_lsn[worker]`: its records below that lsn are in the checkpoint, and those from it
/// on are superseded. The newest segment of a log is read and removed only when every record
/// in it is below `from.next_lsn[worker]`: workers start a new segment at each checkpoint, so
/// no writer appends to it any more. Segments of newer generations are kept.
///
/// # Errors
///
/// Fails, naming the file, when listing, reading a header, removing or syncing fails. Segments
/// removed before the failure stay removed.
pub fn remove_segments_covered_by(wal_dir: &Path, from: &ReplayFrom) -> io::Result<usize> {
    let all = segments(wal_dir)?;
    let mut removed = 0;
    for log in all.chunk_by(|(a, _), (b, _)| (a.generation, a.worker) == (b.generation, b.worker)) {
        let id = log[0].0;
        let covered_below = match id.generation.cmp(&from.generation) {
            Ordering::Greater => continue,
            Ordering::Equal => from.next_lsn.get(&id.worker).copied().unwrap_or(0),
            Ordering::Less => {
                for (_, path) in log {
                    remove_segment(path)?;
                    removed += 1;
                }
                continue;
            }
        };

        let mut first_lsns = Vec::with_capacity(log.len());
        for (id, path) in log {
            first_lsns.push(first_lsn_if_readable(*id, path)?);
        }
        let limits = superseding_lsns(&first_lsns);
        for ((_, path), limit) in log.iter().zip(limits) {
            let covered = if limit == u64::MAX {
                // The newest segment: covered when its records all lie below the checkpoint.
                newest_segment_end(path)?.is_some_and(|next_lsn| next_lsn <= covered_below)
            } else {
                limit <= covered_below
            };
            if covered {
                remove_segment(path)?;
                removed += 1;
            }
        }
    }
    if removed > 0 {
        sync_dir_named(wal_dir)?;
    }
    Ok(removed)
}

/// Returns the lsn after the last intact record of a segment, or `None` when it cannot be read
/// whole, so that it is kept.
fn newest_segment_end(path: &Path) -> io::Result<Option<u64>> {
    match read_segment::<std::convert::Infallible>(path, |_| Ok(())) {
        Ok(summary) if summary.torn.is_none() => Ok(Some(summary.next_lsn)),
        Ok(_) => Ok(None),
        Err(LogError::Io { source, .. }) => Err(with_path(source, "reading segment", path)),
        Err(_) => Ok(None),
    }
}

fn remove_segment(path: &Path) -> io::Result<()> {
    fs::remove_file(path)
        .map_err(|error| with_path(error, "removing write-ahead log segment", path))
}

/// Returns the first lsn of a segment, or `None` when its header is torn or damaged, so that it
/// supersedes nothing.
fn first_lsn_if_readable(id: SegmentId, path: &Path) -> io::Result<Option<u64>> {
    match read_first_lsn::<std::convert::Infallible>(id, path) {
        Ok(first_lsn) => Ok(first_lsn),
        Err(LogError::Io { source, .. }) => Err(with_path(source, "reading segment", path)),
        Err(_) => Ok(None),
    }
}
