//! Response documents that the service publishes or returns, built as `serde_json::Value`.
//!
//! All timestamps are epoch seconds. `clientToken` appears only when the request had one.
//! Publishing, topics and HTTP status lines belong to the callers.
//!
//! # Notes
//!
//! - The `/update/accepted` document for `{"state": null}` carries `"state": {}` and
//!   `"metadata": {}`, as AWS Greengrass does, because SDK parsers expect an object there.
//!   `UpdateRequest::state_json` still returns `null` for the history.
//! - `/get/accepted` has no `metadata.delta`: the AWS IoT Device SDK model has none, and the only
//!   AWS page that shows one is an illustration.
//! - Error documents always carry `timestamp`. AWS leaves it out of some of them, and SDKs treat
//!   it as optional.

use serde_json::{Map, Value};

use super::delta::Delta;
use super::document::Shadow;
use super::error::ShadowError;
use super::metadata;
use super::request::{SectionPatch, StatePatch, UpdateRequest};

/// Builds the `/update/accepted` document: the request's `state` as sent (nulls included), and
/// metadata `{"timestamp": now_s}` for exactly the echoed leaves.
///
/// A null leaf or a null section gets a timestamp too, and an array gets per-element metadata.
/// `version` is the shadow's new version.
pub fn accepted_document(request: &UpdateRequest, version: u64, now_s: i64) -> Value {
    let mut state = Map::new();
    let mut echoed_metadata = Map::new();
    if let StatePatch::Sections { desired, reported } = &request.state {
        for (name, section) in [("desired", desired), ("reported", reported)] {
            let (value, section_metadata) = match section {
                SectionPatch::Keep => continue,
                SectionPatch::Delete => {
                    (Value::Null, metadata::render_uniform(&Value::Null, now_s))
                }
                SectionPatch::Merge(patch) => (
                    Value::Object(patch.clone()),
                    Value::Object(metadata::render_uniform_map(patch, now_s)),
                ),
            };
            state.insert(name.to_owned(), value);
            echoed_metadata.insert(name.to_owned(), section_metadata);
        }
    }

    let mut document = Map::new();
    document.insert("state".to_owned(), Value::Object(state));
    document.insert("metadata".to_owned(), Value::Object(echoed_metadata));
    finish(document, Some(version), now_s, request.client_token())
}

/// Builds the `/get/accepted` document: the stored state, the delta when there is one, the
/// metadata of `desired` and `reported`, and the version.
pub fn get_document(
    shadow: &Shadow,
    delta: Option<&Delta>,
    now_s: i64,
    client_token: Option<&str>,
) -> Value {
    let mut state = shadow.state_value();
    if let Some(delta) = delta {
        state.insert("delta".to_owned(), Value::Object(delta.state().clone()));
    }

    let mut document = Map::new();
    document.insert("state".to_owned(), Value::Object(state));
    document.insert(
        "metadata".to_owned(),
        Value::Object(shadow.metadata_value()),
    );
    finish(document, Some(shadow.version()), now_s, client_token)
}

/// Builds the `/update/delta` document: the whole current delta with desired-side metadata.
pub fn delta_document(
    delta: &Delta,
    version: u64,
    now_s: i64,
    client_token: Option<&str>,
) -> Value {
    let mut document = Map::new();
    document.insert("state".to_owned(), Value::Object(delta.state().clone()));
    document.insert("metadata".to_owned(), delta.metadata_value());
    finish(document, Some(version), now_s, client_token)
}

/// Builds the `/update/documents` document: snapshots of the shadow before and after an update.
///
/// `previous` is `None` when the update created the shadow, and is then rendered as `null`.
/// Snapshots hold `desired` and `reported` only, never the delta.
pub fn documents_document(
    previous: Option<&Shadow>,
    current: &Shadow,
    now_s: i64,
    client_token: Option<&str>,
) -> Value {
    let mut document = Map::new();
    document.insert(
        "previous".to_owned(),
        previous.map_or(Value::Null, snapshot),
    );
    document.insert("current".to_owned(), snapshot(current));
    finish(document, None, now_s, client_token)
}

/// Builds the `/delete/accepted` document. `version` is the last version of the deleted shadow.
pub fn delete_document(version: u64, now_s: i64, client_token: Option<&str>) -> Value {
    finish(Map::new(), Some(version), now_s, client_token)
}

/// Builds an error document for `/rejected` topics and HTTP error bodies.
pub fn error_document(error: &ShadowError, now_s: i64, client_token: Option<&str>) -> Value {
    let mut document = Map::new();
    document.insert("code".to_owned(), Value::from(error.code()));
    document.insert("message".to_owned(), Value::from(error.message()));
    finish(document, None, now_s, client_token)
}

fn snapshot(shadow: &Shadow) -> Value {
    let mut snapshot = Map::new();
    snapshot.insert("state".to_owned(), Value::Object(shadow.state_value()));
    snapshot.insert(
        "metadata".to_owned(),
        Value::Object(shadow.metadata_value()),
    );
    snapshot.insert("version".to_owned(), Value::from(shadow.version()));
    Value::Object(snapshot)
}

/// Adds the fields every document ends with: `version` (when given), `timestamp` and
/// `clientToken` (when the request had one).
fn finish(
    mut document: Map<String, Value>,
    version: Option<u64>,
    now_s: i64,
    client_token: Option<&str>,
) -> Value {
    if let Some(version) = version {
        document.insert("version".to_owned(), Value::from(version));
    }
    document.insert("timestamp".to_owned(), Value::from(now_s));
    if let Some(client_token) = client_token {
        document.insert("clientToken".to_owned(), Value::from(client_token));
    }
    Value::Object(document)
}
