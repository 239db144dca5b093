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
use super::timestamp::{LocalDateTime, parse_clock, parse_field};

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
                write!(f, "thing name longer than {MAX_THING_NAME_LENGTH} characters")
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

    fn numeric(&self, column: &'static str, key: &'static str) -> Result<NumericColumn, &'static str> {
        Ok(NumericColumn {
            index: self.find(column)?,
            column,
            key,
        })
    }

    fn numerics(&self, pairs: &[(&'static str, &'static str)]) -> Result<Vec<NumericColumn>, &'static str> {
        pairs.iter().map(|&(column, key)| self.numeric(column, key)).collect()
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
fn thing_name(record: &StringRecord, index: usize, column: &'static str) -> Result<String, SkipReason> {
    let raw = cell(record, index).ok_or(SkipReason::MissingValue { column })?;
    let name = sanitize_thing_name(raw);
    if name.chars().count() > MAX_THING_NAME_LENGTH {
        return Err(SkipReason::ThingNameTooLong);
    }
    Ok(name)
}

/// Parses a required numeric date or time field.
fn time_field(record: &StringRecord, index: usize, column: &'static str, max_digits: usize) -> Result<u32, SkipReason> {
    let text = cell(record, index).ok_or(SkipReason::MissingValue { column })?;
    parse_field(text, max_digits).ok_or(SkipReason::InvalidTimestamp { column })
}

const BEIJING_NUMBERS: [(&str, &str); 10] = [
    ("PM2.5", "pm25"),
    ("PM10", "pm10"),
    ("SO2", "so2"),
    ("NO2", "no2"),
    ("CO", "co"),
    ("O3", "o3"),
    ("TEMP", "temp"),
    ("PRES", "pres"),
    ("DEWP", "dewp"),
    ("RAIN", "rain"),
];

#[derive(Debug, Clone)]
struct BeijingColumns {
    station: usize,
    year: usize,
    month: usize,
    day: usize,
    hour: usize,
    numbers: Vec<NumericColumn>,
    wind_direction: usize,
    wind_speed: NumericColumn,
}

impl BeijingColumns {
    fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
        Ok(Self {
            station: columns.find("station")?,
            year: columns.find("year")?,
            month: columns.find("month")?,
            day: columns.find("day")?,
            hour: columns.find("hour")?,
            numbers: columns.numerics(&BEIJING_NUMBERS)?,
            wind_direction: columns.find("wd")?,
            wind_speed: columns.numeric("WSPM", "speed")?,
        })
    }

    fn map_row(&self, record: &StringRecord) -> Result<ThingUpdate, SkipReason> {
        let thing_name = thing_name(record, self.station, "station")?;

        let mut reported = Map::new();
        insert_numbers(&mut reported, record, &self.numbers)?;
        let mut wind = Map::new();
        if let Some(direction) = cell(record, self.wind_direction) {
            wind.insert("dir".to_owned(), Value::String(direction.to_owned()));
        }
        insert_numbers(&mut wind, record, std::slice::from_ref(&self.wind_speed))?;
        if !wind.is_empty() {
            reported.insert("wind".to_owned(), Value::Object(wind));
        }
        if reported.is_empty() {
            return Err(SkipReason::NoMeasurement);
        }

        let observed_at = self.observed_at(record)?.format_with_offset("+08:00");
        reported.insert("observed_at".to_owned(), Value::String(observed_at));

        Ok(ThingUpdate {
            thing_name,
            reported,
        })
    }
}

impl BeijingColumns {
    /// Builds the local time from the `year`, `month`, `day` and `hour` columns.
    fn observed_at(&self, record: &StringRecord) -> Result<LocalDateTime, SkipReason> {
        let year = time_field(record, self.year, "year", 4)?;
        let month = time_field(record, self.month, "month", 2)?;
        let day = time_field(record, self.day, "day", 2)?;
        let hour = time_field(record, self.hour, "hour", 2)?;
        if !(1..=12).contains(&month) {
            return Err(SkipReason::InvalidTimestamp { column: "month" });
        }
        if hour >= 24 {
            return Err(SkipReason::InvalidTimestamp { column: "hour" });
        }
        // The year has at most 4 digits, so the cast cannot overflow. Month and hour are in
        // range here, so a failure means the day does not exist in that month or year 0.
        let column = if year == 0 { "year" } else { "day" };
        LocalDateTime::new(year as i32, month, day, hour, 0, 0)
            .ok_or(SkipReason::InvalidTimestamp { column })
    }
}

const CHICAGO_NUMBERS: [(&str, &str); 6] = [
    ("Water Temperature", "water_temperature"),
    ("Turbidity", "turbidity"),
    ("Transducer Depth", "transducer_depth"),
    ("Wave Height", "wave_height"),
    ("Wave Period", "wave_period"),
    ("Battery Life", "battery_life"),
];

const CHICAGO_TIMESTAMP: &str = "Measurement Timestamp";

#[derive(Debug, Clone)]
struct ChicagoColumns {
    beach_name: usize,
    timestamp: usize,
    measurement_id: usize,
    numbers: Vec<NumericColumn>,
}

impl ChicagoColumns {
    fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
        Ok(Self {
            beach_name: columns.find("Beach Name")?,
            timestamp: columns.find(CHICAGO_TIMESTAMP)?,
            measurement_id: columns.find("Measurement ID")?,
            numbers: columns.numerics(&CHICAGO_NUMBERS)?,
        })
    }

    fn map_row(&self, record: &StringRecord) -> Result<ThingUpdate, SkipReason> {
        let thing_name = thing_name(record, self.beach_name, "Beach Name")?;

        let mut reported = Map::new();
        insert_numbers(&mut reported, record, &self.numbers)?;
        if reported.is_empty() {
            return Err(SkipReason::NoMeasurement);
        }

        let text = cell(record, self.timestamp).ok_or(SkipReason::MissingValue {
            column: CHICAGO_TIMESTAMP,
        })?;
        let observed_at = parse_chicago_timestamp(text).ok_or(SkipReason::InvalidTimestamp {
            column: CHICAGO_TIMESTAMP,
        })?;
        let offset = observed_at.us_central_offset();
        reported.insert("observed_at".to_owned(), Value::String(observed_at.format_with_offset(offset)));
        if let Some(id) = cell(record, self.measurement_id) {
            reported.insert("measurement_id".to_owned(), Value::String(id.to_owned()));
        }

        Ok(ThingUpdate {
            thing_name,
            reported,
        })
    }
}

/// Parses `MM/DD/YYYY hh:mm:ss AM` (12-hour clock, local time).
fn parse_chicago_timestamp(text: &str) -> Option<LocalDateTime> {
    let mut parts = text.split_whitespace();
    let (date, clock, meridiem) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }

    let mut date_parts = date.split('/');
    let month = parse_field(date_parts.next()?, 2)?;
    let day = parse_field(date_parts.next()?, 2)?;
    let year = parse_field(date_parts.next()?, 4)?;
    if date_parts.next().is_some() {
        return None;
    }

    let (hour12, minute, second) = parse_clock(clock)?;
    if !(1..=12).contains(&hour12) {
        return None;
    }
    let hour = match meridiem {
        "AM" => hour12 % 12,
        "PM" => hour12 % 12 + 12,
        _ => return None,
    };
    // The year has at most 4 digits, so the cast cannot overflow.
    LocalDateTime::new(year as i32, month, day, hour, minute, second)
}

/// Sensor nodes of the occupancy data set: thing name and `(column, key)` pairs.
const OCCUPANCY_NODES: [(&str, &[(&str, &str)]); 7] = [
    ("S1", &[("S1_Temp", "temperature"), ("S1_Light", "light"), ("S1_Sound", "sound")]),
    ("S2", &[("S2_Temp", "temperature"), ("S2_Light", "light"), ("S2_Sound", "sound")]),
    ("S3", &[("S3_Temp", "temperature"), ("S3_Light", "light"), ("S3_Sound", "sound")]),
    ("S4", &[("S4_Temp", "temperature"), ("S4_Light", "light"), ("S4_Sound", "sound")]),
    ("S5", &[("S5_CO2", "co2"), ("S5_CO2_Slope", "co2_slope")]),
    ("S6", &[("S6_PIR", "pir")]),
    ("S7", &[("S7_PIR", "pir")]),
];

#[derive(Debug, Clone)]
struct OccupancyColumns {
    date: usize,
    time: usize,
    nodes: Vec<(&'static str, Vec<NumericColumn>)>,
}

impl OccupancyColumns {
    fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
        let date = columns.find("Date")?;
        let time = columns.find("Time")?;
        let nodes = OCCUPANCY_NODES
            .iter()
            .map(|&(thing, pairs)| Ok((thing, columns.numerics(pairs)?)))
            .collect::<Result<_, &'static str>>()?;
        Ok(Self { date, time, nodes })
    }

    fn map_row(&self, record: &StringRecord) -> Result<Vec<ThingUpdate>, SkipReason> {
        let mut updates = Vec::with_capacity(self.nodes.len());
        for (thing, columns) in &self.nodes {
            let mut reported = Map::new();
            insert_numbers(&mut reported, record, columns)?;
            if !reported.is_empty() {
                updates.push(ThingUpdate {
                    thing_name: (*thing).to_owned(),
                    reported,
                });
            }
        }
        if updates.is_empty() {
            return Err(SkipReason::NoMeasurement);
        }

        // NOTE: the data set does not state its time zone, so observed_at is local time
        // without an offset.
        let observed_at = self.observed_at(record)?.format_with_offset("");
        for update in &mut updates {
            update.reported.insert("observed_at".to_owned(), Value::String(observed_at.clone()));
        }
        Ok(updates)
    }

    /// Parses `Date` (`YYYY-MM-DD`) and `Time` (`H:MM:SS`).
    fn observed_at(&self, record: &StringRecord) -> Result<LocalDateTime, SkipReason> {
        let date = cell(record, self.date).ok_or(SkipReason::MissingValue { column: "Date" })?;
        let time = cell(record, self.time).ok_or(SkipReason::MissingValue { column: "Time" })?;

        let mut date_parts = date.split('-');
        let year = date_parts.next().and_then(|text| parse_field(text, 4));
        let month = date_parts.next().and_then(|text| parse_field(text, 2));
        let day = date_parts.next().and_then(|text| parse_field(text, 2));
        let date = match (year, month, day, date_parts.next()) {
            (Some(year), Some(month), Some(day), None) => (year, month, day),
            _ => return Err(SkipReason::InvalidTimestamp { column: "Date" }),
        };
        let invalid_time = SkipReason::InvalidTimestamp { column: "Time" };
        let (hour, minute, second) = parse_clock(time).ok_or(invalid_time)?;
        if hour >= 24 || minute >= 60 || second >= 60 {
            return Err(invalid_time);
        }

        // The year has at most 4 digits, so the cast cannot overflow.
        LocalDateTime::new(date.0 as i32, date.1, date.2, hour, minute, second)
            .ok_or(SkipReason::InvalidTimestamp { column: "Date" })
    }
}

#[cfg(test)]
mod tests;
