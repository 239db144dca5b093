//! One archive file while the writer fills it, and the steps that publish it.
//!
//! Publishing a file writes the footer, syncs the file, renames it from its hidden in-progress
//! name to its `.parquet` name and syncs the partition folder. So a reader never finds a
//! `.parquet` file without a footer, and a file with its final name survives a power loss.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::SchemaDescriptor;
use pipeline::history::HistoryRow;
use tracing::{debug, error, info};

use super::io_retry::{RetryingFile, Shared, retry_io};
use super::layout::FilePaths;
use super::schema::rows_to_batch;
use crate::error::ArchiveError;

/// Rows collected before they are encoded as one record batch. The Parquet writer encodes in
/// batches of this size by default (`DEFAULT_WRITE_BATCH_SIZE`).
pub const BATCH_ROWS: usize = 1024;

/// Settings that every file of one writer shares.
#[derive(Debug)]
pub(super) struct FileSettings {
    pub(super) schema: SchemaRef,
    pub(super) parquet_schema: SchemaDescriptor,
    pub(super) properties: WriterProperties,
}

/// A Parquet file that is open for writing under its in-progress name.
pub(super) struct OpenFile {
    paths: FilePaths,
    writer: ArrowWriter<RetryingFile>,
    schema: SchemaRef,
    /// Rows not yet handed to `writer`, encoded together once there are [`BATCH_ROWS`].
    pending: Vec<HistoryRow>,
    /// Rows in the file, including `pending`.
    rows: u64,
    opened_at: Instant,
}

/// A file that could not be finished. Its in-progress file, if one was created, stays on disk.
#[derive(Debug)]
pub(super) struct FailedFile {
    pub(super) in_progress_path: PathBuf,
    pub(super) rows: u64,
    pub(super) error: ArchiveError,
}

impl OpenFile {
    /// Creates the in-progress file at `paths`. Its partition folder must exist.
    pub(super) fn create(
        paths: FilePaths,
        settings: &FileSettings,
        shared: &Arc<Shared>,
    ) -> Result<Self, ArchiveError> {
        let file = RetryingFile::create_new(paths.in_progress_path.clone(), Arc::clone(shared))
            .map_err(|source| ArchiveError::Io {
                action: "creating in-progress file",
                path: paths.in_progress_path.clone(),
                source,
            })?;
        let options = ArrowWriterOptions::new()
            .with_properties(settings.properties.clone())
            .with_parquet_schema(settings.parquet_schema.clone());
        let writer = ArrowWriter::try_new_with_options(file, Arc::clone(&settings.schema), options)
            .map_err(|source| parquet_error(&paths, source))?;

        debug!(path = %paths.in_progress_path.display(), "opened archive file");
        Ok(Self {
            paths,
            writer,
            schema: Arc::clone(&settings.schema),
            pending: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
            opened_at: Instant::now(),
        })
    }

    /// Rows in the file, including rows not yet encoded.
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// When the file was created, which is when its first row arrived.
    pub(super) fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// Path of the file while it is open.
    pub(super) fn in_progress_path(&self) -> &Path {
        &self.paths.in_progress_path
    }

    /// Appends `row`, encoding the pending rows once there are [`BATCH_ROWS`].
    pub(super) fn push(&mut self, row: HistoryRow) -> Result<(), ArchiveError> {
        self.pending.push(row);
        self.rows += 1;
        if self.pending.len() >= BATCH_ROWS {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Encodes the pending rows. The Parquet writer writes a row group to the file once the row
    /// group reaches the configured row or byte cap.
    fn write_pending(&mut self) -> Result<(), ArchiveError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = rows_to_batch(&self.schema, &self.pending)
            .map_err(|source| parquet_error(&self.paths, source.into()))?;
        self.writer
            .write(&batch)
            .map_err(|source| parquet_error(&self.paths, source))?;
        self.pending.clear();
        Ok(())
    }

    /// Writes the footer, syncs the file, renames it to its final name, syncs the folder and
    /// counts the file in `shared`. Returns the final path.
    ///
    /// A failed folder sync is only logged, because the file is readable by then.
    pub(super) fn finish(mut self, shared: &Shared) -> Result<PathBuf, FailedFile> {
        let rows = self.rows;
        let in_progress_path = self.paths.in_progress_path.clone();
        let fail = |error| FailedFile {
            in_progress_path: in_progress_path.clone(),
            rows,
            error,
        };

        self.write_pending().map_err(fail)?;
        self.writer
            .finish()
            .map_err(|source| fail(parquet_error(&self.paths, source)))?;
        let bytes = self.writer.bytes_written() as u64;
        // A failed fsync is not retried, see the `io_retry` module docs.
        self.writer.inner().sync_all().map_err(|source| {
            shared.counters.record_io_error();
            fail(io_error("syncing file", &in_progress_path, source))
        })?;

        publish(&self.paths, shared).map_err(fail)?;

        // The file is readable now, so a failed folder sync only risks losing its new name on a
        // power loss. Log it and keep going rather than report the rows as not archived.
        if let Some(partition) = self.paths.final_path.parent()
            && let Err(error) = sync_directory(partition)
        {
            shared.counters.record_io_error();
            error!(
                path = %partition.display(),
                error = &error as &dyn std::error::Error,
                "archive folder sync failed"
            );
        }

        shared.counters.record_file_closed(rows, bytes);
        info!(
            path = %self.paths.final_path.display(),
            rows,
            bytes,
            "closed archive file"
        );
        Ok(self.paths.final_path)
    }
}

/// Renames a synced in-progress file to its final name.
fn publish(paths: &FilePaths, shared: &Shared) -> Result<(), ArchiveError> {
    // `rename` replaces an existing file without warning, so check first. Only another writer
    // with the same random id could have created this name.
    if paths.final_path.exists() {
        return Err(ArchiveError::FileExists {
            path: paths.final_path.clone(),
            in_progress: paths.in_progress_path.clone(),
        });
    }

    retry_io(
        shared,
        "renaming to the final name",
        &paths.in_progress_path,
        || fs::rename(&paths.in_progress_path, &paths.final_path),
    )
    .map_err(|source| {
        io_error(
            "renaming to the final name",
            &paths.in_progress_path,
            source,
        )
    })
}

/// Syncs a folder, so that the names created or renamed in it survive a power loss.
pub(super) fn sync_directory(directory: &Path) -> Result<(), ArchiveError> {
    File::open(directory)
        .and_then(|folder| folder.sync_all())
        .map_err(|source| io_error("syncing directory", directory, source))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn parquet_error(paths: &FilePaths, source: ParquetError) -> ArchiveError {
    ArchiveError::Parquet {
        path: paths.in_progress_path.clone(),
        source,
    }
}
