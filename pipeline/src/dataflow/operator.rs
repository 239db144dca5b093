//! The `Shadow: Apply` operator: requests in, outcomes and shadow changes out.
//!
//! Requests are exchanged by the hash of their shadow key, the same hash that
//! `arrange_by_key` uses, so the worker that applies a shadow's updates is also the worker that
//! would hold it in an arrangement, and each shadow has exactly one writer.
//!
//! # Notes
//! - Requests are applied as they arrive, without waiting for the frontier. Requests of one
//!   shadow come from one source worker over one FIFO channel, so arrival order is the order in
//!   which the source received them.
//! - A shadow's changes within one epoch are emitted at successive times of that epoch, so that
//!   differential never consolidates two versions of one shadow into one change.

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
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
        let mut builder = OperatorBuilder::new("Shadow: Apply".to_owned(), self.scope());
        let exchange = Exchange::new(|request: &Request| request.key.hashed());
        let mut input = builder.new_input(self, exchange);
        let (outcomes_output, outcomes) = builder.new_output::<Vec<Outcome>>();
        let (changes_output, changes) = builder.new_output::<TimedChanges>();
        let mut outcomes_output =
            OutputBuilder::<_, CapacityBuilder<Outcome>>::from(outcomes_output);
        let mut changes_output = OutputBuilder::<_, CapacityBuilder<_>>::from(changes_output);

        builder.build(move |_capabilities| {
            let mut state = ShadowState::new(limits);
            let mut batch_outcomes = Vec::new();
            let mut batch_changes: TimedChanges = Vec::new();
            move |_frontiers| {
                let mut outcomes_handle = outcomes_output.activate();
                let mut changes_handle = changes_output.activate();
                input.for_each(|capability, requests| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    for request in requests.drain(..) {
                        let (outcome, change) = state.apply(request, epoch_of(time));
                        batch_outcomes.push(outcome);
                        if let Some((change_time, change)) = change {
                            push_change(&mut batch_changes, change_time, change);
                        }
                    }
                    outcomes_handle
                        .session(&capability)
                        .give_iterator(batch_outcomes.drain(..));

                    // Group changes by time; almost always they all share the input time.
                    batch_changes.sort_by_key(|(_, change_time, _)| *change_time);
                    while let Some(&(_, change_time, _)) = batch_changes.first() {
                        let run = batch_changes
                            .iter()
                            .take_while(|(_, other, _)| *other == change_time)
                            .count();
                        let delayed = capability.delayed(&change_time, 1);
                        changes_handle
                            .session(&delayed)
                            .give_iterator(batch_changes.drain(..run));
                    }
                });
            }
        });

        (outcomes, changes.as_collection())
    }
}

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
