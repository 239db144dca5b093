//! Property test: the dataflow on 1 and 4 workers against a plain sequential model of shadows.
//!
//! The model below is written independently of `pipeline::shadow`: a naive recursive merge and
//! delta over `serde_json::Value`. For random request streams over several things, every
//! thing's accepted versions, published deltas and final documents must match the model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use pipeline::dataflow::{
    self, DataflowConfig, HttpReply, MqttMessage, Operation, ReplyTo, Request, ShadowOutputs,
};
use pipeline::history::{HistoryRow, LogPosition, Origin};
use pipeline::shadow::{Limits, ShadowKey};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Collects everything the dataflow emits.
#[derive(Default)]
struct Collected {
    messages: Mutex<Vec<MqttMessage>>,
    rows: Mutex<Vec<HistoryRow>>,
}

impl ShadowOutputs for Collected {
    fn publish(&self, message: MqttMessage) {
        self.messages.lock().expect("lock").push(message);
    }
    fn reply_http(&self, _reply: HttpReply) {}
    fn archive(&self, row: HistoryRow, _position: Option<LogPosition>) {
        self.rows.lock().expect("lock").push(row);
    }
}

/// One generated request.
#[derive(Clone, Debug)]
enum Step {
    Update {
        thing: usize,
        desired: Option<Value>,
        reported: Option<Value>,
        version_offset: Option<i64>,
    },
    Get {
        thing: usize,
    },
    Delete {
        thing: usize,
    },
    Malformed {
        thing: usize,
    },
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..3).prop_map(Value::from),
        Just(json!(1.0)),
        Just(json!(2.5)),
        Just(json!("on")),
        Just(json!(true)),
        Just(json!([1, 2])),
        Just(json!([1.0, 2])),
        Just(Value::Null),
    ]
}

fn patch() -> impl Strategy<Value = Value> {
    let key = prop_oneof![Just("a"), Just("b"), Just("c")];
    let inner = prop::collection::btree_map(key.clone(), leaf(), 0..3)
        .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let value = prop_oneof![3 => leaf(), 1 => inner];
    prop_oneof![
        8 => prop::collection::btree_map(key, value, 0..3)
            .prop_map(|map| Value::Object(map.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => Just(Value::Null),
    ]
}

fn step(things: usize) -> impl Strategy<Value = Step> {
    let thing = 0..things;
    prop_oneof![
        10 => (thing.clone(), prop::option::of(patch()), prop::option::of(patch()),
            prop::option::weighted(0.2, prop_oneof![Just(0i64), Just(3i64)]))
            .prop_map(|(thing, desired, reported, version_offset)| Step::Update { thing, desired, reported, version_offset }),
        1 => thing.clone().prop_map(|thing| Step::Get { thing }),
        1 => thing.clone().prop_map(|thing| Step::Delete { thing }),
        1 => thing.prop_map(|thing| Step::Malformed { thing }),
    ]
}

/// The sequential model of one shadow.
#[derive(Clone, Debug, Default)]
struct ModelShadow {
    desired: Map<String, Value>,
    reported: Map<String, Value>,
    version: u64,
    live: bool,
}

/// What the model expects for one thing.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    /// Versions of accepted updates, in order.
    accepted: Vec<u64>,
    /// `(version, delta state)` of every published delta, in order.
    deltas: Vec<(u64, Value)>,
    /// Versions of accepted deletes.
    deleted: Vec<u64>,
    /// Number of rejected requests.
    rejected: usize,
}

fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let mut base = match target.remove(key) {
                    Some(Value::Object(existing)) => existing,
                    _ => Map::new(),
                };
                merge(&mut base, inner);
                if !base.is_empty() {
                    target.insert(key.clone(), Value::Object(base));
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

fn same_value(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => left == right,
    }
}

fn delta(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, wanted) in desired {
        match (wanted, reported.get(key)) {
            (Value::Object(inner), Some(Value::Object(actual))) => {
                let nested = delta(inner, actual);
                if !nested.is_empty() {
                    out.insert(key.clone(), Value::Object(nested));
                }
            }
            (wanted, Some(actual)) if same_value(wanted, actual) => {}
            (wanted, _) => {
                out.insert(key.clone(), wanted.clone());
            }
        }
    }
    out
}

fn arrays_hold_null(value: &Value) -> bool {
    match value {
        Value::Array(items) => items
            .iter()
            .any(|item| item.is_null() || arrays_hold_null(item)),
        Value::Object(map) => map.values().any(arrays_hold_null),
        _ => false,
    }
}

fn apply_model(model: &mut ModelShadow, expected: &mut Expected, step: &Step) {
    match step {
        Step::Update {
            desired,
            reported,
            version_offset,
            ..
        } => {
            let current = model.version;
            let conflict = version_offset.is_some_and(|offset| offset != 0);
            let nulls = desired.iter().chain(reported).any(arrays_hold_null);
            if conflict || nulls {
                expected.rejected += 1;
                return;
            }
            for (section, patch) in [
                (&mut model.desired, desired),
                (&mut model.reported, reported),
            ] {
                match patch {
                    Some(Value::Null) => section.clear(),
                    Some(Value::Object(patch)) => merge(section, patch),
                    _ => {}
                }
            }
            model.version = current + 1;
            model.live = true;
            expected.accepted.push(model.version);
            let delta = delta(&model.desired, &model.reported);
            if !delta.is_empty() {
                expected.deltas.push((model.version, Value::Object(delta)));
            }
        }
        Step::Get { .. } => {
            if !model.live {
                expected.rejected += 1;
            }
        }
        Step::Delete { .. } => {
            if model.live {
                model.live = false;
                model.desired.clear();
                model.reported.clear();
                expected.deleted.push(model.version);
            } else {
                expected.rejected += 1;
            }
        }
        Step::Malformed { .. } => expected.rejected += 1,
    }
}

fn thing_name(index: usize) -> String {
    format!("thing-{index}")
}

fn request(step: &Step, model_version: u64, index: usize) -> Request {
    let (thing, operation, payload) = match step {
        Step::Update {
            thing,
            desired,
            reported,
            version_offset,
        } => {
            let mut state = Map::new();
            if let Some(desired) = desired {
                state.insert("desired".to_owned(), desired.clone());
            }
            if let Some(reported) = reported {
                state.insert("reported".to_owned(), reported.clone());
            }
            let mut body = json!({ "state": state, "clientToken": format!("t{index}") });
            if let Some(offset) = version_offset {
                body["version"] = json!(model_version as i64 + offset);
            }
            (
                *thing,
                Operation::Update,
                serde_json::to_vec(&body).expect("encode"),
            )
        }
        Step::Get { thing } => (*thing, Operation::Get, Vec::new()),
        Step::Delete { thing } => (*thing, Operation::Delete, Vec::new()),
        Step::Malformed { thing } => (*thing, Operation::Update, b"{\"state\": {".to_vec()),
    };
    Request {
        key: ShadowKey::classic(thing_name(thing)),
        operation,
        payload,
        origin: Origin::Mqtt,
        reply_to: ReplyTo::Mqtt,
        received_at_ms: 1_700_000_000_000 + index as i64,
    }
}

/// Runs `steps` through the dataflow on `workers` threads and returns what it emitted per thing.
fn run_dataflow(
    steps: &[Step],
    workers: usize,
    things: usize,
) -> (BTreeMap<String, Expected>, Vec<HistoryRow>) {
    // The model is needed to fill in `version` for conditional updates.
    let mut models = vec![ModelShadow::default(); things];
    let mut scratch = Expected::default();
    let requests: Vec<Request> = steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let thing = match step {
                Step::Update { thing, .. }
                | Step::Get { thing }
                | Step::Delete { thing }
                | Step::Malformed { thing } => *thing,
            };
            let request = request(step, models[thing].version, index);
            apply_model(&mut models[thing], &mut scratch, step);
            request
        })
        .collect();

    let collected = Arc::new(Collected::default());
    let config = DataflowConfig {
        workers,
        limits: Limits::default(),
        request_queue: 64,
        durable: None,
    };
    let (sender, handle) =
        dataflow::spawn(config, Arc::clone(&collected) as Arc<dyn ShadowOutputs>)
            .expect("start dataflow");
    for request in requests {
        sender
            .blocking_send(request)
            .expect("dataflow accepts requests");
    }
    drop(sender);
    handle.join();

    let mut observed: BTreeMap<String, Expected> = BTreeMap::new();
    for message in collected.messages.lock().expect("lock").iter() {
        let parts: Vec<&str> = message.topic.split('/').collect();
        let thing = parts[2].to_owned();
        let entry = observed.entry(thing).or_default();
        let document: Value = serde_json::from_slice(&message.payload).expect("payload is JSON");
        match (parts[4], parts[5]) {
            ("update", "accepted") => entry
                .accepted
                .push(document["version"].as_u64().expect("version")),
            ("update", "delta") => entry.deltas.push((
                document["version"].as_u64().expect("version"),
                document["state"].clone(),
            )),
            ("delete", "accepted") => entry
                .deleted
                .push(document["version"].as_u64().expect("version")),
            (_, "rejected") => entry.rejected += 1,
            _ => {}
        }
    }
    let rows = collected.rows.lock().expect("lock").clone();
    (observed, rows)
}

fn expected_outcomes(
    steps: &[Step],
    things: usize,
) -> (BTreeMap<String, Expected>, Vec<ModelShadow>) {
    let mut models = vec![ModelShadow::default(); things];
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for step in steps {
        let thing = match step {
            Step::Update { thing, .. }
            | Step::Get { thing }
            | Step::Delete { thing }
            | Step::Malformed { thing } => *thing,
        };
        apply_model(
            &mut models[thing],
            expected.entry(thing_name(thing)).or_default(),
            step,
        );
    }
    expected.retain(|_, outcome| *outcome != Expected::default());
    (expected, models)
}

fn check(steps: &[Step], workers: usize) {
    let things = 5;
    let (expected, models) = expected_outcomes(steps, things);
    let (observed, rows) = run_dataflow(steps, workers, things);
    for (thing, want) in &expected {
        let got = observed
            .get(thing)
            .unwrap_or_else(|| panic!("no output for {thing} on {workers} workers"));
        assert_eq!(
            got.accepted, want.accepted,
            "accepted versions of {thing} on {workers} workers"
        );
        assert_eq!(
            got.deleted, want.deleted,
            "deleted versions of {thing} on {workers} workers"
        );
        assert_eq!(
            got.rejected, want.rejected,
            "rejections of {thing} on {workers} workers"
        );
        assert_eq!(
            got.deltas.len(),
            want.deltas.len(),
            "delta count of {thing} on {workers} workers"
        );
        for ((got_version, got_state), (want_version, want_state)) in
            got.deltas.iter().zip(&want.deltas)
        {
            assert_eq!(
                got_version, want_version,
                "delta version of {thing} on {workers} workers"
            );
            assert!(
                same_value(got_state, want_state),
                "delta of {thing} v{want_version} on {workers} workers: got {got_state}, want {want_state}"
            );
        }
    }
    assert_eq!(
        observed.len(),
        expected.len(),
        "things with output on {workers} workers"
    );

    // The last history row of each live thing contains its final document.
    for (index, model) in models.iter().enumerate().filter(|(_, model)| model.live) {
        let thing = thing_name(index);
        let last = rows
            .iter()
            .filter(|row| row.thing_name == thing)
            .max_by_key(|row| row.version)
            .expect("history row");
        let parse = |text: &Option<String>| {
            text.as_deref().map_or(Value::Object(Map::new()), |text| {
                serde_json::from_str(text).expect("JSON column")
            })
        };
        assert!(
            same_value(&parse(&last.desired), &Value::Object(model.desired.clone())),
            "final desired of {thing}"
        );
        assert!(
            same_value(
                &parse(&last.reported),
                &Value::Object(model.reported.clone())
            ),
            "final reported of {thing}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn dataflow_matches_model_on_one_worker(steps in prop::collection::vec(step(5), 1..120)) {
        check(&steps, 1);
    }

    #[test]
    fn dataflow_matches_model_on_four_workers(steps in prop::collection::vec(step(5), 1..120)) {
        check(&steps, 4);
    }
}

/// A burst of updates to one shadow, queued before the dataflow starts draining, lands in one
/// epoch; every update must still publish its own delta.
#[test]
fn burst_in_one_epoch_publishes_every_delta() {
    let steps: Vec<Step> = (0..50)
        .map(|i| Step::Update {
            thing: 0,
            desired: Some(json!({ "level": i })),
            reported: None,
            version_offset: None,
        })
        .collect();
    let (observed, _) = run_dataflow(&steps, 2, 1);
    let deltas = &observed["thing-0"].deltas;
    assert_eq!(deltas.len(), 50);
    let versions: Vec<u64> = deltas.iter().map(|(version, _)| *version).collect();
    assert_eq!(versions, (1..=50).collect::<Vec<u64>>());
}

/// Dropping the last request sender, from any thread and at any moment, must end the dataflow:
/// the source has to see the closed channel even when it ran just before the close.
#[test]
fn dataflow_stops_when_senders_drop() {
    for round in 0..300 {
        let collected = Arc::new(Collected::default());
        let config = DataflowConfig {
            workers: 2,
            limits: Limits::default(),
            request_queue: 8,
            durable: None,
        };
        let (sender, handle) =
            dataflow::spawn(config, Arc::clone(&collected) as Arc<dyn ShadowOutputs>)
                .expect("start dataflow");
        let threads: Vec<_> = (0..3)
            .map(|thread| {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for index in 0..(round % 7) {
                        let step = Step::Get { thing: thread };
                        sender
                            .blocking_send(request(&step, 0, index))
                            .expect("send");
                    }
                })
            })
            .collect();
        drop(sender);
        for thread in threads {
            thread.join().expect("sender thread");
        }
        let (done_sender, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            handle.join();
            let _ = done_sender.send(());
        });
        done.recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|_| {
                panic!("dataflow still running 10 s after its senders dropped (round {round})")
            });
    }
}
