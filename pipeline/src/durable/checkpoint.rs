//! Background checkpoints: every worker's shadows written to snapshot files, then the log
//! behind them deleted.
//!
//! The coordinator thread raises the requested checkpoint id and wakes every worker. Each
//! worker, between two batches, rotates its log, takes a [`WorkerSnapshot`] of its shadows
//! (shared pointers, so this is quick) and places an archive barrier behind the history rows it
//! has sent. The coordinator writes the snapshots, waits for the barriers, writes the manifest,
//! and deletes older checkpoints and the log segments the new one covers. Ingest goes on
//! meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timely::scheduling::SyncActivator;

use super::DurableDirs;
use super::format::{
    CheckpointManifest, WorkerCheckpoint, create_checkpoint_dir, remove_checkpoints_except,
    remove_segments_covered_by, snapshot_path, write_snapshot,
};
use crate::dataflow::KeyState;
use crate::shadow::ShadowKey;

/// Waits until the archive contains every row sent before the barrier was placed.
pub type ArchiveBarrier = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// One worker's part of a checkpoint.
pub struct WorkerSnapshot {
    /// Checkpoint id.
    pub id: u64,
    /// Worker index.
    pub worker: u32,
    /// Lsn of the worker's next log record: the snapshot contains every record before it.
    pub next_lsn: u64,
    /// Every live shadow and tombstone of the worker, or why the worker could not take them.
    pub entries: Result<Vec<(ShadowKey, KeyState)>, String>,
    /// Barrier behind the history rows the worker sent before the snapshot.
    pub archive: ArchiveBarrier,
}

/// Outcome of one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Checkpoint id.
    pub id: u64,
    /// Shadows and tombstones written.
    pub entries: u64,
    /// Log segments deleted because the checkpoint covers them.
    pub segments_removed: usize,
    /// Time from the request to the manifest.
    pub duration: Duration,
}

/// The workers' side of checkpoints: which checkpoint is requested, and where snapshots go.
pub struct CheckpointRequests {
    requested: AtomicU64,
    /// Id of the checkpoint to take once all input is applied, at shutdown; 0 for none.
    final_requested: AtomicU64,
    activators: Mutex<Vec<Option<SyncActivator>>>,
    snapshots: Mutex<mpsc::Sender<WorkerSnapshot>>,
}

impl CheckpointRequests {
    /// Registers the activator that wakes `worker`'s shadow operator.
    pub fn register(&self, worker: usize, activator: SyncActivator) {
        let mut activators = self
            .activators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if activators.len() <= worker {
            activators.resize_with(worker + 1, || None);
        }
        activators[worker] = Some(activator);
    }

    /// Returns the requested checkpoint id when it is newer than `done`.
    pub fn pending(&self, done: u64) -> Option<u64> {
        let requested = self.requested.load(Ordering::Acquire);
        (requested > done).then_some(requested)
    }

    /// Returns the id of the shutdown checkpoint when it is requested and newer than `done`.
    /// Workers take it once their input has ended and every request is applied.
    pub fn pending_final(&self, done: u64) -> Option<u64> {
        let requested = self.final_requested.load(Ordering::Acquire);
        (requested > done).then_some(requested)
    }

    /// Hands a worker's snapshot to the coordinator.
    pub fn submit(&self, snapshot: WorkerSnapshot) {
        let sender = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The coordinator is gone only during shutdown, when no checkpoint waits for this.
        let _ = sender.send(snapshot);
    }

    fn request(&self, id: u64) {
        self.requested.store(id, Ordering::Release);
        let activators = self
            .activators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for activator in activators.iter().flatten() {
            // Fails only when the worker has stopped, and then no snapshot is needed.
            let _ = activator.activate();
        }
    }
}

/// Sender of the result of a requested checkpoint.
type ReportSender = mpsc::Sender<Result<CheckpointReport, String>>;

enum Command {
    Now(ReportSender),
    Final(u64, ReportSender),
    Stop,
}

/// The checkpoint coordinator: a thread that takes checkpoints at an interval and on request.
pub struct Checkpoints {
    requests: Arc<CheckpointRequests>,
    /// Id of the next checkpoint, shared with the coordinator so ids only increase.
    next_id: Arc<AtomicU64>,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Starts the coordinator for `workers` workers of `generation`, numbering checkpoints from
    /// `next_id`. With `interval` `None`, checkpoints are taken only on request.
    ///
    /// # Errors
    /// Returns the error of spawning the thread.
    pub fn start(
        dirs: DurableDirs,
        generation: u64,
        workers: usize,
        next_id: u64,
        interval: Option<Duration>,
    ) -> std::io::Result<Self> {
        let (snapshot_sender, snapshots) = mpsc::channel();
        let requests = Arc::new(CheckpointRequests {
            requested: AtomicU64::new(0),
            final_requested: AtomicU64::new(0),
            activators: Mutex::new(Vec::new()),
            snapshots: Mutex::new(snapshot_sender),
        });
        let (commands, command_receiver) = mpsc::channel();
        let next_id = Arc::new(AtomicU64::new(next_id));
        let coordinator = Coordinator {
            dirs,
            generation,
            workers,
            next_id: Arc::clone(&next_id),
            requests: Arc::clone(&requests),
            snapshots,
            stash: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("checkpoints".to_owned())
            .spawn(move || coordinator.run(&command_receiver, interval))?;
        Ok(Checkpoints {
            requests,
            next_id,
            commands,
            thread: Some(thread),
        })
    }

    /// Returns the workers' side, for the dataflow.
    pub fn requests(&self) -> Arc<CheckpointRequests> {
        Arc::clone(&self.requests)
    }

    /// Takes a checkpoint now and waits for it.
    ///
    /// # Errors
    /// Returns what failed when the checkpoint could not be completed.
    pub fn checkpoint_now(&self) -> Result<CheckpointReport, String> {
        let (reply, report) = mpsc::channel();
        self.commands
            .send(Command::Now(reply))
            .map_err(|_| "the checkpoint thread has stopped".to_owned())?;
        report
            .recv()
            .map_err(|_| "the checkpoint thread stopped during the checkpoint".to_owned())?
    }

    /// Requests the shutdown checkpoint, which every worker takes once its input has ended, and
    /// returns where its result arrives. Call it before closing the dataflow's input.
    pub fn request_final(&self) -> mpsc::Receiver<Result<CheckpointReport, String>> {
        let (reply, report) = mpsc::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.requests.final_requested.store(id, Ordering::Release);
        // The coordinator is gone only after `stop`; then the receiver reports a closed channel.
        let _ = self.commands.send(Command::Final(id, reply));
        report
    }

    /// Stops the coordinator thread.
    pub fn stop(mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Coordinator {
    dirs: DurableDirs,
    generation: u64,
    workers: usize,
    next_id: Arc<AtomicU64>,
    requests: Arc<CheckpointRequests>,
    snapshots: mpsc::Receiver<WorkerSnapshot>,
    /// Snapshots that arrived for another checkpoint than the one being collected.
    stash: Vec<WorkerSnapshot>,
}

impl Coordinator {
    fn run(mut self, commands: &mpsc::Receiver<Command>, interval: Option<Duration>) {
        loop {
            let command = match interval {
                Some(interval) => match commands.recv_timeout(interval) {
                    Ok(command) => Some(command),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match commands.recv() {
                    Ok(command) => Some(command),
                    Err(_) => return,
                },
            };
            let (id, reply) = match command {
                Some(Command::Stop) => return,
                Some(Command::Now(reply)) => (None, Some(reply)),
                Some(Command::Final(id, reply)) => (Some(id), Some(reply)),
                None => (None, None),
            };
            let result = match id {
                Some(id) => self.checkpoint(id, false),
                None => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    self.checkpoint(id, true)
                }
            };
            match &result {
                Ok(report) => tracing::info!(
                    checkpoint = report.id,
                    shadows = report.entries,
                    segments_removed = report.segments_removed,
                    ms = report.duration.as_millis() as u64,
                    "checkpoint written"
                ),
                Err(error) => tracing::error!(error = %error,
                    "checkpoint failed; the log is kept, so nothing is lost, and the next \
                     checkpoint retries"),
            }
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
    }

    /// Takes checkpoint `id`. A regular checkpoint wakes the workers itself; the shutdown
    /// checkpoint waits for them to finish their input.
    fn checkpoint(&mut self, id: u64, regular: bool) -> Result<CheckpointReport, String> {
        let started = Instant::now();
        let folder = create_checkpoint_dir(&self.dirs.checkpoints, id)
            .map_err(|error| format!("creating the folder of checkpoint {id} failed: {error}"))?;
        if regular {
            self.requests.request(id);
        }

        let mut parts: BTreeMap<u32, WorkerCheckpoint> = BTreeMap::new();
        let mut barriers = Vec::new();
        while parts.len() < self.workers {
            let snapshot = self.next_snapshot(id, regular)?;
            let path = snapshot_path(&folder, snapshot.worker);
            let entries = snapshot.entries.map_err(|error| {
                format!(
                    "worker {} could not take its snapshot: {error}",
                    snapshot.worker
                )
            })?;
            let entries = entries
                .iter()
                .map(|(key, state)| (key, state.live.as_deref(), state.deleted_version));
            let stats = write_snapshot(&path, entries)
                .map_err(|error| format!("writing {} failed: {error}", path.display()))?;
            parts.insert(
                snapshot.worker,
                WorkerCheckpoint {
                    worker: snapshot.worker,
                    next_lsn: snapshot.next_lsn,
                    entries: stats.entries,
                },
            );
            barriers.push(snapshot.archive);
        }
        for barrier in barriers {
            barrier().map_err(|error| format!("the history archive failed: {error}"))?;
        }

        let manifest = CheckpointManifest {
            id,
            generation: self.generation,
            workers: parts.into_values().collect(),
            created_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as i64),
        };
        manifest.write(&folder).map_err(|error| {
            format!(
                "writing the manifest in {} failed: {error}",
                folder.display()
            )
        })?;
        let entries = manifest.workers.iter().map(|part| part.entries).sum();
        if let Err(error) = remove_checkpoints_except(&self.dirs.checkpoints, id) {
            tracing::warn!(error = %error, "removing older checkpoints failed; they only take space");
        }
        let segments_removed = remove_segments_covered_by(&self.dirs.wal, &manifest.replay_from())
            .unwrap_or_else(|error| {
                tracing::warn!(error = %error,
                        "removing log segments behind the checkpoint failed; they only take space");
                0
            });
        Ok(CheckpointReport {
            id,
            entries,
            segments_removed,
            duration: started.elapsed(),
        })
    }
}

impl Coordinator {
    /// Returns the next worker snapshot of checkpoint `id`, keeping those of other checkpoints.
    /// A regular checkpoint gives up when the shutdown checkpoint is requested, because the
    /// workers then stop and some may never take the regular one.
    fn next_snapshot(&mut self, id: u64, regular: bool) -> Result<WorkerSnapshot, String> {
        if let Some(index) = self.stash.iter().position(|snapshot| snapshot.id == id) {
            return Ok(self.stash.swap_remove(index));
        }
        loop {
            if regular && self.requests.pending_final(0).is_some() {
                return Err(
                    "the service is stopping; the shutdown checkpoint replaces this one".to_owned(),
                );
            }
            match self.snapshots.recv_timeout(SNAPSHOT_POLL) {
                Ok(snapshot) if snapshot.id == id => return Ok(snapshot),
                Ok(snapshot) => self.stash.push(snapshot),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("the dataflow stopped before every worker's snapshot".to_owned());
                }
            }
        }
    }
}

/// How often a waiting checkpoint checks whether the service is stopping.
const SNAPSHOT_POLL: Duration = Duration::from_millis(100);
