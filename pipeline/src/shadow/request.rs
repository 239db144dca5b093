//! Decoding and validation of shadow request payloads.
//!
//! [`decode_update`] turns an `/update` payload into an [`UpdateRequest`] or a
//! [`RejectedRequest`] with the AWS error. [`decode_client_token`] reads the optional
//! `clientToken` of a `/get` or `/delete` payload. Neither looks at the stored shadow: version
//! conflicts and the size of the merged state are checked by [`apply_update`](super::apply_update).
//!
//! Checks run in this order, and the first failure is returned:
//!
//! 1. not UTF-8: 415; longer than `max_payload_bytes`: 413;
//! 2. not JSON, or not a JSON object: 400 "Invalid JSON" (nesting past serde_json's recursion
//!    limit of 128 gives the nesting error instead);
//! 3. `clientToken` not a string or too long: 400 "Invalid clientToken". Errors after this step
//!    carry the token, so the rejection echoes it;
//! 4. `version` not a non-negative integer: 400 "Invalid version";
//! 5. `state` missing, not an object, with a key other than `desired`/`reported`, or with a
//!    section that is neither an object nor null;
//! 6. a section nested deeper than `max_depth`, or containing an array with a null anywhere in it.
//!
//! # Notes
//!
//! - `clientToken: null` and `version: null` count as absent, because some JSON encoders write
//!   unset optional fields as null.
//! - `version` must be written as an integer: `3.0` is rejected.
//! - An array containing null is rejected with "Invalid JSON". AWS documents the rejection but not
//!   its message, so the generic 400 text is used.
//! - Top-level keys other than `state`, `clientToken` and `version` are ignored, as AWS does.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::document::compact_json;
use super::error::{RejectedRequest, ShadowError};
use super::limits::Limits;

/// A decoded and validated `/update` request.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateRequest {
    pub(crate) client_token: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) state: StatePatch,
    /// The compact JSON of `state`, written once at decoding because both the history and the
    /// `/update/accepted` document copy it.
    pub(crate) state_text: String,
}

/// The `state` node of an update request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StatePatch {
    /// `"state": null`: both sections are cleared, but the shadow still exists.
    Clear,

    /// `"state": {..}`: each section is changed as its patch specifies.
    Sections {
        desired: SectionPatch,
        reported: SectionPatch,
    },
}

/// Change that an update request makes to one section.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SectionPatch {
    /// The section is absent from the request.
    Keep,

    /// `null`: the whole section is removed.
    Delete,

    /// An object to merge into the section, in which nulls delete keys.
    Merge(Map<String, Value>),
}

impl UpdateRequest {
    /// Returns the request's `clientToken`, if it had one.
    pub fn client_token(&self) -> Option<&str> {
        self.client_token.as_deref()
    }

    /// Returns the version the request expects the shadow to have, if it gave one.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Returns the compact JSON of the request's `state` node, nulls included: `"null"` for
    /// `{"state": null}`. Keys are in sorted order, not necessarily the order sent.
    pub fn state_json(&self) -> String {
        self.state_text.clone()
    }
}

impl Serialize for StatePatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let StatePatch::Sections { desired, reported } = self else {
            return serializer.serialize_unit();
        };
        let mut map = serializer.serialize_map(None)?;
        for (name, section) in [("desired", desired), ("reported", reported)] {
            match section {
                SectionPatch::Keep => {}
                SectionPatch::Delete => map.serialize_entry(name, &())?,
                SectionPatch::Merge(patch) => map.serialize_entry(name, patch)?,
            }
        }
        map.end()
    }
}

/// Decodes and validates an `/update` payload.
///
/// # Errors
///
/// Returns the AWS error for the first check that fails (see the module documentation), with the
/// request's `clientToken` when it was read before the failure.
pub fn decode_update(payload: &[u8], limits: &Limits) -> Result<UpdateRequest, RejectedRequest> {
    let mut document = parse_object(payload, limits).map_err(RejectedRequest::without_token)?;
    let client_token = take_client_token(&mut document, limits)?;

    let decoded = read_version(&document).and_then(|version| {
        let state = take_state(&mut document, limits)?;
        Ok((version, state))
    });
    match decoded {
        Ok((version, state)) => Ok(UpdateRequest {
            client_token,
            version,
            state_text: compact_json(&state),
            state,
        }),
        Err(error) => Err(RejectedRequest {
            error,
            client_token,
        }),
    }
}

/// Reads the `clientToken` of a `/get` or `/delete` payload.
///
/// An empty (or whitespace-only) payload has no token. Other keys are ignored.
///
/// # Errors
///
/// Returns 415, 413 or 400 "Invalid JSON" as [`decode_update`] does, and 400 "Invalid
/// clientToken" for a token that is not a string or is too long.
pub fn decode_client_token(
    payload: &[u8],
    limits: &Limits,
) -> Result<Option<String>, RejectedRequest> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut document = parse_object(payload, limits).map_err(RejectedRequest::without_token)?;
    take_client_token(&mut document, limits)
}

fn parse_object(payload: &[u8], limits: &Limits) -> Result<Map<String, Value>, ShadowError> {
    let text = std::str::from_utf8(payload).map_err(|_| ShadowError::unsupported_encoding())?;
    if text.len() > limits.max_payload_bytes {
        return Err(ShadowError::payload_too_large());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(document)) => Ok(document),
        Ok(_) => Err(ShadowError::invalid_json()),
        // serde_json reports no error code for this case, only the message text.
        Err(error) if error.to_string().starts_with("recursion limit exceeded") => {
            Err(ShadowError::too_deep(limits.max_depth))
        }
        Err(_) => Err(ShadowError::invalid_json()),
    }
}

fn take_client_token(
    document: &mut Map<String, Value>,
    limits: &Limits,
) -> Result<Option<String>, RejectedRequest> {
    match document.remove("clientToken") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(token)) if token.len() <= limits.max_client_token_bytes => {
            Ok(Some(token))
        }
        Some(_) => Err(RejectedRequest::without_token(
            ShadowError::invalid_client_token(),
        )),
    }
}

fn read_version(document: &Map<String, Value>) -> Result<Option<u64>, ShadowError> {
    match document.get("version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .map(Some)
            .ok_or_else(ShadowError::invalid_version),
        Some(_) => Err(ShadowError::invalid_version()),
    }
}

fn take_state(
    document: &mut Map<String, Value>,
    limits: &Limits,
) -> Result<StatePatch, ShadowError> {
    let mut state = match document.remove("state") {
        None => return Err(ShadowError::missing_state()),
        Some(Value::Null) => return Ok(StatePatch::Clear),
        Some(Value::Object(state)) => state,
        Some(_) => return Err(ShadowError::state_not_object()),
    };
    if state
        .keys()
        .any(|key| key != "desired" && key != "reported")
    {
        return Err(ShadowError::invalid_state_node());
    }
    let desired = section_patch(state.remove("desired"), ShadowError::desired_not_object)?;
    let reported = section_patch(state.remove("reported"), ShadowError::reported_not_object)?;
    for section in [&desired, &reported] {
        if let SectionPatch::Merge(patch) = section {
            check_section(patch, limits.max_depth)?;
        }
    }
    Ok(StatePatch::Sections { desired, reported })
}

fn section_patch(
    node: Option<Value>,
    not_object: fn() -> ShadowError,
) -> Result<SectionPatch, ShadowError> {
    match node {
        None => Ok(SectionPatch::Keep),
        Some(Value::Null) => Ok(SectionPatch::Delete),
        Some(Value::Object(patch)) => Ok(SectionPatch::Merge(patch)),
        Some(_) => Err(not_object()),
    }
}

/// Checks the depth of a section (the section object is level 1) and rejects nulls in arrays.
fn check_section(section: &Map<String, Value>, max_depth: usize) -> Result<(), ShadowError> {
    check_depth(1, max_depth)?;
    section
        .values()
        .try_for_each(|value| check_value(value, 2, false, max_depth))
}

fn check_value(
    value: &Value,
    depth: usize,
    in_array: bool,
    max_depth: usize,
) -> Result<(), ShadowError> {
    match value {
        Value::Null if in_array => Err(ShadowError::invalid_json()),
        Value::Object(object) => {
            check_depth(depth, max_depth)?;
            object
                .values()
                .try_for_each(|child| check_value(child, depth + 1, in_array, max_depth))
        }
        Value::Array(elements) => {
            check_depth(depth, max_depth)?;
            elements
                .iter()
                .try_for_each(|child| check_value(child, depth + 1, true, max_depth))
        }
        _ => Ok(()),
    }
}

fn check_depth(depth: usize, max_depth: usize) -> Result<(), ShadowError> {
    if depth > max_depth {
        return Err(ShadowError::too_deep(max_depth));
    }
    Ok(())
}
