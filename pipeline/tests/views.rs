//! Continuous views against answers computed from scratch over a sequential model.
//!
//! A view installed at any point of a request stream must, once the stream ends, have emitted
//! changes that add up to the answer of its query over the final shadows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pipeline::dataflow::{
    self, DataflowConfig, HttpReply, MqttMessage, Operation, ReplyTo, Request, ShadowOutputs,
    ShadowState, ThingShadow, Time, ViewCommand, ViewSink, ViewSpec,
};
use pipeline::history::{HistoryRow, LogPosition, Origin};
use pipeline::shadow::{Limits, ShadowKey};
use proptest::prelude::*;
use serde_json::json;

struct Nothing;

impl ShadowOutputs for Nothing {
    fn publish(&self, _message: MqttMessage) {}
    fn reply_http(&self, _reply: HttpReply) {}
    fn archive(&self, _row: HistoryRow, _position: Option<LogPosition>) {}
}

/// Adds up a view's changes.
#[derive(Default)]
struct Answer {
    rows: Mutex<BTreeMap<(String, String), isize>>,
    times: Mutex<Vec<Time>>,
}

impl ViewSink for Answer {
    fn changes(&self, _worker: usize, changes: Vec<((String, String), Time, isize)>) {
        let mut rows = self.rows.lock().expect("lock");
        let mut times = self.times.lock().expect("lock");
        for (row, time, diff) in changes {
            *rows.entry(row).or_default() += diff;
            times.push(time);
        }
        rows.retain(|_, count| *count != 0);
    }

    fn frontier(&self, _worker: usize, _frontier: Option<Time>) {}
}

impl Answer {
    fn current(&self) -> BTreeMap<String, String> {
        let rows = self.rows.lock().expect("lock");
        for (row, count) in rows.iter() {
            assert_eq!(*count, 1, "row {row:?} has count {count}");
        }
        rows.keys().cloned().collect()
    }
}

/// The view under test: things whose classic shadow reports `level` of at least 2, with the
/// level as the row; named shadows must not count.
fn level_view(_thing: &str, shadows: &[&ThingShadow]) -> Option<String> {
    let classic = shadows.iter().find(|(name, _)| name.is_none())?;
    let level = classic.1.shadow.reported()?.get("level")?.as_i64()?;
    (level >= 2).then(|| level.to_string())
}

/// Evaluates the same query from scratch over a model state.
fn expected(model: &ShadowState, things: usize) -> BTreeMap<String, String> {
    (0..things)
        .filter_map(|thing| {
            let name = format!("thing-{thing}");
            let version = model.get(&ShadowKey::classic(name.clone()))?;
            let level = version.shadow.reported()?.get("level")?.as_i64()?;
            (level >= 2).then(|| (name, level.to_string()))
        })
        .collect()
}

fn request(thing: usize, named: bool, level: Option<i64>, index: usize) -> Request {
    let name = format!("thing-{thing}");
    let key = if named {
        ShadowKey::named(name, "aux")
    } else {
        ShadowKey::classic(name)
    };
    let (operation, payload) = match level {
        Some(level) => (
            Operation::Update,
            json!({"state": {"reported": {"level": level}}})
                .to_string()
                .into_bytes(),
        ),
        None => (Operation::Delete, Vec::new()),
    };
    Request {
        key,
        operation,
        payload,
        origin: Origin::Mqtt,
        reply_to: ReplyTo::Nobody,
        received_at_ms: 1_700_000_000_000 + index as i64,
    }
}

/// Runs `steps` through the dataflow, installs view A before step `install_at`, installs view B
/// at the start and drops it before step `remove_at`, and checks A's final result.
fn run(workers: usize, steps: &[(usize, bool, Option<i64>)], install_at: usize, remove_at: usize) {
    let things = 6;
    let requests: Vec<Request> = steps
        .iter()
        .enumerate()
        .map(|(index, (thing, named, level))| request(*thing % things, *named, *level, index))
        .collect();
    let mut model = ShadowState::new(Limits::default());
    for (index, request) in requests.iter().enumerate() {
        let _ = model.apply(request.clone(), 1 + index as u64);
    }

    let config = DataflowConfig {
        workers,
        limits: Limits::default(),
        request_queue: 16,
        durable: None,
    };
    let (sender, handle) = dataflow::spawn(config, Arc::new(Nothing)).expect("start dataflow");
    let views = handle.views();
    let answer = Arc::new(Answer::default());
    let dropped = Arc::new(Answer::default());
    views.send(&ViewCommand::Install(ViewSpec {
        id: 2,
        logic: Arc::new(level_view),
        sink: Arc::clone(&dropped) as Arc<dyn ViewSink>,
    }));
    for (index, request) in requests.into_iter().enumerate() {
        if index == install_at {
            views.send(&ViewCommand::Install(ViewSpec {
                id: 1,
                logic: Arc::new(level_view),
                sink: Arc::clone(&answer) as Arc<dyn ViewSink>,
            }));
        }
        if index == remove_at {
            views.send(&ViewCommand::Remove(2));
        }
        sender
            .blocking_send(request)
            .expect("dataflow accepts requests");
    }
    if install_at >= steps.len() {
        views.send(&ViewCommand::Install(ViewSpec {
            id: 1,
            logic: Arc::new(level_view),
            sink: Arc::clone(&answer) as Arc<dyn ViewSink>,
        }));
    }
    // Give the workers time to install the last view before the input ends.
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(sender);
    handle.join();

    assert_eq!(answer.current(), expected(&model, things));
}

fn steps() -> impl Strategy<Value = Vec<(usize, bool, Option<i64>)>> {
    prop::collection::vec(
        (
            0usize..6,
            prop::bool::weighted(0.2),
            prop::option::weighted(0.85, 0i64..4),
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn view_matches_model_on_one_worker(steps in steps(), install in 0usize..130, remove in 0usize..130) {
        run(1, &steps, install, remove);
    }

    #[test]
    fn view_matches_model_on_four_workers(steps in steps(), install in 0usize..130, remove in 0usize..130) {
        run(4, &steps, install, remove);
    }
}

#[test]
fn view_installed_after_the_updates_sees_them() {
    let steps: Vec<(usize, bool, Option<i64>)> = (0..40)
        .map(|index| (index % 6, false, Some((index % 4) as i64)))
        .collect();
    run(2, &steps, steps.len(), 0);
}
