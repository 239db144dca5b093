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

use std::sync::{Arc, Mutex};

use timely::WorkerConfig;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

pub use deliver::{HttpReply, MqttMessage, ShadowOutputs, deliver_delta, deliver_outcome};
pub use deltas::PendingDeltas;
pub use in_flight::InFlight;
pub use operator::MaintainShadows;
pub use request::{
    DEFAULT_LIST_PAGE_SIZE, ListRequest, MAX_LIST_PAGE_SIZE, Operation, ReplyTo, Request,
};
pub use source::{
    DataflowClosed, MAX_REQUESTS_PER_ACTIVATION, RequestReceiver, RequestSender, request_channel,
    request_source,
};
pub use state::{Change, Outcome, ShadowState, Updated};
pub use version::{PendingDelta, ShadowRecord, ShadowVersion};

use crate::shadow::Limits;

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
}

impl Default for DataflowConfig {
    fn default() -> Self {
        DataflowConfig {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            limits: Limits::default(),
            request_queue: DEFAULT_REQUEST_QUEUE,
        }
    }
}

/// A running dataflow.
pub struct DataflowHandle {
    guards: timely::communication::WorkerGuards<()>,
}

impl DataflowHandle {
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
        worker: WorkerConfig::default(),
    };
    let limits = config.limits;
    let guards = timely::execute(timely_config, move |worker| {
        // Only worker 0 reads the channel; the lock is taken once, at start-up.
        let receiver = if worker.index() == 0 {
            receiver.lock().ok().and_then(|mut slot| slot.take())
        } else {
            None
        };
        let outputs = Arc::clone(&outputs);
        let limits = limits.clone();
        worker.dataflow::<Time, _, _>(move |scope| {
            build(scope, receiver, limits, outputs);
        });
    })
    .map_err(|message| StartError { workers, message })?;
    Ok(DataflowHandle { guards })
}

/// Builds the shadow dataflow in `scope`.
pub fn build(
    scope: timely::dataflow::Scope<'_, Time>,
    receiver: Option<RequestReceiver>,
    limits: Limits,
    outputs: Arc<dyn ShadowOutputs>,
) {
    let progress = ProbeHandle::new();
    let requests = request_source(scope, receiver, progress.clone());
    let (outcomes, shadows) = requests.maintain_shadows(limits);
    let outcomes = outcomes.probe_with(&progress);
    let shadows = shadows.probe_with(&progress);

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
                for ((key, pending), _time, diff) in changes.drain(..) {
                    if diff > 0 {
                        deliver_delta(&key, &pending, outputs.as_ref());
                    }
                }
            });
        });
}
