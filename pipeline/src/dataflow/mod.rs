//! The timely/differential dataflow that stores every shadow.
//!
//! ```text
//! Requests: Source ──exchange by thing name──▶ Shadow: Apply ──outcomes──▶ Shadow: Deliver
//!                                                   │
//!                                                   └─shadows collection──▶ Delta: Pending ──▶ Delta: Publish
//! ```
//!
//! # Layout
//! - `request`: the [`Request`] record and where its response goes.
//! - `source`: the bounded channel from ingest tasks and the source operator.
//! - `state`: [`ShadowState`], the per-worker shadows and the semantics of each request.
//! - `operator`: the `Shadow: Apply` operator around [`ShadowState`].
//! - `version`: [`ShadowVersion`], the record of the shadows collection, and [`PendingDelta`].
//! - `deltas`: the deltas collection derived from the shadows collection.
//! - `in_flight`: [`InFlight`], requests in flight per thing for the optional in-flight limit.
//! - `deliver`: encoding outcomes and deltas, and the [`ShadowOutputs`] they go to.
//!
//! # Notes
//! - A time packs an epoch and a sequence number into one `u64`:
//!   `epoch << SEQUENCE_BITS | sequence`. The source stamps each batch with a new epoch at
//!   sequence 0; the apply operator uses higher sequence numbers when one shadow changes several
//!   times within an epoch. (Timely root scopes need an integer time, so no tuple.)

mod deliver;
mod deltas;
mod in_flight;
mod operator;
mod request;
mod source;
mod state;
mod version;
mod views;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use differential_dataflow::trace::TraceReader;
use timely::PartialOrder;
use timely::WorkerConfig;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::progress::Antichain;

pub use deliver::{HttpReply, MqttMessage, ShadowOutputs, deliver_delta, deliver_outcome};
pub(crate) use deliver::{delete_row, history_row};
pub use deltas::PendingDeltas;
pub use in_flight::InFlight;
pub use operator::{MaintainShadows, WorkerSetup};
pub use request::{
    DEFAULT_LIST_PAGE_SIZE, ListRequest, MAX_LIST_PAGE_SIZE, Operation, ReplyTo, Request,
};
pub use source::{
    DataflowClosed, EpochClock, MAX_REQUESTS_PER_ACTIVATION, RequestReceiver, RequestSender,
    request_channel, request_source,
};
pub use state::{Change, KeyState, Outcome, ShadowState, Updated};
pub use version::{PendingDelta, ShadowRecord, ShadowVersion};
use views::WorkerViews;
pub use views::{ThingShadow, ThingTrace, ViewCommand, ViewControl, ViewLogic, ViewSink, ViewSpec};

use crate::durable::{CheckpointRequests, Durability, WorkerLog};
use crate::shadow::{Limits, ShadowKey};

/// Dataflow time: `epoch << SEQUENCE_BITS | sequence within the epoch`.
pub type Time = u64;

/// Bits of a [`Time`] that contain the sequence number within an epoch.
///
/// A shadow changed more than `2^SEQUENCE_BITS` times in one batch gets times of later epochs,
/// so its change times keep increasing. For such a time, [`epoch_of`] returns a later epoch
/// than the batch's.
pub const SEQUENCE_BITS: u32 = 16;

/// Returns the first time of `epoch`.
pub fn epoch_start(epoch: u64) -> Time {
    epoch << SEQUENCE_BITS
}

/// Returns the epoch of `time`.
pub fn epoch_of(time: Time) -> u64 {
    time >> SEQUENCE_BITS
}

/// Epoch of the shadows recovered at start-up. They enter the shadows collection at its
/// first time, before any request, and publish no delta.
pub const RECOVERY_EPOCH: u64 = 0;

/// Epoch of the first batch of requests.
pub const FIRST_REQUEST_EPOCH: u64 = RECOVERY_EPOCH + 1;

/// Default capacity of the request channel, in requests.
pub const DEFAULT_REQUEST_QUEUE: usize = 65_536;

/// Settings of the shadow dataflow.
#[derive(Clone, Debug)]
pub struct DataflowConfig {
    /// Number of timely worker threads; shadows are partitioned across them by key.
    pub workers: usize,
    /// Limits applied to every request.
    pub limits: Limits,
    /// Capacity of the request channel, in requests.
    pub request_queue: usize,
    /// The write-ahead log and recovered shadows; `None` keeps shadows in memory only.
    pub durable: Option<Arc<DurableSetup>>,
}

impl Default for DataflowConfig {
    fn default() -> Self {
        DataflowConfig {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            limits: Limits::default(),
            request_queue: DEFAULT_REQUEST_QUEUE,
            durable: None,
        }
    }
}

/// Settings and recovered shadows the workers need to log their changes, prepared by recovery.
pub struct DurableSetup {
    /// When a change counts as durable.
    pub mode: Durability,
    /// Folder of the log segments.
    pub wal_dir: PathBuf,
    /// Generation of this start.
    pub generation: u64,
    /// Checkpoint requests from the coordinator.
    pub checkpoints: Arc<CheckpointRequests>,
    /// Recovered shadows per worker; each worker takes its own part at start.
    pub recovered: Mutex<Vec<Vec<(ShadowKey, KeyState)>>>,
}

impl std::fmt::Debug for DurableSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSetup")
            .field("mode", &self.mode)
            .field("wal_dir", &self.wal_dir)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DurableSetup {
    /// Returns the setup of `worker`: its log, and the recovered shadows it owns.
    fn worker(&self, worker: usize) -> (WorkerLog, Vec<(ShadowKey, KeyState)>) {
        let index = u32::try_from(worker).unwrap_or(u32::MAX);
        let log = WorkerLog::new(self.mode, self.wal_dir.clone(), self.generation, index);
        let recovered = self
            .recovered
            .lock()
            .ok()
            .and_then(|mut shards| shards.get_mut(worker).map(std::mem::take))
            .unwrap_or_default();
        (log, recovered)
    }
}

/// A running dataflow.
pub struct DataflowHandle {
    guards: timely::communication::WorkerGuards<()>,
    views: Arc<ViewControl>,
}

impl DataflowHandle {
    /// Returns the control that installs and drops continuous views.
    pub fn views(&self) -> Arc<ViewControl> {
        Arc::clone(&self.views)
    }

    /// Waits until every worker has finished, which happens after every [`RequestSender`] has
    /// been dropped and all queued requests have been delivered.
    pub fn join(self) {
        for result in self.guards.join() {
            if let Err(error) = result {
                tracing::error!(error = %error, "a dataflow worker failed");
            }
        }
    }
}

/// Error starting the dataflow.
#[derive(Debug, thiserror::Error)]
#[error("starting {workers} dataflow workers failed: {message}")]
pub struct StartError {
    workers: usize,
    message: String,
}

/// Starts the dataflow on `config.workers` threads and returns the sender for its requests.
///
/// # Errors
/// Returns [`StartError`] when timely cannot start its worker threads.
pub fn spawn(
    config: DataflowConfig,
    outputs: Arc<dyn ShadowOutputs>,
) -> Result<(RequestSender, DataflowHandle), StartError> {
    let (sender, receiver) = request_channel(config.request_queue);
    let handle = spawn_with_receiver(config, receiver, outputs)?;
    Ok((sender, handle))
}

/// Starts the dataflow reading requests from `receiver`, made by [`request_channel`].
///
/// # Errors
/// Returns [`StartError`] when timely cannot start its worker threads.
pub fn spawn_with_receiver(
    config: DataflowConfig,
    receiver: RequestReceiver,
    outputs: Arc<dyn ShadowOutputs>,
) -> Result<DataflowHandle, StartError> {
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let workers = config.workers.max(1);
    let timely_config = timely::Config {
        communication: timely::CommunicationConfig::Process(workers),
        worker: WorkerConfig::default().idle_spin(IDLE_SPIN),
    };
    let limits = config.limits;
    let durable = config.durable;
    let views = Arc::new(ViewControl::new(workers));
    let worker_views = Arc::clone(&views);
    let guards = timely::execute(timely_config, move |worker| {
        // Only worker 0 reads the channel; the lock is taken once, at start-up.
        let receiver = if worker.index() == 0 {
            receiver.lock().ok().and_then(|mut slot| slot.take())
        } else {
            None
        };
        let (log, recovered) = match &durable {
            Some(durable) => {
                let (log, recovered) = durable.worker(worker.index());
                (Some(log), recovered)
            }
            None => (None, Vec::new()),
        };
        let setup = WorkerSetup {
            limits: limits.clone(),
            log,
            checkpoints: durable
                .as_ref()
                .map(|durable| Arc::clone(&durable.checkpoints)),
            recovered,
            outputs: Arc::clone(&outputs),
        };
        let outputs = Arc::clone(&outputs);
        let (mut trace, progress) =
            worker.dataflow::<Time, _, _>(move |scope| build(scope, receiver, setup, outputs));
        let Some(commands) = worker_views.take_receiver(worker.index()) else {
            return;
        };
        let mut installed = WorkerViews::default();
        // Steps the dataflows until all have ended, installing and dropping views between steps.
        while worker.step_or_park(Some(VIEW_COMMAND_POLL)) {
            installed.apply(worker, &mut trace, &commands);
            let frontier = compaction_frontier(&mut trace, &progress);
            trace.set_logical_compaction(frontier.borrow());
            trace.set_physical_compaction(frontier.borrow());
        }
    })
    .map_err(|message| StartError { workers, message })?;
    Ok(DataflowHandle { guards, views })
}

/// Returns how far the shared trace may compact: up to the dataflow's progress, but no further
/// than the upper bound of its last batch with updates.
///
/// NOTE: an import replays only batches with updates. If physical compaction ran past the
/// last of them, a view imported then requests an earlier frontier from its trace than its handle
/// allows, and differential-dataflow 0.26 panics in `Spine`. Holding compaction at that bound
/// avoids it; the real fix belongs in differential-dataflow's import.
fn compaction_frontier(trace: &mut ThingTrace, progress: &ProbeHandle<Time>) -> Antichain<Time> {
    let frontier = progress.with_frontier(|frontier| frontier.to_owned());
    let mut upper = Antichain::from_elem(0);
    trace.map_spans(|span| {
        if span.has_updates() {
            upper.clone_from(span.upper());
        }
    });
    if PartialOrder::less_equal(&upper, &frontier) {
        upper
    } else {
        frontier
    }
}

/// How long an idle worker polls its channels before it parks its thread.
///
/// Timely polls for 10 µs by default. At low request rates each epoch leaves the workers idle
/// several times, and every poll burns CPU that the threads receiving requests could use.
/// Parking at once took about 7 % off the CPU per update at 10,000 updates/s, with the same
/// latency. Saturated throughput did not change.
const IDLE_SPIN: std::time::Duration = std::time::Duration::ZERO;

/// Maximum time an idle worker waits before it looks for view commands.
const VIEW_COMMAND_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Builds the shadow dataflow in `scope`. Returns the shadows arranged by thing name, for views,
/// and the probe of the dataflow's progress.
pub fn build(
    scope: timely::dataflow::Scope<'_, Time>,
    receiver: Option<RequestReceiver>,
    setup: WorkerSetup,
    outputs: Arc<dyn ShadowOutputs>,
) -> (ThingTrace, ProbeHandle<Time>) {
    let progress = ProbeHandle::new();
    let requests = request_source(scope, receiver, progress.clone());
    let (outcomes, shadows) = requests.maintain_shadows(setup);
    let outcomes = outcomes.probe_with(&progress);
    let shadows = shadows.probe_with(&progress);
    let by_thing = shadows
        .clone()
        .map(|(key, version)| (key.thing_name, (key.shadow_name, version)))
        .arrange_by_key_named("Shadows: By Thing");

    let deliver_outputs = Arc::clone(&outputs);
    outcomes.sink(Pipeline, "Shadow: Deliver", move |(input, _frontier)| {
        input.for_each(|_capability, outcomes| {
            for outcome in outcomes.drain(..) {
                deliver_outcome(outcome, deliver_outputs.as_ref());
            }
        });
    });

    shadows
        .pending_deltas()
        .inner
        .sink(Pipeline, "Delta: Publish", move |(input, _frontier)| {
            input.for_each(|_capability, changes| {
                for ((key, pending), time, diff) in changes.drain(..) {
                    // Deltas of recovered shadows were published before the restart.
                    if diff > 0 && epoch_of(time) >= FIRST_REQUEST_EPOCH {
                        deliver_delta(&key, &pending, outputs.as_ref());
                    }
                }
            });
        });
    (by_thing.trace, progress)
}
