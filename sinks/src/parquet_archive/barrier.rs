//! Archive barriers: wait until every row sent before the barrier is in a committed file.
//!
//! [`ArchiveSender::barrier`](super::ArchiveSender::barrier) queues a barrier behind the rows
//! already queued. The writer thread handles it in queue order: it commits every open file,
//! even a small one, and replies with the cumulative watermark. A checkpoint uses the reply to
//! learn which write-ahead log records it may drop.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use pipeline::history::LogPosition;

use super::watermark::ArchiveWatermark;

/// Reply of the writer thread to one barrier.
pub(super) type BarrierReply = Result<ArchiveWatermark, ArchiveBarrierError>;

/// A barrier queued to the archive writer, from
/// [`ArchiveSender::barrier`](super::ArchiveSender::barrier).
///
/// Dropping it without waiting still makes the writer commit its open files.
#[derive(Debug)]
pub struct ArchiveBarrier {
    reply: Receiver<BarrierReply>,
}

impl ArchiveBarrier {
    pub(super) fn new(reply: Receiver<BarrierReply>) -> Self {
        Self { reply }
    }

    /// Blocks until the writer has handled the barrier, and returns the watermark after the
    /// commit.
    ///
    /// NOTE: while the disk is full the writer retries without limit, see the `io_retry` module
    /// docs, so this can block for as long. Use [`wait_timeout`](Self::wait_timeout) to bound
    /// the wait.
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveBarrierError::RowsNotArchived`] if some rows sent before the barrier
    /// are in no committed file, and [`ArchiveBarrierError::WriterStopped`] if the writer
    /// thread stopped before it replied.
    pub fn wait(self) -> Result<ArchiveWatermark, ArchiveBarrierError> {
        self.reply
            .recv()
            .unwrap_or(Err(ArchiveBarrierError::WriterStopped))
    }

    /// Waits at most `timeout` for the writer to handle the barrier. After
    /// [`ArchiveBarrierError::TimedOut`], call it again to keep waiting.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), plus [`ArchiveBarrierError::TimedOut`]. A call after the reply
    /// has been returned once returns [`ArchiveBarrierError::WriterStopped`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<ArchiveWatermark, ArchiveBarrierError> {
        match self.reply.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Err(ArchiveBarrierError::TimedOut { timeout }),
            Err(RecvTimeoutError::Disconnected) => Err(ArchiveBarrierError::WriterStopped),
        }
    }
}

/// Failure of an archive barrier.
///
/// NOTE: this type belongs in the crate's `error.rs`, next to the other archive errors.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveBarrierError {
    /// The writer has stopped, because the archive was closed or its thread panicked.
    #[error("the archive writer has stopped, so it did not handle the barrier")]
    WriterStopped,

    /// The writer did not reply within the timeout of
    /// [`ArchiveBarrier::wait_timeout`].
    #[error("the archive writer did not handle the barrier within {timeout:?}, wait again")]
    TimedOut {
        /// The timeout that passed.
        timeout: Duration,
    },

    /// Some rows sent before the barrier are in no committed file: committing the open files
    /// failed, or an earlier failure lost rows of a log in this run.
    ///
    /// Keep the write-ahead log from the positions in `lost_from` on. The writer does not
    /// archive later rows of those logs until a restart, whose recovery re-sends them.
    #[error(
        "rows sent before the archive barrier are in no committed file ({} files not committed, \
         {} logs with lost rows), keep the write-ahead log and see the archive writer's ERROR logs",
        unfinished_files.len(),
        lost_from.len()
    )]
    RowsNotArchived {
        /// In-progress files that the barrier's commit could not commit.
        unfinished_files: Vec<PathBuf>,
        /// First lost position of each log with lost rows.
        lost_from: Vec<LogPosition>,
        /// Watermark of the last successful commit. It covers no lost row.
        watermark: ArchiveWatermark,
    },
}
