//! Arrow and Parquet schema of the history archive, and conversion of rows to record batches.
//!
//! The column table is in the [module docs](super). This file does not choose file names or
//! row-group sizes beyond passing the configured caps to the Parquet writer.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::LogicalType;
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
/// String columns use dictionary encoding, the Parquet writer's default, which suits the few
/// distinct values of `change` and `origin` and the repeated thing names. All but the JSON
/// columns get page-level statistics and a column index, so readers can skip row groups and
/// pages by `thing_name` or `accepted_at`. JSON columns get only chunk-level statistics (null
/// counts and truncated min and max), because ranges of JSON text do not help to skip data.
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
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.thing_name.as_str()),
        )),
        optional_strings(rows, |row| row.shadow_name.as_deref()),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.change.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(versions)),
        Arc::new(accepted_at),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.origin.as_str()),
        )),
        optional_strings(rows, |row| row.client_token.as_deref()),
        optional_strings(rows, |row| row.request_state.as_deref()),
        optional_strings(rows, |row| row.desired.as_deref()),
        optional_strings(rows, |row| row.reported.as_deref()),
        optional_strings(rows, |row| row.delta.as_deref()),
    ];
    RecordBatch::try_new(Arc::clone(schema), columns)
}

fn optional_strings(rows: &[HistoryRow], value: impl Fn(&HistoryRow) -> Option<&str>) -> ArrayRef {
    Arc::new(rows.iter().map(value).collect::<StringArray>())
}
