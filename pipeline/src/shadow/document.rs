//! The stored shadow: `desired` and `reported` state, their metadata, and the version.
//!
//! A [`Shadow`] is immutable once built: [`apply_update`](super::apply_update) returns a new one.
//! Each section is stored compactly, as its compact JSON text behind an `Arc<str>` plus its leaf
//! timestamps ([`Stamps`]). Merges, deltas and byte documents walk the text member by member
//! (see `compact`) instead of parsing it; the `Value` accessors parse it. An update that touches only `reported` (the common case for devices)
//! shares the unchanged `desired` text with the previous version instead of copying it.
//!
//! This module does not merge updates (see `merge`) or render response documents (see
//! `documents`).
//!
//! # Memory usage
//!
//! A section costs its compact JSON bytes plus 16 bytes of `Arc` header, and one timestamp per
//! leaf unless all its leaves were written at the same second. A `serde_json::Map` tree of the
//! same state costs several times that: a B-tree node of about 630 bytes per object, one
//! allocation per key and string, and a second tree for the metadata.

use std::sync::Arc;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::metadata::{self, MetadataMap, Stamps};

/// A shadow as the service stores it.
///
/// Design: a section is `None` when empty, so `desired()` and `reported()` never return an empty
/// object. Stored state contains no null, and no empty object outside arrays. Every state leaf
/// has a timestamp (see the `metadata` module).
///
/// Serialized form: `{"desired": {"state": {..}, "metadata": {..}}?, "reported": ..?,
/// "version": n}`, where metadata contains one epoch-seconds integer per scalar or array.
/// Deserialization checks the invariants above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) desired: Option<Section>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reported: Option<Section>,

    pub(crate) version: u64,
}

impl Shadow {
    /// Returns the version: 1 after the first update, +1 after every accepted update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Returns the `desired` state, parsed from its stored text, or `None` when it is empty.
    pub fn desired(&self) -> Option<Map<String, Value>> {
        self.desired.as_ref().map(Section::state)
    }

    /// Returns the `reported` state, parsed from its stored text, or `None` when it is empty.
    pub fn reported(&self) -> Option<Map<String, Value>> {
        self.reported.as_ref().map(Section::state)
    }

    /// Returns the compact JSON of the `desired` state, or `None` when it is empty.
    pub fn desired_json(&self) -> Option<String> {
        self.desired_text().map(str::to_owned)
    }

    /// Returns the compact JSON of the `reported` state, or `None` when it is empty.
    pub fn reported_json(&self) -> Option<String> {
        self.reported_text().map(str::to_owned)
    }

    /// Borrows the compact JSON of the `desired` state, or `None` when it is empty.
    pub(crate) fn desired_text(&self) -> Option<&str> {
        self.desired.as_ref().map(Section::json)
    }

    /// Borrows the compact JSON of the `reported` state, or `None` when it is empty.
    pub(crate) fn reported_text(&self) -> Option<&str> {
        self.reported.as_ref().map(Section::json)
    }

    /// Returns the size that counts against `max_state_bytes`: the compact JSON bytes of
    /// `desired` plus those of `reported`, without metadata.
    pub fn state_bytes(&self) -> usize {
        self.desired_text().map_or(0, str::len) + self.reported_text().map_or(0, str::len)
    }

    /// Returns true when the shadow has neither `desired` nor `reported` state (`{}` in AWS).
    pub fn is_empty(&self) -> bool {
        self.desired.is_none() && self.reported.is_none()
    }

    /// Renders `{"desired"?: .., "reported"?: ..}` for the `state` node of a document, and the
    /// same in the AWS metadata layout. Each section is parsed once for both.
    pub(crate) fn state_and_metadata_value(&self) -> (Map<String, Value>, Map<String, Value>) {
        let mut state = Map::new();
        let mut rendered = Map::new();
        for (name, section) in [("desired", &self.desired), ("reported", &self.reported)] {
            if let Some(section) = section {
                let section_state = section.state();
                let section_metadata = section.stamps().render(&section_state);
                state.insert(name.to_owned(), Value::Object(section_state));
                rendered.insert(name.to_owned(), Value::Object(section_metadata));
            }
        }
        (state, rendered)
    }
}

/// One non-empty state section: its compact JSON text and its leaf timestamps.
///
/// Design: `json` is what `serde_json` writes for a storable state object (keys sorted, no
/// whitespace), so equal states have equal text, except that `0.0` and `-0.0` differ. `stamps`
/// has one timestamp per leaf of that object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Section {
    json: Arc<str>,
    stamps: Stamps,
}

impl Section {
    /// Stores a section with its metadata tree, or returns `None` when it is empty.
    pub(crate) fn build(state: &Map<String, Value>, metadata: &MetadataMap) -> Option<Self> {
        Self::from_parts(state, Stamps::from_metadata(state, metadata))
    }

    /// Stores a section with its leaf timestamps, or returns `None` when it is empty.
    pub(crate) fn from_parts(state: &Map<String, Value>, stamps: Stamps) -> Option<Self> {
        if state.is_empty() {
            return None;
        }
        Some(Self {
            json: compact_json(state).into(),
            stamps,
        })
    }

    /// Stores a section from the compact JSON that `serde_json` writes for a non-empty storable
    /// state object, such as a merge produces.
    pub(crate) fn from_text(json: &str, stamps: Stamps) -> Self {
        Self {
            json: json.into(),
            stamps,
        }
    }

    /// Returns the compact JSON text of the state.
    pub(crate) fn json(&self) -> &str {
        &self.json
    }

    /// Returns a shared handle to the compact JSON text of the state.
    pub(crate) fn shared_json(&self) -> Arc<str> {
        Arc::clone(&self.json)
    }

    /// Returns true when both sections share one stored text and have the same timestamps, as
    /// a section that an update left unchanged does.
    pub(crate) fn shares_contents(&self, other: &Section) -> bool {
        Arc::ptr_eq(&self.json, &other.json) && self.stamps == other.stamps
    }

    /// Returns the leaf timestamps.
    pub(crate) fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    /// Parses the stored state.
    pub(crate) fn state(&self) -> Map<String, Value> {
        parse_stored(&self.json)
    }

    /// Rebuilds the metadata tree of the stored state, for a snapshot.
    pub(crate) fn metadata(&self, state: &Map<String, Value>) -> MetadataMap {
        self.stamps.to_metadata(state)
    }

    /// Renders the metadata in the AWS layout.
    #[cfg(test)]
    pub(crate) fn render_metadata(&self) -> Value {
        Value::Object(self.stamps.render(&self.state()))
    }
}

/// Parses text that `compact_json` wrote for a state object.
///
/// # Panics
///
/// Panics when the text is not a JSON object, which only a broken [`Section`] invariant allows.
pub(crate) fn parse_stored(json: &str) -> Map<String, Value> {
    serde_json::from_str(json).expect("stored state is a JSON object written by serde_json")
}

impl Serialize for Section {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let state = self.state();
        let metadata = self.metadata(&state);
        let mut fields = serializer.serialize_struct("Section", 2)?;
        fields.serialize_field("state", &state)?;
        fields.serialize_field("metadata", &metadata)?;
        fields.end()
    }
}

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = SectionFields::deserialize(deserializer)?;
        Section::try_from(fields).map_err(serde::de::Error::custom)
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
        Section::build(&fields.state, &fields.metadata)
            .ok_or_else(|| "invalid shadow section: state is empty".to_owned())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn section(state: Value, timestamp: i64) -> Option<Section> {
        let Value::Object(state) = state else {
            panic!("section state must be an object");
        };
        let metadata = metadata::stamped_map(&state, timestamp);
        Section::build(&state, &metadata)
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
