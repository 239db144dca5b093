//! Continuous views: queries over all shadows, maintained incrementally while shadows change.
//!
//! The main dataflow arranges the shadows collection by thing name once, and every worker keeps
//! the handle of that arrangement. A view is a dataflow of its own, installed on every worker at
//! runtime: it imports the shared arrangement (so it starts from the current shadows without
//! copying them) and reduces each thing's shadows to the view's row for that thing, if the thing
//! matches. Only the things whose shadows change are evaluated again, so the cost of keeping a
//! view does not grow with the fleet. Each view's changes, and how far its result is complete,
//! go to its [`ViewSink`]. Dropping a view drops its dataflow and the memory it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};

use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use super::version::ShadowVersion;

/// One shadow of a thing in the by-thing arrangement: its name (`None` for the classic shadow)
/// and its current version.
pub type ThingShadow = (Option<String>, Arc<ShadowVersion>);

/// The shadows arranged by thing name, shared by every view of a worker.
pub type ThingTrace = TraceAgent<ValSpine<String, ThingShadow, Time, isize>>;

/// Evaluates a view for one thing: returns the thing's row (for example the value of the
/// aggregated field as JSON text) when the thing matches, or `None`.
pub type ViewLogic = dyn Fn(&str, &[&ThingShadow]) -> Option<String> + Send + Sync;

/// Receives a view's results from every worker.
pub trait ViewSink: Send + Sync {
    /// Receives changes of the view's rows: `(thing, row)` with the dataflow time and +1 or -1.
    fn changes(&self, worker: usize, changes: Vec<((String, String), Time, isize)>);

    /// Reports that `worker` has sent every change before `frontier` (`None`: every change,
    /// because the dataflow has ended).
    fn frontier(&self, worker: usize, frontier: Option<Time>);
}

/// A view to install on every worker.
#[derive(Clone)]
pub struct ViewSpec {
    /// Id of the view, unique among installed views.
    pub id: u64,
    /// The view's evaluation per thing.
    pub logic: Arc<ViewLogic>,
    /// Destination of the view's results.
    pub sink: Arc<dyn ViewSink>,
}

/// A request to the workers to install or drop a view.
#[derive(Clone)]
pub enum ViewCommand {
    /// Install the view on the worker.
    Install(ViewSpec),
    /// Drop the view with this id and free its memory.
    Remove(u64),
}

/// Installs and drops views on every worker.
pub struct ViewControl {
    senders: Vec<Mutex<mpsc::Sender<ViewCommand>>>,
    receivers: Mutex<Vec<Option<mpsc::Receiver<ViewCommand>>>>,
}

impl ViewControl {
    /// Creates the control for `workers` workers.
    pub fn new(workers: usize) -> Self {
        let (senders, receivers) = (0..workers)
            .map(|_| {
                let (sender, receiver) = mpsc::channel();
                (Mutex::new(sender), Some(receiver))
            })
            .unzip();
        ViewControl {
            senders,
            receivers: Mutex::new(receivers),
        }
    }

    /// Sends `command` to every worker. Workers apply it between two steps of the dataflow.
    pub fn send(&self, command: &ViewCommand) {
        for sender in &self.senders {
            let sender = sender
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A worker that has stopped needs no view.
            let _ = sender.send(command.clone());
        }
    }

    /// Returns the receiving end of `worker`, once.
    pub(crate) fn take_receiver(&self, worker: usize) -> Option<mpsc::Receiver<ViewCommand>> {
        self.receivers
            .lock()
            .ok()
            .and_then(|mut receivers| receivers.get_mut(worker).and_then(Option::take))
    }
}

/// The views installed on one worker, by id, with the index of each view's dataflow.
#[derive(Default)]
pub(crate) struct WorkerViews {
    installed: HashMap<u64, usize>,
}

impl WorkerViews {
    /// Applies every waiting command of `commands` on `worker`.
    pub(crate) fn apply(
        &mut self,
        worker: &mut timely::worker::Worker,
        trace: &mut ThingTrace,
        commands: &mpsc::Receiver<ViewCommand>,
    ) {
        while let Ok(command) = commands.try_recv() {
            match command {
                ViewCommand::Install(spec) => {
                    if self.installed.contains_key(&spec.id) {
                        continue;
                    }
                    let index = worker.next_dataflow_index();
                    let id = spec.id;
                    worker.dataflow::<Time, _, _>(|scope| build_view(scope, trace, spec));
                    self.installed.insert(id, index);
                }
                ViewCommand::Remove(id) => {
                    if let Some(index) = self.installed.remove(&id) {
                        worker.drop_dataflow(index);
                    }
                }
            }
        }
    }
}

/// Builds one view in `scope` over the shared arrangement `trace`.
fn build_view(scope: timely::dataflow::Scope<'_, Time>, trace: &mut ThingTrace, spec: ViewSpec) {
    let worker = scope.index();
    let ViewSpec { id, logic, sink } = spec;
    let shadows = trace.import(scope);
    let rows = shadows
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<String, String, Time, isize>, _, _>(
            &format!("View {id}: Evaluate"),
            move |thing: &String,
                  input: &[(&ThingShadow, isize)],
                  output: &mut Vec<(String, isize)>| {
                let current: Vec<&ThingShadow> = input
                    .iter()
                    .filter(|(_, diff)| *diff > 0)
                    .map(|(shadow, _)| *shadow)
                    .collect();
                if let Some(row) = logic(thing, &current) {
                    output.push((row, 1));
                }
            },
            |buffer, key, updates| {
                buffer.clear();
                buffer.extend(
                    updates
                        .drain(..)
                        .map(|(row, time, diff)| ((key.clone(), row), time, diff)),
                );
            },
        )
        .as_collection(|thing: &String, row: &String| (thing.clone(), row.clone()));
    rows.inner.sink(
        Pipeline,
        &format!("View {id}: Publish"),
        move |(input, frontier)| {
            input.for_each(|_capability, changes| {
                if !changes.is_empty() {
                    sink.changes(worker, std::mem::take(changes));
                }
            });
            sink.frontier(worker, frontier.frontier().first().copied());
        },
    );
}
