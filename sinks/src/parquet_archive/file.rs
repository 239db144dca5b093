//! One archive file while the writer fills it, and the steps that seal and rename it.
//!
//! Sealing writes the footer and syncs the file under its hidden in-progress name. After the
//! commit point in the state file, renaming gives it its `.parquet` name and syncing the
//! partition folder makes the name durable. So a reader never finds a `.parquet` file without a
//! footer, and a file with its final name survives a power loss. This module does not decide
//! when files are committed, see `commit.rs`.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::SchemaDescriptor;
use pipeline::history::{HistoryRow, LogPosition};
use tracing::debug;

use super::io_retry::{RetryingFile, Shared, retry_io};
use super::layout::FilePaths;
use super::schema::rows_to_batch;
use super::watermark::LogRanges;
use crate::error::ArchiveError;

/// Key of the Parquet key-value metadata entry that contains the archive watermark of the commit
/// that included the file, as the JSON of
/// [`ArchiveWatermark`](super::ArchiveWatermark).
///
/// The state file is what counts. This copy helps to inspect a file, or to rebuild a lost state
/// file from the newest committed file.
pub const WATERMARK_METADATA_KEY: &str = "shadowflow.log_watermark";

/// Settings that every file of one writer shares.
#[derive(Debug)]
pub(super) struct FileSettings {
    pub(super) schema: SchemaRef,
    pub(super) parquet_schema: SchemaDescriptor,
    pub(super) properties: WriterProperties,
    /// Rows after which a row group ends, `ArchiveConfig::row_group_rows`.
    pub(super) row_group_rows: usize,
    /// Estimated size of the collected rows after which a row group ends,
    /// `ArchiveConfig::row_group_bytes`.
    pub(super) row_group_bytes: usize,
}

/// A Parquet file that is open for writing under its in-progress name.
pub(super) struct OpenFile {
    paths: FilePaths,
    writer: ArrowWriter<RetryingFile>,
    schema: SchemaRef,
    /// Rows of the row group being collected, not yet handed to `writer`. They are sorted and
    /// encoded together when the row group is full or the file is sealed.
    pending: Vec<HistoryRow>,
    /// Estimated size of `pending` in bytes.
    pending_bytes: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
    /// Rows in the file, including `pending`.
    rows: u64,
    opened_at: Instant,
    /// Log positions of the rows that carry one.
    log_ranges: LogRanges,
}

/// A file whose footer is written and synced, under its in-progress name until it is renamed.
#[derive(Debug)]
pub(super) struct SealedFile {
    pub(super) paths: FilePaths,
    pub(super) rows: u64,
    pub(super) bytes: u64,
    /// Whether the file has its final name, so that readers see it.
    pub(super) renamed: bool,
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
            pending: Vec::new(),
            pending_bytes: 0,
            row_group_rows: settings.row_group_rows,
            row_group_bytes: settings.row_group_bytes,
            rows: 0,
            opened_at: Instant::now(),
            log_ranges: LogRanges::default(),
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

    /// Log positions of the rows in the file.
    pub(super) fn log_ranges(&self) -> &LogRanges {
        &self.log_ranges
    }

    /// Appends `row`, and writes the row group once it has `row_group_rows` rows or an
    /// estimated `row_group_bytes`.
    ///
    /// The row counts in [`log_ranges`](Self::log_ranges) even if encoding fails, because the
    /// caller then gives up the whole file.
    pub(super) fn push(
        &mut self,
        row: HistoryRow,
        position: Option<LogPosition>,
    ) -> Result<(), ArchiveError> {
        self.pending_bytes += estimated_size(&row);
        self.pending.push(row);
        self.rows += 1;
        if let Some(position) = position {
            self.log_ranges.record(position);
        }
        if self.pending.len() >= self.row_group_rows || self.pending_bytes >= self.row_group_bytes {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Sorts the pending rows by thing, shadow and version, encodes them and ends the row
    /// group.
    ///
    /// In a sorted row group each `thing_name` page covers a narrow range of things, so readers
    /// skip the pages of other things by the column index, and the rows of one shadow fill few
    /// pages of each column. Sorting changes only the order of rows inside the file, which
    /// neither the commit nor the watermark depends on. If the Parquet writer ends a row group
    /// earlier by its own encoded-size estimate, each part is still sorted.
    fn write_row_group(&mut self) -> Result<(), ArchiveError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.sort_by(|left, right| {
            (
                &left.thing_name,
                &left.shadow_name,
                left.version,
                left.change,
            )
                .cmp(&(
                    &right.thing_name,
                    &right.shadow_name,
                    right.version,
                    right.change,
                ))
        });
        let batch = rows_to_batch(&self.schema, &self.pending)
            .map_err(|source| parquet_error(&self.paths, source.into()))?;
        self.writer
            .write(&batch)
            .map_err(|source| parquet_error(&self.paths, source))?;
        self.writer
            .flush()
            .map_err(|source| parquet_error(&self.paths, source))?;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the pending rows and the footer, with `watermark_json` under
    /// [`WATERMARK_METADATA_KEY`], and syncs the file. It keeps its in-progress name.
    ///
    /// On failure the in-progress file stays on disk unfinished.
    pub(super) fn seal(
        mut self,
        watermark_json: &str,
        shared: &Shared,
    ) -> Result<SealedFile, ArchiveError> {
        self.write_row_group()?;
        self.writer.append_key_value_metadata(KeyValue::new(
            WATERMARK_METADATA_KEY.to_owned(),
            watermark_json.to_owned(),
        ));
        self.writer
            .finish()
            .map_err(|source| parquet_error(&self.paths, source))?;
        let bytes = self.writer.bytes_written() as u64;
        // A failed fsync is not retried, see the `io_retry` module docs.
        self.writer.inner().sync_all().map_err(|source| {
            shared.counters.record_io_error();
            io_error("syncing file", &self.paths.in_progress_path, source)
        })?;

        debug!(
            path = %self.paths.in_progress_path.display(),
            rows = self.rows,
            bytes,
            "sealed archive file"
        );
        Ok(SealedFile {
            paths: self.paths,
            rows: self.rows,
            bytes,
            renamed: false,
        })
    }
}

/// Estimates the memory of `row` in bytes: the struct and its text.
fn estimated_size(row: &HistoryRow) -> usize {
    let optional = [
        row.shadow_name.as_deref(),
        row.client_token.as_deref(),
        row.request_state.as_deref(),
        row.desired.as_deref(),
        row.reported.as_deref(),
        row.delta.as_deref(),
    ];
    std::mem::size_of::<HistoryRow>()
        + row.thing_name.len()
        + optional
            .iter()
            .flatten()
            .map(|text| text.len())
            .sum::<usize>()
}

/// Renames a sealed in-progress file to its final name, without syncing the folder.
pub(super) fn rename_to_final(paths: &FilePaths, shared: &Shared) -> Result<(), ArchiveError> {
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
