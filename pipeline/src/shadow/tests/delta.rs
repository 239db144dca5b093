//! Delta computation and delta metadata.

use serde_json::{Value, json};

use super::super::compute_delta;
use super::{object, shadow_after, update};

fn delta_state(requests: &[Value]) -> Option<Value> {
    let shadow = shadow_after(requests);
    compute_delta(&shadow).map(|delta| Value::Object(delta.state()))
}

#[test]
fn no_desired_has_no_delta() {
    let shadow = update(None, json!({"state": {"reported": {"on": true}}}));
    assert_eq!(compute_delta(&shadow), None);
}

#[test]
fn empty_shadow_has_no_delta() {
    let shadow = update(None, json!({"state": null}));
    assert_eq!(compute_delta(&shadow), None);
}

#[test]
fn no_reported_gives_whole_desired() {
    let desired = json!({"light": {"on": true, "color": [1, 2]}, "fan": 2});
    let delta = delta_state(&[json!({"state": {"desired": desired}})]);
    assert_eq!(delta, Some(desired));
}

#[test]
fn matching_sections_have_no_delta() {
    let state = json!({"light": {"on": true}, "colors": ["RED"]});
    let delta = delta_state(&[json!({"state": {"desired": state, "reported": state}})]);
    assert_eq!(delta, None);
}

#[test]
fn nested_difference_keeps_full_path() {
    let delta = delta_state(&[json!({"state": {
        "desired": {"lights": {"color": {"r": 255, "g": 255, "b": 0}, "on": true}},
        "reported": {"lights": {"color": {"r": 255, "g": 0, "b": 0}, "on": true}}
    }})]);
    assert_eq!(delta, Some(json!({"lights": {"color": {"g": 255}}})));
}

#[test]
fn reported_only_keys_are_ignored() {
    let delta = delta_state(&[json!({"state": {
        "desired": {"on": true},
        "reported": {"on": false, "temperature": 21}
    }})]);
    assert_eq!(delta, Some(json!({"on": true})));
}

#[test]
fn deleted_reported_key_returns_to_delta() {
    let delta = delta_state(&[
        json!({"state": {"desired": {"on": true}, "reported": {"on": true}}}),
        json!({"state": {"reported": {"on": null}}}),
    ]);
    assert_eq!(delta, Some(json!({"on": true})));
}

#[test]
fn arrays_compare_whole() {
    let delta = delta_state(&[json!({"state": {
        "desired": {"colors": ["RED", "GREEN", "BLUE"], "same": [1, 2]},
        "reported": {"colors": ["RED", "GREEN", "WHITE"], "same": [1, 2]}
    }})]);
    assert_eq!(delta, Some(json!({"colors": ["RED", "GREEN", "BLUE"]})));
}

#[test]
fn numbers_compare_by_value() {
    let delta = delta_state(&[json!({"state": {
        "desired": {"level": 1, "list": [1, 2.5], "nested": {"x": 2.0}, "other": 3},
        "reported": {"level": 1.0, "list": [1.0, 2.5], "nested": {"x": 2}, "other": 3.5}
    }})]);
    assert_eq!(delta, Some(json!({"other": 3})));
}

#[test]
fn type_mismatch_puts_desired_in_delta() {
    let delta = delta_state(&[json!({"state": {
        "desired": {"mode": {"eco": true}, "fan": 1, "tags": ["a"]},
        "reported": {"mode": "eco", "fan": {"speed": 1}, "tags": "a"}
    }})]);
    let expected = json!({"mode": {"eco": true}, "fan": 1, "tags": ["a"]});
    assert_eq!(delta, Some(expected));
}

#[test]
fn delta_metadata_uses_desired_timestamps() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"light": {"on": true, "level": 3}, "colors": [1, 2]}}}),
        json!({"state": {"desired": {"light": {"level": 4}}}}),
        json!({"state": {"reported": {"light": {"on": true, "level": 3}}}}),
    ]);
    let delta = compute_delta(&shadow).expect("desired differs from reported");
    assert_eq!(
        Value::Object(delta.state()),
        json!({"light": {"level": 4}, "colors": [1, 2]})
    );
    assert_eq!(
        delta.metadata_value(),
        json!({
            "light": {"level": {"timestamp": 2}},
            "colors": [{"timestamp": 1}, {"timestamp": 1}]
        })
    );
}

#[test]
fn delta_state_json_is_compact() {
    let shadow = update(
        None,
        json!({"state": {"desired": {"b": [1, 2], "a": {"c": "x"}}}}),
    );
    let delta = compute_delta(&shadow).expect("no reported state");
    assert_eq!(delta.state_json(), r#"{"a":{"c":"x"},"b":[1,2]}"#);
    assert_eq!(delta.state(), object(json!({"a": {"c": "x"}, "b": [1, 2]})));
}
