//! Start-up recovery of the archive directory: finish the last commit, delete the rest.
//!
//! [`recover`] brings the directory back to the state of its last commit:
//!
//! 1. It deletes a temporary state file left by a write that never reached its rename.
//! 2. It reads the state file. A missing file is an empty archive.
//! 3. It renames each file that the state file lists under `committing` and that still has
//!    its in-progress name, after checking that its Parquet footer is readable.
//! 4. It deletes every other in-progress file. Those files were never committed, so the
//!    watermark does not cover their logged rows, and the service re-sends those rows from the
//!    write-ahead log.
//!
//! [`ArchiveWriter::spawn`](super::ArchiveWriter::spawn) runs it before it starts the writer
//! thread. Running it again on a recovered directory changes nothing.
//!
//! # Notes
//!
//! - Rows without a log position in a deleted in-progress file are lost, as they were before
//!   there was a log, because no log contains them.
//! - A listed file that exists under neither name is logged at ERROR and skipped. Its rows
//!   count as archived in the watermark, so the service does not re-send them.
//! - Recovery lists every partition folder, so it takes longer as the archive grows.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaDataReader;
use tracing::{error, info, warn};

use super::file::WATERMARK_METADATA_KEY;
use super::layout::{FilePaths, find_in_progress_files};
use super::state::{ArchiveState, committed_paths, parse_state, state_path, state_temp_path};
use super::watermark::ArchiveWatermark;
use crate::error::ArchiveError;

/// Result of [`recover`]: the watermark and the files that recovery renamed or deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveRecovery {
    /// Watermark of the last commit. The service re-sends every logged row that it does not
    /// cover.
    pub watermark: ArchiveWatermark,

    /// Committed files that still had their in-progress name and were renamed to their final
    /// name.
    pub renamed_files: Vec<PathBuf>,

    /// In-progress files that were never committed and were deleted.
    pub deleted_files: Vec<PathBuf>,
}

/// Failure of [`recover`].
///
/// NOTE: this type belongs in the crate's `error.rs`, next to [`ArchiveError`], which has no
/// variant for it yet. `ArchiveWriter::spawn` wraps it in `ArchiveError::Io` until then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// A file-system call on the archive directory failed.
    #[error(
        "{action} failed for {path}, check that the archive directory is readable and writable"
    )]
    Io {
        /// The operation, for example `reading archive state`.
        action: &'static str,
        /// The file or folder that the operation used.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// The state file is not valid JSON of the expected form.
    #[error(
        "archive state file {path} is invalid: restore it from a backup, or write it again with \
         the `{WATERMARK_METADATA_KEY}` metadata of the newest archive file as its watermark"
    )]
    InvalidState {
        /// The state file.
        path: PathBuf,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A file listed as committed has no readable Parquet footer, so its rows cannot be read.
    #[error(
        "committed archive file {path} has no valid Parquet footer: move it out of the archive \
         directory to start without its rows, which the watermark still counts as archived"
    )]
    InvalidCommittedFile {
        /// The in-progress file.
        path: PathBuf,
        /// The error from reading the footer.
        #[source]
        source: ParquetError,
    },

    /// A file listed as committed exists under both its final and its in-progress name.
    #[error(
        "committed archive file {path} also exists as {in_progress}: check whether two writers \
         share this archive directory, then delete the in-progress copy"
    )]
    CommittedFileTwice {
        /// The final name.
        path: PathBuf,
        /// The in-progress name.
        in_progress: PathBuf,
    },
}

impl RecoveryError {
    /// Converts this error for `ArchiveWriter::spawn`, which returns [`ArchiveError`].
    pub(super) fn into_archive_error(self) -> ArchiveError {
        match self {
            RecoveryError::Io {
                action,
                path,
                source,
            } => ArchiveError::Io {
                action,
                path,
                source,
            },
            other => ArchiveError::Recovery(other),
        }
    }
}

/// Brings the archive `directory` back to the state of its last commit and returns its
/// watermark, as the module docs describe. A missing directory is an empty archive.
///
/// # Errors
///
/// Returns [`RecoveryError::InvalidState`] for a damaged state file,
/// [`RecoveryError::InvalidCommittedFile`] and [`RecoveryError::CommittedFileTwice`] for a
/// committed file that cannot be finished, and [`RecoveryError::Io`] if listing, reading,
/// renaming or deleting fails. Each names the file and what to do.
pub fn recover(directory: &Path) -> Result<ArchiveRecovery, RecoveryError> {
    if !directory.exists() {
        return Ok(ArchiveRecovery::default());
    }

    remove_temporary_state(directory)?;
    let state_path = state_path(directory);
    let state = match fs::read(&state_path) {
        Ok(text) => parse_state(&text).map_err(|source| RecoveryError::InvalidState {
            path: state_path.clone(),
            source,
        })?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            ArchiveState::new(ArchiveWatermark::new(), Vec::new())
        }
        Err(source) => return Err(io_error("reading archive state", &state_path, source)),
    };

    let mut renamed_files = Vec::new();
    for entry in &state.committing {
        let paths = committed_paths(directory, entry);
        if finish_committed_file(&paths)? {
            renamed_files.push(paths.final_path);
        }
    }
    let deleted_files = delete_uncommitted_files(directory)?;

    Ok(ArchiveRecovery {
        watermark: state.watermark,
        renamed_files,
        deleted_files,
    })
}

fn remove_temporary_state(directory: &Path) -> Result<(), RecoveryError> {
    let temp_path = state_temp_path(directory);
    match fs::remove_file(&temp_path) {
        Ok(()) => {
            info!(path = %temp_path.display(), "deleted unfinished archive state file");
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error("deleting archive state", &temp_path, source)),
    }
}

/// Renames a committed file to its final name if it still has its in-progress name. Returns
/// whether it renamed the file.
fn finish_committed_file(paths: &FilePaths) -> Result<bool, RecoveryError> {
    let has_final_name = exists(&paths.final_path)?;
    let has_in_progress_name = exists(&paths.in_progress_path)?;

    match (has_final_name, has_in_progress_name) {
        (true, false) => Ok(false),
        (true, true) => Err(RecoveryError::CommittedFileTwice {
            path: paths.final_path.clone(),
            in_progress: paths.in_progress_path.clone(),
        }),
        (false, false) => {
            error!(
                path = %paths.final_path.display(),
                "committed archive file is missing, its rows are counted as archived but cannot be read"
            );
            Ok(false)
        }
        (false, true) => {
            check_footer(&paths.in_progress_path)?;
            fs::rename(&paths.in_progress_path, &paths.final_path).map_err(|source| {
                io_error(
                    "renaming to the final name",
                    &paths.in_progress_path,
                    source,
                )
            })?;
            sync_folder(paths.final_path.parent().unwrap_or(Path::new(".")))?;
            info!(
                path = %paths.final_path.display(),
                "finished the rename of a committed archive file"
            );
            Ok(true)
        }
    }
}

/// Checks that `path` ends in a readable Parquet footer.
fn check_footer(path: &Path) -> Result<(), RecoveryError> {
    let file =
        File::open(path).map_err(|source| io_error("opening committed file", path, source))?;
    ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|source| RecoveryError::InvalidCommittedFile {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

/// Deletes every in-progress file in the partition folders and returns their paths.
fn delete_uncommitted_files(directory: &Path) -> Result<Vec<PathBuf>, RecoveryError> {
    let uncommitted = find_in_progress_files(directory)
        .map_err(|source| io_error("listing archive directory", directory, source))?;

    let mut folders = BTreeSet::new();
    for path in &uncommitted {
        let bytes = fs::metadata(path)
            .map_err(|source| io_error("reading file size", path, source))?
            .len();
        fs::remove_file(path)
            .map_err(|source| io_error("deleting uncommitted file", path, source))?;
        warn!(
            path = %path.display(),
            bytes,
            "deleted uncommitted archive file, its logged rows are re-sent from the write-ahead log"
        );
        if let Some(folder) = path.parent() {
            folders.insert(folder.to_path_buf());
        }
    }

    for folder in &folders {
        sync_folder(folder)?;
    }
    Ok(uncommitted)
}

fn exists(path: &Path) -> Result<bool, RecoveryError> {
    path.try_exists()
        .map_err(|source| io_error("checking existence", path, source))
}

/// Syncs `folder`, so that the names renamed or deleted in it survive a power loss.
fn sync_folder(folder: &Path) -> Result<(), RecoveryError> {
    File::open(folder)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| io_error("syncing directory", folder, source))
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> RecoveryError {
    RecoveryError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
