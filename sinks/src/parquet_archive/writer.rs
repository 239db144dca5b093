//! The archive writer thread.
//!
//! Rows travel from [`ArchiveSender::send`](super::ArchiveSender::send) through a bounded
//! `std::sync::mpsc` queue to one OS thread, which does all file I/O with blocking calls. Rows
//! are grouped into one open file per UTC date of `accepted_at`. A file is finished when it
//! reaches `max_file_rows`, when it is `max_file_age_ms` old, or when the writer stops.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Instant;

use pipeline::history::HistoryRow;
use tracing::{error, info, warn};

use super::ArchiveConfig;
use super::file::{FileSettings, OpenFile, sync_directory};
use super::handle::ArchiveHandle;
use super::io_retry::{Shared, retry_io};
use super::layout::{FileNamer, find_in_progress_files, partition_directory, utc_date};
use super::schema::{history_schema, parquet_schema, writer_properties};
use crate::error::ArchiveError;

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
    outcome: WriterOutcome,
}

/// Failures that the writer thread reports to `ArchiveHandle::close`.
#[derive(Debug, Default)]
pub(super) struct WriterOutcome {
    /// Failed files and rows, counting each failure once.
    failures: u64,
    pub(super) first_error: Option<ArchiveError>,
    pub(super) unfinished_files: Vec<PathBuf>,
    pub(super) rows_not_archived: u64,
}

impl ArchiveWriter {
    /// Creates `directory` if needed, warns about unfinished files from an earlier run and starts
    /// the writer thread.
    ///
    /// Unfinished files (`.*.parquet.inprogress`) are left in place and logged at WARN, one line
    /// each. Readers ignore them because of their hidden name.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveError::Config`] for invalid settings, [`ArchiveError::Io`] if the
    /// directory cannot be created or listed, and [`ArchiveError::SpawnThread`] if the thread
    /// cannot start.
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
        warn_about_in_progress_files(&directory)?;

        let (sender, receiver) = mpsc::sync_channel(config.queue_rows);
        let shared = Arc::new(Shared::default());
        let writer = ArchiveWriter {
            directory,
            config,
            settings: FileSettings {
                schema,
                parquet_schema,
                properties,
            },
            shared: Arc::clone(&shared),
            namer: FileNamer::new(),
            open_files: BTreeMap::new(),
            outcome: WriterOutcome::default(),
        };

        let thread = thread::Builder::new()
            .name("archive-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(ArchiveError::SpawnThread)?;

        Ok(ArchiveHandle::new(sender, shared, thread))
    }

    /// Receives rows until every sender is gone, then finishes all open files.
    fn run(mut self, receiver: Receiver<HistoryRow>) -> WriterOutcome {
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
                Ok(row) => self.append(row),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.finish_expired_files();
        }

        let dates: Vec<String> = self.open_files.keys().cloned().collect();
        for date in dates {
            self.finish_file(&date);
        }

        let stats = self.shared.counters.snapshot();
        info!(
            directory = %self.directory.display(),
            rows_written = stats.rows_written,
            files_closed = stats.files_closed,
            rows_not_archived = self.outcome.rows_not_archived,
            "archive writer stopped"
        );
        self.outcome
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

    fn append(&mut self, row: HistoryRow) {
        self.shared.counters.record_row_received();

        let date = utc_date(row.accepted_at_ms);
        if !self.open_files.contains_key(&date) {
            match self.open_file(&date, row.accepted_at_ms) {
                Ok(file) => {
                    self.open_files.insert(date.clone(), file);
                }
                Err(error) => {
                    self.record_failure(1, None, error);
                    return;
                }
            }
        }

        let Some(file) = self.open_files.get_mut(&date) else {
            return;
        };
        let pushed = file.push(row);
        let full = file.rows() >= self.config.max_file_rows;

        if let Err(error) = pushed {
            if let Some(file) = self.open_files.remove(&date) {
                let path = file.in_progress_path().to_path_buf();
                self.record_failure(file.rows(), Some(path), error);
            }
        } else if full {
            self.finish_file(&date);
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

    fn finish_expired_files(&mut self) {
        let now = Instant::now();
        let max_age = self.config.max_file_age();
        let expired: Vec<String> = self
            .open_files
            .iter()
            .filter(|(_, file)| now.saturating_duration_since(file.opened_at()) >= max_age)
            .map(|(date, _)| date.clone())
            .collect();

        for date in expired {
            self.finish_file(&date);
        }
    }

    fn finish_file(&mut self, date: &str) {
        let Some(file) = self.open_files.remove(date) else {
            return;
        };
        if let Err(failed) = file.finish(&self.shared) {
            self.record_failure(failed.rows, Some(failed.in_progress_path), failed.error);
        }
    }

    /// Logs a file or row that could not be archived and keeps it for `ArchiveHandle::close`.
    ///
    /// Every I/O failure except `AlreadyExists` and `InvalidInput` is retried until it succeeds
    /// while the writer runs. So failures recorded before close come from a file in the way of a
    /// partition folder, a name collision, a failed `fsync` or the Parquet encoder. During close,
    /// retries also give up. Later rows still go to new files, which fail the same way if the
    /// disk is still full. The Parquet writer writes to its file only when a row group or the
    /// file ends, so that costs a few retry rounds per open file, not one per row.
    ///
    /// NOTE: the give-up during close is tested on `retry_io` alone. No test makes the disk fail
    /// under a running writer.
    fn record_failure(
        &mut self,
        rows: u64,
        in_progress_path: Option<PathBuf>,
        error: ArchiveError,
    ) {
        self.outcome.failures += 1;
        self.outcome.rows_not_archived += rows;
        let rows_not_archived = self.outcome.rows_not_archived;

        match &in_progress_path {
            Some(path) => error!(
                path = %path.display(),
                rows,
                rows_not_archived,
                error = &error as &dyn std::error::Error,
                "archive file not finished, it stays under its in-progress name"
            ),
            // Rows that fail one at a time would flood the log, so log the 1st, 2nd, 4th, ...
            None if self.outcome.failures.is_power_of_two() => error!(
                rows,
                rows_not_archived,
                error = &error as &dyn std::error::Error,
                "archive rows not written"
            ),
            None => {}
        }

        if let Some(path) = in_progress_path {
            self.outcome.unfinished_files.push(path);
        }
        self.outcome.first_error.get_or_insert(error);
    }
}

fn warn_about_in_progress_files(directory: &Path) -> Result<(), ArchiveError> {
    let unfinished = find_in_progress_files(directory).map_err(|source| ArchiveError::Io {
        action: "listing archive directory",
        path: directory.to_path_buf(),
        source,
    })?;
    for path in unfinished {
        warn!(
            path = %path.display(),
            "found unfinished archive file from an earlier run, leaving it in place unread"
        );
    }
    Ok(())
}
