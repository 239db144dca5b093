//! Settings of the Parquet history archive.
//!
//! The archive directory is not a setting: the service passes `DATA_DIR/history` to
//! [`ArchiveWriter::spawn`](super::ArchiveWriter::spawn).

use std::time::Duration;

use parquet::basic::{Compression, ZstdLevel};
use serde::{Deserialize, Serialize};

use crate::error::ArchiveConfigError;

/// Default maximum number of rows in one Parquet file.
pub const DEFAULT_MAX_FILE_ROWS: u64 = 1_000_000;

/// Default maximum time in ms from a file's first row until the file is finished.
pub const DEFAULT_MAX_FILE_AGE_MS: u64 = 60_000;

/// Default maximum number of rows in one row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 65_536;

/// Default maximum estimated encoded size of the row group being built, in bytes (64 MiB).
pub const DEFAULT_ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// Default zstd compression level.
///
/// Level 1 rather than zstd's own default of 3. On the history of the Beijing air-quality data
/// set, level 1 made files 6 % smaller than level 3 and took about a third less writer CPU
/// (the `archive` benchmark in `benches/`, on a 2-core machine).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Default capacity of the queue between senders and the writer thread, in rows.
pub const DEFAULT_QUEUE_ROWS: usize = 16_384;

/// Default estimated memory of the uncommitted-row index at which the writer commits its open
/// files early, in bytes (64 MiB).
pub const DEFAULT_UNCOMMITTED_INDEX_BYTES: usize = 64 * 1024 * 1024;

/// Settings of the Parquet history archive.
///
/// # Memory usage
///
/// The writer keeps one open file per UTC date that has rows in flight, usually one and two
/// around midnight. Each open file collects the rows of its current row group unencoded, so
/// that it can sort them, until there are `row_group_rows` rows or about `row_group_bytes`
/// bytes of them. The queue holds up to `queue_rows` rows. The uncommitted-row index that lets
/// history reads see the rows of open files keeps a second, compact copy of every row in an
/// open file, up to about `uncommitted_index_bytes`: about 100 bytes per row plus the row's
/// text (client token and the four JSON columns).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Maximum number of rows in one Parquet file. The writer finishes the file and starts a new
    /// one when a file reaches this count.
    #[serde(default = "default_max_file_rows")]
    pub max_file_rows: u64,

    /// Maximum time in ms from the first row of a file until the writer finishes the file and
    /// gives it its `.parquet` name, even when no further rows arrive. Readers see rows no later
    /// than this, plus the time to write the footer and sync the file.
    #[serde(default = "default_max_file_age_ms")]
    pub max_file_age_ms: u64,

    /// Maximum number of rows in one row group. The writer sorts each row group by thing,
    /// shadow and version. Smaller row groups let readers skip more data by row-group
    /// statistics, but add metadata and compress less well.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,

    /// Maximum size in bytes of the row group being built. The writer collects its rows in
    /// memory, and writes the row group once their estimated unencoded size or the Parquet
    /// writer's estimate of their encoded size passes this.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,

    /// zstd compression level. Higher levels give smaller files for more CPU time. zstd accepts
    /// -131072 to 22.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,

    /// Capacity in rows of the queue between senders and the writer thread. While the queue is
    /// full, `ArchiveSender::send` blocks until the writer catches up.
    #[serde(default = "default_queue_rows")]
    pub queue_rows: usize,

    /// Estimated memory in bytes of the rows in open files, kept in an index for history
    /// reads, at which the writer commits its open files early. A lower value caps memory but
    /// makes smaller files when rows arrive faster than `max_file_rows` per `max_file_age_ms`.
    #[serde(default = "default_uncommitted_index_bytes")]
    pub uncommitted_index_bytes: usize,
}

const fn default_max_file_rows() -> u64 {
    DEFAULT_MAX_FILE_ROWS
}

const fn default_max_file_age_ms() -> u64 {
    DEFAULT_MAX_FILE_AGE_MS
}

const fn default_row_group_rows() -> usize {
    DEFAULT_ROW_GROUP_ROWS
}

const fn default_row_group_bytes() -> usize {
    DEFAULT_ROW_GROUP_BYTES
}

const fn default_zstd_level() -> i32 {
    DEFAULT_ZSTD_LEVEL
}

const fn default_queue_rows() -> usize {
    DEFAULT_QUEUE_ROWS
}

const fn default_uncommitted_index_bytes() -> usize {
    DEFAULT_UNCOMMITTED_INDEX_BYTES
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            max_file_rows: DEFAULT_MAX_FILE_ROWS,
            max_file_age_ms: DEFAULT_MAX_FILE_AGE_MS,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            row_group_bytes: DEFAULT_ROW_GROUP_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            queue_rows: DEFAULT_QUEUE_ROWS,
            uncommitted_index_bytes: DEFAULT_UNCOMMITTED_INDEX_BYTES,
        }
    }
}

impl ArchiveConfig {
    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveConfigError::Zero`] for a count, size or age of 0, and
    /// [`ArchiveConfigError::InvalidZstdLevel`] for a level that zstd rejects.
    pub fn validate(&self) -> Result<(), ArchiveConfigError> {
        let counts = [
            ("max_file_rows", self.max_file_rows),
            ("max_file_age_ms", self.max_file_age_ms),
            ("row_group_rows", self.row_group_rows as u64),
            ("row_group_bytes", self.row_group_bytes as u64),
            ("queue_rows", self.queue_rows as u64),
            (
                "uncommitted_index_bytes",
                self.uncommitted_index_bytes as u64,
            ),
        ];
        for (field, value) in counts {
            if value == 0 {
                return Err(ArchiveConfigError::Zero { field });
            }
        }

        self.compression()?;
        Ok(())
    }

    /// Returns `max_file_age_ms` as a [`Duration`].
    pub fn max_file_age(&self) -> Duration {
        Duration::from_millis(self.max_file_age_ms)
    }

    /// Returns the Parquet compression codec for `zstd_level`.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveConfigError::InvalidZstdLevel`] if zstd rejects the level.
    pub fn compression(&self) -> Result<Compression, ArchiveConfigError> {
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|_| {
            ArchiveConfigError::InvalidZstdLevel {
                level: self.zstd_level,
            }
        })?;
        Ok(Compression::ZSTD(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_through_json() {
        let config = ArchiveConfig::default();

        let text = serde_json::to_string(&config).expect("serialize config");
        let parsed: ArchiveConfig = serde_json::from_str(&text).expect("parse config");

        assert_eq!(parsed, config);
    }

    #[test]
    fn empty_config_uses_defaults() {
        let parsed: ArchiveConfig = serde_json::from_str("{}").expect("parse empty config");

        assert_eq!(parsed, ArchiveConfig::default());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let result = serde_json::from_str::<ArchiveConfig>(r#"{"directory": "/tmp"}"#);

        let error = result.expect_err("`directory` is not a setting");
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn default_config_is_valid() {
        ArchiveConfig::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn zero_settings_are_rejected() {
        type SetZero = fn(&mut ArchiveConfig);
        let cases: [(&str, SetZero); 6] = [
            ("max_file_rows", |config| config.max_file_rows = 0),
            ("max_file_age_ms", |config| config.max_file_age_ms = 0),
            ("row_group_rows", |config| config.row_group_rows = 0),
            ("row_group_bytes", |config| config.row_group_bytes = 0),
            ("queue_rows", |config| config.queue_rows = 0),
            ("uncommitted_index_bytes", |config| {
                config.uncommitted_index_bytes = 0;
            }),
        ];

        for (expected_field, set_zero) in cases {
            let mut config = ArchiveConfig::default();
            set_zero(&mut config);

            match config.validate() {
                Err(ArchiveConfigError::Zero { field }) => assert_eq!(field, expected_field),
                other => panic!("{expected_field} = 0: expected Zero error, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_zstd_level_is_rejected() {
        let config = ArchiveConfig {
            zstd_level: 23,
            ..ArchiveConfig::default()
        };

        let error = config
            .validate()
            .expect_err("level 23 is above zstd's maximum");

        assert!(
            matches!(error, ArchiveConfigError::InvalidZstdLevel { level: 23 }),
            "{error:?}"
        );
    }
}
