//! Retries of failed file-system calls, so that a full disk stalls the archive instead of losing
//! rows.
//!
//! The Parquet writer cannot repeat a row group whose write failed, because it has already
//! dropped the encoded pages. This module retries one level lower: [`RetryingFile`] repeats the
//! failed `write` call itself. On Linux, a `write` that returns an error has not moved the file
//! offset (a partial write returns a count instead), so the repeated call continues the file
//! exactly where it stopped and the Parquet writer never receives the error.
//!
//! Each failure is logged at ERROR and counted. The delay between attempts doubles from
//! [`FIRST_RETRY_DELAY`] up to [`MAX_RETRY_DELAY`]. Retries go on until the call succeeds, or
//! until `ArchiveHandle::close` has been called and [`CLOSE_RETRY_ATTEMPTS`] retries after that
//! have failed too. While the writer thread waits, rows pile up in the bounded queue and
//! `ArchiveSender::send` blocks, so the dataflow slows down instead of dropping rows.
//!
//! # Notes
//!
//! - `fsync` is not retried. After a failed `fsync`, Linux may mark the unwritten pages clean,
//!   so a second `fsync` can succeed although the data never reached the disk.
//! - `AlreadyExists` and `InvalidInput` are returned at once, because a retry cannot fix them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tracing::{error, info};

use super::index::UncommittedIndex;
use super::stats::ArchiveCounters;
use super::watermark::ArchiveWatermark;

/// Delay before the first retry of a failed call.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Maximum delay between two attempts of one call.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Maximum delay between attempts once the archive is closing.
const CLOSING_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Retries of a failing call once `ArchiveHandle::close` has been called. After this many, the
/// call returns its error.
pub const CLOSE_RETRY_ATTEMPTS: u32 = 3;

/// State shared by the archive handle, its senders and the writer thread.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Counters for metrics, shared with `ArchiveHandle::counters`.
    pub(super) counters: Arc<ArchiveCounters>,

    /// Rows of the open files, for history readers.
    pub(super) index: UncommittedIndex,

    /// Whether `ArchiveHandle::close` has been called, which limits further retries.
    closing: AtomicBool,

    /// Copy of the committed watermark for `ArchiveHandle::watermark`. The writer thread owns
    /// the real one and replaces this copy after each commit, at most a few times a minute, so
    /// a std `Mutex` held only to clone or replace it costs nothing measurable.
    watermark: Mutex<ArchiveWatermark>,
}

impl Shared {
    /// Creates the shared state of a writer whose committed watermark is `watermark`.
    pub(super) fn new(watermark: ArchiveWatermark) -> Self {
        Self {
            watermark: Mutex::new(watermark),
            ..Self::default()
        }
    }

    /// Returns a copy of the committed watermark.
    pub(super) fn watermark(&self) -> ArchiveWatermark {
        // Only whole values are stored, so a poisoned lock still holds a valid watermark.
        self.watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the copy of the committed watermark.
    pub(super) fn set_watermark(&self, watermark: ArchiveWatermark) {
        *self
            .watermark
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = watermark;
    }

    /// Marks the archive as closing. The caller should also unpark the writer thread, so that a
    /// retry delay in progress ends early.
    pub(super) fn start_closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Returns whether `ArchiveHandle::close` has been called.
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// Runs `call` until it succeeds, retrying failures as described in the module docs.
///
/// `action` and `path` name the call in logs, for example `"writing"` and the file.
///
/// # Errors
///
/// Returns the last error once the archive is closing and [`CLOSE_RETRY_ATTEMPTS`] retries after
/// that have failed too, or at once for errors that a retry cannot fix.
pub(super) fn retry_io<T>(
    shared: &Shared,
    action: &'static str,
    path: &Path,
    mut call: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut failures: u64 = 0;
    let mut failures_while_closing: u32 = 0;
    let mut delay = FIRST_RETRY_DELAY;

    loop {
        let error = match call() {
            Ok(value) => {
                if failures > 0 {
                    info!(path = %path.display(), action, failures, "archive I/O succeeded after retries");
                }
                return Ok(value);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => error,
        };

        failures += 1;
        shared.counters.record_io_error();
        if matches!(
            error.kind(),
            io::ErrorKind::AlreadyExists | io::ErrorKind::InvalidInput
        ) {
            return Err(error);
        }

        if shared.is_closing() {
            failures_while_closing += 1;
            if failures_while_closing > CLOSE_RETRY_ATTEMPTS {
                error!(path = %path.display(), action, failures, error = %error, "archive I/O failed while closing, giving up");
                return Err(error);
            }
            delay = delay.min(CLOSING_RETRY_DELAY);
        }

        error!(
            path = %path.display(),
            action,
            failures,
            retry_in_ms = delay.as_millis() as u64,
            error = %error,
            "archive I/O failed, retrying while rows wait in the queue"
        );
        // `ArchiveHandle::close` unparks this thread, which ends the wait early.
        thread::park_timeout(delay);
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// A file, or another writer in tests, whose failed writes are retried by [`retry_io`].
#[derive(Debug)]
pub(super) struct RetryingFile<W = File> {
    file: W,
    path: PathBuf,
    shared: Arc<Shared>,
}

impl<W: Write> RetryingFile<W> {
    /// Wraps `file`, which is logged as `path`.
    pub(super) fn new(file: W, path: PathBuf, shared: Arc<Shared>) -> Self {
        Self { file, path, shared }
    }
}

impl RetryingFile<File> {
    /// Creates `path`, which must not exist yet, retrying failures by [`retry_io`].
    pub(super) fn create_new(path: PathBuf, shared: Arc<Shared>) -> io::Result<Self> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let file = retry_io(&shared, "creating in-progress file", &path, || {
            options.open(&path)
        })?;
        Ok(Self::new(file, path, shared))
    }

    /// Flushes the file's data and metadata to the disk, without retries.
    pub(super) fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl<W: Write> Write for RetryingFile<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = &mut self.file;
        // A single `write` call, not `write_all`, so that a partial write returns its count and
        // a retry repeats only the failed call.
        retry_io(&self.shared, "writing", &self.path, || file.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        let file = &mut self.file;
        retry_io(&self.shared, "flushing", &self.path, || file.flush())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Results to return from successive calls.
    fn scripted(results: Vec<io::Result<u32>>) -> impl FnMut() -> io::Result<u32> {
        let mut results = VecDeque::from(results);
        move || results.pop_front().expect("no more scripted results")
    }

    fn storage_full() -> io::Error {
        io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
    }

    #[test]
    fn retry_io_repeats_until_success() {
        let shared = Shared::default();
        let call = scripted(vec![Err(storage_full()), Err(storage_full()), Ok(7)]);

        let result = retry_io(&shared, "writing", Path::new("/archive/file"), call);

        assert_eq!(result.expect("third attempt succeeds"), 7);
        assert_eq!(shared.counters.io_errors(), 2);
    }

    #[test]
    fn retry_io_gives_up_while_closing() {
        let shared = Shared::default();
        shared.start_closing();
        let attempts = CLOSE_RETRY_ATTEMPTS as usize + 1;
        let call = scripted((0..attempts).map(|_| Err(storage_full())).collect());

        let result = retry_io(&shared, "writing", Path::new("/archive/file"), call);

        let error = result.expect_err("every attempt fails");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert_eq!(shared.counters.io_errors(), attempts as u64);
    }

    #[test]
    fn retry_io_returns_already_exists_at_once() {
        let shared = Shared::default();
        let call = scripted(vec![Err(io::Error::from(io::ErrorKind::AlreadyExists))]);

        let result = retry_io(&shared, "creating", Path::new("/archive/file"), call);

        let error = result.expect_err("AlreadyExists is not retried");
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn retry_io_repeats_interrupted_without_counting() {
        let shared = Shared::default();
        let call = scripted(vec![
            Err(io::Error::from(io::ErrorKind::Interrupted)),
            Ok(1),
        ]);

        let result = retry_io(&shared, "writing", Path::new("/archive/file"), call);

        assert_eq!(result.expect("second attempt succeeds"), 1);
        assert_eq!(shared.counters.io_errors(), 0);
    }
}
