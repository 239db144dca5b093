//! The delta: every part of `desired` that `reported` does not match.
//!
//! The delta is computed from a shadow and never stored. For each key of `desired`:
//!
//! - missing from `reported`, or present with another value: the desired value is in the delta;
//! - both sides objects: the delta recurses, keeping the full path to each differing leaf;
//! - equal: left out. Arrays compare as whole values and a differing array is copied whole.
//!
//! ```text
//! desired   {"light": {"on": true, "color": {"r": 255, "g": 255}}, "fan": 1}
//! reported  {"light": {"on": true, "color": {"r": 255, "g": 0}}, "fan": 1.0, "temp": 21}
//! delta     {"light": {"color": {"g": 255}}}
//! ```
//!
//! Keys only in `reported` never appear. The delta's metadata is the `desired` metadata at the
//! same paths, so a client sees when each desired value was written.
//!
//! # Notes
//!
//! - Numbers compare by value, so `1` equals `1.0`, also inside arrays. AWS Greengrass does the
//!   same, and the AWS cloud behaviour is undocumented. Integers and floats compare exactly, without
//!   rounding the integer to a float.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::document::{Shadow, compact_json};
use super::metadata::{self, Metadata, MetadataMap};

/// The difference between a shadow's `desired` and `reported` state.
///
/// Design: never empty, because [`compute_delta`] returns `None` instead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    state: Map<String, Value>,
    metadata: MetadataMap,
}

impl Delta {
    /// Returns the earliest time, in epoch seconds, at which a desired value of the delta was
    /// written: how long the oldest pending change has waited for the device.
    pub fn oldest_timestamp(&self) -> Option<i64> {
        fn oldest(metadata: &MetadataMap) -> Option<i64> {
            metadata
                .values()
                .filter_map(|entry| match entry {
                    Metadata::Timestamp(timestamp) => Some(*timestamp),
                    Metadata::Object(members) => oldest(members),
                })
                .min()
        }
        oldest(&self.metadata)
    }

    /// Returns the delta state: the desired values that `reported` does not match.
    pub fn state(&self) -> &Map<String, Value> {
        &self.state
    }

    /// Returns the compact JSON of the delta state.
    pub fn state_json(&self) -> String {
        compact_json(&self.state)
    }

    /// Renders the delta's metadata (desired-side timestamps) in the AWS layout.
    pub(crate) fn metadata_value(&self) -> Value {
        metadata::render_object(&self.state, &self.metadata)
    }
}

/// Computes the delta of a shadow, or `None` when `desired` is empty or fully matched by
/// `reported`.
pub fn compute_delta(shadow: &Shadow) -> Option<Delta> {
    let desired = shadow.desired.as_deref()?;
    let (state, metadata) = match shadow.reported() {
        Some(reported) => delta_object(&desired.state, &desired.metadata, reported),
        None => (desired.state.clone(), desired.metadata.clone()),
    };
    if state.is_empty() {
        return None;
    }
    Some(Delta { state, metadata })
}

fn delta_object(
    desired: &Map<String, Value>,
    desired_metadata: &MetadataMap,
    reported: &Map<String, Value>,
) -> (Map<String, Value>, MetadataMap) {
    let mut state = Map::new();
    let mut metadata = MetadataMap::new();
    for (key, desired_value) in desired {
        let reported_value = reported.get(key);
        let member_metadata = desired_metadata.get(key);
        match (desired_value, reported_value, member_metadata) {
            (
                Value::Object(desired_object),
                Some(Value::Object(reported_object)),
                Some(Metadata::Object(members)),
            ) => {
                let (child, child_metadata) =
                    delta_object(desired_object, members, reported_object);
                if !child.is_empty() {
                    state.insert(key.clone(), Value::Object(child));
                    metadata.insert(key.clone(), Metadata::Object(child_metadata));
                }
            }
            (_, Some(reported_value), _) if json_equal(desired_value, reported_value) => {}
            _ => {
                state.insert(key.clone(), desired_value.clone());
                if let Some(member_metadata) = member_metadata {
                    metadata.insert(key.clone(), member_metadata.clone());
                }
            }
        }
    }
    (state, metadata)
}

/// Compares two JSON values, with numbers compared by value (`1 == 1.0`).
pub(crate) fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => numbers_equal(left, right),
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .zip(right)
                    .all(|(left, right)| json_equal(left, right))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, left)| right.get(key).is_some_and(|right| json_equal(left, right)))
        }
        _ => left == right,
    }
}

fn numbers_equal(left: &Number, right: &Number) -> bool {
    match (integer(left), integer(right)) {
        (Some(left), Some(right)) => left == right,
        (Some(integer), None) => float_equals_integer(right.as_f64(), integer),
        (None, Some(integer)) => float_equals_integer(left.as_f64(), integer),
        (None, None) => left.as_f64() == right.as_f64(),
    }
}

/// Returns the number as an integer when JSON wrote it as one.
fn integer(number: &Number) -> Option<i128> {
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
}

fn float_equals_integer(float: Option<f64>, integer: i128) -> bool {
    // `as` saturates, so a float beyond the i128 range cannot equal a JSON integer, which fits in
    // i64 or u64.
    float.is_some_and(|float| float.fract() == 0.0 && float as i128 == integer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_equal(&json!(1), &json!(1.0)));
        assert!(json_equal(&json!(-3), &json!(-3.0)));
        assert!(json_equal(&json!([1, {"a": 2}]), &json!([1.0, {"a": 2.0}])));
        assert!(!json_equal(&json!(1), &json!(1.5)));
        assert!(!json_equal(&json!(1), &json!("1")));
    }

    #[test]
    fn large_integers_compare_exactly() {
        let above_float_precision = json!(9_007_199_254_740_993_u64);
        let nearest_float = json!(9_007_199_254_740_992.0_f64);
        assert!(!json_equal(&above_float_precision, &nearest_float));
        assert!(json_equal(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!json_equal(&json!(u64::MAX), &json!(-1)));
    }

    #[test]
    fn objects_compare_key_sets() {
        assert!(json_equal(
            &json!({"a": 1, "b": 2}),
            &json!({"b": 2, "a": 1})
        ));
        assert!(!json_equal(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_equal(
            &json!({"a": 1, "c": 2}),
            &json!({"a": 1, "b": 2})
        ));
    }
}
