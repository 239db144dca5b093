//! Failures of the writer thread: logged as they happen, returned by `ArchiveHandle::close`.

use std::path::PathBuf;

use pipeline::history::LogPosition;
use tracing::error;

use crate::error::ArchiveError;

/// Failures that the writer thread reports to `ArchiveHandle::close`.
#[derive(Debug, Default)]
pub(super) struct WriterOutcome {
    /// Failed files and rows, counting each failure once.
    failures: u64,
    pub(super) first_error: Option<ArchiveError>,
    pub(super) unfinished_files: Vec<PathBuf>,
    pub(super) rows_not_archived: u64,
}

impl WriterOutcome {
    /// Logs files or a row that could not be archived and keeps them for `ArchiveHandle::close`.
    /// `lost_from` is the first lost position of each log, after this failure.
    ///
    /// Every I/O failure except `AlreadyExists` and `InvalidInput` is retried until it succeeds
    /// while the writer runs. So failures recorded before close come from a file in the way of a
    /// partition folder, a name collision, a failed `fsync` or the Parquet encoder. During close,
    /// retries also give up. Later rows still go to new files, which fail the same way if the
    /// disk is still full. The Parquet writer writes to its file only when a row group or the
    /// file ends, so that costs a few retry rounds per open file, not one per row.
    ///
    /// NOTE: the give-up during close is tested with a folder in the way of the state file. No
    /// test makes the disk fail while a data file is written.
    pub(super) fn record_failure(
        &mut self,
        rows: u64,
        in_progress_paths: Vec<PathBuf>,
        lost_from: &[LogPosition],
        error: ArchiveError,
    ) {
        self.failures += 1;
        self.rows_not_archived += rows;
        let rows_not_archived = self.rows_not_archived;

        if !in_progress_paths.is_empty() {
            error!(
                files = ?in_progress_paths,
                rows,
                rows_not_archived,
                ?lost_from,
                error = &error as &dyn std::error::Error,
                "archive files not committed, they stay under their in-progress names"
            );
        } else if self.failures.is_power_of_two() {
            // Rows that fail one at a time would flood the log, so log the 1st, 2nd, 4th, ...
            error!(
                rows,
                rows_not_archived,
                ?lost_from,
                error = &error as &dyn std::error::Error,
                "archive rows not written"
            );
        }

        self.unfinished_files.extend(in_progress_paths);
        self.first_error.get_or_insert(error);
    }

    /// Counts a logged row at `position` that the writer did not archive because an earlier row
    /// of its log, at lsn `lost_from`, was lost.
    pub(super) fn record_held_back(&mut self, position: LogPosition, lost_from: u64) {
        self.rows_not_archived += 1;
        // One line per held-back row would flood the log, so log the 1st, 2nd, 4th, ...
        if self.rows_not_archived.is_power_of_two() {
            error!(
                generation = position.generation,
                worker = position.worker,
                lsn = position.lsn,
                lost_from,
                rows_not_archived = self.rows_not_archived,
                "archive row not written because an earlier row of its log was lost, \
                 restart the service to re-send both from the write-ahead log"
            );
        }
    }
}
