//! The shadow domain model: AWS IoT Device Shadow documents, updates, deltas and errors.
//!
//! This module is plain data and functions, without I/O or dataflow, so the AWS semantics can be
//! tested on their own. The dataflow calls it in this order for an `/update` request:
//!
//! 1. [`decode_update`] validates the payload and returns an [`UpdateRequest`];
//! 2. [`apply_update`] checks the version, merges the patch and returns the new [`Shadow`];
//! 3. [`compute_delta`] finds what `reported` does not yet match;
//! 4. [`accepted_document`], [`delta_document`] and [`documents_document`] build the responses,
//!    and [`error_document`] the rejection. [`accepted_json`], [`delta_json`],
//!    [`documents_json`] and [`get_json`] write the same documents straight to JSON bytes, which
//!    costs less when the document is only sent.
//!
//! Layout:
//!
//! - `names`: [`ShadowKey`] and the thing and shadow name rules;
//! - `limits`: [`Limits`] with the AWS quotas as defaults;
//! - `error`: [`ShadowError`] with the AWS codes and texts, and [`RejectedRequest`];
//! - `request`: payload decoding and validation;
//! - `document`: the stored [`Shadow`];
//! - `metadata`: per-leaf timestamps and their AWS layout;
//! - `merge`: [`apply_update`];
//! - `delta`: [`Delta`] and [`compute_delta`];
//! - `documents`: response document encoders, as `serde_json::Value` or as JSON bytes;
//! - `encode`: the JSON writers behind the byte encoders.
//!
//! # Notes
//!
//! Where AWS documents a behaviour only in part, this module follows what the AWS IoT Device SDKs
//! accept and what AWS Greengrass Shadow Manager (AWS's own local implementation) does. Each
//! choice is listed in the `# Notes` of the module that makes it:
//!
//! - `request`: null `clientToken` and `version` count as absent, a float `version` is invalid,
//!   and arrays containing null get "Invalid JSON";
//! - `merge`: a `version` on a shadow that does not exist must equal `base_version`, and objects
//!   left empty by deletions are pruned;
//! - `delta`: numbers compare by value (`1 == 1.0`);
//! - `documents`: `{"state": null}` is echoed as `"state": {}`, and there is no `metadata.delta`;
//! - `limits`: the nesting limit defaults to 8, above the 6 that the AWS error message names, and
//!   arrays count as a level;
//! - `error`: 429 uses the message "Rate exceeded";
//! - `names`: a shadow name may start with `$`.
//!
//! `{"state": {}}` is accepted and increments the version without changing the state.
//!
//! # Example
//!
//! ```
//! use pipeline::shadow::{
//!     Limits, accepted_document, apply_update, compute_delta, decode_update,
//! };
//!
//! let limits = Limits::default();
//! let now_s = 1_700_000_000;
//!
//! let request = decode_update(br#"{"state":{"desired":{"on":true}},"clientToken":"c1"}"#, &limits)
//!     .expect("valid update");
//! let shadow = apply_update(None, 0, &request, now_s, &limits).expect("update applies");
//! assert_eq!(shadow.version(), 1);
//!
//! let delta = compute_delta(&shadow).expect("desired is not reported yet");
//! assert_eq!(delta.state_json(), r#"{"on":true}"#);
//!
//! let accepted = accepted_document(&request, shadow.version(), now_s);
//! assert_eq!(accepted["clientToken"], "c1");
//! assert_eq!(accepted["metadata"]["desired"]["on"]["timestamp"], now_s);
//! ```

mod compact;
mod delta;
mod document;
mod documents;
mod encode;
mod error;
mod limits;
mod merge;
mod metadata;
mod names;
mod request;

pub use delta::{Delta, compute_delta};
pub use document::Shadow;
pub use documents::{
    accepted_document, accepted_json, delete_document, delta_document, delta_json,
    documents_document, documents_json, error_document, get_document, get_json,
};
pub use error::{RejectedRequest, ShadowError};
pub use limits::{
    DEFAULT_MAX_CLIENT_TOKEN_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_SHADOW_NAME_BYTES, DEFAULT_MAX_STATE_BYTES, DEFAULT_MAX_THING_NAME_BYTES, Limits,
};
pub use merge::apply_update;
pub use names::{ShadowKey, validate_shadow_name, validate_thing_name};
pub use request::{UpdateRequest, decode_client_token, decode_update};

#[cfg(test)]
mod tests;
