//! Supported data sets, and the mapping from one CSV row to shadow updates.
//!
//! A [`RowMapper`] is built once per file from its header, so columns are found by name and
//! their order does not matter. [`RowMapper::map_row`] then turns each record into zero or
//! more [`ThingUpdate`]s: one for a Beijing or Chicago row, and up to seven for an
//! occupancy row, whose wide row carries seven sensor nodes.
//!
//! # Notes
//!
//! - A cell that is empty or the literal `NA` is a missing value. Its key is left out of the
//!   update, and a nested object with no keys left (Beijing `wind`) is left out too.
//! - A value that is not a finite number, in a numeric column, skips the whole row with
//!   [`SkipReason::InvalidNumber`]. Integers stay integers in JSON (`300`), and other numbers
//!   become JSON floats (`-0.5`).
//! - A row without any measured value is skipped with [`SkipReason::NoMeasurement`].
//!   Identifiers and timestamps alone do not count as a measurement.
//! - Thing names come from the data set's own device ids, made safe for a shadow topic by
//!   [`sanitize_thing_name`].
//! - The exact row-to-update mapping of each data set is listed in `datasets/<name>.md`.

use std::fmt;
use std::str::FromStr;

use csv::StringRecord;
use serde_json::{Map, Number, Value};

use super::error::ConfigError;
use super::timestamp::parse_field;
use beijing::BeijingColumns;
use chicago::ChicagoColumns;
use occupancy::OccupancyColumns;

mod beijing;
mod chicago;
mod occupancy;

/// Maximum length of an AWS IoT thing name, in characters.
pub const MAX_THING_NAME_LENGTH: usize = 128;

/// A public data set that the replay can map to shadow updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// UCI "Beijing Multi-Site Air Quality": one thing per monitoring station.
    Beijing,
    /// City of Chicago "Beach Water Quality - Automated Sensors": one thing per beach buoy.
    Chicago,
    /// UCI "Room Occupancy Estimation": things `S1` to `S7`, split out of each wide row.
    Occupancy,
}

impl Dataset {
    /// Every data set, in the order of their names.
    pub const ALL: [Dataset; 3] = [Dataset::Beijing, Dataset::Chicago, Dataset::Occupancy];

    /// Returns the name used on the command line and in `datasets/<name>.md`.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Beijing => "beijing",
            Dataset::Chicago => "chicago",
            Dataset::Occupancy => "occupancy",
        }
    }

    /// Builds the row mapper for a file with these CSV headers.
    ///
    /// # Errors
    ///
    /// Returns the name of the first required column that the headers lack.
    pub fn row_mapper(self, headers: &StringRecord) -> Result<RowMapper, &'static str> {
        let columns = HeaderIndex { headers };
        let kind = match self {
            Dataset::Beijing => MapperKind::Beijing(BeijingColumns::find(&columns)?),
            Dataset::Chicago => MapperKind::Chicago(ChicagoColumns::find(&columns)?),
            Dataset::Occupancy => MapperKind::Occupancy(OccupancyColumns::find(&columns)?),
        };
        Ok(RowMapper { kind })
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = ConfigError;

    /// Parses a name from [`Dataset::name`], ignoring ASCII case.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Dataset::ALL
            .into_iter()
            .find(|dataset| dataset.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| ConfigError::UnknownDataset {
                name: name.to_owned(),
            })
    }
}

/// One shadow update: the `state.reported` document for one thing.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingUpdate {
    /// Thing name, already sanitised for use in an MQTT topic.
    pub thing_name: String,

    /// Reported attributes, for example `{"pm25": 30, "observed_at": "..."}`.
    pub reported: Map<String, Value>,
}

/// Reason a CSV row produced no update.
///
/// Columns are named by their CSV header, so the number of distinct reasons stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SkipReason {
    /// Every measurement column is empty or `NA`.
    NoMeasurement,
    /// A column that identifies the thing or the time is empty or `NA`.
    MissingValue {
        /// CSV header of the column.
        column: &'static str,
    },
    /// A numeric column contains text that is not a finite number.
    InvalidNumber {
        /// CSV header of the column.
        column: &'static str,
    },
    /// A date or time column is malformed or names a time that does not exist.
    InvalidTimestamp {
        /// CSV header of the column.
        column: &'static str,
    },
    /// The thing name is longer than [`MAX_THING_NAME_LENGTH`].
    ThingNameTooLong,
    /// The CSV record is malformed: wrong number of fields, or not UTF-8.
    MalformedRecord,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NoMeasurement => f.write_str("no measured value"),
            SkipReason::MissingValue { column } => write!(f, "missing value in column {column}"),
            SkipReason::InvalidNumber { column } => write!(f, "invalid number in column {column}"),
            SkipReason::InvalidTimestamp { column } => {
                write!(f, "invalid date or time in column {column}")
            }
            SkipReason::ThingNameTooLong => {
                write!(
                    f,
                    "thing name longer than {MAX_THING_NAME_LENGTH} characters"
                )
            }
            SkipReason::MalformedRecord => f.write_str("malformed CSV record"),
        }
    }
}

/// Replaces every character outside `[a-zA-Z0-9:_-]` with `-`, after trimming whitespace.
///
/// AWS IoT accepts only these characters in thing names, and they are also safe in an MQTT
/// topic level. For example `63rd Street Beach` becomes `63rd-Street-Beach`.
pub fn sanitize_thing_name(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | ':' | '_' | '-' => c,
            _ => '-',
        })
        .collect()
}

/// Maps the records of one CSV file to shadow updates.
#[derive(Debug, Clone)]
pub struct RowMapper {
    kind: MapperKind,
}

#[derive(Debug, Clone)]
enum MapperKind {
    Beijing(BeijingColumns),
    Chicago(ChicagoColumns),
    Occupancy(OccupancyColumns),
}

impl RowMapper {
    /// Maps one record to the updates it yields, in thing order for occupancy rows.
    ///
    /// # Errors
    ///
    /// Returns why the row yields no update. Such a row should be counted and skipped.
    pub fn map_row(&self, record: &StringRecord) -> Result<Vec<ThingUpdate>, SkipReason> {
        match &self.kind {
            MapperKind::Beijing(columns) => columns.map_row(record).map(|update| vec![update]),
            MapperKind::Chicago(columns) => columns.map_row(record).map(|update| vec![update]),
            MapperKind::Occupancy(columns) => columns.map_row(record),
        }
    }
}

/// Column positions looked up by header name.
struct HeaderIndex<'a> {
    headers: &'a StringRecord,
}

impl HeaderIndex<'_> {
    /// Finds a column, ignoring surrounding whitespace and a UTF-8 byte order mark.
    fn find(&self, column: &'static str) -> Result<usize, &'static str> {
        self.headers
            .iter()
            .position(|header| header.trim_start_matches('\u{feff}').trim() == column)
            .ok_or(column)
    }

    fn numeric(
        &self,
        column: &'static str,
        key: &'static str,
    ) -> Result<NumericColumn, &'static str> {
        Ok(NumericColumn {
            index: self.find(column)?,
            column,
            key,
        })
    }

    fn numerics(
        &self,
        pairs: &[(&'static str, &'static str)],
    ) -> Result<Vec<NumericColumn>, &'static str> {
        pairs
            .iter()
            .map(|&(column, key)| self.numeric(column, key))
            .collect()
    }
}

/// A numeric CSV column and the JSON key it maps to.
#[derive(Debug, Clone)]
struct NumericColumn {
    index: usize,
    column: &'static str,
    key: &'static str,
}

/// Returns the trimmed cell, or `None` if it is missing, empty or `NA`.
fn cell(record: &StringRecord, index: usize) -> Option<&str> {
    let value = record.get(index)?.trim();
    (!value.is_empty() && value != "NA").then_some(value)
}

/// Parses a CSV number as a JSON integer if it is one, and as a finite float otherwise.
fn parse_number(text: &str) -> Option<Number> {
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Number::from(integer));
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

/// Inserts each present numeric cell into `target` under its key.
fn insert_numbers(
    target: &mut Map<String, Value>,
    record: &StringRecord,
    columns: &[NumericColumn],
) -> Result<(), SkipReason> {
    for column in columns {
        let Some(text) = cell(record, column.index) else {
            continue;
        };
        let number = parse_number(text).ok_or(SkipReason::InvalidNumber {
            column: column.column,
        })?;
        target.insert(column.key.to_owned(), Value::Number(number));
    }
    Ok(())
}

/// Reads and sanitises the thing name from its column.
fn thing_name(
    record: &StringRecord,
    index: usize,
    column: &'static str,
) -> Result<String, SkipReason> {
    let raw = cell(record, index).ok_or(SkipReason::MissingValue { column })?;
    let name = sanitize_thing_name(raw);
    if name.chars().count() > MAX_THING_NAME_LENGTH {
        return Err(SkipReason::ThingNameTooLong);
    }
    Ok(name)
}

/// Parses a required numeric date or time field.
fn time_field(
    record: &StringRecord,
    index: usize,
    column: &'static str,
    max_digits: usize,
) -> Result<u32, SkipReason> {
    let text = cell(record, index).ok_or(SkipReason::MissingValue { column })?;
    parse_field(text, max_digits).ok_or(SkipReason::InvalidTimestamp { column })
}

#[cfg(test)]
mod tests;
