//! Durability: the write-ahead log of accepted changes, checkpoints, and recovery.
//!
//! Each dataflow worker appends the changes it accepts to its own log, and commits every batch
//! before any response to that batch leaves the worker. In `sync` mode one `fdatasync` covers
//! the whole batch (group commit): requests that arrive during a sync wait in the request channel
//! and form the next batch. A batch whose log write fails is undone in memory and rejected with
//! 503, so the shadows never hold a change that the log lacks.
//!
//! In the background, checkpoints write every worker's shadows to snapshot files. A checkpoint
//! completes once every worker's snapshot is written and the history archive contains every
//! change before it. The log segments it covers are then deleted. On start-up, [`recover`]
//! rebuilds the shadows from the latest checkpoint and the log after it.
//!
//! # Layout
//! - `format`: the files: log segments, snapshots and checkpoint manifests.
//! - `log`: [`WorkerLog`], one worker's log writer.
//! - `checkpoint`: [`Checkpoints`], the background checkpoint coordinator.
//! - `recovery`: [`recover`], the start-up rebuild.
//!
//! # Notes
//! - Each start of the service is a new generation with logs of its own, so the number of
//!   workers may change between starts: recovery reads every log and partitions the shadows
//!   again.

pub mod format;

mod checkpoint;
mod log;
mod recovery;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use checkpoint::{
    ArchiveBarrier, CheckpointReport, CheckpointRequests, Checkpoints, WorkerSnapshot,
};
pub use log::{CommitError, WorkerLog};
pub use recovery::{Recovered, RecoveryError, RecoveryStats, owner, recover};

/// When an accepted change counts as durable, and so may be acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After `fdatasync` of the log: acknowledged changes survive a power loss.
    Sync,
    /// After the log write; the log is synced at least every `interval`. A process crash loses
    /// nothing, a power loss at most the changes of the last `interval`.
    Batch {
        /// Maximum time between two syncs of a log with unsynced changes.
        interval: Duration,
    },
    /// No log: shadows live in memory only and a restart starts empty.
    None,
}

/// Folders of the durable state under the service's data folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableDirs {
    /// Log segments.
    pub wal: PathBuf,
    /// Checkpoints, one folder each.
    pub checkpoints: PathBuf,
}

impl DurableDirs {
    /// Returns the folders under `data_dir`: `wal/` and `checkpoints/`.
    pub fn under(data_dir: &Path) -> Self {
        DurableDirs {
            wal: data_dir.join("wal"),
            checkpoints: data_dir.join("checkpoints"),
        }
    }

    /// Creates both folders if they do not exist.
    ///
    /// # Errors
    /// Returns the error of the folder that could not be created, with its path.
    pub fn create(&self) -> std::io::Result<()> {
        for dir in [&self.wal, &self.checkpoints] {
            std::fs::create_dir_all(dir).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("creating {} failed: {error}", dir.display()),
                )
            })?;
        }
        Ok(())
    }
}
