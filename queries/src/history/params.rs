//! Query parameters of the history routes: times, limits, versions and page tokens.
//!
//! Each parser returns the 400 error that names the parameter and the form it expects, so the
//! handlers can pass it on unchanged.

use std::collections::HashMap;

use pipeline::history::ChangeKind;
use pipeline::shadow::ShadowError;
use sinks::parquet_archive::ChangePosition;

/// Page size of `GET .../shadow/history` when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// Largest page size of `GET .../shadow/history`.
pub const MAX_HISTORY_LIMIT: usize = 1_000;

/// The parameters of `GET /things/{thing}/shadow/history`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryParams {
    /// `from`: earliest accepted time, included, in ms since the Unix epoch.
    pub from_ms: Option<i64>,
    /// `to`: accepted time to stop before, in ms since the Unix epoch.
    pub to_ms: Option<i64>,
    /// `limit`: maximum changes in the page.
    pub limit: usize,
    /// `nextToken`: position after which the page starts.
    pub after: Option<ChangePosition>,
}

/// Past document that `GET /things/{thing}/shadow` returns for `version` or `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PastDocument {
    /// `version=N`: the document after the update that produced version N.
    Version(u64),
    /// `at=T`: the document after the last change accepted at or before T, in ms.
    At(i64),
}

impl HistoryParams {
    /// Checks the parameters of a history request.
    ///
    /// # Errors
    ///
    /// Returns a 400 error naming the first invalid parameter.
    pub fn parse(query: &HashMap<String, String>) -> Result<Self, ShadowError> {
        let from_ms = query
            .get("from")
            .map(|text| parse_time("from", text))
            .transpose()?;
        let to_ms = query
            .get("to")
            .map(|text| parse_time("to", text))
            .transpose()?;
        if let (Some(from_ms), Some(to_ms)) = (from_ms, to_ms)
            && from_ms >= to_ms
        {
            return Err(ShadowError::new(
                400,
                format!("Invalid time range: from ({from_ms} ms) must be before to ({to_ms} ms)"),
            ));
        }

        let limit = match query.get("limit") {
            None => DEFAULT_HISTORY_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=MAX_HISTORY_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ShadowError::new(
                        400,
                        format!(
                            "Invalid limit {text:?}: expected an integer from 1 to {MAX_HISTORY_LIMIT}"
                        ),
                    )
                })?,
        };

        let after = query
            .get("nextToken")
            .map(|token| decode_next_token(token))
            .transpose()?;
        Ok(Self {
            from_ms,
            to_ms,
            limit,
            after,
        })
    }
}

impl PastDocument {
    /// Returns the past document that `version` or `at` requests, or `None` when neither is
    /// given and the request is for the live shadow.
    ///
    /// # Errors
    ///
    /// Returns a 400 error if both are given or one is invalid.
    pub fn parse(query: &HashMap<String, String>) -> Result<Option<Self>, ShadowError> {
        match (query.get("version"), query.get("at")) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ShadowError::new(
                400,
                "Invalid query: pass either version or at, not both",
            )),
            (Some(text), None) => {
                let version = text
                    .parse::<u64>()
                    .ok()
                    .filter(|version| *version >= 1)
                    .ok_or_else(|| {
                        ShadowError::new(
                            400,
                            format!("Invalid version {text:?}: expected a positive integer"),
                        )
                    })?;
                Ok(Some(Self::Version(version)))
            }
            (None, Some(text)) => Ok(Some(Self::At(parse_time("at", text)?))),
        }
    }
}

/// Encodes the position of a page's last change as a `nextToken`.
///
/// The token is `VERSION.u` or `VERSION.d` (update or delete) and the accepted time in ms,
/// joined by dots. Clients must treat it as opaque.
pub fn encode_next_token(position: ChangePosition) -> String {
    let change = match position.change {
        ChangeKind::Update => "u",
        ChangeKind::Delete => "d",
    };
    format!("{}.{change}.{}", position.version, position.accepted_at_ms)
}

fn decode_next_token(token: &str) -> Result<ChangePosition, ShadowError> {
    let invalid = || {
        ShadowError::new(
            400,
            format!(
                "Invalid nextToken {token:?}: pass the nextToken of the previous page unchanged"
            ),
        )
    };
    let mut parts = token.split('.');
    let (Some(version), Some(change), Some(accepted_at), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let change = match change {
        "u" => ChangeKind::Update,
        "d" => ChangeKind::Delete,
        _ => return Err(invalid()),
    };
    Ok(ChangePosition {
        version: version.parse().map_err(|_| invalid())?,
        change,
        accepted_at_ms: accepted_at.parse().map_err(|_| invalid())?,
    })
}

/// Parses a time in ms since the Unix epoch (`1714521600000`) or RFC 3339
/// (`2024-05-01T00:00:00Z`, `2024-05-01T02:00:00.250+02:00`).
///
/// # Errors
///
/// Returns a 400 error that names `parameter`.
pub fn parse_time(parameter: &str, text: &str) -> Result<i64, ShadowError> {
    let parsed = text.parse::<i64>().ok().or_else(|| parse_rfc3339_ms(text));
    parsed.ok_or_else(|| {
        ShadowError::new(
            400,
            format!(
                "Invalid {parameter} {text:?}: expected milliseconds since the Unix epoch or an \
                 RFC 3339 time such as 2024-05-01T12:00:00Z"
            ),
        )
    })
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm)`) to ms
/// since the Unix epoch. Digits of the fraction beyond milliseconds are dropped. A leap second
/// (`:60`) counts as the first second of the next minute.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }

    // Fraction of a second, then the offset.
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first_three = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = first_three.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = rest.get(1..)?;
            let (hours, minutes) = offset.split_once(':')?;
            if hours.len() != 2 || minutes.len() != 2 {
                return None;
            }
            let hours: i64 = hours.parse().ok()?;
            let minutes: i64 = minutes.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Returns the days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Count 400-year eras from 0000-03-01, so that the leap day is the last day of a year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let march_month = (month + 9) % 12; // 0 = March, 11 = February
    let day_of_year = (153 * march_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn rfc3339_times_parse_to_epoch_ms() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2024-05-01T00:00:00Z", 1_714_521_600_000),
            ("2024-05-01T02:00:00+02:00", 1_714_521_600_000),
            ("2024-04-30T19:30:00-04:30", 1_714_521_600_000),
            ("2024-05-01t00:00:00.250z", 1_714_521_600_250),
            ("2024-05-01 00:00:00.1Z", 1_714_521_600_100),
            ("2024-05-01T00:00:00.123456789Z", 1_714_521_600_123),
            ("2000-02-29T12:00:00Z", 951_825_600_000),
            ("1969-12-31T23:59:59Z", -1_000),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_time("at", text).ok(), Some(expected), "{text}");
        }
    }

    #[test]
    fn epoch_ms_parse_as_is() {
        assert_eq!(
            parse_time("at", "1714521600000").ok(),
            Some(1_714_521_600_000)
        );
        assert_eq!(parse_time("at", "0").ok(), Some(0));
        assert_eq!(parse_time("at", "-5").ok(), Some(-5));
    }

    #[test]
    fn invalid_times_name_the_parameter() {
        let cases = [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T00:00:00.Z",
            "2024-05-01T00:00:00+2:00",
            "2024-05-01T00:00:00+02:00junk",
            "99999999999999999999",
            "1-2",
        ];
        for text in cases {
            let error = parse_time("from", text).expect_err(text);
            assert_eq!(error.code(), 400, "{text}");
            assert!(
                error.message().contains("Invalid from"),
                "{text}: {}",
                error.message()
            );
            assert!(error.message().contains("RFC 3339"), "{text}");
        }
    }

    #[test]
    fn history_params_have_defaults() {
        let params = HistoryParams::parse(&query(&[])).expect("no parameters");

        assert_eq!(
            params,
            HistoryParams {
                from_ms: None,
                to_ms: None,
                limit: DEFAULT_HISTORY_LIMIT,
                after: None,
            }
        );
    }

    #[test]
    fn limit_outside_range_is_rejected() {
        for limit in ["0", "1001", "-1", "ten"] {
            let error = HistoryParams::parse(&query(&[("limit", limit)])).expect_err(limit);
            assert_eq!(error.code(), 400);
            assert!(
                error.message().contains("Invalid limit"),
                "{}",
                error.message()
            );
        }
        let params = HistoryParams::parse(&query(&[("limit", "1000")])).expect("limit 1000");
        assert_eq!(params.limit, 1_000);
    }

    #[test]
    fn empty_time_range_is_rejected() {
        let error = HistoryParams::parse(&query(&[("from", "2000"), ("to", "2000")]))
            .expect_err("from = to");

        assert_eq!(error.code(), 400);
        assert!(error.message().contains("from"), "{}", error.message());
    }

    #[test]
    fn next_token_round_trips() {
        let positions = [
            ChangePosition {
                version: 7,
                change: ChangeKind::Delete,
                accepted_at_ms: -12,
            },
            ChangePosition {
                version: u64::MAX,
                change: ChangeKind::Update,
                accepted_at_ms: 1_714_521_600_000,
            },
        ];
        for position in positions {
            let token = encode_next_token(position);
            let params =
                HistoryParams::parse(&query(&[("nextToken", &token)])).expect("valid token");
            assert_eq!(params.after, Some(position), "{token}");
        }
    }

    #[test]
    fn damaged_next_token_is_rejected() {
        for token in ["", "7", "7.x.1", "7.u", "7.u.1.2", "a.u.1"] {
            let error = HistoryParams::parse(&query(&[("nextToken", token)])).expect_err(token);
            assert_eq!(error.code(), 400);
            assert!(error.message().contains("nextToken"), "{}", error.message());
        }
    }

    #[test]
    fn past_document_takes_version_or_at() {
        assert_eq!(PastDocument::parse(&query(&[])).ok(), Some(None));
        assert_eq!(
            PastDocument::parse(&query(&[("version", "3")])).ok(),
            Some(Some(PastDocument::Version(3)))
        );
        assert_eq!(
            PastDocument::parse(&query(&[("at", "1970-01-01T00:00:01Z")])).ok(),
            Some(Some(PastDocument::At(1_000)))
        );

        for pairs in [
            &[("version", "0")][..],
            &[("version", "x")][..],
            &[("at", "x")][..],
            &[("version", "1"), ("at", "1")][..],
        ] {
            let error = PastDocument::parse(&query(pairs)).expect_err("invalid");
            assert_eq!(error.code(), 400, "{pairs:?}");
        }
    }

    #[test]
    fn days_from_civil_counts_leap_years() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2024, 5, 1) * 86_400_000, 1_714_521_600_000);
    }
}
