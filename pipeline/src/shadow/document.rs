//! The stored shadow: `desired` and `reported` state, their metadata, and the version.
//!
//! A [`Shadow`] is immutable once built: [`apply_update`](super::apply_update) returns a new one.
//! Each section sits behind an `Arc`, so an update that touches only `reported` (the common case
//! for devices) shares the unchanged `desired` section with the previous version instead of
//! copying it. The compact JSON size of each section is computed once when the section is built.
//!
//! This module does not merge updates (see `merge`) or render response documents (see
//! `documents`).

use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::metadata::{self, MetadataMap};

/// A shadow as the service stores it.
///
/// Design: a section is `None` when empty, so `desired()` and `reported()` never return an empty
/// object. Stored state contains no null, and no empty object outside arrays. Every state leaf
/// has metadata (see the `metadata` module).
///
/// Serialized form: `{"desired": {"state": {..}, "metadata": {..}}?, "reported": ..?,
/// "version": n}`, where metadata contains one epoch-seconds integer per scalar or array.
/// Deserialization checks the invariants above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) desired: Option<Arc<Section>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reported: Option<Arc<Section>>,

    pub(crate) version: u64,
}

impl Shadow {
    /// Returns the version: 1 after the first update, +1 after every accepted update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Returns the `desired` state, or `None` when it is empty.
    pub fn desired(&self) -> Option<&Map<String, Value>> {
        self.desired.as_deref().map(|section| &section.state)
    }

    /// Returns the `reported` state, or `None` when it is empty.
    pub fn reported(&self) -> Option<&Map<String, Value>> {
        self.reported.as_deref().map(|section| &section.state)
    }

    /// Returns the compact JSON of the `desired` state, or `None` when it is empty.
    pub fn desired_json(&self) -> Option<String> {
        self.desired().map(compact_json)
    }

    /// Returns the compact JSON of the `reported` state, or `None` when it is empty.
    pub fn reported_json(&self) -> Option<String> {
        self.reported().map(compact_json)
    }

    /// Returns the size that counts against `max_state_bytes`: the compact JSON bytes of
    /// `desired` plus those of `reported`, without metadata.
    pub fn state_bytes(&self) -> usize {
        let desired = self.desired.as_deref().map_or(0, |section| section.bytes);
        let reported = self.reported.as_deref().map_or(0, |section| section.bytes);
        desired + reported
    }

    /// Returns true when the shadow has neither `desired` nor `reported` state (`{}` in AWS).
    pub fn is_empty(&self) -> bool {
        self.desired.is_none() && self.reported.is_none()
    }

    /// Renders `{"desired"?: .., "reported"?: ..}` for the `state` node of a document.
    pub(crate) fn state_value(&self) -> Map<String, Value> {
        let mut state = Map::new();
        if let Some(desired) = self.desired() {
            state.insert("desired".to_owned(), Value::Object(desired.clone()));
        }
        if let Some(reported) = self.reported() {
            state.insert("reported".to_owned(), Value::Object(reported.clone()));
        }
        state
    }

    /// Renders `{"desired"?: .., "reported"?: ..}` in the AWS metadata layout.
    pub(crate) fn metadata_value(&self) -> Map<String, Value> {
        let mut rendered = Map::new();
        if let Some(desired) = self.desired.as_deref() {
            rendered.insert("desired".to_owned(), desired.render_metadata());
        }
        if let Some(reported) = self.reported.as_deref() {
            rendered.insert("reported".to_owned(), reported.render_metadata());
        }
        rendered
    }
}

/// One non-empty state section with its metadata and its cached size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SectionFields")]
pub(crate) struct Section {
    pub(crate) state: Map<String, Value>,

    pub(crate) metadata: MetadataMap,

    /// Compact JSON bytes of `state`. It is derived, so it is not serialized.
    #[serde(skip)]
    pub(crate) bytes: usize,
}

impl Section {
    /// Wraps a merged section, or returns `None` when it is empty.
    pub(crate) fn build(state: Map<String, Value>, metadata: MetadataMap) -> Option<Arc<Self>> {
        if state.is_empty() {
            return None;
        }
        let bytes = compact_json_len(&state);
        Some(Arc::new(Self {
            state,
            metadata,
            bytes,
        }))
    }

    pub(crate) fn render_metadata(&self) -> Value {
        metadata::render_object(&self.state, &self.metadata)
    }
}

/// Serialized fields of a [`Section`], checked before a section is rebuilt from them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionFields {
    state: Map<String, Value>,
    metadata: MetadataMap,
}

impl TryFrom<SectionFields> for Section {
    type Error = String;

    fn try_from(fields: SectionFields) -> Result<Self, Self::Error> {
        if fields.state.is_empty() {
            return Err("invalid shadow section: state is empty".to_owned());
        }
        if !is_storable_object(&fields.state) {
            return Err(
                "invalid shadow section: state contains null or an empty object".to_owned(),
            );
        }
        if !metadata::mirrors(&fields.state, &fields.metadata) {
            return Err("invalid shadow section: metadata does not mirror state".to_owned());
        }
        let bytes = compact_json_len(&fields.state);
        Ok(Self {
            state: fields.state,
            metadata: fields.metadata,
            bytes,
        })
    }
}

/// Checks the stored-state invariant: no null anywhere, and no empty object outside arrays.
pub(crate) fn is_storable_object(object: &Map<String, Value>) -> bool {
    !object.is_empty()
        && object.values().all(|value| match value {
            Value::Null => false,
            Value::Object(child) => is_storable_object(child),
            Value::Array(elements) => elements.iter().all(contains_no_null),
            _ => true,
        })
}

fn contains_no_null(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(object) => object.values().all(contains_no_null),
        Value::Array(elements) => elements.iter().all(contains_no_null),
        _ => true,
    }
}

/// Serializes a JSON value compactly.
pub(crate) fn compact_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing a JSON value to a String cannot fail")
}

/// Counts the compact JSON bytes of a value without allocating the text.
pub(crate) fn compact_json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, value)
        .expect("serializing a JSON value to a byte counter cannot fail");
    counter.0
}

struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn section(state: Value, timestamp: i64) -> Option<Arc<Section>> {
        let Value::Object(state) = state else {
            panic!("section state must be an object");
        };
        let metadata = metadata::stamped_map(&state, timestamp);
        Section::build(state, metadata)
    }

    #[test]
    fn empty_section_is_not_built() {
        assert_eq!(section(json!({}), 1), None);
    }

    #[test]
    fn state_bytes_sums_compact_sections() {
        let shadow = Shadow {
            desired: section(json!({"on": true}), 1),
            reported: section(json!({"on": false, "level": 10}), 1),
            version: 2,
        };
        let expected = r#"{"on":true}"#.len() + r#"{"level":10,"on":false}"#.len();
        assert_eq!(shadow.state_bytes(), expected);
        assert_eq!(shadow.desired_json().as_deref(), Some(r#"{"on":true}"#));
        assert_eq!(
            shadow.reported_json().as_deref(),
            Some(r#"{"level":10,"on":false}"#)
        );
    }

    #[test]
    fn serde_round_trip_keeps_shadow() {
        let shadow = Shadow {
            desired: section(json!({"color": [1, 2], "light": {"on": true}}), 5),
            reported: None,
            version: 3,
        };
        let json = serde_json::to_value(&shadow).expect("shadow serializes");
        assert_eq!(
            json,
            json!({
                "desired": {
                    "state": {"color": [1, 2], "light": {"on": true}},
                    "metadata": {"color": 5, "light": {"on": 5}}
                },
                "version": 3
            })
        );
        let parsed: Shadow = serde_json::from_value(json).expect("shadow deserializes");
        assert_eq!(parsed, shadow);
        assert_eq!(parsed.state_bytes(), shadow.state_bytes());
    }

    #[test]
    fn deserialize_rejects_broken_invariants() {
        let cases = [
            json!({"desired": {"state": {}, "metadata": {}}, "version": 1}),
            json!({"desired": {"state": {"a": null}, "metadata": {"a": 1}}, "version": 1}),
            json!({"desired": {"state": {"a": {}}, "metadata": {"a": {}}}, "version": 1}),
            json!({"desired": {"state": {"a": 1}, "metadata": {}}, "version": 1}),
            json!({"desired": {"state": {"a": {"b": 1}}, "metadata": {"a": 1}}, "version": 1}),
        ];
        for case in cases {
            let parsed = serde_json::from_value::<Shadow>(case.clone());
            assert!(parsed.is_err(), "accepted {case}");
        }
    }

    #[test]
    fn storable_object_allows_empty_object_in_array() {
        let Value::Object(state) = json!({"list": [{}, [], 1]}) else {
            panic!("literal is an object");
        };
        assert!(is_storable_object(&state));
    }
}
