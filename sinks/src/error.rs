//! Errors of the sinks crate.
//!
//! The Parquet history archive reports setup and write failures as [`ArchiveError`], invalid
//! settings as [`ArchiveConfigError`], and rows that could not be queued as [`ArchiveSendError`].
//! Each message names what failed and on which path. Causes are attached as sources, so print the
//! whole chain (for example with `{:#}` in anyhow) to see the operating-system error.

use std::io;
use std::path::PathBuf;

use parquet::errors::ParquetError;
use pipeline::history::HistoryRow;

use crate::parquet_archive::ArchiveStats;

/// Invalid value in an [`ArchiveConfig`](crate::parquet_archive::ArchiveConfig).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveConfigError {
    /// A count, size or duration that must be at least 1 is 0.
    #[error("archive setting `{field}` is 0, set it to at least 1")]
    Zero {
        /// Name of the setting.
        field: &'static str,
    },

    /// zstd does not accept the compression level.
    #[error("archive setting `zstd_level` is {level}, which zstd rejects: use -131072 to 22")]
    InvalidZstdLevel {
        /// The configured level.
        level: i32,
    },
}

/// Failure of the Parquet history archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The configuration is invalid.
    #[error("invalid archive configuration")]
    Config(#[from] ArchiveConfigError),

    /// The archive's state found at start-up is inconsistent.
    #[error("recovering the history archive failed")]
    Recovery(#[from] crate::parquet_archive::RecoveryError),

    /// A file-system call on an archive file or folder failed.
    #[error("{action} failed for {path}, check free disk space and write permission there")]
    Io {
        /// The operation, for example `creating in-progress file`.
        action: &'static str,
        /// The file or folder that the operation used.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// The Parquet writer failed to encode or write a file.
    #[error("writing Parquet file {path} failed, so it stays unfinished under this name")]
    Parquet {
        /// The in-progress file that was being written.
        path: PathBuf,
        /// The Parquet error, which wraps the operating-system error for I/O failures.
        #[source]
        source: ParquetError,
    },

    /// A finished file would replace an existing file of the same name.
    #[error(
        "not renaming {in_progress} because {path} already exists, \
         check whether two writers share this archive directory"
    )]
    FileExists {
        /// The existing file.
        path: PathBuf,
        /// The finished in-progress file, left in place.
        in_progress: PathBuf,
    },

    /// The operating system could not start the writer thread.
    #[error("starting the archive writer thread failed")]
    SpawnThread(#[source] io::Error),

    /// The writer thread panicked, so files it had open stay unfinished.
    #[error(
        "the archive writer thread panicked, its open files stay as hidden .inprogress files \
         and the rows in them are not readable"
    )]
    WriterPanicked,

    /// Some rows did not reach a finished Parquet file.
    #[error(
        "{rows_not_archived} rows did not reach a finished Parquet file and {} unfinished \
         files were kept, see the archive writer's ERROR logs",
        unfinished_files.len()
    )]
    Incomplete {
        /// Counts of what was written.
        stats: ArchiveStats,
        /// Rows that are in no finished file. They are in `unfinished_files` or were not written.
        rows_not_archived: u64,
        /// In-progress files left on disk without a footer or final name.
        unfinished_files: Vec<PathBuf>,
        /// The first failure, which the ERROR logs also report.
        #[source]
        first_error: Box<ArchiveError>,
    },
}

/// A row that [`ArchiveSender::send`](crate::parquet_archive::ArchiveSender::send) did not
/// queue, returned to the caller.
///
/// The row is boxed to keep `Result<(), ArchiveSendError>` small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveSendError {
    /// The writer has stopped because the archive was closed or its thread panicked.
    #[error("the archive writer has stopped, so the row of thing {} was not archived", .0.thing_name)]
    WriterStopped(Box<HistoryRow>),

    /// The shadow version does not fit the Int64 `version` column.
    #[error(
        "version {} of thing {} is larger than {}, the maximum of the Int64 version column",
        .0.version, .0.thing_name, i64::MAX
    )]
    VersionOutOfRange(Box<HistoryRow>),
}

impl ArchiveSendError {
    /// Returns the row that was not queued.
    pub fn into_row(self) -> HistoryRow {
        match self {
            ArchiveSendError::WriterStopped(row) | ArchiveSendError::VersionOutOfRange(row) => *row,
        }
    }
}
