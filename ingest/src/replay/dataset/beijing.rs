//! Mapping of the UCI "Beijing Multi-Site Air Quality" data set: one thing per station.

use csv::StringRecord;
use serde_json::{Map, Value};

use super::{
    HeaderIndex, NumericColumn, SkipReason, ThingUpdate, cell, insert_numbers, thing_name,
    time_field,
};
use crate::replay::timestamp::LocalDateTime;

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
pub(super) struct BeijingColumns {
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
    pub(super) fn find(columns: &HeaderIndex<'_>) -> Result<Self, &'static str> {
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

    pub(super) fn map_row(&self, record: &StringRecord) -> Result<ThingUpdate, SkipReason> {
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
