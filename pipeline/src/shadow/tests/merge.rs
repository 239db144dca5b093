//! Merge rules, metadata stamping, versions and the size limit of `apply_update`.

use std::sync::Arc;

use serde_json::json;

use super::super::{Limits, ShadowError, apply_update};
use super::{NOW, decode, metadata_of, object, shadow_after, update, update_at};

#[test]
fn first_update_creates_version_one() {
    let shadow = update(None, json!({"state": {"desired": {"on": true}}}));
    assert_eq!(shadow.version(), 1);
    assert_eq!(shadow.desired(), Some(object(json!({"on": true}))));
    assert_eq!(shadow.reported(), None);
}

#[test]
fn nested_objects_merge_keeping_siblings() {
    let shadow = shadow_after(&[
        json!({"state": {"reported": {"light": {"on": true, "color": {"r": 1, "g": 2}}, "fan": 1}}}),
        json!({"state": {"reported": {"light": {"color": {"g": 3}}}}}),
    ]);
    let expected = json!({"light": {"on": true, "color": {"r": 1, "g": 3}}, "fan": 1});
    assert_eq!(shadow.reported(), Some(object(expected)));
    assert_eq!(shadow.version(), 2);
}

#[test]
fn scalars_replace_old_values() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"mode": "auto", "level": 1}}}),
        json!({"state": {"desired": {"mode": "eco"}}}),
    ]);
    assert_eq!(
        shadow.desired(),
        Some(object(json!({"mode": "eco", "level": 1})))
    );
}

#[test]
fn arrays_replace_whole() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}}),
        json!({"state": {"desired": {"colors": ["RED"]}}}),
    ]);
    assert_eq!(shadow.desired(), Some(object(json!({"colors": ["RED"]}))));
}

#[test]
fn null_deletes_nested_key() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"light": {"on": true, "level": 3}}}}),
        json!({"state": {"desired": {"light": {"level": null}}}}),
    ]);
    assert_eq!(
        shadow.desired(),
        Some(object(json!({"light": {"on": true}})))
    );
    assert_eq!(
        metadata_of(&shadow),
        json!({"desired": {"light": {"on": {"timestamp": 1}}}})
    );
}

#[test]
fn deleting_missing_key_is_accepted() {
    let first = update_at(None, json!({"state": {"desired": {"a": 1}}}), 1);
    let second = update_at(Some(&first), json!({"state": {"desired": {"b": null}}}), 2);
    assert_eq!(second.version(), 2);
    assert_eq!(second.desired(), first.desired());
    assert_eq!(metadata_of(&second), metadata_of(&first));
}

#[test]
fn emptied_object_is_pruned() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"light": {"color": {"r": 1}}, "fan": 1}}}),
        json!({"state": {"desired": {"light": {"color": {"r": null}}}}}),
    ]);
    assert_eq!(shadow.desired(), Some(object(json!({"fan": 1}))));
    assert_eq!(
        metadata_of(&shadow),
        json!({"desired": {"fan": {"timestamp": 1}}})
    );
}

#[test]
fn emptied_section_disappears() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}}),
        json!({"state": {"desired": {"a": null}}}),
    ]);
    assert_eq!(shadow.desired(), None);
    assert_eq!(shadow.desired_json(), None);
    assert_eq!(shadow.reported(), Some(object(json!({"a": 1}))));
    assert_eq!(
        metadata_of(&shadow),
        json!({"reported": {"a": {"timestamp": 1}}})
    );
}

#[test]
fn all_null_new_object_is_not_materialised() {
    let shadow = shadow_after(&[
        json!({"state": {"reported": {"a": 1}}}),
        json!({"state": {"reported": {"engine": {"rpm": null, "oil": {"level": null}}}}}),
    ]);
    assert_eq!(shadow.reported(), Some(object(json!({"a": 1}))));
}

#[test]
fn new_section_of_nulls_is_not_materialised() {
    let shadow = update(None, json!({"state": {"desired": {"a": null}}}));
    assert!(shadow.is_empty());
    assert_eq!(shadow.version(), 1);
}

#[test]
fn object_replaces_scalar() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"mode": "auto"}}}),
        json!({"state": {"desired": {"mode": {"eco": true, "off": null}}}}),
    ]);
    assert_eq!(
        shadow.desired(),
        Some(object(json!({"mode": {"eco": true}})))
    );
    assert_eq!(
        metadata_of(&shadow),
        json!({"desired": {"mode": {"eco": {"timestamp": 2}}}})
    );
}

#[test]
fn scalar_replaces_object() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"mode": {"eco": true}}}}),
        json!({"state": {"desired": {"mode": [1, 2]}}}),
    ]);
    assert_eq!(shadow.desired(), Some(object(json!({"mode": [1, 2]}))));
    assert_eq!(
        metadata_of(&shadow),
        json!({"desired": {"mode": [{"timestamp": 2}, {"timestamp": 2}]}})
    );
}

#[test]
fn null_only_object_removes_scalar() {
    // JSON Merge Patch: an object patch replaces a scalar, and what is left of it is empty.
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"mode": "auto", "fan": 1}}}),
        json!({"state": {"desired": {"mode": {"eco": null}}}}),
    ]);
    assert_eq!(shadow.desired(), Some(object(json!({"fan": 1}))));
}

#[test]
fn identical_value_refreshes_timestamp() {
    let first = update_at(None, json!({"state": {"reported": {"on": true}}}), 10);
    let second = update_at(
        Some(&first),
        json!({"state": {"reported": {"on": true}}}),
        20,
    );
    assert_eq!(second.version(), 2);
    assert_eq!(second.reported(), first.reported());
    assert_eq!(
        metadata_of(&second),
        json!({"reported": {"on": {"timestamp": 20}}})
    );
}

#[test]
fn untouched_leaves_keep_timestamps() {
    let shadow = shadow_after(&[
        json!({"state": {"reported": {"light": {"on": true, "level": 1}, "fan": 1}}}),
        json!({"state": {"reported": {"light": {"level": 2}}}}),
    ]);
    assert_eq!(
        metadata_of(&shadow),
        json!({"reported": {
            "light": {"on": {"timestamp": 1}, "level": {"timestamp": 2}},
            "fan": {"timestamp": 1}
        }})
    );
}

#[test]
fn array_metadata_is_per_element() {
    let shadow = update_at(
        None,
        json!({"state": {"desired": {"colors": [128, 128, 128], "points": [{"x": 1}, [2]], "none": []}}}),
        7,
    );
    assert_eq!(
        metadata_of(&shadow),
        json!({"desired": {
            "colors": [{"timestamp": 7}, {"timestamp": 7}, {"timestamp": 7}],
            "points": [{"x": {"timestamp": 7}}, [{"timestamp": 7}]],
            "none": []
        }})
    );
}

#[test]
fn null_section_removes_section() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"a": 1}, "reported": {"b": 2}}}),
        json!({"state": {"desired": null}}),
    ]);
    assert_eq!(shadow.desired(), None);
    assert_eq!(shadow.reported(), Some(object(json!({"b": 2}))));
    assert_eq!(shadow.version(), 2);
}

#[test]
fn null_state_empties_shadow() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"a": 1}, "reported": {"b": 2}}}),
        json!({"state": null}),
    ]);
    assert!(shadow.is_empty());
    assert_eq!(shadow.version(), 2);
    assert_eq!(shadow.state_bytes(), 0);
    assert_eq!(metadata_of(&shadow), json!({}));
}

#[test]
fn empty_state_is_noop_update() {
    let first = update(
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 2}}}),
    );
    let second = update_at(Some(&first), json!({"state": {}}), NOW + 5);
    assert_eq!(second.version(), 2);
    assert_eq!(second.desired(), first.desired());
    assert_eq!(second.reported(), first.reported());
    assert_eq!(metadata_of(&second), metadata_of(&first));
}

#[test]
fn empty_section_object_is_noop() {
    let first = update(None, json!({"state": {"desired": {"a": 1}}}));
    let second = update(
        Some(&first),
        json!({"state": {"desired": {}, "reported": {}}}),
    );
    assert_eq!(second.version(), 2);
    assert_eq!(second.desired(), first.desired());
    assert_eq!(second.reported(), None);
}

#[test]
fn untouched_section_is_shared() {
    let first = update(
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 0}}}),
    );
    let second = update(Some(&first), json!({"state": {"reported": {"a": 1}}}));
    let (Some(before), Some(after)) = (&first.desired, &second.desired) else {
        panic!("both shadows have desired state");
    };
    assert!(Arc::ptr_eq(&before.shared_json(), &after.shared_json()));
}

#[test]
fn matching_version_is_accepted() {
    let first = update(None, json!({"state": {"desired": {"a": 1}}}));
    let second = update(
        Some(&first),
        json!({"state": {"desired": {"a": 2}}, "version": 1}),
    );
    assert_eq!(second.version(), 2);
}

#[test]
fn stale_version_is_conflict() {
    let request = json!({"state": {"desired": {"a": 1}}});
    let first = shadow_after(&vec![request; 3]);
    let before = first.clone();
    for version in [0, 2, 4] {
        let request = decode(json!({"state": {"desired": {"a": 9}}, "version": version}));
        let result = apply_update(Some(&first), 0, &request, NOW, &Limits::default());
        assert_eq!(
            result,
            Err(ShadowError::version_conflict()),
            "version {version}"
        );
    }
    assert_eq!(first, before);
}

#[test]
fn new_shadow_continues_from_base_version() {
    let limits = Limits::default();
    let request = decode(json!({"state": {"reported": {"a": 1}}}));
    let shadow = apply_update(None, 5, &request, NOW, &limits).expect("update applies");
    assert_eq!(shadow.version(), 6);
}

#[test]
fn new_shadow_version_must_equal_base() {
    let limits = Limits::default();
    let matching = decode(json!({"state": {"reported": {"a": 1}}, "version": 5}));
    let shadow = apply_update(None, 5, &matching, NOW, &limits).expect("base version matches");
    assert_eq!(shadow.version(), 6);

    let other = decode(json!({"state": {"reported": {"a": 1}}, "version": 1}));
    let error = apply_update(None, 5, &other, NOW, &limits).expect_err("base version differs");
    assert_eq!(error, ShadowError::version_conflict());
}

#[test]
fn merged_state_over_limit_is_413() {
    let limits = Limits {
        max_state_bytes: 40,
        ..Limits::default()
    };
    let first_request = decode(json!({"state": {"desired": {"text": "0123456789"}}}));
    let first = apply_update(None, 0, &first_request, NOW, &limits).expect("small state fits");
    let before = first.clone();

    // Each request alone is small, but the merged desired + reported is 42 bytes.
    let small = decode(json!({"state": {"reported": {"text": "0123456789"}}}));
    let error = apply_update(Some(&first), 0, &small, NOW, &limits).expect_err("over limit");
    assert_eq!(error, ShadowError::payload_too_large());
    assert_eq!(first, before);
}

#[test]
fn state_at_limit_is_accepted() {
    let state = json!({"text": "0123456789"});
    let bytes = state.to_string().len() * 2;
    let limits = Limits {
        max_state_bytes: bytes,
        ..Limits::default()
    };
    let request = decode(json!({"state": {"desired": state, "reported": state}}));
    let shadow = apply_update(None, 0, &request, NOW, &limits).expect("state fits exactly");
    assert_eq!(shadow.state_bytes(), bytes);
}

#[test]
fn deletion_shrinks_state_under_limit() {
    let limits = Limits {
        max_state_bytes: 30,
        ..Limits::default()
    };
    let request = decode(json!({"state": {"desired": {"a": "0123456789", "b": 1}}}));
    let shadow = apply_update(None, 0, &request, NOW, &limits).expect("state fits");
    let delete = decode(json!({"state": {"desired": {"a": null}}}));
    let shadow = apply_update(Some(&shadow), 0, &delete, NOW, &limits).expect("deletion fits");
    assert_eq!(shadow.desired_json().as_deref(), Some(r#"{"b":1}"#));
}
