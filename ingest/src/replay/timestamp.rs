//! Calendar checks and RFC 3339 formatting for the data sets' local timestamps.
//!
//! The data sets store local wall-clock time in different layouts. These helpers validate the
//! fields and format `YYYY-MM-DDThh:mm:ss` with the offset that applied at that place and
//! time. They cover only the few zone rules the data sets need, so no time zone database is
//! involved.
//!
//! # Notes
//!
//! - Chicago uses the US daylight-saving rule in force since 2007: CDT (-05:00) from the
//!   second Sunday of March, 02:00, to the first Sunday of November, 02:00, and CST (-06:00)
//!   otherwise. The repeated hour 01:00-01:59 on the November change is taken as CDT.
//! - Beijing has no daylight saving, so its offset is always +08:00.

/// Local date and time, validated to exist in the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LocalDateTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl LocalDateTime {
    /// Builds a value if every field is in range, including the day for that month.
    pub fn new(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Self> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Formats the value as `YYYY-MM-DDThh:mm:ss` followed by `offset`, which may be empty.
    pub fn format_with_offset(&self, offset: &str) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{offset}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Returns the UTC offset of US Central time (America/Chicago) at this local time.
    pub fn us_central_offset(&self) -> &'static str {
        // NOTE: the 2007 rule is applied to every year. Earlier years used other dates, but
        // the Chicago sensor data starts in 2013.
        let dst_start_day = nth_sunday(self.year, 3, 2);
        let dst_end_day = nth_sunday(self.year, 11, 1);
        let now = (self.month, self.day, self.hour);
        let after_start = now >= (3, dst_start_day, 2);
        let before_end = now < (11, dst_end_day, 2);
        if after_start && before_end {
            "-05:00"
        } else {
            "-06:00"
        }
    }
}

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, 0 for Sunday, by Sakamoto's method.
fn weekday(year: i32, month: u32, day: u32) -> u32 {
    const MONTH_OFFSETS: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let year = if month < 3 { year - 1 } else { year };
    let index = (month - 1) as usize;
    let sum = year + year / 4 - year / 100 + year / 400 + MONTH_OFFSETS[index] + day as i32;
    sum.rem_euclid(7) as u32
}

/// Day of the month of the `n`th Sunday, counting from 1.
fn nth_sunday(year: i32, month: u32, n: u32) -> u32 {
    let first_sunday = 1 + (7 - weekday(year, month, 1)) % 7;
    first_sunday + 7 * (n - 1)
}

/// Parses an unsigned decimal field of 1 to `max_digits` ASCII digits.
pub(crate) fn parse_field(text: &str, max_digits: usize) -> Option<u32> {
    let well_formed = !text.is_empty()
        && text.len() <= max_digits
        && text.bytes().all(|byte| byte.is_ascii_digit());
    if well_formed { text.parse().ok() } else { None }
}

/// Parses `H:MM:SS` or `HH:MM:SS` into hour, minute and second, unchecked for range.
pub(crate) fn parse_clock(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(':');
    let hour = parse_field(parts.next()?, 2)?;
    let minute = parse_field(parts.next()?, 2)?;
    let second = parse_field(parts.next()?, 2)?;
    if parts.next().is_some() {
        return None;
    }
    Some((hour, minute, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i32, month: u32, day: u32, hour: u32) -> LocalDateTime {
        LocalDateTime::new(year, month, day, hour, 0, 0).expect("valid test date")
    }

    #[test]
    fn weekday_matches_known_dates() {
        assert_eq!(weekday(1970, 1, 1), 4, "1970-01-01 was a Thursday");
        assert_eq!(weekday(2000, 2, 29), 2, "2000-02-29 was a Tuesday");
        assert_eq!(weekday(2017, 2, 28), 2, "2017-02-28 was a Tuesday");
    }

    #[test]
    fn dst_change_days_match_calendar() {
        assert_eq!(nth_sunday(2013, 3, 2), 10);
        assert_eq!(nth_sunday(2013, 11, 1), 3);
        assert_eq!(nth_sunday(2016, 3, 2), 13);
        assert_eq!(nth_sunday(2016, 11, 1), 6);
    }

    #[test]
    fn central_offset_follows_dst() {
        assert_eq!(at(2016, 3, 13, 1).us_central_offset(), "-06:00");
        assert_eq!(at(2016, 3, 13, 3).us_central_offset(), "-05:00");
        assert_eq!(at(2016, 7, 4, 12).us_central_offset(), "-05:00");
        assert_eq!(at(2016, 11, 6, 1).us_central_offset(), "-05:00");
        assert_eq!(at(2016, 11, 6, 2).us_central_offset(), "-06:00");
        assert_eq!(at(2016, 12, 24, 12).us_central_offset(), "-06:00");
    }

    #[test]
    fn invalid_calendar_dates_are_rejected() {
        assert!(LocalDateTime::new(2015, 2, 29, 0, 0, 0).is_none());
        assert!(LocalDateTime::new(2016, 2, 29, 0, 0, 0).is_some());
        assert!(LocalDateTime::new(2016, 4, 31, 0, 0, 0).is_none());
        assert!(LocalDateTime::new(2016, 13, 1, 0, 0, 0).is_none());
        assert!(LocalDateTime::new(2016, 1, 1, 24, 0, 0).is_none());
        assert!(LocalDateTime::new(2016, 1, 1, 0, 60, 0).is_none());
    }

    #[test]
    fn clock_parses_one_or_two_digit_hours() {
        assert_eq!(parse_clock("8:59:39"), Some((8, 59, 39)));
        assert_eq!(parse_clock("10:49:41"), Some((10, 49, 41)));
        assert_eq!(parse_clock("10:49"), None);
        assert_eq!(parse_clock("10:49:41:00"), None);
        assert_eq!(parse_clock("-1:00:00"), None);
    }

    #[test]
    fn format_pads_fields() {
        let value = LocalDateTime::new(2017, 2, 8, 3, 4, 5).expect("valid date");
        assert_eq!(
            value.format_with_offset("+08:00"),
            "2017-02-08T03:04:05+08:00"
        );
        assert_eq!(value.format_with_offset(""), "2017-02-08T03:04:05");
    }
}
