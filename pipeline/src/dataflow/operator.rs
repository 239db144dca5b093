//! The `Shadow: Apply` operator: requests in, outcomes and shadow changes out.
//!
//! Requests are exchanged by the hash of their thing name, so every shadow of one thing
//! (classic and named) lives on one worker. Each shadow therefore has exactly one writer, and
//! questions about one thing's shadows can be answered by one worker.
//!
//! # Notes
//! - Requests are applied as they arrive, without waiting for the frontier. Requests of one
//!   shadow come from one source worker over one FIFO channel, so arrival order is the order in
//!   which the source received them.
//! - All requests waiting at an activation are applied as one batch, stamped with the least
//!   input time among them. Outcomes carry that time; the times of shadow changes only need to
//!   increase per shadow, which the per-shadow sequence numbers ensure.
//! - A shadow's changes within one epoch are emitted at successive times of that epoch, so that
//!   differential never consolidates two versions of one shadow into one change.

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::deliver::{ShadowOutputs, delete_row, history_row};
use super::request::{Operation, Request};
use super::state::{Change, KeyState, Outcome, ShadowState};
use super::version::ShadowRecord;
use super::{Time, epoch_of, epoch_start};
use crate::durable::format::LogRecord;
use crate::durable::{CheckpointRequests, WorkerLog, WorkerSnapshot};
use crate::history::{ChangeKind, LogPosition};
use crate::shadow::{Limits, ShadowError, ShadowKey};

/// Settings and state of one worker's `Shadow: Apply` operator, besides its requests.
pub struct WorkerSetup {
    /// Limits applied to every request.
    pub limits: Limits,
    /// The worker's write-ahead log, `None` when changes are not logged.
    pub log: Option<WorkerLog>,
    /// Checkpoint requests, `None` when changes are not logged.
    pub checkpoints: Option<Arc<CheckpointRequests>>,
    /// Shadows recovered at start-up that this worker owns.
    pub recovered: Vec<(ShadowKey, KeyState)>,
    /// Destination of history rows once their changes are durable.
    pub outputs: Arc<dyn ShadowOutputs>,
}

/// Collection changes of one input batch, before they are grouped by time.
type TimedChanges = Vec<(ShadowRecord, Time, isize)>;

/// Maintains shadows from a stream of requests.
pub trait MaintainShadows<'scope> {
    /// Applies every request to the shadow it addresses, on the worker that owns that shadow.
    ///
    /// Returns the stream of outcomes (one per request) and the collection of shadows: each
    /// accepted update retracts the previous version and inserts the new one.
    fn maintain_shadows(
        self,
        setup: WorkerSetup,
    ) -> (
        Stream<'scope, Time, Vec<Outcome>>,
        VecCollection<'scope, Time, ShadowRecord, isize>,
    );
}

impl<'scope> MaintainShadows<'scope> for Stream<'scope, Time, Vec<Request>> {
    fn maintain_shadows(
        self,
        setup: WorkerSetup,
    ) -> (
        Stream<'scope, Time, Vec<Outcome>>,
        VecCollection<'scope, Time, ShadowRecord, isize>,
    ) {
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("Shadow: Apply".to_owned(), scope);
        let exchange = Exchange::new(|request: &Request| request.key.thing_name.hashed());
        let mut input = builder.new_input(self, exchange);
        let (outcomes_output, outcomes) = builder.new_output::<Vec<Outcome>>();
        let (changes_output, changes) = builder.new_output::<TimedChanges>();
        let mut outcomes_output =
            OutputBuilder::<_, CapacityBuilder<Outcome>>::from(outcomes_output);
        let mut changes_output = OutputBuilder::<_, CapacityBuilder<_>>::from(changes_output);

        // Reschedules the operator while requests wait in its backlog.
        let activator = scope.activator_for(Rc::clone(&builder.operator_info().address));
        let worker = scope.index();
        if let Some(checkpoints) = &setup.checkpoints {
            let address = builder.operator_info().address.to_vec();
            checkpoints.register(worker, scope.worker().sync_activator_for(address));
        }
        builder.build(move |mut capabilities| {
            let WorkerSetup {
                limits,
                mut log,
                checkpoints,
                recovered,
                outputs,
            } = setup;
            let mut state = ShadowState::new(limits);
            // Recovered shadows enter the collection at the first time, before any request.
            let mut initial_changes: TimedChanges = Vec::with_capacity(recovered.len());
            for (key, key_state) in recovered {
                if let Some(live) = &key_state.live {
                    initial_changes.push(((key.clone(), Arc::clone(live)), epoch_start(0), 1));
                }
                state.restore(&key, key_state);
            }
            let mut initial = capabilities.pop();
            capabilities.clear();
            activator.activate();

            let mut backlog: VecDeque<Request> = VecDeque::new();
            let mut held: Option<(Capability<Time>, Capability<Time>)> = None;
            let mut batch = Batch::default();
            let mut checkpoint_done = 0;
            let mut final_done = 0;
            move |frontiers| {
                if let Some(capability) = initial.take() {
                    let mut changes_handle = changes_output.activate();
                    changes_handle
                        .session(&capability)
                        .give_iterator(initial_changes.drain(..));
                }

                // Collect every waiting request first and keep capabilities for the least input
                // time only, so that one activation sends one container per output and time
                // rather than one per input message.
                input.for_each(|capability, requests| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    if held.as_ref().is_none_or(|(least, _)| time < *least.time()) {
                        held = Some((capability.delayed(&time, 0), capability.delayed(&time, 1)));
                    }
                    backlog.extend(requests.drain(..));
                });

                if let Some((outcome_capability, change_capability)) = held.as_ref() {
                    // Apply a bounded batch, so outputs stay small; the rest waits for the next
                    // activation, still covered by the held capabilities.
                    let epoch = epoch_of(*outcome_capability.time());
                    let size = backlog.len().min(MAX_BATCH);
                    batch.apply(&mut state, backlog.drain(..size), epoch, log.as_mut());
                    batch.commit(&mut state, log.as_mut(), outputs.as_ref());

                    let mut outcomes_handle = outcomes_output.activate();
                    outcomes_handle
                        .session(outcome_capability)
                        .give_iterator(batch.outcomes.drain(..));

                    // Group changes by time; almost always they all share the first time.
                    let mut changes_handle = changes_output.activate();
                    let changes = &mut batch.changes;
                    changes.sort_by_key(|(_, change_time, _)| *change_time);
                    while let Some(&(_, change_time, _)) = changes.first() {
                        let run = changes
                            .iter()
                            .take_while(|(_, other, _)| *other == change_time)
                            .count();
                        let delayed = change_capability.delayed(&change_time);
                        changes_handle
                            .session(&delayed)
                            .give_iterator(changes.drain(..run));
                    }
                    drop((outcomes_handle, changes_handle));

                    if backlog.is_empty() {
                        held = None;
                    } else {
                        activator.activate();
                    }
                }

                if let Some(log) = log.as_mut() {
                    if let Err(error) = log.sync_if_due() {
                        tracing::error!(worker, error = %error, "syncing the write-ahead log failed");
                    }
                    if let Some(due) = log.sync_due_in() {
                        activator.activate_after(due);
                    }
                    if let Some(checkpoints) = &checkpoints
                        && let Some(id) = checkpoints.pending(checkpoint_done)
                    {
                        checkpoint_done = id;
                        checkpoints.submit(take_snapshot(id, worker, log, &state, outputs.as_ref()));
                    }
                    // The shutdown checkpoint waits until every request has been applied.
                    let input_ended = frontiers[0].frontier().is_empty();
                    if let Some(checkpoints) = &checkpoints
                        && input_ended
                        && backlog.is_empty()
                        && let Some(id) = checkpoints.pending_final(final_done)
                    {
                        final_done = id;
                        checkpoints.submit(take_snapshot(id, worker, log, &state, outputs.as_ref()));
                    }
                }
            }
        });

        (outcomes, changes.as_collection())
    }
}

/// Most requests applied per activation.
const MAX_BATCH: usize = 1024;

type CapacityBuilder<D> = timely::container::CapacityContainerBuilder<Vec<D>>;

/// Appends the retraction and insertion of `change` at `time`.
fn push_change(changes: &mut TimedChanges, time: Time, change: Change) {
    if let Some(retracted) = change.retracted {
        changes.push(((change.key.clone(), retracted), time, -1));
    }
    if let Some(inserted) = change.inserted {
        changes.push(((change.key, inserted), time, 1));
    }
}

/// The requests of one activation, their outcomes and changes, and what undoes them.
#[derive(Default)]
struct Batch {
    outcomes: Vec<Outcome>,
    changes: TimedChanges,
    /// State of each changed key before the batch, in change order.
    undo: Vec<(ShadowKey, KeyState)>,
    /// Log position of each logged outcome, by index into `outcomes`.
    positions: Vec<(usize, LogPosition)>,
}

impl Batch {
    /// Applies `requests` to `state`, and pushes the log record of each change to `log`.
    fn apply(
        &mut self,
        state: &mut ShadowState,
        requests: impl Iterator<Item = Request>,
        epoch: u64,
        mut log: Option<&mut WorkerLog>,
    ) {
        for request in requests {
            let changes_state = matches!(request.operation, Operation::Update | Operation::Delete);
            let before = (log.is_some() && changes_state)
                .then(|| (request.key.clone(), state.key_state(&request.key)));
            let (outcome, change) = state.apply(request, epoch);
            if let Some((change_time, change)) = change {
                push_change(&mut self.changes, change_time, change);
                if let Some(before) = before {
                    self.undo.push(before);
                }
            }
            if let Some(log) = log.as_deref_mut()
                && let Some(record) = log_record(&outcome)
            {
                self.positions.push((self.outcomes.len(), log.push(record)));
            }
            self.outcomes.push(outcome);
        }
    }

    /// Commits the batch's log records. On success sends the history rows of its changes; on
    /// failure undoes the batch and turns its outcomes into 503 rejections.
    fn commit(
        &mut self,
        state: &mut ShadowState,
        log: Option<&mut WorkerLog>,
        outputs: &dyn ShadowOutputs,
    ) {
        let committed = match log {
            Some(log) if !self.positions.is_empty() => log.commit(),
            _ => Ok(()),
        };
        if committed.is_err() {
            for (key, before) in self.undo.drain(..).rev() {
                state.restore(&key, before);
            }
            self.changes.clear();
            self.positions.clear();
            for outcome in &mut self.outcomes {
                reject_unavailable(outcome);
            }
            return;
        }
        self.undo.clear();
        let mut positions = self.positions.drain(..).peekable();
        for (index, outcome) in self.outcomes.iter_mut().enumerate() {
            let position = positions
                .next_if(|(logged, _)| *logged == index)
                .map(|(_, position)| position);
            match outcome {
                Outcome::Updated(updated) => {
                    let request_state = std::mem::take(&mut updated.request_state);
                    let row = history_row(
                        updated.key.clone(),
                        &updated.current,
                        request_state,
                        updated.origin,
                    );
                    outputs.archive(row, position);
                }
                Outcome::Deleted {
                    key,
                    version,
                    client_token,
                    at_ms,
                    origin,
                    ..
                } => {
                    let row =
                        delete_row(key.clone(), *version, *at_ms, *origin, client_token.clone());
                    outputs.archive(row, position);
                }
                _ => {}
            }
        }
    }
}

/// Returns the log record of an accepted change, or `None` for other outcomes.
fn log_record(outcome: &Outcome) -> Option<LogRecord> {
    match outcome {
        Outcome::Updated(updated) => Some(LogRecord {
            lsn: 0,
            key: updated.key.clone(),
            change: ChangeKind::Update,
            version: updated.current.version(),
            accepted_at_ms: updated.current.updated_at_ms,
            origin: updated.origin,
            client_token: updated.current.client_token.clone(),
            request_state: Some(updated.request_state.clone()),
        }),
        Outcome::Deleted {
            key,
            version,
            client_token,
            at_ms,
            origin,
            ..
        } => Some(LogRecord {
            lsn: 0,
            key: key.clone(),
            change: ChangeKind::Delete,
            version: *version,
            accepted_at_ms: *at_ms,
            origin: *origin,
            client_token: client_token.clone(),
            request_state: None,
        }),
        _ => None,
    }
}

/// Replaces an outcome of a batch that could not be logged by a 503 rejection. Rejections keep
/// their own error.
fn reject_unavailable(outcome: &mut Outcome) {
    let (key, operation, client_token, at_ms, reply_to) = match outcome {
        Outcome::Rejected { .. } => return,
        Outcome::Updated(updated) => (
            updated.key.clone(),
            Operation::Update,
            updated.current.client_token.clone(),
            updated.current.updated_at_ms,
            updated.reply_to,
        ),
        Outcome::Read {
            key,
            client_token,
            at_ms,
            reply_to,
            ..
        } => (
            key.clone(),
            Operation::Get,
            client_token.clone(),
            *at_ms,
            *reply_to,
        ),
        Outcome::Deleted {
            key,
            client_token,
            at_ms,
            reply_to,
            ..
        } => (
            key.clone(),
            Operation::Delete,
            client_token.clone(),
            *at_ms,
            *reply_to,
        ),
        Outcome::Listed {
            key,
            at_ms,
            reply_to,
            ..
        } => (key.clone(), Operation::ListNamed, None, *at_ms, *reply_to),
    };
    *outcome = Outcome::Rejected {
        key,
        operation,
        error: ShadowError::unavailable(),
        client_token,
        at_ms,
        reply_to,
    };
}

/// Rotates the worker's log and takes the snapshot of checkpoint `id`.
fn take_snapshot(
    id: u64,
    worker: usize,
    log: &mut WorkerLog,
    state: &ShadowState,
    outputs: &dyn ShadowOutputs,
) -> WorkerSnapshot {
    let worker = u32::try_from(worker).unwrap_or(u32::MAX);
    match log.rotate() {
        Ok(next_lsn) => WorkerSnapshot {
            id,
            worker,
            next_lsn,
            entries: Ok(state.snapshot()),
            archive: outputs.archive_barrier(),
        },
        Err(error) => WorkerSnapshot {
            id,
            worker,
            next_lsn: log.next_lsn(),
            entries: Err(error.to_string()),
            archive: Box::new(|| Ok(())),
        },
    }
}
