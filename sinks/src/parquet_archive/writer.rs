//! The archive writer thread.
//!
//! Rows and barriers travel from [`ArchiveSender`](super::ArchiveSender) through a bounded
//! `std::sync::mpsc` queue to one OS thread, which does all file I/O with blocking calls. Rows
//! are grouped into one open file per UTC date of `accepted_at`. A file is committed when it
//! reaches `max_file_rows`, when it is `max_file_age_ms` old, at a barrier, or when the writer
//! stops. Files that hold rows of a common write-ahead log are committed together, see
//! `commit.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use pipeline::history::{HistoryRow, LogPosition};
use tracing::{debug, error, info, warn};

use super::ArchiveConfig;
use super::barrier::{ArchiveBarrierError, BarrierReply};
use super::commit::{CommitFailure, Committer, FileGroup, group_of};
use super::file::{FileSettings, OpenFile, sync_directory};
use super::handle::{ArchiveHandle, Command};
use super::io_retry::{Shared, retry_io};
use super::layout::{FileNamer, MS_PER_DAY, partition_directory, utc_date};
use super::outcome::WriterOutcome;
use super::recovery::recover;
use super::schema::{history_schema, parquet_schema, writer_properties};
use super::watermark::{Admission, PositionFilter};
use crate::error::ArchiveError;

/// Commands that the writer takes from the queue between two reads of the clock.
const DRAIN_BATCH_COMMANDS: usize = 1024;

/// The UTC date of the latest row's day, so that rows of one day format their date once.
#[derive(Default)]
struct DateCache {
    /// Days since the Unix epoch, and that day's `YYYY-MM-DD`.
    last: Option<(i64, Arc<str>)>,
}

impl DateCache {
    /// Returns the UTC date of `epoch_ms` as `YYYY-MM-DD`.
    fn date_of(&mut self, epoch_ms: i64) -> Arc<str> {
        let day = epoch_ms.div_euclid(MS_PER_DAY);
        match &self.last {
            Some((cached_day, date)) if *cached_day == day => Arc::clone(date),
            _ => {
                let date: Arc<str> = utc_date(epoch_ms).into();
                self.last = Some((day, Arc::clone(&date)));
                date
            }
        }
    }
}

/// Writes history rows to the Parquet archive on its own OS thread.
///
/// Start it with [`ArchiveWriter::spawn`], feed it through
/// [`ArchiveSender`](super::ArchiveSender)s and stop it with [`ArchiveHandle::close`].
pub struct ArchiveWriter {
    directory: PathBuf,
    config: ArchiveConfig,
    settings: FileSettings,
    shared: Arc<Shared>,
    namer: FileNamer,
    /// Open files by UTC date (`YYYY-MM-DD`). Usually one, and two around midnight.
    open_files: BTreeMap<String, OpenFile>,
    dates: DateCache,
    committer: Committer,
    filter: PositionFilter,
    outcome: WriterOutcome,
}

impl ArchiveWriter {
    /// Creates `directory` if needed, recovers it with [`recover`](super::recover) and starts
    /// the writer thread.
    ///
    /// Recovery finishes the last commit and deletes in-progress files that were never
    /// committed. [`ArchiveHandle::recovery`] returns what it did and the watermark, which
    /// determines the logged rows that the service must send again.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveError::Config`] for invalid settings, [`ArchiveError::Io`] if the
    /// directory cannot be created or recovered, and [`ArchiveError::SpawnThread`] if the thread
    /// cannot start. A recovery error is wrapped in `ArchiveError::Io` as its source, see
    /// [`RecoveryError`](super::RecoveryError).
    pub fn spawn(
        directory: impl Into<PathBuf>,
        config: ArchiveConfig,
    ) -> Result<ArchiveHandle, ArchiveError> {
        let directory = directory.into();
        let properties = writer_properties(&config)?;
        let schema = history_schema();
        let parquet_schema = parquet_schema(&schema)
            .expect("the fixed history schema has only types that Parquet supports");

        fs::create_dir_all(&directory).map_err(|source| ArchiveError::Io {
            action: "creating archive directory",
            path: directory.clone(),
            source,
        })?;
        let recovery = recover(&directory).map_err(|error| error.into_archive_error())?;
        info!(
            directory = %directory.display(),
            renamed_files = recovery.renamed_files.len(),
            deleted_files = recovery.deleted_files.len(),
            logs = recovery.watermark.next_positions().count(),
            "archive recovered"
        );

        let (sender, receiver) = mpsc::sync_channel(config.queue_rows);
        let shared = Arc::new(Shared::new(recovery.watermark.clone()));
        let handle_directory = directory.clone();
        let writer = ArchiveWriter {
            committer: Committer::new(directory.clone(), recovery.watermark.clone()),
            filter: PositionFilter::new(&recovery.watermark),
            directory,
            settings: FileSettings {
                schema,
                parquet_schema,
                properties,
                row_group_rows: config.row_group_rows,
                row_group_bytes: config.row_group_bytes,
            },
            config,
            shared: Arc::clone(&shared),
            namer: FileNamer::new(),
            open_files: BTreeMap::new(),
            dates: DateCache::default(),
            outcome: WriterOutcome::default(),
        };

        let thread = thread::Builder::new()
            .name("archive-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(ArchiveError::SpawnThread)?;

        Ok(ArchiveHandle::new(
            &handle_directory,
            sender,
            shared,
            thread,
            recovery,
        ))
    }

    /// Receives rows and barriers until every sender is gone, then commits all open files.
    fn run(mut self, receiver: Receiver<Command>) -> WriterOutcome {
        info!(directory = %self.directory.display(), "archive writer started");

        loop {
            // Wake up for the oldest file's age limit even when no rows arrive.
            let received = match self.next_deadline() {
                Some(deadline) => {
                    receiver.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                }
                None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Take what else is queued before reading the clock, so that a busy writer reads
            // it once per batch instead of once per row. A file can then pass its age limit by
            // the time to append one batch, about a millisecond. A disconnected queue is found
            // by the `recv` above on the next turn.
            for command in receiver.try_iter().take(DRAIN_BATCH_COMMANDS) {
                self.handle(command);
            }
            self.commit_expired_files();
        }

        // A failure is already logged and kept for `close`.
        let _ = self.commit_all();
        for path in self.committer.unconfirmed_paths() {
            warn!(
                path = %path.display(),
                "committed archive file keeps its in-progress name until the next start"
            );
        }

        let stats = self.shared.counters.snapshot();
        info!(
            directory = %self.directory.display(),
            rows_written = stats.rows_written,
            files_closed = stats.files_closed,
            duplicates_dropped = stats.duplicates_dropped,
            rows_not_archived = self.outcome.rows_not_archived,
            "archive writer stopped"
        );
        self.outcome
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Row { row, position } => self.append(row, position),
            Command::Barrier(reply) => self.barrier(&reply),
            // Every row queued before it is in a file and in the index by now. The reader may
            // have given up waiting, which is allowed.
            Command::CatchUp(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Returns when the oldest open file reaches its age limit, or `None` if no file is open.
    fn next_deadline(&self) -> Option<Instant> {
        let max_age = self.config.max_file_age();
        // `checked_add` so that no configured age can panic on `Instant` overflow. A file whose
        // deadline does not fit in an `Instant` never expires by age.
        self.open_files
            .values()
            .filter_map(|file| file.opened_at().checked_add(max_age))
            .min()
    }

    fn append(&mut self, row: HistoryRow, position: Option<LogPosition>) {
        self.shared.counters.record_row_received();
        if let Some(position) = position
            && !self.admit(position)
        {
            return;
        }

        let date = self.dates.date_of(row.accepted_at_ms);
        if !self.open_files.contains_key(&*date) {
            match self.open_file(&date, row.accepted_at_ms) {
                Ok(file) => {
                    self.open_files.insert(date.to_string(), file);
                }
                Err(error) => {
                    if let Some(position) = position {
                        self.filter.record_loss(position);
                    }
                    self.record_failure(1, Vec::new(), error);
                    return;
                }
            }
        }

        let Some(file) = self.open_files.get_mut(&*date) else {
            return;
        };
        // Indexed before the push, which takes the row. A failed push gives up the file and
        // removes its rows from the index again.
        let index_bytes = self.shared.index.insert(file.in_progress_path(), &row);
        let pushed = file.push(row, position);
        let full = file.rows() >= self.config.max_file_rows;

        if let Err(error) = pushed {
            self.abandon_group(&date, error);
        } else if full {
            self.commit_group(&date);
        } else if index_bytes >= self.config.uncommitted_index_bytes {
            debug!(
                index_bytes,
                open_files = self.open_files.len(),
                "committing open archive files early because the uncommitted-row index is full"
            );
            // A failure is already logged and kept for `close`.
            let _ = self.commit_all();
        }
    }

    /// Returns whether to archive the row at `position`, counting and logging the rows it drops.
    fn admit(&mut self, position: LogPosition) -> bool {
        match self.filter.admit(position) {
            Admission::Accept => true,
            Admission::Duplicate { next_lsn } => {
                self.shared.counters.record_duplicate_dropped();
                debug!(
                    generation = position.generation,
                    worker = position.worker,
                    lsn = position.lsn,
                    next_lsn,
                    "dropping archive row whose log position the archive already contains"
                );
                false
            }
            Admission::AfterLoss { lost_from } => {
                self.outcome.record_held_back(position, lost_from);
                false
            }
        }
    }

    /// Creates the partition folder if needed and opens a new file in it.
    fn open_file(&mut self, date: &str, first_row_ms: i64) -> Result<OpenFile, ArchiveError> {
        let partition = partition_directory(&self.directory, date);
        if !partition.is_dir() {
            retry_io(
                &self.shared,
                "creating partition folder",
                &partition,
                || fs::create_dir_all(&partition),
            )
            .map_err(|source| ArchiveError::Io {
                action: "creating partition folder",
                path: partition.clone(),
                source,
            })?;
            if let Err(error) = sync_directory(&self.directory) {
                self.shared.counters.record_io_error();
                error!(
                    path = %self.directory.display(),
                    error = &error as &dyn std::error::Error,
                    "archive folder sync failed"
                );
            }
        }

        let paths = self.namer.next_paths(&partition, first_row_ms);
        OpenFile::create(paths, &self.settings, &self.shared)
    }

    fn commit_expired_files(&mut self) {
        let now = Instant::now();
        let max_age = self.config.max_file_age();
        let expired: Vec<String> = self
            .open_files
            .iter()
            .filter(|(_, file)| now.saturating_duration_since(file.opened_at()) >= max_age)
            .map(|(date, _)| date.clone())
            .collect();

        for date in expired {
            // An earlier group in this loop may have committed this file already.
            if self.open_files.contains_key(&date) {
                self.commit_group(&date);
            }
        }
    }

    /// Commits every open file and replies to the barrier.
    fn barrier(&mut self, reply: &mpsc::Sender<BarrierReply>) {
        let unfinished_files = match self.commit_all() {
            Ok(()) => Vec::new(),
            Err(in_progress_paths) => in_progress_paths,
        };
        let lost_from = self.filter.lost_positions();
        let watermark = self.committer.watermark().clone();

        let result = if unfinished_files.is_empty() && lost_from.is_empty() {
            Ok(watermark)
        } else {
            Err(ArchiveBarrierError::RowsNotArchived {
                unfinished_files,
                lost_from,
                watermark,
            })
        };
        // The caller may have dropped its `ArchiveBarrier` without waiting, which is allowed.
        let _ = reply.send(result);
    }

    /// Commits every open file as one group. Returns the in-progress paths if that fails.
    fn commit_all(&mut self) -> Result<(), Vec<PathBuf>> {
        let dates: Vec<String> = self.open_files.keys().cloned().collect();
        self.commit_dates(&dates)
    }

    /// Commits the file of `date` with every open file that shares a log with it.
    fn commit_group(&mut self, date: &str) {
        let dates = group_of(&self.open_files, date);
        // A failure is already logged and kept for `close`.
        let _ = self.commit_dates(&dates);
    }

    fn commit_dates(&mut self, dates: &[String]) -> Result<(), Vec<PathBuf>> {
        let files: Vec<OpenFile> = dates
            .iter()
            .filter_map(|date| self.open_files.remove(date))
            .collect();
        if files.is_empty() {
            return Ok(());
        }

        self.committer
            .commit(files, &self.shared)
            .map_err(|failure| {
                let paths = failure.group.in_progress_paths.clone();
                self.record_commit_failure(*failure);
                paths
            })
    }

    /// Gives up the file of `date` after `error`, with every open file that shares a log with
    /// it. Committing those others could advance the watermark past the lost rows.
    fn abandon_group(&mut self, date: &str, error: ArchiveError) {
        let files: Vec<OpenFile> = group_of(&self.open_files, date)
            .iter()
            .filter_map(|date| self.open_files.remove(date))
            .collect();
        let group = FileGroup::of(&files);
        // Dropping the writers closes the in-progress files without a footer.
        drop(files);
        self.record_commit_failure(CommitFailure { group, error });
    }

    fn record_commit_failure(&mut self, failure: CommitFailure) {
        for ranges in &failure.group.log_ranges {
            self.filter.record_lost_ranges(ranges);
        }
        for path in &failure.group.in_progress_paths {
            self.shared.index.remove_file(path);
        }
        self.record_failure(
            failure.group.rows,
            failure.group.in_progress_paths,
            failure.error,
        );
    }

    fn record_failure(&mut self, rows: u64, in_progress_paths: Vec<PathBuf>, error: ArchiveError) {
        let lost_from = self.filter.lost_positions();
        self.outcome
            .record_failure(rows, in_progress_paths, &lost_from, error);
    }
}
