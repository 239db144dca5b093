//! The archive writer thread, the handle that closes it and the senders that feed it.
//!
//! Rows travel from [`ArchiveSender::send`] through a bounded `std::sync::mpsc` queue to one OS
//! thread, which does all file I/O with blocking calls. Rows are grouped into one open file per
//! UTC date of `accepted_at`. A file is finished when it reaches `max_file_rows`, when it is
//! `max_file_age_ms` old, or when the writer stops.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SendError, SyncSender};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use pipeline::history::HistoryRow;
use tracing::{error, info, warn};

use super::ArchiveConfig;
use super::file::{FileSettings, OpenFile, sync_directory};
use super::io_retry::{Shared, retry_io};
use super::layout::{FileNamer, find_in_progress_files, partition_directory, utc_date};
use super::schema::{history_schema, parquet_schema, writer_properties};
use super::stats::{ArchiveCounters, ArchiveStats};
use crate::error::{ArchiveError, ArchiveSendError};

/// The queue end that every [`ArchiveSender`] clone and the [`ArchiveHandle`] share.
///
/// `ArchiveHandle::close` takes the sender out under the write lock. Each send holds the read
/// lock while it queues its row, so once `close` holds the write lock, every send that succeeded
/// has its row in the queue, and the writer thread drains the queue before it stops.
type SharedQueue = Arc<RwLock<Option<SyncSender<HistoryRow>>>>;

/// Writes history rows to the Parquet archive on its own OS thread.
///
/// Start it with [`ArchiveWriter::spawn`], feed it through [`ArchiveSender`]s and stop it with
/// [`ArchiveHandle::close`].
pub struct ArchiveWriter {
    directory: PathBuf,
    config: ArchiveConfig,
    settings: FileSettings,
    shared: Arc<Shared>,
    namer: FileNamer,
    /// Open files by UTC date (`YYYY-MM-DD`). Usually one, and two around midnight.
    open_files: BTreeMap<String, OpenFile>,
    /// Whether the writer discards further rows because a write gave up during close.
    stopped_writing: bool,
    outcome: WriterOutcome,
}

/// Failures that the writer thread reports to `ArchiveHandle::close`.
#[derive(Debug, Default)]
struct WriterOutcome {
    first_error: Option<ArchiveError>,
    unfinished_files: Vec<PathBuf>,
    rows_not_archived: u64,
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
            stopped_writing: false,
            outcome: WriterOutcome::default(),
        };

        let thread = thread::Builder::new()
            .name("archive-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(ArchiveError::SpawnThread)?;

        Ok(ArchiveHandle {
            sender: ArchiveSender {
                queue: Arc::new(RwLock::new(Some(sender))),
            },
            shared,
            thread,
        })
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

    /// Returns when the oldest open file reaches its age limit.
    fn next_deadline(&self) -> Option<Instant> {
        let max_age = self.config.max_file_age();
        self.open_files
            .values()
            .map(|file| file.opened_at() + max_age)
            .min()
    }

    fn append(&mut self, row: HistoryRow) {
        self.shared.counters.record_row_received();
        if self.stopped_writing {
            self.outcome.rows_not_archived += 1;
            return;
        }

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
            retry_io(&self.shared, "creating partition folder", &partition, || {
                fs::create_dir_all(&partition)
            })
            .map_err(|source| ArchiveError::Io {
                action: "creating partition folder",
                path: partition.clone(),
                source,
            })?;
            if let Err(error) = sync_directory(&self.directory) {
                self.shared.counters.record_io_error();
                error!(path = %self.directory.display(), error = %error, "archive folder sync failed");
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
            .filter(|(_, file)| file.opened_at() + max_age <= now)
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
    /// Outside of close, every I/O failure is retried until it succeeds, so failures recorded
    /// here come from a close that gave up, from a name collision or from the Parquet encoder.
    /// A close that gave up stops all further writing, so that it does not wait for every
    /// remaining row to fail in turn.
    fn record_failure(&mut self, rows: u64, in_progress_path: Option<PathBuf>, error: ArchiveError) {
        let path = in_progress_path.as_deref().unwrap_or(Path::new(""));
        error!(
            path = %path.display(),
            rows,
            error = %error,
            "archive rows not archived, they stay in the unfinished file if one exists"
        );

        self.outcome.rows_not_archived += rows;
        if let Some(path) = in_progress_path {
            self.outcome.unfinished_files.push(path);
        }
        if self.shared.is_closing() {
            self.stopped_writing = true;
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

/// A cloneable sender of rows to the archive writer, usable from many threads.
///
/// The queue is bounded by `ArchiveConfig::queue_rows`. A bounded queue with backpressure keeps
/// memory bounded when the disk is slow or full, and never drops a row: while the queue is full,
/// [`send`](Self::send) blocks until the writer catches up.
#[derive(Clone, Debug)]
pub struct ArchiveSender {
    queue: SharedQueue,
}

impl ArchiveSender {
    /// Queues `row` for the archive, blocking while the queue is full.
    ///
    /// NOTE: call this from a dataflow worker or another OS thread, or from
    /// `tokio::task::spawn_blocking`. In an async task, a full queue blocks a runtime thread.
    ///
    /// # Errors
    ///
    /// Returns the row inside [`ArchiveSendError::WriterStopped`] after `ArchiveHandle::close`
    /// or if the writer thread has panicked, and inside
    /// [`ArchiveSendError::VersionOutOfRange`] if its version is above `i64::MAX`.
    pub fn send(&self, row: HistoryRow) -> Result<(), ArchiveSendError> {
        if i64::try_from(row.version).is_err() {
            return Err(ArchiveSendError::VersionOutOfRange(Box::new(row)));
        }

        // The read lock only guards the `Option`, so a poisoned lock holds valid data.
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = queue.as_ref() else {
            return Err(ArchiveSendError::WriterStopped(Box::new(row)));
        };
        sender
            .send(row)
            .map_err(|SendError(row)| ArchiveSendError::WriterStopped(Box::new(row)))
    }
}

/// Owner of a running archive writer: hands out senders, reads counters and closes the writer.
///
/// The writer thread also stops when this handle and every [`ArchiveSender`] are dropped: it
/// drains the queue and finishes its files, but nobody waits for it or sees its errors, and the
/// process may exit first. Call [`close`](Self::close) before exit instead.
#[derive(Debug)]
pub struct ArchiveHandle {
    sender: ArchiveSender,
    shared: Arc<Shared>,
    thread: JoinHandle<WriterOutcome>,
}

impl ArchiveHandle {
    /// Returns a new sender of rows to this writer.
    pub fn sender(&self) -> ArchiveSender {
        self.sender.clone()
    }

    /// Returns the live counters, which stay readable after `close`.
    pub fn counters(&self) -> Arc<ArchiveCounters> {
        Arc::clone(&self.shared.counters)
    }

    /// Rows in finished files so far.
    pub fn rows_written(&self) -> u64 {
        self.shared.counters.rows_written()
    }

    /// Files finished so far.
    pub fn files_closed(&self) -> u64 {
        self.shared.counters.files_closed()
    }

    /// Stops the writer after it has written every row sent so far, and waits for it.
    ///
    /// Every open file gets its footer, is synced, renamed to its `.parquet` name, and its
    /// folder is synced. Later calls to [`ArchiveSender::send`] return an error.
    ///
    /// A failing file-system call is retried [`CLOSE_RETRY_ATTEMPTS`](super::CLOSE_RETRY_ATTEMPTS)
    /// more times, about half a second apart. After that the writer gives up: it keeps
    /// unfinished files on disk under their in-progress names, counts the rows that are in no
    /// finished file and returns them in the error.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveError::Incomplete`] if any rows are not in a finished file, and
    /// [`ArchiveError::WriterPanicked`] if the writer thread panicked.
    pub fn close(self) -> Result<ArchiveStats, ArchiveError> {
        self.shared.start_closing();
        self.thread.thread().unpark();

        // Dropping the only `SyncSender` disconnects the queue once the writer has drained it.
        let sender = self
            .sender
            .queue
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(sender);

        let outcome = self
            .thread
            .join()
            .map_err(|_| ArchiveError::WriterPanicked)?;
        let stats = self.shared.counters.snapshot();

        match outcome.first_error {
            None => Ok(stats),
            Some(first_error) => Err(ArchiveError::Incomplete {
                stats,
                rows_not_archived: outcome.rows_not_archived,
                unfinished_files: outcome.unfinished_files,
                first_error: Box::new(first_error),
            }),
        }
    }
}
