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

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::compact;
use super::document::{Section, Shadow};
use super::encode;
use super::error::ShadowError;
use super::limits::Limits;
use super::metadata::{StampCursor, Stamps};
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
fn apply_section(current: Option<&Section>, patch: &SectionPatch, now_s: i64) -> Option<Section> {
    let patch = match patch {
        SectionPatch::Keep => return current.cloned(),
        SectionPatch::Delete => return None,
        SectionPatch::Merge(patch) if patch.is_empty() => return current.cloned(),
        SectionPatch::Merge(patch) => patch,
    };
    let (stored, mut old_leaves) = match current {
        Some(section) => (section.json(), StampCursor::new(Some(section.stamps()))),
        None => ("{}", StampCursor::new(None)),
    };
    let mut json = Vec::with_capacity(stored.len() + 64);
    let mut leaves = Vec::new();
    if !merge_object(
        stored,
        &mut old_leaves,
        patch,
        now_s,
        &mut leaves,
        &mut json,
    ) {
        return None;
    }
    let json = std::str::from_utf8(&json).expect("merged text joins UTF-8 JSON pieces");
    Some(Section::from_text(json, Stamps::from_leaves(leaves)))
}

/// Writes to `out` the merge of `patch` into the stored object text `target`, pruning objects
/// left empty, and returns false (writing nothing) when the result is empty.
///
/// The stored text and the patch both list keys in sorted order, so one pass over the two key
/// lists visits the merged object in document order. Members the patch does not name are copied
/// as text. Each leaf of the result appends its timestamp to `leaves`: `now_s` when the patch
/// wrote it, its old timestamp (from `old_leaves`) when it was kept.
fn merge_object(
    target: &str,
    old_leaves: &mut StampCursor<'_>,
    patch: &Map<String, Value>,
    now_s: i64,
    leaves: &mut Vec<i64>,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    out.push(b'{');
    let mut written = false;
    let mut old_members = compact::Members::new(target).peekable();
    let mut patch_members = patch.iter().peekable();
    loop {
        let order = match (old_members.peek(), patch_members.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(old), Some((patch_key, _))) => old.key().as_ref().cmp(patch_key.as_str()),
        };
        let mark = out.len();
        if written {
            out.push(b',');
        }
        let kept = match order {
            Ordering::Less => {
                let member = old_members.next().expect("peeked an old member");
                member.write(out);
                old_leaves.keep(member.value, leaves);
                true
            }
            Ordering::Greater => {
                let (key, patch_value) = patch_members.next().expect("peeked a patch member");
                merge_member(key, None, old_leaves, patch_value, now_s, leaves, out)
            }
            Ordering::Equal => {
                let member = old_members.next().expect("peeked an old member");
                let (key, patch_value) = patch_members.next().expect("peeked a patch member");
                let current = Some(member.value);
                merge_member(key, current, old_leaves, patch_value, now_s, leaves, out)
            }
        };
        if kept {
            written = true;
        } else {
            out.truncate(mark);
        }
    }
    if !written {
        out.truncate(start);
        return false;
    }
    out.push(b'}');
    true
}

/// Writes `"key":merged` for one patch member applied to the current member text, which may be
/// missing or of another type. Returns false when the member is deleted or ends up an empty
/// object; the caller then removes what was written.
fn merge_member(
    key: &str,
    current: Option<&str>,
    old_leaves: &mut StampCursor<'_>,
    patch: &Value,
    now_s: i64,
    leaves: &mut Vec<i64>,
    out: &mut Vec<u8>,
) -> bool {
    match patch {
        Value::Object(patch_object) => {
            // A missing, scalar or array member is replaced: the patch's type wins, so the member
            // becomes the patch without its nulls.
            let base = match current {
                Some(object) if object.starts_with('{') => object,
                Some(other) => {
                    old_leaves.skip(other);
                    "{}"
                }
                None => "{}",
            };
            encode::write_str(out, key);
            out.push(b':');
            merge_object(base, old_leaves, patch_object, now_s, leaves, out)
        }
        _ => {
            if let Some(current) = current {
                old_leaves.skip(current);
            }
            if patch.is_null() {
                return false;
            }
            encode::write_str(out, key);
            out.push(b':');
            serde_json::to_writer(&mut *out, patch).expect("writing JSON to a Vec cannot fail");
            leaves.push(now_s);
            true
        }
    }
}
