//! The handle that owns a running archive writer, and the senders that feed it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SendError, SyncSender, TrySendError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pipeline::history::{HistoryRow, LogPosition};

use super::barrier::{ArchiveBarrier, ArchiveBarrierError, BarrierReply};
use super::io_retry::Shared;
use super::outcome::WriterOutcome;
use super::reader::HistoryReader;
use super::recovery::ArchiveRecovery;
use super::stats::{ArchiveCounters, ArchiveStats};
use super::watermark::ArchiveWatermark;
use crate::error::{ArchiveError, ArchiveSendError};

/// Maximum pause between attempts to queue a catch-up message while the queue is full.
const MAX_CATCH_UP_RETRY_DELAY: Duration = Duration::from_millis(10);

/// A message from a sender to the writer thread.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a row, so boxing rows would add one allocation per row \
              to spare the rare barrier some queue space"
)]
pub(super) enum Command {
    /// A row to archive, with its write-ahead log position if it has one.
    Row {
        row: HistoryRow,
        position: Option<LogPosition>,
    },
    /// Commit every open file, then reply on the channel.
    Barrier(mpsc::Sender<BarrierReply>),
    /// Reply at once: every row queued before is then in an open or committed file.
    CatchUp(mpsc::Sender<()>),
}

/// The queue end that every [`ArchiveSender`] clone and the [`ArchiveHandle`] share.
///
/// `ArchiveHandle::close` takes the sender out under the write lock. Each send holds the read
/// lock while it queues its row, so once `close` holds the write lock, every send that succeeded
/// has its row in the queue, and the writer thread drains the queue before it stops.
type SharedQueue = Arc<RwLock<Option<SyncSender<Command>>>>;

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
    /// Queues `row`, which has no write-ahead log position, for the archive, blocking while the
    /// queue is full. Such rows do not change the watermark.
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
        self.queue_row(row, None)
    }

    /// Queues `row`, logged in the write-ahead log at `position`, for the archive, blocking
    /// while the queue is full.
    ///
    /// The rows of one log must be sent in lsn order. The writer drops a row whose lsn is not
    /// above the last lsn it took from that log, or below the recovered watermark, and counts
    /// it in [`ArchiveCounters::duplicates_dropped`]. So re-sending log records after a restart
    /// archives each row once.
    ///
    /// NOTE: as [`send`](Self::send), this blocks and belongs on an OS thread.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_logged(
        &self,
        row: HistoryRow,
        position: LogPosition,
    ) -> Result<(), ArchiveSendError> {
        self.queue_row(row, Some(position))
    }

    /// Queues a barrier behind every row queued so far, blocking while the queue is full.
    ///
    /// The writer commits all its open files when it reaches the barrier, even small ones, and
    /// replies with the watermark. If no file is open, it replies at once. Wait for the reply
    /// with [`ArchiveBarrier::wait`] or [`ArchiveBarrier::wait_timeout`].
    ///
    /// # Errors
    ///
    /// Returns [`ArchiveBarrierError::WriterStopped`] after `ArchiveHandle::close` or if the
    /// writer thread has panicked.
    pub fn barrier(&self) -> Result<ArchiveBarrier, ArchiveBarrierError> {
        let (reply_sender, reply) = mpsc::channel();

        // The read lock only guards the `Option`, so a poisoned lock holds valid data.
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let sender = queue.as_ref().ok_or(ArchiveBarrierError::WriterStopped)?;
        sender
            .send(Command::Barrier(reply_sender))
            .map_err(|_| ArchiveBarrierError::WriterStopped)?;
        Ok(ArchiveBarrier::new(reply))
    }

    /// Waits at most `timeout` until the writer has taken every row queued before this call,
    /// so that those rows are in the uncommitted-row index or in committed files. Returns at
    /// once if the writer has stopped, because it then has no rows left to take.
    ///
    /// The queue may be full, so queueing the message is retried every few milliseconds
    /// until the timeout instead of blocking.
    ///
    /// # Errors
    ///
    /// Returns `timeout` if the writer did not take the message in time.
    pub(super) fn catch_up(&self, timeout: Duration) -> Result<(), Duration> {
        let deadline = Instant::now() + timeout;
        let (reply_sender, reply) = mpsc::channel();
        let mut command = Command::CatchUp(reply_sender);
        let mut delay = Duration::from_millis(1);

        loop {
            {
                // The read lock only guards the `Option`, so a poisoned lock holds valid data.
                let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
                let Some(sender) = queue.as_ref() else {
                    return Ok(());
                };
                match sender.try_send(command) {
                    Ok(()) => break,
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                    Err(TrySendError::Full(returned)) => command = returned,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout);
            }
            thread::sleep(delay.min(left));
            delay = (delay * 2).min(MAX_CATCH_UP_RETRY_DELAY);
        }

        match reply.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => Ok(()),
            Err(RecvTimeoutError::Timeout) => Err(timeout),
        }
    }

    fn queue_row(
        &self,
        row: HistoryRow,
        position: Option<LogPosition>,
    ) -> Result<(), ArchiveSendError> {
        if i64::try_from(row.version).is_err() {
            return Err(ArchiveSendError::VersionOutOfRange(Box::new(row)));
        }

        // The read lock only guards the `Option`, so a poisoned lock holds valid data.
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = queue.as_ref() else {
            return Err(ArchiveSendError::WriterStopped(Box::new(row)));
        };
        sender
            .send(Command::Row { row, position })
            .map_err(|SendError(command)| match command {
                Command::Row { row, .. } => ArchiveSendError::WriterStopped(Box::new(row)),
                Command::Barrier(_) | Command::CatchUp(_) => {
                    unreachable!("this call queued a row, not a barrier or catch-up")
                }
            })
    }
}

/// Owner of a running archive writer: hands out senders, reads counters and closes the writer.
///
/// The writer thread also stops when this handle and every [`ArchiveSender`] are dropped: it
/// drains the queue and finishes its files, but no caller waits for it or receives its errors,
/// and the process may exit first. Call [`close`](Self::close) before exit instead.
#[derive(Debug)]
pub struct ArchiveHandle {
    directory: PathBuf,
    sender: ArchiveSender,
    shared: Arc<Shared>,
    thread: JoinHandle<WriterOutcome>,
    recovery: ArchiveRecovery,
}

impl ArchiveHandle {
    pub(super) fn new(
        directory: &Path,
        sender: SyncSender<Command>,
        shared: Arc<Shared>,
        thread: JoinHandle<WriterOutcome>,
        recovery: ArchiveRecovery,
    ) -> Self {
        Self {
            directory: directory.to_path_buf(),
            sender: ArchiveSender {
                queue: Arc::new(RwLock::new(Some(sender))),
            },
            shared,
            thread,
            recovery,
        }
    }

    /// Returns a new sender of rows to this writer.
    pub fn sender(&self) -> ArchiveSender {
        self.sender.clone()
    }

    /// Returns a reader of this archive's history, which also reads the rows of open files.
    ///
    /// A reader keeps the writer's queue open like a sender does: if the handle is dropped
    /// without [`close`](Self::close), the writer stops only once every sender and reader is
    /// gone.
    pub fn reader(&self) -> HistoryReader {
        HistoryReader::with_writer(&self.directory, Arc::clone(&self.shared), self.sender())
    }

    /// Estimated memory in bytes of the rows of open files that readers can see, see
    /// [`ArchiveConfig::uncommitted_index_bytes`](super::ArchiveConfig::uncommitted_index_bytes).
    pub fn uncommitted_index_bytes(&self) -> usize {
        self.shared.index.bytes()
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

    /// Returns the result of the start-up recovery, including the watermark at start-up. The
    /// service re-sends every logged row that this watermark does not cover.
    pub fn recovery(&self) -> &ArchiveRecovery {
        &self.recovery
    }

    /// Returns the watermark of the latest commit. It only grows while the writer runs.
    pub fn watermark(&self) -> ArchiveWatermark {
        self.shared.watermark()
    }

    /// Stops the writer after it has written every row sent so far, and waits for it.
    ///
    /// Every open file is committed as [`ArchiveSender::barrier`] does: footer, sync, state
    /// file, rename to its `.parquet` name and folder sync. Later calls to
    /// [`ArchiveSender::send`] return an error.
    ///
    /// A failing file-system call is retried [`CLOSE_RETRY_ATTEMPTS`](super::CLOSE_RETRY_ATTEMPTS)
    /// more times, at most half a second apart. After that the writer gives up: it keeps
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sender_on(queue: SyncSender<Command>) -> ArchiveSender {
        ArchiveSender {
            queue: Arc::new(RwLock::new(Some(queue))),
        }
    }

    #[test]
    fn catch_up_returns_once_writer_replies() {
        let (queue, receiver) = mpsc::sync_channel(4);
        let writer = thread::spawn(move || match receiver.recv() {
            Ok(Command::CatchUp(reply)) => reply.send(()).expect("reader waits"),
            other => panic!("expected a catch-up message, got {other:?}"),
        });

        let result = sender_on(queue).catch_up(Duration::from_secs(20));

        assert_eq!(result, Ok(()));
        writer.join().expect("writer thread");
    }

    #[test]
    fn catch_up_times_out_on_full_queue() {
        let (queue, _receiver) = mpsc::sync_channel(1);
        let sender = sender_on(queue);
        let (barrier_reply, _barrier_wait) = mpsc::channel();
        sender
            .queue
            .read()
            .expect("lock")
            .as_ref()
            .expect("open queue")
            .send(Command::Barrier(barrier_reply))
            .expect("fill the queue");

        let timeout = Duration::from_millis(50);

        assert_eq!(sender.catch_up(timeout), Err(timeout));
    }

    #[test]
    fn catch_up_times_out_without_reply() {
        let (queue, _receiver) = mpsc::sync_channel(4);
        let timeout = Duration::from_millis(50);

        assert_eq!(sender_on(queue).catch_up(timeout), Err(timeout));
    }

    #[test]
    fn catch_up_after_close_returns_at_once() {
        let closed = ArchiveSender {
            queue: Arc::new(RwLock::new(None)),
        };
        let (queue, receiver) = mpsc::sync_channel(4);
        drop(receiver);

        assert_eq!(closed.catch_up(Duration::from_secs(20)), Ok(()));
        assert_eq!(sender_on(queue).catch_up(Duration::from_secs(20)), Ok(()));
    }
}
