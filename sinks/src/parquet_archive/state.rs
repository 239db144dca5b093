//! The archive state file: the commit point of closed files and the log watermark.
//!
//! `history/_archive_state.json` contains the cumulative [`ArchiveWatermark`] and the files of the
//! latest commit:
//!
//! ```text
//! {
//!   "format": 1,
//!   "watermark": [{"generation": 3, "worker": 0, "next_lsn": 1200}],
//!   "committing": ["date=2024-05-01/part-1714521600000-5f0c9e2a71d3b468-000007.parquet"]
//! }
//! ```
//!
//! Replacing this file is the commit point. Its files are written, footed and synced under
//! their in-progress names first, and renamed to the names in `committing` only after. A start
//! finds each listed file under one of its two names and finishes the rename. An in-progress
//! file that the state file does not list was never committed, so its rows are above the
//! watermark and are re-sent from the write-ahead log.
//!
//! The file is written as `_archive_state.json.tmp`, synced, renamed over the old one, and the
//! archive folder is synced. Both names start with `_` and do not end in `.parquet`, so
//! `*.parquet` globs do not match them, and `pyarrow.dataset` skips them because its
//! `ignore_prefixes` defaults to `['.', '_']` (pyarrow 26 docs).
//!
//! # Notes
//!
//! - `committing` can list files of earlier commits too, if their rename or folder sync failed.
//!   They stay listed until both succeed.
//! - This module does not decide what a commit contains. See `commit.rs`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file::sync_directory;
use super::io_retry::{Shared, retry_io};
use super::layout::{FilePaths, PARTITION_PREFIX};
use super::watermark::ArchiveWatermark;
use crate::error::ArchiveError;

/// Name of the state file in the archive directory.
pub const STATE_FILE_NAME: &str = "_archive_state.json";

/// Name of the state file while it is written.
const STATE_TEMP_NAME: &str = "_archive_state.json.tmp";

/// Version of the state file layout. A reader rejects other versions.
const STATE_FORMAT: u32 = 1;

/// Contents of the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StateFile")]
pub(super) struct ArchiveState {
    /// Layout version, always [`STATE_FORMAT`].
    format: u32,

    /// Watermark of every file committed so far, including `committing`.
    pub(super) watermark: ArchiveWatermark,

    /// Files of the latest commit, and earlier files whose rename or folder sync is not yet
    /// confirmed, as `date=YYYY-MM-DD/part-....parquet` relative to the archive directory.
    pub(super) committing: Vec<String>,
}

/// The state file as parsed, before its entries are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: u32,
    watermark: ArchiveWatermark,
    committing: Vec<String>,
}

impl TryFrom<StateFile> for ArchiveState {
    type Error = String;

    fn try_from(file: StateFile) -> Result<Self, Self::Error> {
        if file.format != STATE_FORMAT {
            return Err(format!(
                "state file format {} is not supported, this version reads format {STATE_FORMAT}",
                file.format
            ));
        }
        for entry in &file.committing {
            check_committed_entry(entry)?;
        }
        Ok(Self {
            format: file.format,
            watermark: file.watermark,
            committing: file.committing,
        })
    }
}

impl ArchiveState {
    /// Creates the state of a commit.
    pub(super) fn new(watermark: ArchiveWatermark, committing: Vec<String>) -> Self {
        Self {
            format: STATE_FORMAT,
            watermark,
            committing,
        }
    }
}

/// Checks that a `committing` entry names a finished archive file inside a partition folder,
/// so that a damaged state file cannot make recovery rename files elsewhere.
fn check_committed_entry(entry: &str) -> Result<(), String> {
    let components: Vec<Component<'_>> = Path::new(entry).components().collect();
    let valid = match components.as_slice() {
        [Component::Normal(partition), Component::Normal(name)] => {
            let partition = partition.to_string_lossy();
            let name = name.to_string_lossy();
            partition.starts_with(PARTITION_PREFIX)
                && name.starts_with("part-")
                && name.ends_with(".parquet")
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "committing entry {entry:?} is not of the form date=YYYY-MM-DD/part-....parquet"
        ))
    }
}

/// Returns the path of the state file in the archive `directory`.
pub(super) fn state_path(directory: &Path) -> PathBuf {
    directory.join(STATE_FILE_NAME)
}

/// Returns the path of the temporary state file in the archive `directory`.
pub(super) fn state_temp_path(directory: &Path) -> PathBuf {
    directory.join(STATE_TEMP_NAME)
}

/// Returns `final_path` relative to the archive `directory`, as the state file lists it.
///
/// # Panics
///
/// Panics if `final_path` is not inside `directory`, which the writer never builds.
pub(super) fn relative_entry(directory: &Path, final_path: &Path) -> String {
    final_path
        .strip_prefix(directory)
        .expect("archive files are built inside the archive directory")
        .to_string_lossy()
        .into_owned()
}

/// Returns the final and in-progress paths of a checked `committing` entry.
pub(super) fn committed_paths(directory: &Path, entry: &str) -> FilePaths {
    FilePaths::from_final_path(directory.join(entry))
}

/// Parses the contents of a state file.
///
/// # Errors
///
/// Returns the JSON error if `text` is not a valid state file of format [`STATE_FORMAT`].
pub(super) fn parse_state(text: &[u8]) -> Result<ArchiveState, serde_json::Error> {
    serde_json::from_slice(text)
}

/// Replaces the state file of `directory` with `state`: writes a temporary file, syncs it,
/// renames it over the state file and syncs the folder.
///
/// Creating, writing and renaming are retried by [`retry_io`]. The syncs are not, as the
/// `io_retry` module docs explain.
///
/// # Errors
///
/// Returns the first step that failed. After a failed folder sync the new state is in place
/// but may not survive a power loss, so the caller must treat the commit as failed.
pub(super) fn write_state(
    directory: &Path,
    state: &ArchiveState,
    shared: &Shared,
) -> Result<(), ArchiveError> {
    let temp_path = state_temp_path(directory);
    let final_path = state_path(directory);
    let mut text = serde_json::to_vec_pretty(state)
        .expect("the state has only strings, integers and lists, which always serialize");
    text.push(b'\n');

    // `File::create` truncates, so each retry rewrites the whole file.
    let file = retry_io(shared, "writing archive state", &temp_path, || {
        let mut file = File::create(&temp_path)?;
        file.write_all(&text)?;
        Ok(file)
    })
    .map_err(|source| io_error("writing archive state", &temp_path, source))?;
    file.sync_all().map_err(|source| {
        shared.counters.record_io_error();
        io_error("syncing archive state", &temp_path, source)
    })?;
    drop(file);

    retry_io(shared, "renaming archive state", &temp_path, || {
        fs::rename(&temp_path, &final_path)
    })
    .map_err(|source| io_error("renaming archive state", &temp_path, source))?;

    sync_directory(directory).inspect_err(|_| shared.counters.record_io_error())
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let state = ArchiveState::new(
            serde_json::from_str(r#"[{"generation":1,"worker":0,"next_lsn":3}]"#)
                .expect("watermark"),
            vec!["date=2024-05-01/part-1-00000000000000ff-000001.parquet".to_owned()],
        );

        let text = serde_json::to_string(&state).expect("serialize state");
        let parsed = parse_state(text.as_bytes()).expect("parse state");

        assert_eq!(parsed, state);
    }

    #[test]
    fn entries_outside_partitions_are_rejected() {
        let entries = [
            "../etc/part-1.parquet",
            "/tmp/part-1.parquet",
            "part-1.parquet",
            "date=2024-05-01/.part-1.parquet.inprogress",
            "date=2024-05-01/../../part-1.parquet",
            "other/part-1.parquet",
        ];

        for entry in entries {
            let text = format!(r#"{{"format":1,"watermark":[],"committing":[{entry:?}]}}"#);
            let error = parse_state(text.as_bytes()).expect_err(entry);
            assert!(
                error.to_string().contains("is not of the form"),
                "{entry}: {error}"
            );
        }
    }

    #[test]
    fn other_format_is_rejected() {
        let text = r#"{"format":2,"watermark":[],"committing":[]}"#;

        let error = parse_state(text.as_bytes()).expect_err("format 2");

        assert!(error.to_string().contains("format 2"), "{error}");
    }

    #[test]
    fn committed_paths_derive_hidden_name() {
        let paths = committed_paths(Path::new("/history"), "date=2024-05-01/part-1.parquet");

        assert_eq!(
            paths.final_path,
            Path::new("/history/date=2024-05-01/part-1.parquet")
        );
        assert_eq!(
            paths.in_progress_path,
            Path::new("/history/date=2024-05-01/.part-1.parquet.inprogress")
        );
    }
}
