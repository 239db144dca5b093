//! Tests of the shadow model through its public functions, grouped by concern.

use serde_json::{Map, Value};

use super::{Limits, RejectedRequest, Shadow, UpdateRequest, apply_update, decode_update};

mod decode;
mod delta;
mod documents;
mod merge;
mod oracle;

/// Epoch seconds used as "now" unless a test needs several times.
const NOW: i64 = 1_700_000_000;

fn decode(request: Value) -> UpdateRequest {
    let payload = serde_json::to_vec(&request).expect("test request serializes");
    decode_update(&payload, &Limits::default())
        .unwrap_or_else(|rejected| panic!("{request} was rejected: {rejected:?}"))
}

fn reject(payload: &[u8]) -> RejectedRequest {
    reject_with(payload, &Limits::default())
}

fn reject_with(payload: &[u8], limits: &Limits) -> RejectedRequest {
    match decode_update(payload, limits) {
        Ok(request) => panic!(
            "{} was accepted as {request:?}",
            String::from_utf8_lossy(payload)
        ),
        Err(rejected) => rejected,
    }
}

/// Applies `request` to `current` at time `now_s` with default limits.
fn update_at(current: Option<&Shadow>, request: Value, now_s: i64) -> Shadow {
    let request = decode(request);
    apply_update(current, 0, &request, now_s, &Limits::default())
        .unwrap_or_else(|error| panic!("update was rejected: {error}"))
}

fn update(current: Option<&Shadow>, request: Value) -> Shadow {
    update_at(current, request, NOW)
}

/// Builds a shadow by applying each request in turn, at times 1, 2, 3, ...
fn shadow_after(requests: &[Value]) -> Shadow {
    let mut shadow: Option<Shadow> = None;
    for (step, request) in requests.iter().enumerate() {
        let now_s = i64::try_from(step + 1).expect("few steps");
        shadow = Some(update_at(shadow.as_ref(), request.clone(), now_s));
    }
    shadow.expect("at least one request")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// Returns the AWS-layout metadata of the shadow: `{"desired"?: .., "reported"?: ..}`.
fn metadata_of(shadow: &Shadow) -> Value {
    Value::Object(shadow.state_and_metadata_value().1)
}
