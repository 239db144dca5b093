//! File and folder names of the archive: date partitions, file names and the startup scan.
//!
//! A file is written under a hidden in-progress name and renamed to its final name once its
//! footer is written and synced:
//!
//! ```text
//! history/date=2024-05-01/.part-1714521600000-5f0c9e2a71d3b468-000001.parquet.inprogress
//! history/date=2024-05-01/part-1714521600000-5f0c9e2a71d3b468-000001.parquet
//! ```
//!
//! # Notes
//!
//! - The number after `part-` is the `accepted_at` of the file's first row in ms. Later rows of
//!   the file may be older, because the writer appends rows in the order they arrive.
//! - The suffix is a random 64-bit writer id, drawn once per writer, and a sequence number. Two
//!   writers on one directory are not supported, but the id makes their names differ anyway.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ending of a file that the writer has not finished.
pub const IN_PROGRESS_SUFFIX: &str = ".inprogress";

/// Prefix of a date partition folder, in Hive style (`date=YYYY-MM-DD`).
pub const PARTITION_PREFIX: &str = "date=";

/// Milliseconds in a UTC day, which has no leap seconds in Unix time.
pub(super) const MS_PER_DAY: i64 = 86_400_000;

/// Formats the UTC calendar date of `epoch_ms` (ms since the Unix epoch) as `YYYY-MM-DD`.
///
/// Works for every `i64`, in the proleptic Gregorian calendar. Years before 1 or after 9999 do
/// not fit four digits and get a sign or more digits.
pub fn utc_date(epoch_ms: i64) -> String {
    // Days-to-civil conversion: count 400-year eras of 146,097 days from 0000-03-01, so the leap
    // day is the last day of each year-of-era and months are March-based.
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March, 11 = February
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);

    format!("{year:04}-{month:02}-{day:02}")
}

/// Returns the partition folder of `date` under the archive `directory`.
pub fn partition_directory(directory: &Path, date: &str) -> PathBuf {
    directory.join(format!("{PARTITION_PREFIX}{date}"))
}

/// Final and in-progress paths of one archive file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePaths {
    /// Path that readers see once the file is finished.
    pub final_path: PathBuf,
    /// Hidden path while the writer fills the file.
    pub in_progress_path: PathBuf,
}

impl FilePaths {
    /// Returns the paths of the file whose final path is `final_path`: the in-progress file is
    /// in the same folder, with a `.` before and [`IN_PROGRESS_SUFFIX`] after the final name.
    pub fn from_final_path(final_path: PathBuf) -> Self {
        let name = final_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let in_progress_path = final_path.with_file_name(format!(".{name}{IN_PROGRESS_SUFFIX}"));
        Self {
            final_path,
            in_progress_path,
        }
    }
}

/// Source of unique file names for one writer.
#[derive(Debug)]
pub struct FileNamer {
    writer_id: u64,
    sequence: u64,
}

impl FileNamer {
    /// Creates a namer with a random writer id.
    pub fn new() -> Self {
        Self {
            writer_id: random_writer_id(),
            sequence: 0,
        }
    }

    /// Returns the paths of the next file in `partition`, whose first row has `first_row_ms`.
    pub fn next_paths(&mut self, partition: &Path, first_row_ms: i64) -> FilePaths {
        self.sequence += 1;
        let name = format!(
            "part-{first_row_ms}-{:016x}-{:06}.parquet",
            self.writer_id, self.sequence
        );

        FilePaths::from_final_path(partition.join(name))
    }
}

/// Draws a writer id from the standard library's randomly keyed hasher, mixed with the clock and
/// the process id, so that no extra random-number crate is needed.
fn random_writer_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Returns the in-progress files in the partition folders of `directory`, sorted by path.
///
/// # Errors
///
/// Returns the first error from listing `directory` or one of its partition folders.
pub fn find_in_progress_files(directory: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();

    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        let is_partition = entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTITION_PREFIX);
        if !is_partition || !entry.file_type()?.is_dir() {
            continue;
        }

        for file in fs::read_dir(entry.path())? {
            let file = file?;
            if file
                .file_name()
                .to_string_lossy()
                .ends_with(IN_PROGRESS_SUFFIX)
            {
                found.push(file.path());
            }
        }
    }

    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use arrow_array::temporal_conversions::timestamp_ms_to_datetime;

    use super::*;

    #[test]
    fn utc_date_matches_known_dates() {
        let cases = [
            (0, "1970-01-01"),
            (-1, "1969-12-31"),
            (MS_PER_DAY - 1, "1970-01-01"),
            (951_782_400_000, "2000-02-29"),
            (1_714_521_600_000, "2024-05-01"),
            (1_735_689_599_999, "2024-12-31"),
            (1_735_689_600_000, "2025-01-01"),
            (4_107_542_400_000, "2100-03-01"),
        ];

        for (epoch_ms, expected) in cases {
            assert_eq!(utc_date(epoch_ms), expected, "epoch_ms = {epoch_ms}");
        }
    }

    #[test]
    fn utc_date_agrees_with_chrono() {
        // Every day from 1600-01-01 to 2400-01-01, at the first and last ms of the day.
        let first_day = -135_140;
        let last_day = 157_054;

        for day in first_day..=last_day {
            for epoch_ms in [day * MS_PER_DAY, day * MS_PER_DAY + MS_PER_DAY - 1] {
                let expected = timestamp_ms_to_datetime(epoch_ms)
                    .expect("in chrono's range")
                    .date()
                    .to_string();
                assert_eq!(utc_date(epoch_ms), expected, "epoch_ms = {epoch_ms}");
            }
        }
    }

    #[test]
    fn utc_date_accepts_extreme_values() {
        assert!(!utc_date(i64::MIN).is_empty());
        assert!(!utc_date(i64::MAX).is_empty());
    }

    #[test]
    fn next_paths_are_hidden_and_unique() {
        let mut namer = FileNamer::new();
        let partition = Path::new("/archive/date=2024-05-01");

        let first = namer.next_paths(partition, 1_714_521_600_000);
        let second = namer.next_paths(partition, 1_714_521_600_000);

        assert_ne!(first.final_path, second.final_path);
        let final_name = first
            .final_path
            .file_name()
            .expect("file name")
            .to_string_lossy();
        let in_progress_name = first
            .in_progress_path
            .file_name()
            .expect("file name")
            .to_string_lossy();
        assert!(
            final_name.starts_with("part-1714521600000-"),
            "{final_name}"
        );
        assert!(final_name.ends_with(".parquet"), "{final_name}");
        assert_eq!(
            in_progress_name,
            format!(".{final_name}{IN_PROGRESS_SUFFIX}")
        );
    }
}
