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

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::{Map, Number, Value};

use super::compact;
use super::document::{Shadow, parse_stored};
use super::metadata::{StampCursor, Stamps};

/// The difference between a shadow's `desired` and `reported` state.
///
/// Design: never empty, because [`compute_delta`] returns `None` instead. Stored like a shadow
/// section, as compact JSON text and desired-side leaf timestamps, so a delta equal to the whole
/// `desired` section shares its text.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    json: Arc<str>,
    stamps: Stamps,
}

impl Delta {
    /// Returns the earliest time, in epoch seconds, at which a desired value of the delta was
    /// written: how long the oldest pending change has waited for the device.
    pub fn oldest_timestamp(&self) -> Option<i64> {
        Some(self.stamps.min())
    }

    /// Returns the delta state, parsed from its stored text: the desired values that `reported`
    /// does not match.
    pub fn state(&self) -> Map<String, Value> {
        parse_stored(&self.json)
    }

    /// Returns the compact JSON of the delta state.
    pub fn state_json(&self) -> String {
        self.json.to_string()
    }

    /// Borrows the compact JSON of the delta state.
    pub(crate) fn state_text(&self) -> &str {
        &self.json
    }

    /// Returns the desired-side leaf timestamps of the delta state.
    pub(crate) fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    /// Renders the delta's metadata (desired-side timestamps) in the AWS layout.
    pub(crate) fn metadata_value(&self) -> Value {
        Value::Object(self.stamps.render(&self.state()))
    }
}

/// Computes the delta of a shadow, or `None` when `desired` is empty or fully matched by
/// `reported`.
pub fn compute_delta(shadow: &Shadow) -> Option<Delta> {
    let desired = shadow.desired.as_ref()?;
    let Some(reported) = shadow.reported.as_ref() else {
        return Some(Delta {
            json: desired.shared_json(),
            stamps: desired.stamps().clone(),
        });
    };
    let mut json = Vec::with_capacity(desired.json().len());
    let mut leaves = Vec::new();
    let mut cursor = StampCursor::new(Some(desired.stamps()));
    if !delta_text(
        desired.json(),
        reported.json(),
        &mut cursor,
        &mut leaves,
        &mut json,
    ) {
        return None;
    }
    let json = std::str::from_utf8(&json).expect("delta text joins UTF-8 JSON pieces");
    Some(Delta {
        json: json.into(),
        stamps: Stamps::from_leaves(leaves),
    })
}

/// Writes to `out` the members of the stored `desired` object that the stored `reported` object
/// does not match, and returns false (writing nothing) when there are none. Appends the desired
/// timestamp of each leaf it keeps to `leaves`.
///
/// Both texts list their keys in sorted order, so one pass over the two member lists finds the
/// reported member of each desired key. Members are copied as text. A value is parsed only when
/// both sides have a non-object value with different text, because such values can still be
/// equal (`1` and `1.0`).
fn delta_text(
    desired: &str,
    reported: &str,
    desired_leaves: &mut StampCursor<'_>,
    leaves: &mut Vec<i64>,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    out.push(b'{');
    let mut written = false;
    let mut reported_members = compact::Members::new(reported).peekable();
    for member in compact::Members::new(desired) {
        let key = member.key();
        let mut counterpart = None;
        while let Some(candidate) = reported_members.peek() {
            match candidate.key().as_ref().cmp(key.as_ref()) {
                Ordering::Less => {
                    reported_members.next();
                }
                Ordering::Equal => {
                    counterpart = reported_members.next();
                    break;
                }
                Ordering::Greater => break,
            }
        }
        let mark = out.len();
        if written {
            out.push(b',');
        }
        match counterpart {
            Some(reported) if member.is_object() && reported.is_object() => {
                out.extend_from_slice(member.raw_key.as_bytes());
                out.push(b':');
                if delta_text(member.value, reported.value, desired_leaves, leaves, out) {
                    written = true;
                } else {
                    out.truncate(mark);
                }
            }
            Some(reported) if stored_values_equal(member.value, reported.value) => {
                desired_leaves.skip(member.value);
                out.truncate(mark);
            }
            _ => {
                member.write(out);
                desired_leaves.keep(member.value, leaves);
                written = true;
            }
        }
    }
    if !written {
        out.truncate(start);
        return false;
    }
    out.push(b'}');
    true
}

/// Compares two stored values that are not both objects, as [`json_equal`] does.
fn stored_values_equal(left: &str, right: &str) -> bool {
    if left == right {
        return true;
    }
    // serde_json escapes a string one way only, so strings with different text differ, and a
    // string never equals another type.
    if left.starts_with('"') || right.starts_with('"') {
        return false;
    }
    let parse = |text: &str| -> Value {
        serde_json::from_str(text).expect("stored value is JSON written by serde_json")
    };
    json_equal(&parse(left), &parse(right))
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
