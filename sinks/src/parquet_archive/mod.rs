//! Parquet archive of shadow history: one row for every accepted change of every shadow.
//!
//! [`ArchiveWriter::spawn`] starts a writer thread on a directory, which the service sets to
//! `DATA_DIR/history`. Senders from [`ArchiveHandle::sender`] queue
//! [`HistoryRow`](pipeline::history::HistoryRow)s. The writer groups them by the UTC date of
//! `accepted_at` into Hive-style partition folders of zstd-compressed Parquet files:
//!
//! ```text
//! history/
//!   _archive_state.json                                                 commit point
//!   date=2024-05-01/
//!     part-1714521600000-5f0c9e2a71d3b468-000001.parquet               finished
//!     .part-1714550400000-5f0c9e2a71d3b468-000002.parquet.inprogress   being written
//! ```
//!
//! Query engines read the folder as one table with a `date` partition column, for example
//! `pyarrow.dataset.dataset("history", format="parquet", partitioning="hive")`. A file being
//! written has a hidden name that does not end in `.parquet`, so such globs and dataset scans
//! skip it. The file gets its `.parquet` name only after its footer is written and synced. The
//! state file starts with `_` and does not end in `.parquet`, so those readers skip it too.
//!
//! # Write-ahead log positions
//!
//! [`ArchiveSender::send_logged`] queues a row with its
//! [`LogPosition`](pipeline::history::LogPosition). The archive records, atomically with each
//! commit of files, an [`ArchiveWatermark`]: per log, one past the highest lsn in a committed
//! file. After a crash, the service re-sends the log records that the watermark does not cover,
//! and each row ends up in the archive once:
//!
//! 1. [`ArchiveWriter::spawn`] runs [`recover`], which finishes the last commit and deletes
//!    in-progress files that were never committed.
//! 2. The service reads [`ArchiveHandle::recovery`]`().watermark` and re-sends every logged
//!    row from [`ArchiveWatermark::next_lsn`] on, with `send_logged`. Rows that the archive
//!    already contains are dropped and counted in [`ArchiveStats::duplicates_dropped`].
//! 3. A checkpoint calls [`ArchiveSender::barrier`]. Once it returns `Ok`, every row sent
//!    before it is in a committed file, and the log records that the returned watermark
//!    covers can go.
//!
//! Rows sent with [`ArchiveSender::send`] have no position and do not change the watermark.
//!
//! # Schema
//!
//! | column | Arrow type | nullable | contents |
//! |---|---|---|---|
//! | `thing_name` | Utf8 | no | thing name |
//! | `shadow_name` | Utf8 | yes | named shadow, null for the classic (unnamed) shadow |
//! | `change` | Utf8 | no | `update` or `delete` |
//! | `version` | Int64 | no | shadow version after the change, for a delete the version of the deleted shadow |
//! | `accepted_at` | Timestamp(Millisecond, "UTC") | no | when the service accepted the change |
//! | `origin` | Utf8 | no | `mqtt`, `http` or `replay` |
//! | `client_token` | Utf8 | yes | the request's `clientToken` |
//! | `request_state` | Utf8 (Parquet JSON) | yes | the request's `state` node as JSON text, null for deletes |
//! | `desired` | Utf8 (Parquet JSON) | yes | resulting `state.desired` as JSON text |
//! | `reported` | Utf8 (Parquet JSON) | yes | resulting `state.reported` as JSON text |
//! | `delta` | Utf8 (Parquet JSON) | yes | resulting `state.delta` as JSON text |
//!
//! - `version` is Int64 rather than UInt64 because Spark and older readers have no unsigned
//!   types. [`ArchiveSender::send`] rejects versions above `i64::MAX`.
//! - The JSON columns carry the Parquet JSON logical type. Readers without JSON support read
//!   them as strings.
//! - The `date` partition value is the UTC date of `accepted_at`. It is not stored in the files.
//! - `thing_name`, `shadow_name`, `change` and `origin` are dictionary-encoded. `version` and
//!   `accepted_at` are delta-encoded (DELTA_BINARY_PACKED), and `client_token` and the JSON
//!   columns are plain. Every column is zstd-compressed. All but the JSON columns have
//!   page-level statistics and a column index, so readers can skip data by `thing_name` and
//!   `accepted_at`. The JSON columns have only row-group statistics.
//! - Each row group is sorted by `thing_name`, `shadow_name` and `version`, so each
//!   `thing_name` page covers a narrow range of things and readers skip the pages of other
//!   things. Row groups follow each other in the order their rows arrived.
//!
//! # History reads
//!
//! [`ArchiveHandle::reader`] returns a [`HistoryReader`] for the changes of one shadow: a page
//! of them in version order, the change that produced a version, or the last change at a time.
//! It reads the committed files, skipping date partitions outside the time range and row
//! groups by their statistics, and merges the rows of open files from an in-memory index that
//! the writer keeps. A read first waits until the writer has taken every row queued before
//! it, so it returns every change that the service acknowledged before the read.
//!
//! # Notes
//!
//! - Rows become readable for other Parquet readers when their file is committed: at
//!   `max_file_rows` rows, `max_file_age_ms` after its first row, at a barrier, when the
//!   uncommitted-row index reaches `uncommitted_index_bytes`, or on [`ArchiveHandle::close`].
//!   Until then they exist only in memory and in the hidden in-progress file, and only a
//!   [`HistoryReader`] of the running writer returns them.
//! - Files that hold rows of a common log, usually the two dates around midnight, are
//!   committed together. Otherwise the watermark could pass a row that is still in an open
//!   file.
//! - At start, in-progress files that were never committed are deleted and logged at WARN,
//!   one line each with their size. Their logged rows come back from the write-ahead log.
//!   Their rows without a position are lost. The scan lists every partition folder, so it
//!   takes longer as the archive grows.
//! - A failing create, write or rename is retried until it succeeds, which stalls the senders
//!   and barriers while the disk is full. Only `close` gives up, after
//!   [`CLOSE_RETRY_ATTEMPTS`] more retries. A failed `fsync` is not retried: the files of that
//!   commit stay unfinished, and `close` returns an error that counts their rows.
//! - The writer does not keep a copy of rows that it failed to archive. Once a logged row is
//!   lost, the writer drops the later rows of its log, every later barrier fails, and the
//!   watermark of that log stays below the lost row. A restart re-sends them from the log.
//! - One writer per directory. Two writers would not overwrite each other's files, but nothing
//!   coordinates them.
//!
//! # Example
//!
//! ```
//! use pipeline::history::{ChangeKind, HistoryRow, Origin};
//! use sinks::parquet_archive::{ArchiveConfig, ArchiveWriter};
//!
//! # let directory = std::env::temp_dir().join(format!("archive-doc-{}", std::process::id()));
//! let archive = ArchiveWriter::spawn(&directory, ArchiveConfig::default())?;
//! archive.sender().send(HistoryRow {
//!     thing_name: "lamp-1".to_owned(),
//!     shadow_name: None,
//!     change: ChangeKind::Update,
//!     version: 1,
//!     accepted_at_ms: 1_714_521_600_000,
//!     origin: Origin::Mqtt,
//!     client_token: None,
//!     request_state: Some(r#"{"desired":{"on":true}}"#.to_owned()),
//!     desired: Some(r#"{"on":true}"#.to_owned()),
//!     reported: None,
//!     delta: Some(r#"{"on":true}"#.to_owned()),
//! })?;
//!
//! let stats = archive.close()?;
//! assert_eq!(stats.rows_written, 1);
//! assert!(directory.join("date=2024-05-01").is_dir());
//! # std::fs::remove_dir_all(&directory)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod barrier;
mod change;
mod commit;
mod config;
mod file;
mod handle;
mod index;
mod io_retry;
mod layout;
mod outcome;
mod prune;
mod reader;
mod recovery;
mod scan;
pub mod schema;
mod state;
mod stats;
mod watermark;
mod writer;

#[cfg(test)]
mod tests;

pub use barrier::{ArchiveBarrier, ArchiveBarrierError};
pub use change::{ChangePosition, HistoryChange, HistoryPage, HistoryQuery};
pub use config::{
    ArchiveConfig, DEFAULT_MAX_FILE_AGE_MS, DEFAULT_MAX_FILE_ROWS, DEFAULT_QUEUE_ROWS,
    DEFAULT_ROW_GROUP_BYTES, DEFAULT_ROW_GROUP_ROWS, DEFAULT_UNCOMMITTED_INDEX_BYTES,
    DEFAULT_ZSTD_LEVEL,
};
pub use file::WATERMARK_METADATA_KEY;
pub use handle::{ArchiveHandle, ArchiveSender};
pub use io_retry::CLOSE_RETRY_ATTEMPTS;
pub use layout::{IN_PROGRESS_SUFFIX, PARTITION_PREFIX, utc_date};
pub use reader::{DEFAULT_CATCH_UP_TIMEOUT, HistoryReadError, HistoryReader, ORDER_SLACK_MS};
pub use recovery::{ArchiveRecovery, RecoveryError, recover};
pub use state::STATE_FILE_NAME;
pub use stats::{ArchiveCounters, ArchiveStats};
pub use watermark::ArchiveWatermark;
pub use writer::ArchiveWriter;

pub use crate::error::{ArchiveConfigError, ArchiveError, ArchiveSendError};
