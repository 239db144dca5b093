//! Mapping of the City of Chicago "Beach Water Quality - Automated Sensors" data set: one
//! thing per beach buoy.

use csv::StringRecord;
use serde_json::{Map, Value};

use super::{
    HeaderIndex, NumericColumn, SkipReason, ThingUpdate, cell, insert_numbers, thing_name,
};
use crate::replay::timestamp::{LocalDateTime, parse_clock, parse_field};

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
pub(super) struct ChicagoColumns {
    beach_name: usize,
    timestamp: usize,
    measurement_id: usize,
    numbers: Vec<NumericColumn>,
}

impl ChicagoColumns {
    pub(super) fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
        Ok(Self {
            beach_name: columns.find("Beach Name")?,
            timestamp: columns.find(CHICAGO_TIMESTAMP)?,
            measurement_id: columns.find("Measurement ID")?,
            numbers: columns.numerics(&CHICAGO_NUMBERS)?,
        })
    }

    pub(super) fn map_row(&self, record: &StringRecord) -> Result<ThingUpdate, SkipReason> {
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
        reported.insert(
            "observed_at".to_owned(),
            Value::String(observed_at.format_with_offset(offset)),
        );
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
