//! Reading committed archive files for history reads: listing them, skipping row groups by
//! their statistics and decoding the rows of one shadow.
//!
//! [`read_matching`] reads one file in three steps:
//!
//! 1. It reads the footer and keeps the row groups whose `thing_name`, `version` and
//!    `accepted_at` statistics admit a matching row. A file without such a row group costs one
//!    footer read.
//! 2. It reads the page index: the column index of `thing_name` and the offset index of every
//!    column. It selects the rows of the `thing_name` pages that admit the requested thing, see
//!    `prune.rs`, and the Parquet reader skips the pages of other rows in every column.
//! 3. It evaluates a row filter on the four small columns `thing_name`, `shadow_name`,
//!    `version` and `accepted_at` of the selected rows, and decodes the other columns only
//!    for matching rows.
//!
//! The writer sorts each row group by thing, shadow and version, so the rows of one shadow are
//! contiguous and fill few pages of each column.
//!
//! # Notes
//!
//! - Only files with their final `part-*.parquet` name are read. In-progress files have no
//!   footer, and the rows in them come from the uncommitted-row index instead.

use std::fs::{self, File};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow_schema::ArrowError;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    RowFilter,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMask, PageIndexPolicy, ParquetMetaDataReader};
use pipeline::history::{ChangeKind, Origin};

use super::change::HistoryChange;
use super::layout::PARTITION_PREFIX;
use super::prune::{FilterColumns, row_group_may_match, select_rows};
use super::reader::HistoryReadError;
use super::schema;

/// One `date=YYYY-MM-DD` folder of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Partition {
    /// The date after `date=`, which sorts like the date it names.
    pub(super) date: String,
    pub(super) path: PathBuf,
}

/// The rows of one shadow that a read selects.
#[derive(Clone, Debug)]
pub(super) struct RowPredicate {
    pub(super) thing_name: String,
    /// Named shadow, or `None` for the classic shadow.
    pub(super) shadow_name: Option<String>,
    pub(super) versions: RangeInclusive<u64>,
    /// Accepted times in ms since the Unix epoch, `start` included and `end` excluded.
    pub(super) accepted_at: Range<i64>,
}

impl RowPredicate {
    /// Returns whether a row of the requested shadow at `version` and `accepted_at_ms` matches.
    pub(super) fn admits(&self, version: u64, accepted_at_ms: i64) -> bool {
        self.versions.contains(&version) && self.accepted_at.contains(&accepted_at_ms)
    }
}

/// Columns to decode besides the four that the row filter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Columns {
    /// Every column, for the list of changes.
    All,
    /// Every column but `client_token` and `request_state`, for a shadow document.
    Document,
}

/// Returns the partition folders of `directory` in date order. A missing directory has none.
///
/// # Errors
///
/// Returns [`HistoryReadError::Io`] if the directory cannot be listed.
pub(super) fn list_partitions(directory: &Path) -> Result<Vec<Partition>, HistoryReadError> {
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error("listing the archive directory", directory, source)),
    };

    let mut partitions = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| io_error("listing the archive directory", directory, source))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(date) = name.strip_prefix(PARTITION_PREFIX) else {
            continue;
        };
        if entry.path().is_dir() {
            partitions.push(Partition {
                date: date.to_owned(),
                path: entry.path(),
            });
        }
    }
    partitions.sort_by(|left, right| left.date.cmp(&right.date));
    Ok(partitions)
}

/// Returns the committed files of one partition folder: `part-*.parquet`, without hidden
/// in-progress files.
///
/// # Errors
///
/// Returns [`HistoryReadError::Io`] if the folder cannot be listed.
pub(super) fn committed_files(partition: &Path) -> Result<Vec<PathBuf>, HistoryReadError> {
    let entries = fs::read_dir(partition)
        .map_err(|source| io_error("listing a partition folder", partition, source))?;

    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| io_error("listing a partition folder", partition, source))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("part-") && name.ends_with(".parquet") {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads the rows of `path` that `predicate` admits, decoding only the needed row groups, pages
/// and columns. The result is in file order.
///
/// # Errors
///
/// Returns [`HistoryReadError::Io`] if the file cannot be opened,
/// [`HistoryReadError::Parquet`] if it cannot be decoded, and
/// [`HistoryReadError::InvalidFile`] if its columns differ from the history schema.
pub(super) fn read_matching(
    path: &Path,
    predicate: &RowPredicate,
    columns: Columns,
) -> Result<Vec<HistoryChange>, HistoryReadError> {
    let file = File::open(path).map_err(|source| io_error("opening archive file", path, source))?;
    let parquet_error = |source: ParquetError| HistoryReadError::Parquet {
        path: path.to_path_buf(),
        source,
    };

    // Step 1: the footer, and the row groups that may contain matching rows.
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(parquet_error)?;
    let filter_columns = FilterColumns::find(&metadata).map_err(|reason| invalid(path, reason))?;
    let row_groups: Vec<usize> = metadata
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, group)| row_group_may_match(group, filter_columns, predicate))
        .map(|(index, _)| index)
        .collect();
    if row_groups.is_empty() {
        return Ok(Vec::new());
    }

    // Step 2: the page index, to select the pages of the requested thing and skip the others.
    let mut metadata_reader = ParquetMetaDataReader::new_with_metadata(metadata)
        .with_column_index_policy(PageIndexPolicy::Optional)
        .with_column_index_mask(ColumnChunkMask::columns([filter_columns.thing_name]))
        .with_offset_index_policy(PageIndexPolicy::Optional);
    metadata_reader
        .read_page_indexes(&file)
        .map_err(parquet_error)?;
    let metadata = Arc::new(metadata_reader.finish().map_err(parquet_error)?);
    let (row_groups, selection) = select_rows(
        &metadata,
        &row_groups,
        filter_columns.thing_name,
        predicate.thing_name.as_bytes(),
    );
    if row_groups.is_empty() {
        return Ok(Vec::new());
    }
    let arrow_metadata =
        ArrowReaderMetadata::try_new(Arc::clone(&metadata), ArrowReaderOptions::new())
            .map_err(parquet_error)?;

    // Step 3: the row filter on the small columns, then the output columns of matching rows.
    let schema = metadata.file_metadata().schema_descr();
    let filter_mask = ProjectionMask::leaves(
        schema,
        [
            filter_columns.thing_name,
            filter_columns.shadow_name,
            filter_columns.version,
            filter_columns.accepted_at,
        ],
    );
    let row_predicate = predicate.clone();
    let arrow_predicate = ArrowPredicateFn::new(filter_mask, move |batch: RecordBatch| {
        match_rows(&batch, &row_predicate)
    });
    let output_mask = ProjectionMask::columns(schema, output_columns(columns).iter().copied());
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, arrow_metadata)
        .with_row_groups(row_groups)
        .with_row_selection(selection)
        .with_projection(output_mask)
        .with_row_filter(RowFilter::new(vec![Box::new(arrow_predicate)]))
        .build()
        .map_err(parquet_error)?;

    let mut changes = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|source| parquet_error(source.into()))?;
        decode_changes(&batch, &mut changes).map_err(|reason| invalid(path, reason))?;
    }
    Ok(changes)
}

/// Returns the columns that `columns` decodes.
fn output_columns(columns: Columns) -> &'static [&'static str] {
    match columns {
        Columns::All => &[
            schema::CHANGE,
            schema::VERSION,
            schema::ACCEPTED_AT,
            schema::ORIGIN,
            schema::CLIENT_TOKEN,
            schema::REQUEST_STATE,
            schema::DESIRED,
            schema::REPORTED,
            schema::DELTA,
        ],
        Columns::Document => &[
            schema::CHANGE,
            schema::VERSION,
            schema::ACCEPTED_AT,
            schema::ORIGIN,
            schema::DESIRED,
            schema::REPORTED,
            schema::DELTA,
        ],
    }
}

/// Evaluates the row filter on a batch of the four filter columns.
fn match_rows(batch: &RecordBatch, predicate: &RowPredicate) -> Result<BooleanArray, ArrowError> {
    let schema_error = |reason: String| ArrowError::SchemaError(reason);
    let things = string_column(batch, schema::THING_NAME).map_err(schema_error)?;
    let shadows = string_column(batch, schema::SHADOW_NAME).map_err(schema_error)?;
    let versions = column(batch, schema::VERSION)
        .and_then(|array| {
            array
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| "column version is not Int64".to_owned())
        })
        .map_err(schema_error)?;
    let accepted_at = accepted_at_column(batch).map_err(schema_error)?;

    let matches = (0..batch.num_rows()).map(|index| {
        let shadow = shadows.is_valid(index).then(|| shadows.value(index));
        let version = u64::try_from(versions.value(index)).ok();
        things.value(index) == predicate.thing_name
            && shadow == predicate.shadow_name.as_deref()
            && version.is_some_and(|version| predicate.admits(version, accepted_at.value(index)))
    });
    Ok(matches.map(Some).collect())
}

/// Appends the rows of a decoded batch to `changes`.
fn decode_changes(batch: &RecordBatch, changes: &mut Vec<HistoryChange>) -> Result<(), String> {
    let change = string_column(batch, schema::CHANGE)?;
    let origin = string_column(batch, schema::ORIGIN)?;
    let version = column(batch, schema::VERSION)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| "column version is not Int64".to_owned())?;
    let accepted_at = accepted_at_column(batch)?;
    let optional = |name: &str| {
        batch
            .column_by_name(name)
            .map(|_| string_column(batch, name))
    };
    let client_token = optional(schema::CLIENT_TOKEN).transpose()?;
    let request_state = optional(schema::REQUEST_STATE).transpose()?;
    let desired = string_column(batch, schema::DESIRED)?;
    let reported = string_column(batch, schema::REPORTED)?;
    let delta = string_column(batch, schema::DELTA)?;

    for index in 0..batch.num_rows() {
        let text = |array: Option<&StringArray>| {
            array
                .filter(|array| array.is_valid(index))
                .map(|array| array.value(index).to_owned())
        };
        changes.push(HistoryChange {
            version: u64::try_from(version.value(index))
                .map_err(|_| format!("version {} is negative", version.value(index)))?,
            change: parse_change(change.value(index))?,
            accepted_at_ms: accepted_at.value(index),
            origin: parse_origin(origin.value(index))?,
            client_token: text(client_token),
            request_state: text(request_state),
            desired: text(Some(desired)),
            reported: text(Some(reported)),
            delta: text(Some(delta)),
        });
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, String> {
    batch
        .column_by_name(name)
        .map(|array| array.as_ref())
        .ok_or_else(|| format!("column {name} is missing"))
}

fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, String> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("column {name} is not Utf8"))
}

fn accepted_at_column(
    batch: &RecordBatch,
) -> Result<&arrow_array::TimestampMillisecondArray, String> {
    column(batch, schema::ACCEPTED_AT)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| "column accepted_at is not a millisecond timestamp".to_owned())
}

fn parse_change(text: &str) -> Result<ChangeKind, String> {
    match text {
        "update" => Ok(ChangeKind::Update),
        "delete" => Ok(ChangeKind::Delete),
        other => Err(format!("change {other:?} is neither update nor delete")),
    }
}

fn parse_origin(text: &str) -> Result<Origin, String> {
    match text {
        "mqtt" => Ok(Origin::Mqtt),
        "http" => Ok(Origin::Http),
        "replay" => Ok(Origin::Replay),
        other => Err(format!("origin {other:?} is not mqtt, http or replay")),
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> HistoryReadError {
    HistoryReadError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: String) -> HistoryReadError {
    HistoryReadError::InvalidFile {
        path: path.to_path_buf(),
        reason,
    }
}
