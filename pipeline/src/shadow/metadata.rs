//! Per-leaf update timestamps, stored compactly and rendered in the AWS metadata layout.
//!
//! AWS metadata mirrors the state with `{"timestamp": <epoch seconds>}` at every leaf, and an
//! array gets an array of per-element metadata. An update always replaces an array whole, so all
//! elements of an array share one timestamp. The stored tree therefore keeps one
//! [`Metadata::Timestamp`] per scalar or array, and [`render_object`] expands arrays element by
//! element when a document is built:
//!
//! ```text
//! state     {"color": [1, {"r": 2}], "on": true}
//! stored    {"color": 1700000000, "on": 1700000000}
//! rendered  {"color": [{"timestamp": 1700000000}, {"r": {"timestamp": 1700000000}}],
//!            "on": {"timestamp": 1700000000}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Metadata of the members of one state object, by key.
pub(crate) type MetadataMap = BTreeMap<String, Metadata>;

/// Metadata of one state value.
///
/// Design: for a stored state object, the metadata map has exactly the same keys, and a key's
/// metadata is `Object` exactly when its value is an object. `merge` keeps this true and
/// `document` checks it when a shadow is deserialized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Metadata {
    /// Last update, in epoch seconds, of a scalar or of a whole array.
    Timestamp(i64),

    /// Metadata of an object's members.
    Object(MetadataMap),
}

impl Metadata {
    /// Builds the metadata of a value written at `now_s`, mirroring objects key by key.
    pub(crate) fn stamped(value: &Value, now_s: i64) -> Self {
        match value {
            Value::Object(object) => Metadata::Object(stamped_map(object, now_s)),
            _ => Metadata::Timestamp(now_s),
        }
    }
}

/// Builds the metadata of every member of `object`, all written at `now_s`.
pub(crate) fn stamped_map(object: &Map<String, Value>, now_s: i64) -> MetadataMap {
    object
        .iter()
        .map(|(key, value)| (key.clone(), Metadata::stamped(value, now_s)))
        .collect()
}

/// Renders the AWS metadata of `value` as if every leaf was written at `timestamp`.
///
/// Objects are mirrored key by key, arrays element by element, and every other value, null
/// included, becomes `{"timestamp": timestamp}`. This is the metadata of an update request's
/// echo and of an array's elements.
pub(crate) fn render_uniform(value: &Value, timestamp: i64) -> Value {
    match value {
        Value::Object(object) => Value::Object(render_uniform_map(object, timestamp)),
        Value::Array(elements) => Value::Array(
            elements
                .iter()
                .map(|element| render_uniform(element, timestamp))
                .collect(),
        ),
        _ => timestamp_leaf(timestamp),
    }
}

/// Renders the AWS metadata of every member of `object`, as [`render_uniform`] does.
pub(crate) fn render_uniform_map(
    object: &Map<String, Value>,
    timestamp: i64,
) -> Map<String, Value> {
    object
        .iter()
        .map(|(key, value)| (key.clone(), render_uniform(value, timestamp)))
        .collect()
}

/// Renders the AWS metadata of a stored state object from its compact metadata.
pub(crate) fn render_object(state: &Map<String, Value>, metadata: &MetadataMap) -> Value {
    let mut rendered = Map::new();
    for (key, value) in state {
        // A key without metadata can only come from a broken mirror invariant. It is left out
        // rather than given an invented timestamp.
        let Some(member_metadata) = metadata.get(key) else {
            continue;
        };
        let member = match (value, member_metadata) {
            (Value::Object(object), Metadata::Object(members)) => render_object(object, members),
            (_, Metadata::Timestamp(timestamp)) => render_uniform(value, *timestamp),
            (_, Metadata::Object(_)) => continue,
        };
        rendered.insert(key.clone(), member);
    }
    Value::Object(rendered)
}

/// Checks that `metadata` mirrors `state` as the [`Metadata`] design note requires.
pub(crate) fn mirrors(state: &Map<String, Value>, metadata: &MetadataMap) -> bool {
    state.len() == metadata.len()
        && state
            .iter()
            .all(|(key, value)| match (value, metadata.get(key)) {
                (Value::Object(object), Some(Metadata::Object(members))) => {
                    mirrors(object, members)
                }
                (Value::Object(_), _) => false,
                (_, Some(Metadata::Timestamp(_))) => true,
                _ => false,
            })
}

fn timestamp_leaf(timestamp: i64) -> Value {
    let mut leaf = Map::new();
    leaf.insert("timestamp".to_owned(), Value::from(timestamp));
    Value::Object(leaf)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            other => panic!("expected an object, got {other}"),
        }
    }

    #[test]
    fn arrays_render_per_element_metadata() {
        let state = object(json!({"color": [1, {"r": 2}, [3]], "on": true}));
        let metadata = stamped_map(&state, 7);
        let rendered = render_object(&state, &metadata);
        assert_eq!(
            rendered,
            json!({
                "color": [{"timestamp": 7}, {"r": {"timestamp": 7}}, [{"timestamp": 7}]],
                "on": {"timestamp": 7}
            })
        );
    }

    #[test]
    fn nested_objects_keep_their_own_timestamps() {
        let state = object(json!({"light": {"on": true, "level": 3}}));
        let mut metadata = stamped_map(&state, 1);
        if let Some(Metadata::Object(light)) = metadata.get_mut("light") {
            light.insert("level".to_owned(), Metadata::Timestamp(2));
        }
        let rendered = render_object(&state, &metadata);
        assert_eq!(
            rendered,
            json!({"light": {"on": {"timestamp": 1}, "level": {"timestamp": 2}}})
        );
    }

    #[test]
    fn uniform_render_stamps_nulls() {
        let rendered = render_uniform(&json!({"a": null, "b": {"c": null}}), 5);
        assert_eq!(
            rendered,
            json!({"a": {"timestamp": 5}, "b": {"c": {"timestamp": 5}}})
        );
    }

    #[test]
    fn mirrors_detects_shape_mismatch() {
        let state = object(json!({"a": {"b": 1}}));
        assert!(mirrors(&state, &stamped_map(&state, 1)));

        let mut flat = MetadataMap::new();
        flat.insert("a".to_owned(), Metadata::Timestamp(1));
        assert!(!mirrors(&state, &flat));
        assert!(!mirrors(&state, &MetadataMap::new()));
    }

    #[test]
    fn compact_form_round_trips() {
        let state = object(json!({"a": {"b": 1}, "c": [1, 2]}));
        let metadata = stamped_map(&state, 9);
        let json = serde_json::to_value(&metadata).expect("metadata serializes");
        assert_eq!(json, json!({"a": {"b": 9}, "c": 9}));
        let parsed: MetadataMap = serde_json::from_value(json).expect("metadata deserializes");
        assert_eq!(parsed, metadata);
    }
}
