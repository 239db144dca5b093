//! Mapping of the UCI "Room Occupancy Estimation" data set: things `S1` to `S7`, split out
//! of each wide row. `Room_Occupancy_Count` is ground truth from the experimenters, not a
//! device reading, so it is not replayed.

use csv::StringRecord;
use serde_json::{Map, Value};

use super::{HeaderIndex, NumericColumn, SkipReason, ThingUpdate, cell, insert_numbers};
use crate::replay::timestamp::{LocalDateTime, parse_clock, parse_field};

const OCCUPANCY_NODES: [(&str, &[(&str, &str)]); 7] = [
    (
        "S1",
        &[
            ("S1_Temp", "temperature"),
            ("S1_Light", "light"),
            ("S1_Sound", "sound"),
        ],
    ),
    (
        "S2",
        &[
            ("S2_Temp", "temperature"),
            ("S2_Light", "light"),
            ("S2_Sound", "sound"),
        ],
    ),
    (
        "S3",
        &[
            ("S3_Temp", "temperature"),
            ("S3_Light", "light"),
            ("S3_Sound", "sound"),
        ],
    ),
    (
        "S4",
        &[
            ("S4_Temp", "temperature"),
            ("S4_Light", "light"),
            ("S4_Sound", "sound"),
        ],
    ),
    ("S5", &[("S5_CO2", "co2"), ("S5_CO2_Slope", "co2_slope")]),
    ("S6", &[("S6_PIR", "pir")]),
    ("S7", &[("S7_PIR", "pir")]),
];

#[derive(Debug, Clone)]
pub(super) struct OccupancyColumns {
    date: usize,
    time: usize,
    nodes: Vec<(&'static str, Vec<NumericColumn>)>,
}

impl OccupancyColumns {
    pub(super) fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
        let date = columns.find("Date")?;
        let time = columns.find("Time")?;
        let nodes = OCCUPANCY_NODES
            .iter()
            .map(|&(thing, pairs)| Ok((thing, columns.numerics(pairs)?)))
            .collect::<Result<_, &'static str>>()?;
        Ok(Self { date, time, nodes })
    }

    pub(super) fn map_row(&self, record: &StringRecord) -> Result<Vec<ThingUpdate>, SkipReason> {
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
            update
                .reported
                .insert("observed_at".to_owned(), Value::String(observed_at.clone()));
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
