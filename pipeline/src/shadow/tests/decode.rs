//! Decoding and validation of update, get and delete payloads.

use serde_json::{Value, json};

use super::super::{Limits, ShadowError, decode_client_token, decode_update};
use super::{decode, reject, reject_with};

#[test]
fn invalid_utf8_is_415() {
    let rejected = reject(b"{\"state\":{\"desired\":{\"a\":\"\xff\"}}}");
    assert_eq!(rejected.error, ShadowError::unsupported_encoding());
    assert_eq!(rejected.client_token, None);
}

#[test]
fn oversized_payload_is_413() {
    let limits = Limits {
        max_payload_bytes: 32,
        ..Limits::default()
    };
    let payload = br#"{"state":{"desired":{"a":"0123456789abcdef"}}}"#;
    let rejected = reject_with(payload, &limits);
    assert_eq!(rejected.error, ShadowError::payload_too_large());
}

#[test]
fn encoding_is_checked_before_size() {
    let limits = Limits {
        max_payload_bytes: 4,
        ..Limits::default()
    };
    let rejected = reject_with(b"{\"a\":\"\xff\xff\xff\"}", &limits);
    assert_eq!(rejected.error.code(), 415);
}

#[test]
fn syntax_error_is_invalid_json() {
    for payload in [
        &b"{\"state\":"[..],
        b"",
        b"{'state':{}}",
        b"{\"state\":{}} x",
    ] {
        let rejected = reject(payload);
        assert_eq!(
            rejected.error,
            ShadowError::invalid_json(),
            "payload {payload:?}"
        );
    }
}

#[test]
fn non_object_payload_is_invalid_json() {
    for payload in [&b"[]"[..], b"\"state\"", b"null", b"42"] {
        let rejected = reject(payload);
        assert_eq!(
            rejected.error,
            ShadowError::invalid_json(),
            "payload {payload:?}"
        );
    }
}

#[test]
fn parser_recursion_limit_is_too_deep() {
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let payload = format!(r#"{{"clientToken":"t","state":{{"desired":{{"a":{nested}}}}}}}"#);
    let rejected = reject(payload.as_bytes());
    assert_eq!(rejected.error, ShadowError::too_deep(8));
}

#[test]
fn client_token_at_limit_is_accepted() {
    let token = "t".repeat(64);
    let request = decode(json!({"state": {}, "clientToken": token}));
    assert_eq!(request.client_token(), Some(token.as_str()));
}

#[test]
fn client_token_over_limit_is_rejected() {
    let token = "t".repeat(65);
    let payload = json!({"state": {}, "clientToken": token}).to_string();
    let rejected = reject(payload.as_bytes());
    assert_eq!(rejected.error, ShadowError::invalid_client_token());
    assert_eq!(rejected.client_token, None);
}

#[test]
fn client_token_limit_counts_bytes() {
    // "é" is two bytes in UTF-8, so 33 of them are 66 bytes.
    let payload = json!({"state": {}, "clientToken": "é".repeat(33)}).to_string();
    let rejected = reject(payload.as_bytes());
    assert_eq!(rejected.error, ShadowError::invalid_client_token());
}

#[test]
fn client_token_must_be_string() {
    for token in [json!(12), json!({"id": "x"}), json!(["x"]), json!(true)] {
        let payload = json!({"state": {}, "clientToken": token}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::invalid_client_token(),
            "token {token}"
        );
    }
}

#[test]
fn null_client_token_counts_as_absent() {
    let request = decode(json!({"state": {}, "clientToken": null}));
    assert_eq!(request.client_token(), None);
}

#[test]
fn version_must_be_non_negative_integer() {
    for version in [
        json!(-1),
        json!(1.5),
        json!(3.0),
        json!("3"),
        json!([3]),
        json!(true),
    ] {
        let payload = json!({"state": {}, "version": version, "clientToken": "c"}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::invalid_version(),
            "version {version}"
        );
        assert_eq!(
            rejected.client_token.as_deref(),
            Some("c"),
            "version {version}"
        );
    }
}

#[test]
fn version_null_counts_as_absent() {
    assert_eq!(
        decode(json!({"state": {}, "version": null})).version(),
        None
    );
    assert_eq!(
        decode(json!({"state": {}, "version": 0})).version(),
        Some(0)
    );
    assert_eq!(
        decode(json!({"state": {}, "version": 7})).version(),
        Some(7)
    );
}

#[test]
fn missing_state_echoes_client_token() {
    let rejected = reject(br#"{"clientToken":"c1","version":2}"#);
    assert_eq!(rejected.error, ShadowError::missing_state());
    assert_eq!(rejected.client_token.as_deref(), Some("c1"));
}

#[test]
fn state_must_be_object_or_null() {
    for state in [json!([]), json!("on"), json!(1), json!(false)] {
        let payload = json!({"state": state, "clientToken": "c"}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::state_not_object(),
            "state {state}"
        );
        assert_eq!(rejected.client_token.as_deref(), Some("c"));
    }
}

#[test]
fn state_null_is_valid() {
    let request = decode(json!({"state": null}));
    assert_eq!(request.state_json(), "null");
}

#[test]
fn unknown_state_node_is_rejected() {
    for state in [
        json!({"delta": {"a": 1}}),
        json!({"desired": {}, "metadata": {}}),
    ] {
        let payload = json!({"state": state, "clientToken": "c"}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::invalid_state_node(),
            "state {state}"
        );
        assert_eq!(rejected.client_token.as_deref(), Some("c"));
    }
}

#[test]
fn sections_must_be_objects_or_null() {
    for value in [json!(1), json!("x"), json!([1]), json!(true)] {
        let payload = json!({"state": {"desired": value}, "clientToken": "c"}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::desired_not_object(),
            "desired {value}"
        );
        assert_eq!(rejected.client_token.as_deref(), Some("c"));

        let payload = json!({"state": {"reported": value}}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::reported_not_object(),
            "reported {value}"
        );
    }
}

#[test]
fn null_sections_are_valid() {
    let request = decode(json!({"state": {"desired": null, "reported": null}}));
    assert_eq!(request.state_json(), r#"{"desired":null,"reported":null}"#);
}

#[test]
fn arrays_containing_null_are_rejected() {
    let cases = [
        json!({"colors": [null, "RED"]}),
        json!({"light": {"colors": ["RED", [1, null]]}}),
        json!({"points": [{"x": 1, "y": null}]}),
    ];
    for desired in cases {
        let payload = json!({"state": {"desired": desired}, "clientToken": "c"}).to_string();
        let rejected = reject(payload.as_bytes());
        assert_eq!(
            rejected.error,
            ShadowError::invalid_json(),
            "desired {desired}"
        );
        assert_eq!(rejected.client_token.as_deref(), Some("c"));
    }
}

/// Builds an object with `levels` levels of nesting, counting itself as level 1.
fn nested_object(levels: usize) -> Value {
    let mut value = json!({"leaf": 1});
    for _ in 1..levels {
        value = json!({"next": value});
    }
    value
}

#[test]
fn nesting_at_limit_is_accepted() {
    decode(json!({"state": {"desired": nested_object(8), "reported": nested_object(8)}}));
}

#[test]
fn nesting_past_limit_is_too_deep() {
    let payload = json!({"state": {"desired": nested_object(9)}, "clientToken": "c"}).to_string();
    let rejected = reject(payload.as_bytes());
    assert_eq!(rejected.error, ShadowError::too_deep(8));
    assert_eq!(rejected.client_token.as_deref(), Some("c"));
}

#[test]
fn arrays_count_as_nesting_levels() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let accepted = json!({"state": {"reported": {"a": [[1]]}}}).to_string();
    assert!(decode_update(accepted.as_bytes(), &limits).is_ok());

    let rejected = json!({"state": {"reported": {"a": [[[1]]]}}}).to_string();
    let error = reject_with(rejected.as_bytes(), &limits).error;
    assert_eq!(error, ShadowError::too_deep(3));
}

#[test]
fn other_top_level_keys_are_ignored() {
    let request = decode(json!({
        "state": {"desired": {"a": 1}},
        "metadata": {"desired": {"a": {"timestamp": 1}}},
        "timestamp": 5,
        "extra": [null]
    }));
    assert_eq!(request.state_json(), r#"{"desired":{"a":1}}"#);
}

#[test]
fn state_json_keeps_nulls() {
    let request = decode(json!({"state": {"reported": {"a": null, "b": {"c": null, "d": [1]}}}}));
    assert_eq!(
        request.state_json(),
        r#"{"reported":{"a":null,"b":{"c":null,"d":[1]}}}"#
    );
}

#[test]
fn get_payload_may_be_empty() {
    let limits = Limits::default();
    assert_eq!(decode_client_token(b"", &limits), Ok(None));
    assert_eq!(decode_client_token(b" \n", &limits), Ok(None));
    assert_eq!(decode_client_token(b"{}", &limits), Ok(None));
}

#[test]
fn get_payload_client_token_is_read() {
    let limits = Limits::default();
    let token = decode_client_token(br#"{"clientToken":"abc","state":5}"#, &limits);
    assert_eq!(token, Ok(Some("abc".to_owned())));
}

#[test]
fn get_payload_errors_match_update() {
    let limits = Limits::default();
    let invalid_json = decode_client_token(b"{clientToken}", &limits).expect_err("not JSON");
    assert_eq!(invalid_json.error, ShadowError::invalid_json());

    let long_token = json!({"clientToken": "t".repeat(65)}).to_string();
    let invalid_token = decode_client_token(long_token.as_bytes(), &limits).expect_err("long");
    assert_eq!(invalid_token.error, ShadowError::invalid_client_token());

    let not_utf8 = decode_client_token(b"{\"clientToken\":\"\xfe\"}", &limits).expect_err("bytes");
    assert_eq!(not_utf8.error, ShadowError::unsupported_encoding());
}
