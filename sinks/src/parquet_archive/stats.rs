//! Counters of the archive writer, readable from any thread for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of what the archive writer has done, as returned by `ArchiveHandle::close`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Rows that the writer took from the queue.
    pub rows_received: u64,
    /// Rows in finished files, which readers can see.
    pub rows_written: u64,
    /// Files finished and renamed to their `.parquet` name.
    pub files_closed: u64,
    /// Size of the finished files in bytes.
    pub bytes_written: u64,
    /// Failed file-system calls, counting each retry of the same call.
    pub io_errors: u64,
    /// Logged rows dropped because the archive already held their log position.
    pub duplicates_dropped: u64,
}

/// Live counters of one archive writer.
///
/// The writer thread updates them with relaxed atomics, so a reader may see one counter updated
/// before another (for example `files_closed` before `rows_written`).
#[derive(Debug, Default)]
pub struct ArchiveCounters {
    rows_received: AtomicU64,
    rows_written: AtomicU64,
    files_closed: AtomicU64,
    bytes_written: AtomicU64,
    io_errors: AtomicU64,
    duplicates_dropped: AtomicU64,
}

impl ArchiveCounters {
    /// Rows that the writer took from the queue.
    pub fn rows_received(&self) -> u64 {
        self.rows_received.load(Ordering::Relaxed)
    }

    /// Rows in finished files, which readers can see.
    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }

    /// Files finished and renamed to their `.parquet` name.
    pub fn files_closed(&self) -> u64 {
        self.files_closed.load(Ordering::Relaxed)
    }

    /// Size of the finished files in bytes.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Failed file-system calls, counting each retry of the same call.
    pub fn io_errors(&self) -> u64 {
        self.io_errors.load(Ordering::Relaxed)
    }

    /// Logged rows dropped because the archive already held their log position.
    pub fn duplicates_dropped(&self) -> u64 {
        self.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Returns a snapshot of all counters.
    pub fn snapshot(&self) -> ArchiveStats {
        ArchiveStats {
            rows_received: self.rows_received(),
            rows_written: self.rows_written(),
            files_closed: self.files_closed(),
            bytes_written: self.bytes_written(),
            io_errors: self.io_errors(),
            duplicates_dropped: self.duplicates_dropped(),
        }
    }

    pub(super) fn record_row_received(&self) {
        self.rows_received.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_file_closed(&self, rows: u64, bytes: u64) {
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.files_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_io_error(&self) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn record_duplicate_dropped(&self) {
        self.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
    }
}
