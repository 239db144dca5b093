//! Shapes of the response documents.

use serde_json::json;

use super::super::{
    ShadowError, accepted_document, compute_delta, delete_document, delta_document,
    documents_document, error_document, get_document,
};
use super::{NOW, decode, shadow_after, update, update_at};

#[test]
fn accepted_echoes_only_request_state() {
    let first = update_at(None, json!({"state": {"desired": {"kept": 1}}}), 1);
    let request = decode(json!({
        "state": {"reported": {"on": true, "gone": null, "light": {"level": 2}}},
        "clientToken": "c1",
        "version": 1
    }));
    let document = accepted_document(&request, first.version() + 1, NOW);
    assert_eq!(
        document,
        json!({
            "state": {"reported": {"on": true, "gone": null, "light": {"level": 2}}},
            "metadata": {"reported": {
                "on": {"timestamp": NOW},
                "gone": {"timestamp": NOW},
                "light": {"level": {"timestamp": NOW}}
            }},
            "version": 2,
            "timestamp": NOW,
            "clientToken": "c1"
        })
    );
}

#[test]
fn accepted_metadata_of_arrays_is_per_element() {
    let request = decode(json!({"state": {"desired": {"colors": [1, {"r": 2}], "empty": {}}}}));
    let document = accepted_document(&request, 1, NOW);
    assert_eq!(
        document["metadata"],
        json!({"desired": {
            "colors": [{"timestamp": NOW}, {"r": {"timestamp": NOW}}],
            "empty": {}
        }})
    );
}

#[test]
fn accepted_null_section_gets_timestamp() {
    let request = decode(json!({"state": {"desired": null, "reported": {"a": 1}}}));
    let document = accepted_document(&request, 4, NOW);
    assert_eq!(
        document["state"],
        json!({"desired": null, "reported": {"a": 1}})
    );
    assert_eq!(
        document["metadata"],
        json!({"desired": {"timestamp": NOW}, "reported": {"a": {"timestamp": NOW}}})
    );
}

#[test]
fn accepted_null_state_is_empty_object() {
    let request = decode(json!({"state": null, "clientToken": "c"}));
    let document = accepted_document(&request, 3, NOW);
    assert_eq!(
        document,
        json!({"state": {}, "metadata": {}, "version": 3, "timestamp": NOW, "clientToken": "c"})
    );
}

#[test]
fn accepted_omits_missing_client_token() {
    let request = decode(json!({"state": {"desired": {"a": 1}}}));
    let document = accepted_document(&request, 1, NOW);
    assert!(document.get("clientToken").is_none(), "{document}");
}

#[test]
fn get_document_includes_delta() {
    let shadow = shadow_after(&[json!({"state": {
        "desired": {"on": true, "level": 2},
        "reported": {"on": false, "level": 2}
    }})]);
    let delta = compute_delta(&shadow);
    let document = get_document(&shadow, delta.as_ref(), NOW, Some("g1"));
    assert_eq!(
        document,
        json!({
            "state": {
                "desired": {"on": true, "level": 2},
                "reported": {"on": false, "level": 2},
                "delta": {"on": true}
            },
            "metadata": {
                "desired": {"on": {"timestamp": 1}, "level": {"timestamp": 1}},
                "reported": {"on": {"timestamp": 1}, "level": {"timestamp": 1}}
            },
            "version": 1,
            "timestamp": NOW,
            "clientToken": "g1"
        })
    );
}

#[test]
fn get_document_in_sync_has_no_delta() {
    let shadow = update(
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}}),
    );
    let document = get_document(&shadow, compute_delta(&shadow).as_ref(), NOW, None);
    assert!(document["state"].get("delta").is_none(), "{document}");
    assert!(document.get("clientToken").is_none(), "{document}");
}

#[test]
fn get_document_of_empty_shadow() {
    let shadow = update(None, json!({"state": null}));
    let document = get_document(&shadow, None, NOW, None);
    assert_eq!(
        document,
        json!({"state": {}, "metadata": {}, "version": 1, "timestamp": NOW})
    );
}

#[test]
fn delta_document_shape() {
    let shadow = shadow_after(&[
        json!({"state": {"desired": {"light": {"color": "red"}}}}),
        json!({"state": {"reported": {"light": {"color": "blue"}}}}),
    ]);
    let delta = compute_delta(&shadow).expect("colors differ");
    let document = delta_document(&delta, shadow.version(), NOW, Some("r1"));
    assert_eq!(
        document,
        json!({
            "state": {"light": {"color": "red"}},
            "metadata": {"light": {"color": {"timestamp": 1}}},
            "version": 2,
            "timestamp": NOW,
            "clientToken": "r1"
        })
    );
}

#[test]
fn documents_document_without_previous() {
    let current = update(None, json!({"state": {"reported": {"a": [1, 2]}}}));
    let document = documents_document(None, &current, NOW, Some("c"));
    assert_eq!(
        document,
        json!({
            "previous": null,
            "current": {
                "state": {"reported": {"a": [1, 2]}},
                "metadata": {"reported": {"a": [{"timestamp": NOW}, {"timestamp": NOW}]}},
                "version": 1
            },
            "timestamp": NOW,
            "clientToken": "c"
        })
    );
}

#[test]
fn documents_document_with_previous() {
    let previous = update_at(None, json!({"state": {"desired": {"a": 1}}}), 1);
    let current = update_at(Some(&previous), json!({"state": {"reported": {"a": 1}}}), 2);
    let document = documents_document(Some(&previous), &current, NOW, None);
    assert_eq!(
        document,
        json!({
            "previous": {
                "state": {"desired": {"a": 1}},
                "metadata": {"desired": {"a": {"timestamp": 1}}},
                "version": 1
            },
            "current": {
                "state": {"desired": {"a": 1}, "reported": {"a": 1}},
                "metadata": {
                    "desired": {"a": {"timestamp": 1}},
                    "reported": {"a": {"timestamp": 2}}
                },
                "version": 2
            },
            "timestamp": NOW
        })
    );
}

#[test]
fn delete_document_shape() {
    assert_eq!(
        delete_document(7, NOW, Some("d1")),
        json!({"version": 7, "timestamp": NOW, "clientToken": "d1"})
    );
    assert_eq!(
        delete_document(7, NOW, None),
        json!({"version": 7, "timestamp": NOW})
    );
}

#[test]
fn error_document_shape() {
    let error = ShadowError::version_conflict();
    assert_eq!(
        error_document(&error, NOW, Some("u1")),
        json!({"code": 409, "message": "Version conflict", "timestamp": NOW, "clientToken": "u1"})
    );
    assert_eq!(
        error_document(&error, NOW, None),
        json!({"code": 409, "message": "Version conflict", "timestamp": NOW})
    );
}
