//! Arrow and Parquet schema of the history archive, and conversion of rows to record batches.
//!
//! The column table is in the [module docs](super). This file does not choose file names or
//! row-group sizes beyond passing the configured caps to the Parquet writer.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Encoding, LogicalType};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::{ColumnPath, SchemaDescriptor, Type, TypePtr};
use pipeline::history::HistoryRow;

use super::ArchiveConfig;
use crate::error::ArchiveConfigError;

/// Column `thing_name`: Utf8, not null.
pub const THING_NAME: &str = "thing_name";
/// Column `shadow_name`: Utf8, null for the classic (unnamed) shadow.
pub const SHADOW_NAME: &str = "shadow_name";
/// Column `change`: Utf8 `update` or `delete`, not null.
pub const CHANGE: &str = "change";
/// Column `version`: Int64, not null.
pub const VERSION: &str = "version";
/// Column `accepted_at`: Timestamp(Millisecond, "UTC"), not null.
pub const ACCEPTED_AT: &str = "accepted_at";
/// Column `origin`: Utf8 `mqtt`, `http` or `replay`, not null.
pub const ORIGIN: &str = "origin";
/// Column `client_token`: Utf8, null when the request carried no `clientToken`.
pub const CLIENT_TOKEN: &str = "client_token";
/// Column `request_state`: JSON text, null for deletes.
pub const REQUEST_STATE: &str = "request_state";
/// Column `desired`: JSON text, null when the shadow has no desired state.
pub const DESIRED: &str = "desired";
/// Column `reported`: JSON text, null when the shadow has no reported state.
pub const REPORTED: &str = "reported";
/// Column `delta`: JSON text, null when desired and reported agree.
pub const DELTA: &str = "delta";

/// Columns that hold JSON text and carry the Parquet JSON logical type.
pub const JSON_COLUMNS: [&str; 4] = [REQUEST_STATE, DESIRED, REPORTED, DELTA];

/// Time zone of the `accepted_at` column.
const UTC: &str = "UTC";

/// Returns the Arrow schema of every archive file.
pub fn history_schema() -> SchemaRef {
    let accepted_at_type = DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()));

    Arc::new(Schema::new(vec![
        Field::new(THING_NAME, DataType::Utf8, false),
        Field::new(SHADOW_NAME, DataType::Utf8, true),
        Field::new(CHANGE, DataType::Utf8, false),
        Field::new(VERSION, DataType::Int64, false),
        Field::new(ACCEPTED_AT, accepted_at_type, false),
        Field::new(ORIGIN, DataType::Utf8, false),
        Field::new(CLIENT_TOKEN, DataType::Utf8, true),
        Field::new(REQUEST_STATE, DataType::Utf8, true),
        Field::new(DESIRED, DataType::Utf8, true),
        Field::new(REPORTED, DataType::Utf8, true),
        Field::new(DELTA, DataType::Utf8, true),
    ]))
}

/// Returns the Parquet schema for `schema`: the standard Arrow conversion, with the Parquet JSON
/// logical type on [`JSON_COLUMNS`] instead of String.
///
/// parquet 60 sets the JSON type by itself only with its `arrow_canonical_extension_types`
/// feature, which this crate does not enable. Readers that do not know the JSON type still read
/// the columns as strings, because the file also embeds the Arrow schema.
pub(super) fn parquet_schema(schema: &Schema) -> Result<SchemaDescriptor, ParquetError> {
    let converted = ArrowSchemaConverter::new().convert(schema)?;
    let root = converted.root_schema();

    let mut fields = Vec::with_capacity(root.get_fields().len());
    for field in root.get_fields() {
        if JSON_COLUMNS.contains(&field.name()) {
            fields.push(with_json_logical_type(field)?);
        } else {
            fields.push(Arc::clone(field));
        }
    }

    let root = Type::group_type_builder(root.name())
        .with_fields(fields)
        .build()?;
    Ok(SchemaDescriptor::new(Arc::new(root)))
}

fn with_json_logical_type(field: &Type) -> Result<TypePtr, ParquetError> {
    let json_field = Type::primitive_type_builder(field.name(), field.get_physical_type())
        .with_repetition(field.get_basic_info().repetition())
        .with_logical_type(Some(LogicalType::Json))
        .build()?;
    Ok(Arc::new(json_field))
}

/// Returns the Parquet writer settings for `config`.
///
/// - `thing_name`, `shadow_name`, `change` and `origin` are dictionary-encoded (RLE_DICTIONARY),
///   which suits their few distinct values: a sorted row group contains long runs of one thing.
/// - `version` and `accepted_at` use DELTA_BINARY_PACKED without a dictionary. In a row group
///   sorted by shadow and version, consecutive versions differ by 1 and times by little, so
///   the deltas pack into a few bits, while a dictionary of nearly unique values would only
///   cost hashing.
/// - `client_token` and the JSON columns are PLAIN without a dictionary. Their values are
///   nearly all distinct, so the writer would fill a dictionary page and then fall back to
///   PLAIN anyway, after hashing each value. zstd finds the repeats between values instead.
/// - All but the JSON columns get page-level statistics and a column index, so readers can skip
///   row groups and pages by `thing_name` or `accepted_at`. JSON columns get only chunk-level
///   statistics (null counts and truncated min and max), because ranges of JSON text do not
///   help to skip data.
///
/// These are standard Parquet encodings. pyarrow 26 reads files written with them.
///
/// # Errors
///
/// Returns [`ArchiveConfigError`] for settings that [`ArchiveConfig::validate`] rejects.
pub(super) fn writer_properties(
    config: &ArchiveConfig,
) -> Result<WriterProperties, ArchiveConfigError> {
    // The Parquet builder panics on row-group caps of 0, so validate first.
    config.validate()?;

    let mut builder = WriterProperties::builder()
        .set_compression(config.compression()?)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .set_max_row_group_bytes(Some(config.row_group_bytes))
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in [VERSION, ACCEPTED_AT] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    for column in [CLIENT_TOKEN].into_iter().chain(JSON_COLUMNS) {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in JSON_COLUMNS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Chunk);
    }
    Ok(builder.build())
}

/// Converts `rows` to a record batch of `schema`, which must be [`history_schema`].
///
/// # Panics
///
/// Panics if a version is larger than `i64::MAX`. `ArchiveSender::send` rejects such rows, so
/// they never reach this function.
pub(super) fn rows_to_batch(
    schema: &SchemaRef,
    rows: &[HistoryRow],
) -> Result<RecordBatch, ArrowError> {
    let versions = rows.iter().map(|row| {
        i64::try_from(row.version).expect("ArchiveSender::send rejects versions above i64::MAX")
    });
    let accepted_at =
        TimestampMillisecondArray::from_iter_values(rows.iter().map(|row| row.accepted_at_ms))
            .with_timezone(UTC);

    let columns: Vec<ArrayRef> = vec![
        strings(rows, |row| Some(row.thing_name.as_str())),
        strings(rows, |row| row.shadow_name.as_deref()),
        strings(rows, |row| Some(row.change.as_str())),
        Arc::new(Int64Array::from_iter_values(versions)),
        Arc::new(accepted_at),
        strings(rows, |row| Some(row.origin.as_str())),
        strings(rows, |row| row.client_token.as_deref()),
        strings(rows, |row| row.request_state.as_deref()),
        strings(rows, |row| row.desired.as_deref()),
        strings(rows, |row| row.reported.as_deref()),
        strings(rows, |row| row.delta.as_deref()),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Builds a string column from `value` of each row, `None` giving null. The buffers are sized
/// up front, so the text of each value is copied once.
fn strings<'a>(
    rows: &'a [HistoryRow],
    value: impl Fn(&'a HistoryRow) -> Option<&'a str>,
) -> ArrayRef {
    let text_bytes = rows.iter().filter_map(&value).map(str::len).sum();
    let mut builder = StringBuilder::with_capacity(rows.len(), text_bytes);
    for row in rows {
        builder.append_option(value(row));
    }
    Arc::new(builder.finish())
}
