//! Applying a decoded update to a shadow: optimistic locking, merge, metadata and size check.
//!
//! A section patch is applied as a JSON Merge Patch (RFC 7396), and objects left empty are then
//! pruned:
//!
//! - objects merge key by key, and keys the patch does not name keep their value and timestamp;
//! - a scalar or array replaces the old value whole, so arrays are never merged element-wise;
//! - `null` deletes the key at any depth, and deleting a missing key changes nothing;
//! - an object patch replaces a scalar or array, and the result keeps only its non-null members;
//! - an object that ends up empty is removed with its metadata, so a new object whose members are
//!   all null never appears, and a section that ends up empty disappears.
//!
//! ```text
//! stored  {"light": {"on": true, "level": 3}, "mode": "auto"}
//! patch   {"light": {"level": null}, "mode": {"eco": true}, "tags": ["a"]}
//! result  {"light": {"on": true}, "mode": {"eco": true}, "tags": ["a"]}
//! ```
//!
//! Every leaf the patch writes gets `now_s` as its timestamp, even when the value is unchanged,
//! because every accepted update is a new version of the shadow.
//!
//! # Notes
//!
//! - A `version` in the request must equal the current version, or `base_version` when the
//!   shadow does not exist. AWS does not document the check for a shadow that does not exist
//!   (AWS Greengrass accepts only version 1 there), so the rule for existing shadows is reused.
//! - Objects left empty by deletions are pruned. AWS does not document this, and AWS Greengrass
//!   keeps them as `{}`. Pruning keeps `{}` out of deltas and documents.
//! - An object patch whose members are all null removes a scalar or array it lands on, as JSON
//!   Merge Patch does, because the object that replaces the value ends up empty.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::document::{Section, Shadow};
use super::error::ShadowError;
use super::limits::Limits;
use super::metadata::{self, Metadata, MetadataMap};
use super::request::{SectionPatch, StatePatch, UpdateRequest};

/// Applies a decoded update to `current`, the live shadow, or to no shadow when it is `None`.
///
/// A new shadow continues from `base_version`: 0, or the last version of a deleted shadow. The
/// function checks optimistic locking, merges the patch and stamps every leaf the request wrote
/// with `now_s` (epoch seconds). It then checks `max_state_bytes` on the merged state and returns
/// a new shadow whose version is exactly one higher. `current` is never changed, so on error
/// nothing changes.
///
/// # Errors
///
/// - 409 "Version conflict" when the request's version differs from the current version (or
///   from `base_version` when `current` is None);
/// - 413 when the merged `desired` plus `reported` is larger than `limits.max_state_bytes`;
/// - 500 when the version cannot be incremented because it is `u64::MAX`.
pub fn apply_update(
    current: Option<&Shadow>,
    base_version: u64,
    request: &UpdateRequest,
    now_s: i64,
    limits: &Limits,
) -> Result<Shadow, ShadowError> {
    let current_version = current.map_or(base_version, Shadow::version);
    if request
        .version
        .is_some_and(|expected| expected != current_version)
    {
        return Err(ShadowError::version_conflict());
    }
    let version = current_version
        .checked_add(1)
        .ok_or_else(ShadowError::internal)?;

    let shadow = match &request.state {
        StatePatch::Clear => Shadow {
            desired: None,
            reported: None,
            version,
        },
        StatePatch::Sections { desired, reported } => Shadow {
            desired: apply_section(
                current.and_then(|shadow| shadow.desired.as_ref()),
                desired,
                now_s,
            ),
            reported: apply_section(
                current.and_then(|shadow| shadow.reported.as_ref()),
                reported,
                now_s,
            ),
            version,
        },
    };

    if shadow.state_bytes() > limits.max_state_bytes {
        return Err(ShadowError::payload_too_large());
    }
    Ok(shadow)
}

/// Returns the section after the patch. An unchanged section is shared, not copied.
fn apply_section(
    current: Option<&Arc<Section>>,
    patch: &SectionPatch,
    now_s: i64,
) -> Option<Arc<Section>> {
    let patch = match patch {
        SectionPatch::Keep => return current.map(Arc::clone),
        SectionPatch::Delete => return None,
        SectionPatch::Merge(patch) if patch.is_empty() => return current.map(Arc::clone),
        SectionPatch::Merge(patch) => patch,
    };
    let (mut state, mut metadata) = match current {
        Some(section) => (section.state.clone(), section.metadata.clone()),
        None => (Map::new(), MetadataMap::new()),
    };
    merge_object(&mut state, &mut metadata, patch, now_s);
    Section::build(state, metadata)
}

/// Merges `patch` into `target` and its metadata in place, pruning objects left empty.
fn merge_object(
    target: &mut Map<String, Value>,
    metadata: &mut MetadataMap,
    patch: &Map<String, Value>,
    now_s: i64,
) {
    for (key, patch_value) in patch {
        match patch_value {
            Value::Null => {
                target.remove(key);
                metadata.remove(key);
            }
            Value::Object(patch_object) => {
                merge_member_object(target, metadata, key, patch_object, now_s);
            }
            _ => {
                set_value(target, key, patch_value.clone());
                set_metadata(metadata, key, Metadata::Timestamp(now_s));
            }
        }
    }
}

/// Merges an object patch into one member, which may be missing or of another type.
fn merge_member_object(
    target: &mut Map<String, Value>,
    metadata: &mut MetadataMap,
    key: &str,
    patch: &Map<String, Value>,
    now_s: i64,
) {
    if let Some(Value::Object(object)) = target.get_mut(key) {
        let (owned_key, mut members) = take_object_metadata(metadata, key, object);
        merge_object(object, &mut members, patch, now_s);
        if object.is_empty() {
            target.remove(key);
        } else {
            metadata.insert(owned_key, Metadata::Object(members));
        }
        return;
    }

    // The member is missing, a scalar or an array: the patch's type wins, so the member
    // becomes the patch without its nulls.
    let mut object = Map::new();
    let mut members = MetadataMap::new();
    merge_object(&mut object, &mut members, patch, now_s);
    if object.is_empty() {
        target.remove(key);
        metadata.remove(key);
    } else {
        set_value(target, key, Value::Object(object));
        set_metadata(metadata, key, Metadata::Object(members));
    }
}

/// Removes and returns the metadata map of an object member, keeping its key allocation.
///
/// The mirror invariant makes the member's metadata an object. If it is not, the metadata is
/// rebuilt from the state with timestamp 0, so the lost timestamps read as "unknown" instead of
/// taking the current time.
fn take_object_metadata(
    metadata: &mut MetadataMap,
    key: &str,
    object: &Map<String, Value>,
) -> (String, MetadataMap) {
    match metadata.remove_entry(key) {
        Some((owned_key, Metadata::Object(members))) => (owned_key, members),
        Some((owned_key, Metadata::Timestamp(_))) => (owned_key, metadata::stamped_map(object, 0)),
        None => (key.to_owned(), metadata::stamped_map(object, 0)),
    }
}

/// Inserts or replaces a state member, allocating the key only when it is new.
fn set_value(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// Inserts or replaces a metadata member, allocating the key only when it is new.
fn set_metadata(map: &mut MetadataMap, key: &str, value: Metadata) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}
