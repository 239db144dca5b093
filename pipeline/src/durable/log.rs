//! One worker's write-ahead log: buffering a batch of records, and committing it.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Durability;
use super::format::{LogRecord, SegmentId, SegmentWriter};
use crate::history::LogPosition;

/// Size at which a worker starts a new log segment.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A commit that failed: nothing of the batch is durable, and the worker undoes it.
#[derive(Debug, thiserror::Error)]
#[error("writing the write-ahead log {path} failed: {source}")]
pub struct CommitError {
    /// Segment that could not be written or created.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// The log of one worker in one generation.
///
/// Records go to a buffer with [`WorkerLog::push`], and [`WorkerLog::commit`] writes them and,
/// in `sync` mode, syncs them. A failed commit drops the batch from the file, so the log contains
/// exactly the committed records. The next batch then starts a new segment at the next lsn.
pub struct WorkerLog {
    mode: Durability,
    dir: PathBuf,
    generation: u64,
    worker: u32,
    writer: Option<SegmentWriter>,
    next_sequence: u64,
    /// Lsn of the next record, counting the records pushed since the last commit.
    next_lsn: u64,
    /// Records pushed since the last commit.
    pending: u64,
    /// Error from creating a segment for this batch, reported by the next commit.
    create_error: Option<CommitError>,
    /// When the log was last synced, and whether records were written since.
    last_sync: Instant,
    unsynced: bool,
    /// Whether the last commit failed, so recovery is logged once.
    failing: bool,
}

impl WorkerLog {
    /// Creates the log of `worker` in `generation`, writing segments to `dir`. No file is made
    /// until the first record.
    pub fn new(mode: Durability, dir: PathBuf, generation: u64, worker: u32) -> Self {
        WorkerLog {
            mode,
            dir,
            generation,
            worker,
            writer: None,
            next_sequence: 0,
            next_lsn: 0,
            pending: 0,
            create_error: None,
            last_sync: Instant::now(),
            unsynced: false,
            failing: false,
        }
    }

    /// Returns the lsn the next committed record gets: the position a checkpoint taken now
    /// covers up to.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends `record` to the current batch and returns its position. The record's `lsn` is
    /// set here.
    pub fn push(&mut self, mut record: LogRecord) -> LogPosition {
        let lsn = self.next_lsn;
        record.lsn = lsn;
        self.next_lsn += 1;
        self.pending += 1;
        if self.writer.is_none() && self.create_error.is_none() {
            self.open_segment(lsn);
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.push(&record);
        }
        LogPosition {
            generation: self.generation,
            worker: self.worker,
            lsn,
        }
    }

    /// Makes the current batch durable as the mode requires.
    ///
    /// # Errors
    /// Returns [`CommitError`] when a segment cannot be created, written or synced. The batch is
    /// then not in the log, and the caller must undo it and reject its requests.
    pub fn commit(&mut self) -> Result<(), CommitError> {
        if self.pending == 0 {
            return self.sync_if_due();
        }
        let result = self.write_batch();
        match &result {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(
                        worker = self.worker,
                        "the write-ahead log is writable again"
                    );
                }
            }
            Err(error) => {
                if !self.failing {
                    self.failing = true;
                    tracing::error!(worker = self.worker, error = %error,
                        "the write-ahead log cannot be written, so updates are rejected with \
                         503 until it can; free disk space or fix the folder's permissions");
                }
            }
        }
        result
    }

    /// Syncs written records in `batch` mode when the interval has passed.
    ///
    /// # Errors
    /// Returns [`CommitError`] when the sync fails; the records stay written and a later call
    /// retries.
    pub fn sync_if_due(&mut self) -> Result<(), CommitError> {
        let Durability::Batch { interval } = self.mode else {
            return Ok(());
        };
        if !self.unsynced || self.last_sync.elapsed() < interval {
            return Ok(());
        }
        self.sync()
    }

    /// Returns how long until the written records must be synced, in `batch` mode.
    pub fn sync_due_in(&self) -> Option<Duration> {
        match self.mode {
            Durability::Batch { interval } if self.unsynced => {
                Some(interval.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Syncs and closes the current segment, so the next record starts a new one. Returns the
    /// lsn of that next record, the position a checkpoint taken now covers up to.
    ///
    /// # Errors
    /// Returns [`CommitError`] when the final sync fails.
    pub fn rotate(&mut self) -> Result<u64, CommitError> {
        debug_assert_eq!(self.pending, 0, "rotate between batches only");
        if self.unsynced {
            self.sync()?;
        }
        self.writer = None;
        Ok(self.next_lsn)
    }

    fn write_batch(&mut self) -> Result<(), CommitError> {
        let batch = std::mem::take(&mut self.pending);
        if let Some(error) = self.create_error.take() {
            self.next_lsn -= batch;
            return Err(error);
        }
        let Some(writer) = self.writer.as_mut() else {
            unreachable!("push opens a segment or records the error");
        };
        if let Err(source) = writer.write() {
            let path = writer.path().to_path_buf();
            // The writer cut the file back to its last good write; the batch is gone from it.
            self.next_lsn = writer.next_lsn();
            if writer.is_poisoned() {
                self.writer = None;
            }
            return Err(CommitError { path, source });
        }
        self.unsynced = true;
        match self.mode {
            Durability::Sync => self.sync_batch()?,
            Durability::Batch { .. } => {
                let _ = self.sync_if_due();
            }
            Durability::None => {}
        }
        if let Some(writer) = &self.writer
            && writer.len() >= SEGMENT_BYTES
        {
            self.rotate()?;
        }
        Ok(())
    }

    /// Syncs the batch just written; on failure removes it from the file and abandons the
    /// segment, whose state after a failed sync is unknown.
    fn sync_batch(&mut self) -> Result<(), CommitError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        match writer.sync() {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync = Instant::now();
                Ok(())
            }
            Err(source) => {
                let path = writer.path().to_path_buf();
                let _ = writer.truncate_to_synced();
                self.next_lsn = writer.synced_lsn();
                self.writer = None;
                self.unsynced = false;
                Err(CommitError { path, source })
            }
        }
    }

    fn sync(&mut self) -> Result<(), CommitError> {
        let Some(writer) = self.writer.as_mut() else {
            self.unsynced = false;
            return Ok(());
        };
        writer.sync().map_err(|source| CommitError {
            path: writer.path().to_path_buf(),
            source,
        })?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn open_segment(&mut self, first_lsn: u64) {
        let id = SegmentId {
            generation: self.generation,
            worker: self.worker,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        match SegmentWriter::create(&self.dir, id, first_lsn) {
            Ok(writer) => self.writer = Some(writer),
            Err(source) => {
                self.create_error = Some(CommitError {
                    path: self.dir.join(id.file_name()),
                    source,
                });
            }
        }
    }
}
