//! The request source: a channel from ingest tasks into the dataflow.
//!
//! Ingest code (MQTT event loops, HTTP handlers) owns a [`RequestSender`]; worker 0 drains the
//! matching [`RequestReceiver`] in the `Requests: Source` operator and stamps each drained batch
//! with a new epoch. The channel is bounded, so a dataflow that falls behind slows its senders
//! down instead of buffering without limit.
//!
//! # Notes
//! - Only worker 0 reads requests; the `Shadow: Apply` operator exchanges them to the worker
//!   that owns each shadow.
//! - The source wakes up through a timely `SyncActivator` when a sender adds a request to an
//!   empty queue, so idle workers park instead of polling.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::SyncActivator;
use tokio::sync::mpsc;

use super::request::Request;
use super::{FIRST_REQUEST_EPOCH, Time, epoch_start};

/// Most requests the source emits per activation, so one burst cannot starve other operators.
pub const MAX_REQUESTS_PER_ACTIVATION: usize = 4096;

/// Maximum number of epochs the source runs ahead of the slowest downstream operator.
///
/// Each epoch has at most [`MAX_REQUESTS_PER_ACTIVATION`] requests, so this bounds the requests
/// inside the dataflow. The rest wait in the bounded request channel, which slows the senders.
pub const MAX_EPOCHS_IN_FLIGHT: u64 = 4;

/// Delay before a source held back by [`MAX_EPOCHS_IN_FLIGHT`] checks again.
const HELD_BACK_RETRY: Duration = Duration::from_micros(200);

/// Error returned when the dataflow no longer accepts requests (it is shutting down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the shadow dataflow has stopped and accepts no more requests")]
pub struct DataflowClosed;

/// Wakes the source operator when requests arrive.
#[derive(Debug, Default)]
struct Wakeup {
    activator: OnceLock<SyncActivator>,
    /// True while the source has been woken and has not yet started draining.
    pending: AtomicBool,
    /// Epoch the source stamps its next batch with; every earlier epoch is closed.
    open_epoch: AtomicU64,
}

impl Wakeup {
    fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel)
            && let Some(activator) = self.activator.get()
        {
            // An error means the worker has gone, and the next send reports the closed channel.
            let _ = activator.activate();
        }
    }
}

/// Sends requests into the dataflow. Cheap to clone.
#[derive(Debug)]
pub struct RequestSender {
    /// Always `Some` until `drop`, which releases it before waking the source.
    channel: Option<mpsc::Sender<Request>>,
    wakeup: Arc<Wakeup>,
}

impl Clone for RequestSender {
    fn clone(&self) -> Self {
        RequestSender {
            channel: self.channel.clone(),
            wakeup: Arc::clone(&self.wakeup),
        }
    }
}

/// Reads the source's open epoch without keeping the request channel open.
#[derive(Clone, Debug)]
pub struct EpochClock {
    wakeup: Arc<Wakeup>,
}

impl EpochClock {
    /// Returns the first time of the epoch the source has open. Every request the source took
    /// before this call has an earlier time, so a view whose frontier reaches this time
    /// reflects every change acknowledged before the call.
    pub fn open_time(&self) -> Time {
        let epoch = self.wakeup.open_epoch.load(Ordering::Acquire);
        epoch_start(epoch.max(FIRST_REQUEST_EPOCH))
    }
}

impl RequestSender {
    /// Returns a clock of the source's open epoch, which does not keep the channel open.
    pub fn epoch_clock(&self) -> EpochClock {
        EpochClock {
            wakeup: Arc::clone(&self.wakeup),
        }
    }

    /// Queues `request`, waiting while the queue is full.
    ///
    /// # Errors
    /// Returns [`DataflowClosed`] once the dataflow has shut down.
    pub async fn send(&self, request: Request) -> Result<(), DataflowClosed> {
        let channel = self.channel.as_ref().ok_or(DataflowClosed)?;
        channel.send(request).await.map_err(|_| DataflowClosed)?;
        self.wakeup.wake();
        Ok(())
    }

    /// Queues `request` from a thread outside any async runtime, blocking while the queue is full.
    ///
    /// # Errors
    /// Returns [`DataflowClosed`] once the dataflow has shut down.
    ///
    /// # Panics
    /// Panics when called from within an async runtime.
    pub fn blocking_send(&self, request: Request) -> Result<(), DataflowClosed> {
        let channel = self.channel.as_ref().ok_or(DataflowClosed)?;
        channel.blocking_send(request).map_err(|_| DataflowClosed)?;
        self.wakeup.wake();
        Ok(())
    }
}

impl Drop for RequestSender {
    fn drop(&mut self) {
        // The source notices a closed channel only when it runs, so the last sender must wake
        // it after the channel has closed: release the channel first, then wake. Waking on
        // every drop is harmless.
        drop(self.channel.take());
        self.wakeup.wake();
    }
}

/// The receiving end, consumed by the source operator on worker 0.
#[derive(Debug)]
pub struct RequestReceiver {
    channel: mpsc::Receiver<Request>,
    wakeup: Arc<Wakeup>,
}

/// Creates a request channel with room for `capacity` queued requests.
pub fn request_channel(capacity: usize) -> (RequestSender, RequestReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let wakeup = Arc::new(Wakeup::default());
    (
        RequestSender {
            channel: Some(sender),
            wakeup: Arc::clone(&wakeup),
        },
        RequestReceiver {
            channel: receiver,
            wakeup,
        },
    )
}

/// Builds the source operator. Workers given `None` emit nothing and close their part at once.
///
/// `progress` must probe the end of the dataflow: the source emits nothing while that frontier
/// is more than [`MAX_EPOCHS_IN_FLIGHT`] epochs behind.
pub fn request_source<'scope>(
    scope: Scope<'scope, Time>,
    receiver: Option<RequestReceiver>,
    progress: ProbeHandle<Time>,
) -> Stream<'scope, Time, Vec<Request>> {
    source(scope, "Requests: Source", move |capability, info| {
        let reschedule = scope.activator_for(Rc::clone(&info.address));
        if let Some(receiver) = &receiver {
            let activator = scope.worker().sync_activator_for(info.address.to_vec());
            // The receiver is handed to exactly one source, so the activator is unset here.
            let _ = receiver.wakeup.activator.set(activator);
        }
        let mut capability = receiver.is_some().then_some(capability);
        // Epoch 0 contains the shadows recovered at start-up, so requests start after it.
        let mut epoch = FIRST_REQUEST_EPOCH;
        if let Some(held) = capability.as_mut() {
            held.downgrade(&epoch_start(epoch));
        }
        let mut receiver = receiver;
        move |output| {
            tracing::trace!(epoch, "request source activated");
            let (Some(receiver_ref), Some(held)) = (receiver.as_mut(), capability.as_mut()) else {
                capability = None;
                return;
            };
            if epoch > MAX_EPOCHS_IN_FLIGHT
                && progress.less_than(&epoch_start(epoch - MAX_EPOCHS_IN_FLIGHT))
            {
                reschedule.activate_after(HELD_BACK_RETRY);
                return;
            }
            receiver_ref.wakeup.pending.store(false, Ordering::Release);
            let mut emitted = 0;
            let mut closed = false;
            {
                let mut session = output.session(&*held);
                while emitted < MAX_REQUESTS_PER_ACTIVATION {
                    match receiver_ref.channel.try_recv() {
                        Ok(request) => {
                            session.give(request);
                            emitted += 1;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if emitted == MAX_REQUESTS_PER_ACTIVATION {
                reschedule.activate();
            }
            if closed {
                tracing::debug!(epoch, "request channel closed; the source is done");
                capability = None;
                receiver = None;
            } else if emitted > 0 {
                epoch += 1;
                held.downgrade(&epoch_start(epoch));
                receiver_ref
                    .wakeup
                    .open_epoch
                    .store(epoch, Ordering::Release);
            }
        }
    })
}
