//! Skipping row groups and pages of an archive file by their statistics, before any data is
//! decoded.
//!
//! Two levels, both cheap because they read only metadata:
//!
//! - Row groups: the chunk statistics of `thing_name`, `version` and `accepted_at`. Row groups
//!   follow arrival order, so `accepted_at` ranges are narrow and time bounds skip most row
//!   groups of a file. The `thing_name` range of a row group with many things spans nearly all
//!   of them, so it skips little.
//! - Pages: the column index of `thing_name`. The writer sorts each row group by thing, so
//!   each `thing_name` page covers a narrow range of things and the pages of other things are
//!   skipped. The offset index then lets the Parquet reader skip the matching pages of every
//!   other column too.
//!
//! # Example
//!
//! A row group of 60,000 rows sorted by thing, with `thing_name` pages of about 20,000 rows:
//!
//! ```text
//! page 0: rows      0..20_000, things "a-1" ..= "h-7"
//! page 1: rows 20_000..40_000, things "h-7" ..= "q-2"
//! page 2: rows 40_000..60_000, things "q-3" ..= "z-9"
//! ```
//!
//! A read of thing `"m-4"` selects rows `20_000..40_000` only.

use std::ops::Range;

use parquet::arrow::arrow_reader::RowSelection;
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use super::scan::RowPredicate;
use super::schema;

/// Positions of the columns that pruning and the row filter use, in a file's leaf columns.
#[derive(Clone, Copy, Debug)]
pub(super) struct FilterColumns {
    pub(super) thing_name: usize,
    pub(super) shadow_name: usize,
    pub(super) version: usize,
    pub(super) accepted_at: usize,
}

impl FilterColumns {
    /// Finds the columns in the schema of `metadata`.
    ///
    /// # Errors
    ///
    /// Returns the name of a missing column.
    pub(super) fn find(metadata: &ParquetMetaData) -> Result<Self, String> {
        let schema = metadata.file_metadata().schema_descr();
        let position = |name: &str| {
            (0..schema.num_columns())
                .find(|&index| schema.column(index).name() == name)
                .ok_or_else(|| format!("column {name} is missing"))
        };
        Ok(Self {
            thing_name: position(schema::THING_NAME)?,
            shadow_name: position(schema::SHADOW_NAME)?,
            version: position(schema::VERSION)?,
            accepted_at: position(schema::ACCEPTED_AT)?,
        })
    }
}

/// Returns whether the chunk statistics of `group` admit a matching row. Missing statistics admit
/// every row.
pub(super) fn row_group_may_match(
    group: &RowGroupMetaData,
    columns: FilterColumns,
    predicate: &RowPredicate,
) -> bool {
    if predicate.accepted_at.is_empty() || predicate.versions.is_empty() {
        return false;
    }
    let thing_admitted = group
        .column(columns.thing_name)
        .statistics()
        .is_none_or(|statistics| bytes_may_contain(statistics, predicate.thing_name.as_bytes()));

    // Versions above `i64::MAX` are never written, so clamping the bounds drops no row.
    let first_version = i64::try_from(*predicate.versions.start()).unwrap_or(i64::MAX);
    let last_version = i64::try_from(*predicate.versions.end()).unwrap_or(i64::MAX);
    let versions_admitted = group
        .column(columns.version)
        .statistics()
        .is_none_or(|statistics| int64_overlaps(statistics, first_version, last_version));

    let accepted_admitted =
        group
            .column(columns.accepted_at)
            .statistics()
            .is_none_or(|statistics| {
                int64_overlaps(
                    statistics,
                    predicate.accepted_at.start,
                    predicate.accepted_at.end - 1,
                )
            });

    thing_admitted && versions_admitted && accepted_admitted
}

/// Returns the rows of row group `row_group` whose `thing_name` pages admit `thing_name`, as
/// ranges of row numbers within the row group. Without a column index or offset index for
/// `thing_name`, returns the whole row group.
pub(super) fn candidate_rows(
    metadata: &ParquetMetaData,
    row_group: usize,
    thing_column: usize,
    thing_name: &[u8],
) -> Vec<Range<usize>> {
    let rows = usize::try_from(metadata.row_group(row_group).num_rows()).unwrap_or(0);
    let page_index = metadata.page_index_for_row_group(row_group);
    let (Some(ColumnIndexMetaData::BYTE_ARRAY(column_index)), Some(offset_index)) = (
        page_index.column_index(thing_column),
        page_index.offset_index(thing_column),
    ) else {
        return std::iter::once(0..rows).collect();
    };
    let locations = offset_index.page_locations();
    if u64::try_from(locations.len()).ok() != Some(column_index.num_pages()) {
        return std::iter::once(0..rows).collect();
    }

    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (page, location) in locations.iter().enumerate() {
        let start = usize::try_from(location.first_row_index).unwrap_or(0);
        let end = locations.get(page + 1).map_or(rows, |next| {
            usize::try_from(next.first_row_index).unwrap_or(rows)
        });
        // `thing_name` is never null, so a page of nulls has no matching row.
        let admitted = !column_index.is_null_page(page)
            && column_index
                .min_value(page)
                .is_none_or(|min| thing_name >= min)
            && column_index
                .max_value(page)
                .is_none_or(|max| thing_name <= max);
        if !admitted {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end),
        }
    }
    ranges
}

/// Row groups and rows to read: the row groups of `row_groups` with candidate rows, and a
/// selection over the rows of those row groups, counted across them in order.
pub(super) fn select_rows(
    metadata: &ParquetMetaData,
    row_groups: &[usize],
    thing_column: usize,
    thing_name: &[u8],
) -> (Vec<usize>, RowSelection) {
    let mut selected_groups = Vec::new();
    let mut ranges = Vec::new();
    let mut offset = 0;
    for &row_group in row_groups {
        let candidates = candidate_rows(metadata, row_group, thing_column, thing_name);
        if candidates.is_empty() {
            continue;
        }
        selected_groups.push(row_group);
        ranges.extend(
            candidates
                .into_iter()
                .map(|range| range.start + offset..range.end + offset),
        );
        offset += usize::try_from(metadata.row_group(row_group).num_rows()).unwrap_or(0);
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), offset);
    (selected_groups, selection)
}

/// Returns whether byte-array statistics admit `value`. The Parquet writer truncates long
/// minimums to a prefix and long maximums to an incremented prefix, so both stay bounds.
fn bytes_may_contain(statistics: &Statistics, value: &[u8]) -> bool {
    if statistics.is_min_max_deprecated() {
        return true;
    }
    let below_min = statistics.min_bytes_opt().is_some_and(|min| value < min);
    let above_max = statistics.max_bytes_opt().is_some_and(|max| value > max);
    !below_min && !above_max
}

/// Returns whether Int64 statistics overlap `first..=last`.
fn int64_overlaps(statistics: &Statistics, first: i64, last: i64) -> bool {
    let Statistics::Int64(values) = statistics else {
        return true;
    };
    let below = values.max_opt().is_some_and(|max| *max < first);
    let above = values.min_opt().is_some_and(|min| *min > last);
    !below && !above
}
