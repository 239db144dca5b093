//! Response documents that the service publishes or returns.
//!
//! Each document has two encoders: one returns a `serde_json::Value` (`get_document`), and one
//! writes the same document straight to JSON bytes (`get_json`). The byte encoders copy the
//! stored state text instead of building and dropping a tree of values, and write the bytes that
//! `serde_json::to_vec` would write for the `Value`.
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

use std::ops::Range;

use serde_json::{Map, Value};

use super::delta::Delta;
use super::document::{Section, Shadow};
use super::encode::{self, ObjectWriter};
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
    let (mut state, rendered) = shadow.state_and_metadata_value();
    if let Some(delta) = delta {
        state.insert("delta".to_owned(), Value::Object(delta.state()));
    }

    let mut document = Map::new();
    document.insert("state".to_owned(), Value::Object(state));
    document.insert("metadata".to_owned(), Value::Object(rendered));
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
    document.insert("state".to_owned(), Value::Object(delta.state()));
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
    let (state, rendered) = shadow.state_and_metadata_value();
    let mut snapshot = Map::new();
    snapshot.insert("state".to_owned(), Value::Object(state));
    snapshot.insert("metadata".to_owned(), Value::Object(rendered));
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

/// Writes the `/update/accepted` document of [`accepted_document`] as JSON bytes.
pub fn accepted_json(request: &UpdateRequest, version: u64, now_s: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut document = ObjectWriter::open(&mut out);
    if let Some(client_token) = request.client_token() {
        document.string("clientToken", client_token);
    }
    let sections = match &request.state {
        StatePatch::Clear => None,
        StatePatch::Sections { desired, reported } => {
            Some([("desired", desired), ("reported", reported)])
        }
    };
    let echoed = sections
        .into_iter()
        .flatten()
        .filter(|(_, section)| !matches!(section, SectionPatch::Keep));

    let mut echoed_metadata = ObjectWriter::open(document.key("metadata"));
    for (name, section) in echoed {
        let out = echoed_metadata.key(name);
        match section {
            SectionPatch::Merge(patch) => encode::write_uniform_map(out, patch, now_s),
            _ => encode::write_uniform_metadata(out, &Value::Null, now_s),
        }
    }
    echoed_metadata.close();

    // The request's state text has the echoed sections in this order, with `null` for a deleted
    // one, so it is copied. `{"state": null}` echoes `{}` instead (see the module notes).
    let state = match &request.state {
        StatePatch::Clear => "{}",
        StatePatch::Sections { .. } => request.state_text.as_str(),
    };
    document.raw("state", state);

    document.integer("timestamp", now_s);
    document.integer("version", version);
    document.close();
    out
}

/// Writes the `/get/accepted` document of [`get_document`] as JSON bytes.
pub fn get_json(
    shadow: &Shadow,
    delta: Option<&Delta>,
    now_s: i64,
    client_token: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut document = ObjectWriter::open(&mut out);
    if let Some(client_token) = client_token {
        document.string("clientToken", client_token);
    }
    write_sections(&mut document, shadow, delta, &mut Vec::new());
    document.integer("timestamp", now_s);
    document.integer("version", shadow.version());
    document.close();
    out
}

/// Writes the `/update/delta` document of [`delta_document`] as JSON bytes.
pub fn delta_json(delta: &Delta, version: u64, now_s: i64, client_token: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut document = ObjectWriter::open(&mut out);
    if let Some(client_token) = client_token {
        document.string("clientToken", client_token);
    }
    encode::write_stored_metadata(document.key("metadata"), delta.state_text(), delta.stamps());
    document.raw("state", delta.state_text());
    document.integer("timestamp", now_s);
    document.integer("version", version);
    document.close();
    out
}

/// Writes the `/update/documents` document of [`documents_document`] as JSON bytes.
pub fn documents_json(
    previous: Option<&Shadow>,
    current: &Shadow,
    now_s: i64,
    client_token: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut document = ObjectWriter::open(&mut out);
    if let Some(client_token) = client_token {
        document.string("clientToken", client_token);
    }
    // Sections the update did not change have the same metadata in both snapshots, so the
    // previous snapshot copies what the current one wrote for them.
    let mut written = Vec::new();
    write_snapshot(document.key("current"), current, &mut written);
    match previous {
        Some(previous) => write_snapshot(document.key("previous"), previous, &mut written),
        None => document.raw("previous", "null"),
    }
    document.integer("timestamp", now_s);
    document.close();
    out
}

/// Writes `{"metadata": .., "state": .., "version": n}` of one shadow.
fn write_snapshot<'s>(
    out: &mut Vec<u8>,
    shadow: &'s Shadow,
    written: &mut Vec<(&'s Section, Range<usize>)>,
) {
    let mut snapshot = ObjectWriter::open(out);
    write_sections(&mut snapshot, shadow, None, written);
    snapshot.integer("version", shadow.version());
    snapshot.close();
}

/// Writes the `metadata` and `state` members of a shadow, with the delta in `state` when given.
///
/// `written` lists where in the output the metadata of earlier sections was written. A section
/// that shares its text and timestamps with one of them copies those bytes instead of walking
/// its text again, and each section walked is added to the list.
fn write_sections<'s>(
    document: &mut ObjectWriter<'_>,
    shadow: &'s Shadow,
    delta: Option<&Delta>,
    written: &mut Vec<(&'s Section, Range<usize>)>,
) {
    let sections = [("desired", &shadow.desired), ("reported", &shadow.reported)];
    let present = || {
        sections
            .into_iter()
            .filter_map(|(name, section)| section.as_ref().map(|section| (name, section)))
    };

    let mut rendered = ObjectWriter::open(document.key("metadata"));
    for (name, section) in present() {
        let out = rendered.key(name);
        let earlier = written
            .iter()
            .find(|(earlier, _)| earlier.shares_contents(section));
        if let Some((_, range)) = earlier {
            out.extend_from_within(range.clone());
            continue;
        }
        let start = out.len();
        encode::write_stored_metadata(out, section.json(), section.stamps());
        written.push((section, start..out.len()));
    }
    rendered.close();

    let mut state = ObjectWriter::open(document.key("state"));
    if let Some(delta) = delta {
        state.raw("delta", delta.state_text());
    }
    for (name, section) in present() {
        state.raw(name, Section::json(section));
    }
    state.close();
}
