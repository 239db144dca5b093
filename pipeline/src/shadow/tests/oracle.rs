//! Random update sequences checked against a naive model of the shadow.
//!
//! The model applies each section patch as a plain JSON Merge Patch (RFC 7396) followed by pruning
//! of empty objects, and recomputes the delta leaf by leaf from paths. After every update the
//! shadow must match the model, store no null and no empty object, keep metadata that mirrors the
//! state with the time each leaf was last written, and return the model's delta.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::super::document::{Section, is_storable_object};
use super::super::metadata::{self, Metadata, MetadataMap};
use super::super::{
    Limits, Shadow, UpdateRequest, accepted_document, accepted_json, apply_update, compute_delta,
    decode_update, delta_document, delta_json, documents_document, documents_json, get_document,
    get_json,
};

type Path = Vec<String>;

/// Keys of generated states. `b"` and the newline are escaped in JSON text, where their escaped
/// forms sort after `b#` and `B`, while the keys themselves sort before them.
const KEYS: [&str; 6] = ["a", "b", "B", "b\"", "b#", "\n"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Null),
        3 => (0_i64..3).prop_map(Value::from),
        1 => prop_oneof![Just(json!(1.0)), Just(json!(2.0)), Just(json!(0.5))],
        1 => any::<bool>().prop_map(Value::from),
        1 => prop_oneof![Just(json!("x")), Just(json!("},\"]\\"))],
        1 => prop::collection::vec((0_i64..3).prop_map(Value::from), 0..3).prop_map(Value::Array),
    ]
}

fn patch_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 3, |inner| {
        prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), inner, 0..3).prop_map(
            |members| {
                Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            },
        )
    })
}

fn section_patch() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        6 => prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), patch_value(), 0..3)
            .prop_map(|members| {
                Some(Value::Object(members.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
            }),
    ]
}

fn state_patch() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        12 => (section_patch(), section_patch()).prop_map(|(desired, reported)| {
            let mut state = Map::new();
            if let Some(desired) = desired {
                state.insert("desired".to_owned(), desired);
            }
            if let Some(reported) = reported {
                state.insert("reported".to_owned(), reported);
            }
            Value::Object(state)
        }),
    ]
}

/// One section of the model: its state and the step at which each leaf was last written.
#[derive(Default)]
struct ModelSection {
    state: Value,
    written_at: BTreeMap<Path, i64>,
}

impl ModelSection {
    fn apply(&mut self, patch: &Value, now_s: i64) {
        if patch.is_null() {
            *self = ModelSection::default();
            return;
        }
        if !self.state.is_object() {
            self.state = Value::Object(Map::new());
        }
        merge_patch(&mut self.state, patch);
        prune(&mut self.state);
        record_writes(&mut self.written_at, &mut Vec::new(), patch, now_s);
    }

    fn object(&self) -> Option<&Map<String, Value>> {
        self.state.as_object().filter(|object| !object.is_empty())
    }
}

/// RFC 7396 JSON Merge Patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Removes objects left empty, outside arrays.
fn prune(value: &mut Value) {
    if let Value::Object(object) = value {
        for member in object.values_mut() {
            prune(member);
        }
        object.retain(|_, member| !matches!(member, Value::Object(child) if child.is_empty()));
    }
}

/// Updates the last-write step of every leaf path the patch writes or deletes.
fn record_writes(written_at: &mut BTreeMap<Path, i64>, path: &mut Path, patch: &Value, now_s: i64) {
    let Value::Object(patch) = patch else {
        return;
    };
    for (key, value) in patch {
        path.push(key.clone());
        match value {
            Value::Object(_) => {
                written_at.remove(path.as_slice());
                record_writes(written_at, path, value, now_s);
            }
            _ => {
                written_at.retain(|leaf, _| !leaf.starts_with(path));
                if !value.is_null() {
                    written_at.insert(path.clone(), now_s);
                }
            }
        }
        path.pop();
    }
}

/// Returns every leaf (scalar or array) of an object with its path.
fn leaves(object: &Map<String, Value>, path: &mut Path, out: &mut BTreeMap<Path, Value>) {
    for (key, value) in object {
        path.push(key.clone());
        match value {
            Value::Object(child) => leaves(child, path, out),
            _ => {
                out.insert(path.clone(), value.clone());
            }
        }
        path.pop();
    }
}

fn metadata_leaves(metadata: &MetadataMap, path: &mut Path, out: &mut BTreeMap<Path, i64>) {
    for (key, member) in metadata {
        path.push(key.clone());
        match member {
            Metadata::Object(members) => metadata_leaves(members, path, out),
            Metadata::Timestamp(timestamp) => {
                out.insert(path.clone(), *timestamp);
            }
        }
        path.pop();
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = object.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    lookup(value.as_object()?, rest)
}

/// Rewrites every number as a float, so `==` compares numbers by value. Test values are small.
fn normalize_numbers(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64()),
        Value::Array(elements) => Value::Array(elements.iter().map(normalize_numbers).collect()),
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, member)| (key.clone(), normalize_numbers(member)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn insert_at(object: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        object.insert(first.clone(), value);
        return;
    }
    let child = object
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(child) = child {
        insert_at(child, rest, value);
    }
}

/// Recomputes the delta leaf by leaf: a desired leaf is in the delta unless `reported` contains an
/// equal value at the same path.
fn naive_delta(
    desired: Option<&Map<String, Value>>,
    reported: Option<&Map<String, Value>>,
) -> Option<Map<String, Value>> {
    let mut desired_leaves = BTreeMap::new();
    leaves(desired?, &mut Vec::new(), &mut desired_leaves);
    let empty = Map::new();
    let reported = reported.unwrap_or(&empty);
    let mut delta = Map::new();
    for (path, value) in desired_leaves {
        let matched = lookup(reported, &path)
            .is_some_and(|reported| normalize_numbers(reported) == normalize_numbers(&value));
        if !matched {
            insert_at(&mut delta, &path, value);
        }
    }
    Some(delta).filter(|delta| !delta.is_empty())
}

fn check_section(name: &str, section: Option<&Section>, model: &ModelSection) {
    let state = section.map(Section::state);
    assert_eq!(
        state.as_ref(),
        model.object(),
        "{name} state differs from the model"
    );
    let (Some(section), Some(state)) = (section, state) else {
        return;
    };
    assert!(is_storable_object(&state), "{name} stores null or {{}}");
    let section_metadata = section.metadata(&state);
    assert!(
        metadata::mirrors(&state, &section_metadata),
        "{name} metadata does not mirror its state"
    );
    let mut written_at = BTreeMap::new();
    metadata_leaves(&section_metadata, &mut Vec::new(), &mut written_at);
    assert_eq!(
        written_at, model.written_at,
        "{name} timestamps differ from the model"
    );
}

fn check_delta(shadow: &Shadow) {
    let expected = naive_delta(shadow.desired().as_ref(), shadow.reported().as_ref());
    let delta = compute_delta(shadow);
    assert_eq!(
        delta.as_ref().map(|delta| delta.state()),
        expected,
        "delta state"
    );
    if let (Some(delta), Some(desired)) = (delta, shadow.desired.as_ref()) {
        // Delta metadata is desired metadata projected onto the delta's paths.
        let desired_metadata = desired.render_metadata();
        let expected_metadata = project(&delta.state(), &desired_metadata);
        assert_eq!(delta.metadata_value(), expected_metadata, "delta metadata");
    }
}

/// Checks that each byte encoder writes exactly what `serde_json` writes for the `Value` of the
/// matching document function.
fn check_byte_encoders(
    request: &UpdateRequest,
    previous: Option<&Shadow>,
    next: &Shadow,
    now_s: i64,
) {
    let bytes = |document: Value| serde_json::to_vec(&document).expect("document serializes");
    let token = request.client_token();
    assert_eq!(
        String::from_utf8_lossy(&accepted_json(request, next.version(), now_s)),
        String::from_utf8_lossy(&bytes(accepted_document(request, next.version(), now_s))),
        "accepted document bytes"
    );
    assert_eq!(
        String::from_utf8_lossy(&documents_json(previous, next, now_s, token)),
        String::from_utf8_lossy(&bytes(documents_document(previous, next, now_s, token))),
        "documents document bytes"
    );
    let delta = compute_delta(next);
    assert_eq!(
        String::from_utf8_lossy(&get_json(next, delta.as_ref(), now_s, token)),
        String::from_utf8_lossy(&bytes(get_document(next, delta.as_ref(), now_s, token))),
        "get document bytes"
    );
    if let Some(delta) = &delta {
        assert_eq!(
            String::from_utf8_lossy(&delta_json(delta, next.version(), now_s, token)),
            String::from_utf8_lossy(&bytes(delta_document(delta, next.version(), now_s, token))),
            "delta document bytes"
        );
    }
}

fn project(delta: &Map<String, Value>, metadata: &Value) -> Value {
    let mut projected = Map::new();
    for (key, value) in delta {
        let member = &metadata[key.as_str()];
        let member = match value {
            Value::Object(child) if member.get("timestamp").is_none() => project(child, member),
            _ => member.clone(),
        };
        projected.insert(key.clone(), member);
    }
    Value::Object(projected)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_updates_match_model(states in prop::collection::vec(state_patch(), 1..12)) {
        let limits = Limits { max_state_bytes: usize::MAX, ..Limits::default() };
        let mut shadow: Option<Shadow> = None;
        let mut desired = ModelSection::default();
        let mut reported = ModelSection::default();

        for (step, state) in states.iter().enumerate() {
            let now_s = i64::try_from(step + 1).expect("few steps");
            // Odd steps carry a client token that needs escaping, for the document checks.
            let payload = if step % 2 == 0 {
                json!({"state": state})
            } else {
                json!({"state": state, "clientToken": format!("c\"{step}")})
            }
            .to_string();
            let request = decode_update(payload.as_bytes(), &limits)
                .unwrap_or_else(|rejected| panic!("step {step}: {payload} rejected: {rejected:?}"));
            let next = apply_update(shadow.as_ref(), 0, &request, now_s, &limits)
                .unwrap_or_else(|error| panic!("step {step}: {payload} failed: {error}"));
            prop_assert_eq!(next.version(), now_s.unsigned_abs(), "step {}", step);

            match state {
                Value::Null => {
                    desired = ModelSection::default();
                    reported = ModelSection::default();
                }
                state => {
                    if let Some(patch) = state.get("desired") {
                        desired.apply(patch, now_s);
                    }
                    if let Some(patch) = state.get("reported") {
                        reported.apply(patch, now_s);
                    }
                }
            }

            check_section("desired", next.desired.as_ref(), &desired);
            check_section("reported", next.reported.as_ref(), &reported);
            check_delta(&next);
            check_byte_encoders(&request, shadow.as_ref(), &next, now_s);
            shadow = Some(next);
        }
    }
}
