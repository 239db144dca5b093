//! Per-leaf update timestamps, stored compactly and rendered in the AWS metadata layout.
//!
//! AWS metadata mirrors the state with `{"timestamp": <epoch seconds>}` at every leaf, and an
//! array gets an array of per-element metadata. An update always replaces an array whole, so all
//! elements of an array share one timestamp. The metadata tree that merges work on and snapshots
//! serialize ([`MetadataMap`]) therefore keeps one [`Metadata::Timestamp`] per scalar or array,
//! and [`Stamps::render`] expands arrays element by element when a document is built:
//!
//! ```text
//! state     {"color": [1, {"r": 2}], "on": true}
//! stored    {"color": 1700000000, "on": 1700000000}
//! rendered  {"color": [{"timestamp": 1700000000}, {"r": {"timestamp": 1700000000}}],
//!            "on": {"timestamp": 1700000000}}
//! ```
//!
//! A stored section keeps its timestamps even more compactly, as [`Stamps`]: one timestamp per
//! leaf (scalar or array) in document order, or a single one when every leaf shares it. The
//! tree is rebuilt from them while an update is merged or a snapshot is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::compact;

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

#[cfg(test)]
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
#[cfg(test)]
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

/// Leaf timestamps of one stored section, in document order.
///
/// The leaves of a state object are its scalars and arrays, visited depth first with keys in
/// the map's (sorted) order; objects are not leaves. For `{"a": {"b": 1, "c": [2]}, "d": true}`
/// the leaves are `a.b`, `a.c` and `d`.
///
/// Design: a value built by [`Stamps::from_metadata`] or [`Stamps::from_leaves`] is `Uniform`
/// whenever all leaves share one timestamp, so two equal metadata trees give equal `Stamps`.
/// Most sections are written by one update, so most are `Uniform` and need no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stamps {
    /// Every leaf was written at this time, in epoch seconds.
    Uniform(i64),

    /// One timestamp per leaf, in document order; at least two differ.
    PerLeaf(Arc<[i64]>),
}

impl Stamps {
    /// Collects the timestamps of a list of leaves in document order.
    pub(crate) fn from_leaves(leaves: Vec<i64>) -> Self {
        match leaves.split_first() {
            None => Stamps::Uniform(0),
            Some((first, rest)) if rest.iter().all(|timestamp| timestamp == first) => {
                Stamps::Uniform(*first)
            }
            Some(_) => Stamps::PerLeaf(leaves.into()),
        }
    }

    /// Flattens the metadata of `state` into its leaf timestamps. A leaf without metadata, which
    /// only a broken mirror invariant can leave, gets timestamp 0 ("unknown").
    pub(crate) fn from_metadata(state: &Map<String, Value>, metadata: &MetadataMap) -> Self {
        let mut leaves = Vec::new();
        flatten_into(state, Some(metadata), &mut leaves);
        Self::from_leaves(leaves)
    }

    /// Returns the timestamp of the leaf at `index` in document order.
    pub(crate) fn get(&self, index: usize) -> i64 {
        match self {
            Stamps::Uniform(timestamp) => *timestamp,
            Stamps::PerLeaf(leaves) => leaves.get(index).copied().unwrap_or(0),
        }
    }

    /// Returns the earliest timestamp.
    pub(crate) fn min(&self) -> i64 {
        match self {
            Stamps::Uniform(timestamp) => *timestamp,
            Stamps::PerLeaf(leaves) => leaves.iter().copied().min().unwrap_or(0),
        }
    }

    /// Rebuilds the metadata tree of `state` from its leaf timestamps.
    pub(crate) fn to_metadata(&self, state: &Map<String, Value>) -> MetadataMap {
        let mut next = 0;
        self.expand(state, &mut next)
    }

    fn expand(&self, state: &Map<String, Value>, next: &mut usize) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in state {
            let member = match value {
                Value::Object(object) => Metadata::Object(self.expand(object, next)),
                _ => {
                    *next += 1;
                    Metadata::Timestamp(self.get(*next - 1))
                }
            };
            metadata.insert(key.clone(), member);
        }
        metadata
    }

    /// Renders the AWS metadata of `state` from its leaf timestamps.
    pub(crate) fn render(&self, state: &Map<String, Value>) -> Map<String, Value> {
        let mut next = 0;
        self.render_from(state, &mut next)
    }

    fn render_from(&self, state: &Map<String, Value>, next: &mut usize) -> Map<String, Value> {
        let mut rendered = Map::new();
        for (key, value) in state {
            let member = match value {
                Value::Object(object) => Value::Object(self.render_from(object, next)),
                _ => {
                    *next += 1;
                    render_uniform(value, self.get(*next - 1))
                }
            };
            rendered.insert(key.clone(), member);
        }
        rendered
    }
}

/// Reads the leaf timestamps of a stored section in document order, while a merge or a delta
/// walks its text.
pub(crate) struct StampCursor<'s> {
    stamps: Option<&'s Stamps>,
    next: usize,
}

impl<'s> StampCursor<'s> {
    /// Starts at the first leaf; `None` reads every timestamp as 0.
    pub(crate) fn new(stamps: Option<&'s Stamps>) -> Self {
        StampCursor { stamps, next: 0 }
    }

    /// Appends the timestamps of the leaves of the next value, given as stored text, to `leaves`.
    pub(crate) fn keep(&mut self, value: &str, leaves: &mut Vec<i64>) {
        for _ in 0..compact::leaf_count(value) {
            leaves.push(self.stamps.map_or(0, |stamps| stamps.get(self.next)));
            self.next += 1;
        }
    }

    /// Passes over the timestamps of the leaves of the next value, given as stored text.
    pub(crate) fn skip(&mut self, value: &str) {
        self.next += compact::leaf_count(value);
    }
}

fn flatten_into(state: &Map<String, Value>, metadata: Option<&MetadataMap>, leaves: &mut Vec<i64>) {
    for (key, value) in state {
        let member = metadata.and_then(|metadata| metadata.get(key));
        match (value, member) {
            (Value::Object(object), Some(Metadata::Object(members))) => {
                flatten_into(object, Some(members), leaves);
            }
            (Value::Object(object), _) => flatten_into(object, None, leaves),
            (_, Some(Metadata::Timestamp(timestamp))) => leaves.push(*timestamp),
            (_, _) => leaves.push(0),
        }
    }
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
        let rendered = Value::Object(Stamps::from_metadata(&state, &metadata).render(&state));
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
        let rendered = Value::Object(Stamps::from_metadata(&state, &metadata).render(&state));
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
