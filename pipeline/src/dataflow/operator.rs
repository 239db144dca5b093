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

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::request::Request;
use super::state::{Change, Outcome, ShadowState};
use super::version::ShadowRecord;
use super::{Time, epoch_of};
use crate::shadow::Limits;

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
        limits: Limits,
    ) -> (
        Stream<'scope, Time, Vec<Outcome>>,
        VecCollection<'scope, Time, ShadowRecord, isize>,
    );
}

impl<'scope> MaintainShadows<'scope> for Stream<'scope, Time, Vec<Request>> {
    fn maintain_shadows(
        self,
        limits: Limits,
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
        builder.build(move |_capabilities| {
            let mut state = ShadowState::new(limits);
            let mut backlog: VecDeque<Request> = VecDeque::new();
            let mut held: Option<(Capability<Time>, Capability<Time>)> = None;
            let mut batch_outcomes = Vec::new();
            let mut batch_changes: TimedChanges = Vec::new();
            move |_frontiers| {
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
                let Some((outcome_capability, change_capability)) = held.as_ref() else {
                    return;
                };

                // Apply a bounded batch, so outputs stay small; the rest waits for the next
                // activation, still covered by the held capabilities.
                let epoch = epoch_of(*outcome_capability.time());
                let batch = backlog.len().min(MAX_BATCH);
                for request in backlog.drain(..batch) {
                    let (outcome, change) = state.apply(request, epoch);
                    batch_outcomes.push(outcome);
                    if let Some((change_time, change)) = change {
                        push_change(&mut batch_changes, change_time, change);
                    }
                }
                let mut outcomes_handle = outcomes_output.activate();
                outcomes_handle
                    .session(outcome_capability)
                    .give_iterator(batch_outcomes.drain(..));

                // Group changes by time; almost always they all share the first time.
                let mut changes_handle = changes_output.activate();
                batch_changes.sort_by_key(|(_, change_time, _)| *change_time);
                while let Some(&(_, change_time, _)) = batch_changes.first() {
                    let run = batch_changes
                        .iter()
                        .take_while(|(_, other, _)| *other == change_time)
                        .count();
                    let delayed = change_capability.delayed(&change_time);
                    changes_handle
                        .session(&delayed)
                        .give_iterator(batch_changes.drain(..run));
                }
                drop((outcomes_handle, changes_handle));

                if backlog.is_empty() {
                    held = None;
                } else {
                    activator.activate();
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
