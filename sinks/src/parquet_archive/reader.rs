//! History reads: the accepted changes of one shadow, from committed files and from the rows
//! that are still in open files.
//!
//! A [`HistoryReader`] serves three reads: a page of changes in version order
//! ([`changes`](HistoryReader::changes)), the change that produced a version
//! ([`change_at_version`](HistoryReader::change_at_version)), and the last change accepted at
//! or before a time ([`change_at`](HistoryReader::change_at)). Each read merges two sources:
//!
//! - Committed files, listed fresh for every read. A time range skips whole date partitions,
//!   and row-group statistics and the page index skip most of the rest, see `scan.rs` and
//!   `prune.rs`.
//! - The uncommitted-row index of the writer, which has every row of the open files.
//!
//! # Consistency
//!
//! Before it reads, a reader of a running writer sends a catch-up message through the writer's
//! queue and waits until the writer has taken it, so every row queued before the read is in an
//! open file or a committed one. The service queues a change's row before it acknowledges the
//! change, so a read returns every change acknowledged before the read started.
//!
//! The reader copies the shadow's rows out of the index before it lists the committed files,
//! and the writer removes rows from the index only after it has renamed their file. So a row
//! that leaves the index between the two steps is in a listed file. A row found in both places
//! is returned once.
//!
//! # Notes
//!
//! - The pages and lookups rely on `accepted_at` growing with the version of a shadow, give
//!   or take [`ORDER_SLACK_MS`], to stop scanning partitions early. The service stamps a
//!   change with the time its request arrived, so two requests to one shadow can be stamped a
//!   few milliseconds out of order. A step back of the wall clock by more than
//!   [`ORDER_SLACK_MS`] can make a page or an `at` lookup miss older partitions.
//! - Without a time range, a version lookup reads the footer of every committed file.
//! - A page decodes every matching change after its start in each partition that it reads,
//!   then keeps the first `limit`. Paging through a shadow with many changes in one day
//!   therefore decodes more rows per page than the page returns.
//! - After a restart with durability `none`, shadows start again at version 1, so one shadow
//!   can have several changes with the same version. They sort by accepted time, and a version
//!   lookup returns the latest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parquet::errors::ParquetError;
use pipeline::history::ChangeKind;
use pipeline::shadow::ShadowKey;

use super::change::{ChangePosition, HistoryChange, HistoryPage, HistoryQuery};
use super::handle::ArchiveSender;
use super::io_retry::Shared;
use super::layout::utc_date;
use super::scan::{
    Columns, Partition, RowPredicate, committed_files, list_partitions, read_matching,
};

/// How far the accepted times of one shadow's changes may run against their version order
/// before a read can miss a change: one day, so reads scan one date partition beyond where
/// they could otherwise stop.
pub const ORDER_SLACK_MS: i64 = 86_400_000;

/// Default time a read waits for the writer to take the rows queued before it.
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of a history read.
///
/// NOTE: this type belongs in the crate's `error.rs`, next to the other archive errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryReadError {
    /// Listing a folder or opening a file failed.
    #[error("{action} failed for {path}")]
    Io {
        /// The operation, for example `opening archive file`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// The Parquet reader failed on a committed file.
    #[error("reading archive file {path} failed")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The Parquet error, which wraps the operating-system error for I/O failures.
        #[source]
        source: ParquetError,
    },

    /// A committed file's columns or values do not fit the history schema.
    #[error("archive file {path} does not fit the history schema: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// Description of the mismatch.
        reason: String,
    },

    /// The writer did not take the rows queued before the read in time, for example because
    /// it retries a failing disk.
    #[error(
        "the archive writer did not take the changes queued before this read within {timeout:?}"
    )]
    CatchUpTimedOut {
        /// The timeout that passed.
        timeout: Duration,
    },
}

/// Reads the history of single shadows from an archive directory. Cheap to clone and usable
/// from many threads.
///
/// Get one from [`ArchiveHandle::reader`](super::ArchiveHandle::reader) to also see the rows of
/// open files, or from [`HistoryReader::open`] for an archive without a running writer.
///
/// Every read blocks on file I/O, so call it from an OS thread or
/// `tokio::task::spawn_blocking`.
///
/// # Example
///
/// ```
/// use pipeline::history::{ChangeKind, HistoryRow, Origin};
/// use pipeline::shadow::ShadowKey;
/// use sinks::parquet_archive::{ArchiveConfig, ArchiveWriter};
///
/// # let directory = std::env::temp_dir().join(format!("reader-doc-{}", std::process::id()));
/// let archive = ArchiveWriter::spawn(&directory, ArchiveConfig::default())?;
/// let reader = archive.reader();
/// archive.sender().send(HistoryRow {
///     thing_name: "lamp-1".to_owned(),
///     shadow_name: None,
///     change: ChangeKind::Update,
///     version: 1,
///     accepted_at_ms: 1_714_521_600_000,
///     origin: Origin::Mqtt,
///     client_token: None,
///     request_state: Some(r#"{"reported":{"on":true}}"#.to_owned()),
///     desired: None,
///     reported: Some(r#"{"on":true}"#.to_owned()),
///     delta: None,
/// })?;
///
/// // The row is still in an open file, and the reader finds it there.
/// let change = reader.change_at_version(&ShadowKey::classic("lamp-1"), 1)?.expect("version 1");
/// assert_eq!(change.reported.as_deref(), Some(r#"{"on":true}"#));
/// archive.close()?;
/// # std::fs::remove_dir_all(&directory)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct HistoryReader {
    directory: Arc<Path>,
    writer: Option<WriterLink>,
    catch_up_timeout: Duration,
}

/// The parts of a running writer that a reader uses.
#[derive(Clone, Debug)]
struct WriterLink {
    /// Contains the uncommitted-row index.
    shared: Arc<Shared>,
    /// Queue for catch-up messages.
    sender: ArchiveSender,
}

impl HistoryReader {
    /// Creates a reader of the committed files in `directory`, for an archive without a running
    /// writer.
    ///
    /// NOTE: files of the last commit whose rename the writer did not finish are not read
    /// until a writer starts on the directory and recovers it.
    pub fn open(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: Arc::from(directory.into()),
            writer: None,
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }

    /// Creates a reader of a running writer's directory and uncommitted-row index.
    pub(super) fn with_writer(
        directory: &Path,
        shared: Arc<Shared>,
        sender: ArchiveSender,
    ) -> Self {
        Self {
            directory: Arc::from(directory),
            writer: Some(WriterLink { shared, sender }),
            catch_up_timeout: DEFAULT_CATCH_UP_TIMEOUT,
        }
    }

    /// Sets how long a read waits for the writer to take the rows queued before it.
    pub fn with_catch_up_timeout(mut self, timeout: Duration) -> Self {
        self.catch_up_timeout = timeout;
        self
    }

    /// Reads one page of a shadow's changes, in [`ChangePosition`] order.
    ///
    /// # Errors
    ///
    /// Returns [`HistoryReadError`] if a file cannot be listed or read, or the writer does not
    /// catch up in time.
    pub fn changes(&self, query: &HistoryQuery) -> Result<HistoryPage, HistoryReadError> {
        let limit = query.limit.max(1);
        let after = query.after;
        let predicate = RowPredicate {
            thing_name: query.shadow.thing_name.clone(),
            shadow_name: query.shadow.shadow_name.clone(),
            versions: after.map_or(0, |after| after.version)..=u64::MAX,
            accepted_at: query.accepted_from_ms.unwrap_or(i64::MIN)
                ..query.accepted_before_ms.unwrap_or(i64::MAX),
        };
        let is_after = |position: ChangePosition| after.is_none_or(|after| position > after);

        self.catch_up()?;
        let mut changes = self.uncommitted(&predicate, is_after);

        // Scan partitions from the oldest one that can hold the page, and stop one partition
        // after the page is full, for changes stamped out of version order.
        let first_date = [
            query.accepted_from_ms.map(utc_date),
            after.map(|after| utc_date(after.accepted_at_ms.saturating_sub(ORDER_SLACK_MS))),
        ]
        .into_iter()
        .flatten()
        .max();
        let last_date = query
            .accepted_before_ms
            .map(|before| utc_date(before.saturating_sub(1)));
        let partitions = self.partitions_between(first_date.as_deref(), last_date.as_deref())?;
        let mut from_files = 0;
        let mut full_at = None;
        for (index, partition) in partitions.iter().enumerate() {
            if full_at.is_some_and(|full_at| index > full_at + 1) {
                break;
            }
            let found = read_partition(partition, &predicate, Columns::All)?;
            let before = changes.len();
            changes.extend(
                found
                    .into_iter()
                    .filter(|change| is_after(change.position())),
            );
            from_files += changes.len() - before;
            if full_at.is_none() && from_files > limit {
                full_at = Some(index);
            }
        }

        changes.sort_by_key(HistoryChange::position);
        changes.dedup_by_key(|change| change.position());
        let next = (changes.len() > limit).then(|| changes[limit - 1].position());
        changes.truncate(limit);
        Ok(HistoryPage { changes, next })
    }

    /// Returns the update that produced `version` of `shadow`, or `None` if the archive has
    /// none.
    ///
    /// # Errors
    ///
    /// As [`changes`](Self::changes).
    pub fn change_at_version(
        &self,
        shadow: &ShadowKey,
        version: u64,
    ) -> Result<Option<HistoryChange>, HistoryReadError> {
        let predicate = RowPredicate {
            thing_name: shadow.thing_name.clone(),
            shadow_name: shadow.shadow_name.clone(),
            versions: version..=version,
            accepted_at: i64::MIN..i64::MAX,
        };
        let latest_update = |changes: Vec<HistoryChange>| {
            changes
                .into_iter()
                .filter(|change| change.change == ChangeKind::Update)
                .max_by_key(|change| change.accepted_at_ms)
        };

        self.catch_up()?;
        if let Some(found) = latest_update(self.uncommitted(&predicate, |_| true)) {
            return Ok(Some(found));
        }
        // Newest partitions first: the version is in one file, and recent versions are asked
        // for most.
        for partition in self.partitions_between(None, None)?.iter().rev() {
            if let Some(found) =
                latest_update(read_partition(partition, &predicate, Columns::Document)?)
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Returns the last change of `shadow` accepted at or before `at_ms`: the one with the
    /// highest [`ChangePosition`] among them. `None` if there is none.
    ///
    /// A delete as the result means that the shadow did not exist at `at_ms`.
    ///
    /// # Errors
    ///
    /// As [`changes`](Self::changes).
    pub fn change_at(
        &self,
        shadow: &ShadowKey,
        at_ms: i64,
    ) -> Result<Option<HistoryChange>, HistoryReadError> {
        let predicate = RowPredicate {
            thing_name: shadow.thing_name.clone(),
            shadow_name: shadow.shadow_name.clone(),
            versions: 0..=u64::MAX,
            accepted_at: i64::MIN..at_ms.saturating_add(1),
        };

        self.catch_up()?;
        let mut best = self
            .uncommitted(&predicate, |_| true)
            .into_iter()
            .max_by_key(HistoryChange::position);

        // Newest partitions first, down to one partition below the best change found so far.
        let last_date = utc_date(at_ms);
        for partition in self
            .partitions_between(None, Some(&last_date))?
            .iter()
            .rev()
        {
            if let Some(best) = &best
                && partition.date < utc_date(best.accepted_at_ms.saturating_sub(ORDER_SLACK_MS))
            {
                break;
            }
            for change in read_partition(partition, &predicate, Columns::Document)? {
                if best
                    .as_ref()
                    .is_none_or(|best| change.position() > best.position())
                {
                    best = Some(change);
                }
            }
        }
        Ok(best)
    }

    /// Waits until the writer has taken every row queued before this call.
    fn catch_up(&self) -> Result<(), HistoryReadError> {
        match &self.writer {
            None => Ok(()),
            Some(writer) => writer
                .sender
                .catch_up(self.catch_up_timeout)
                .map_err(|timeout| HistoryReadError::CatchUpTimedOut { timeout }),
        }
    }

    /// Returns the rows of open files that `predicate` admits and whose position `keep` accepts.
    fn uncommitted(
        &self,
        predicate: &RowPredicate,
        keep: impl Fn(ChangePosition) -> bool,
    ) -> Vec<HistoryChange> {
        let Some(writer) = &self.writer else {
            return Vec::new();
        };
        writer.shared.index.changes(
            &predicate.thing_name,
            predicate.shadow_name.as_deref(),
            |version, change, accepted_at_ms| {
                predicate.admits(version, accepted_at_ms)
                    && keep(ChangePosition {
                        version,
                        change,
                        accepted_at_ms,
                    })
            },
        )
    }

    /// Returns the partitions from `first_date` to `last_date`, both included, in date order.
    fn partitions_between(
        &self,
        first_date: Option<&str>,
        last_date: Option<&str>,
    ) -> Result<Vec<Partition>, HistoryReadError> {
        let mut partitions = list_partitions(&self.directory)?;
        partitions.retain(|partition| {
            first_date.is_none_or(|first| partition.date.as_str() >= first)
                && last_date.is_none_or(|last| partition.date.as_str() <= last)
        });
        Ok(partitions)
    }
}

/// Reads the matching rows of every committed file in `partition`.
fn read_partition(
    partition: &Partition,
    predicate: &RowPredicate,
    columns: Columns,
) -> Result<Vec<HistoryChange>, HistoryReadError> {
    let mut changes = Vec::new();
    for file in committed_files(&partition.path)? {
        changes.extend(read_matching(&file, predicate, columns)?);
    }
    Ok(changes)
}
