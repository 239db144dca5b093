//! Shadow errors as AWS reports them: an HTTP status code and a message.
//!
//! The constructors produce the exact texts of the AWS IoT Device Shadow service, because client
//! code and tests match on them. [`RejectedRequest`] pairs an error with the `clientToken` of the
//! request, so the rejection document can echo it.
//!
//! # Notes
//!
//! - AWS documents no message text for 429, so [`ShadowError::throttled`] uses "Rate exceeded",
//!   the usual text of AWS throttling errors.

use serde::{Deserialize, Serialize};

use super::names::ShadowKey;

/// An AWS shadow error: HTTP status code and message, as in the error document.
///
/// `Display` prints the message only, because that is the text a client receives.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct ShadowError {
    code: u16,
    message: String,
}

impl ShadowError {
    /// Creates an error with any code and message, for cases the named constructors don't cover.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Returns the HTTP status code (400, 404, 409, 413, 415, 429 or 500 for AWS errors).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Returns the message text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400: the payload is not valid JSON, is not a JSON object, or has an array containing null.
    pub fn invalid_json() -> Self {
        Self::new(400, "Invalid JSON")
    }

    /// 400: an update request has no `state` node.
    pub fn missing_state() -> Self {
        Self::new(400, "Missing required node: state")
    }

    /// 400: `state` is neither an object nor null.
    pub fn state_not_object() -> Self {
        Self::new(400, "State node must be an object")
    }

    /// 400: `state.desired` is neither an object nor null.
    pub fn desired_not_object() -> Self {
        Self::new(400, "Desired node must be an object")
    }

    /// 400: `state.reported` is neither an object nor null.
    pub fn reported_not_object() -> Self {
        Self::new(400, "Reported node must be an object")
    }

    /// 400: `version` is not a non-negative integer.
    pub fn invalid_version() -> Self {
        Self::new(400, "Invalid version")
    }

    /// 400: `clientToken` is not a string or is longer than the limit.
    pub fn invalid_client_token() -> Self {
        Self::new(400, "Invalid clientToken")
    }

    /// 400: `desired` or `reported` is nested deeper than `max_depth` levels.
    pub fn too_deep(max_depth: usize) -> Self {
        Self::new(
            400,
            format!("JSON contains too many levels of nesting; maximum is {max_depth}"),
        )
    }

    /// 400: `state` contains a key other than `desired` and `reported`.
    pub fn invalid_state_node() -> Self {
        Self::new(400, "State contains an invalid node")
    }

    /// 400: a thing or shadow name breaks the naming rule.
    ///
    /// `parameter` is the AWS parameter name (`thingName`, `shadowName`) and `rule` states what
    /// a valid name looks like.
    pub fn invalid_name(parameter: &str, name: &str, rule: &str) -> Self {
        Self::new(400, format!("Invalid {parameter} '{name}': {rule}"))
    }

    /// 404: the shadow does not exist or was deleted. The message quotes the shadow name, or the
    /// thing name for a classic shadow, as AWS does.
    pub fn not_found(key: &ShadowKey) -> Self {
        let name = key.shadow_name.as_deref().unwrap_or(&key.thing_name);
        Self::new(404, format!("No shadow exists with name: '{name}'"))
    }

    /// 409: the request's `version` differs from the shadow's current version.
    pub fn version_conflict() -> Self {
        Self::new(409, "Version conflict")
    }

    /// 413: the payload, or the state after the merge, is larger than the limit.
    pub fn payload_too_large() -> Self {
        Self::new(413, "The payload exceeds the maximum size allowed")
    }

    /// 415: the payload is not valid UTF-8. The wording, including "documented", is AWS's.
    pub fn unsupported_encoding() -> Self {
        Self::new(
            415,
            "Unsupported documented encoding; supported encoding is UTF-8",
        )
    }

    /// 429: the client sends requests faster than the service accepts them.
    pub fn throttled() -> Self {
        Self::new(429, "Rate exceeded")
    }

    /// 429: too many requests of one thing are waiting for their responses.
    pub fn too_many_in_flight() -> Self {
        Self::new(429, "Too many requests in flight")
    }

    /// 503: the change cannot be made durable now (the write-ahead log cannot be written).
    pub fn unavailable() -> Self {
        Self::new(
            503,
            "Service unavailable: the change could not be written to disk; retry later",
        )
    }

    /// 500: the service failed for a reason that is not the client's fault.
    pub fn internal() -> Self {
        Self::new(500, "Internal service failure")
    }
}

/// A request that failed to decode, with the clientToken if it could be read (so the rejection
/// echoes it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct RejectedRequest {
    /// The reason for the rejection.
    pub error: ShadowError,

    /// The request's `clientToken`, if the payload was valid JSON with a valid token.
    pub client_token: Option<String>,
}

impl RejectedRequest {
    /// Wraps an error found before the `clientToken` could be read.
    pub(crate) fn without_token(error: ShadowError) -> Self {
        Self {
            error,
            client_token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_message() {
        let error = ShadowError::version_conflict();
        assert_eq!(error.to_string(), "Version conflict");
        assert_eq!(error.code(), 409);
    }

    #[test]
    fn not_found_quotes_thing_for_classic() {
        let error = ShadowError::not_found(&ShadowKey::classic("lamp"));
        assert_eq!(error.code(), 404);
        assert_eq!(error.message(), "No shadow exists with name: 'lamp'");
    }

    #[test]
    fn not_found_quotes_shadow_for_named() {
        let error = ShadowError::not_found(&ShadowKey::named("lamp", "config"));
        assert_eq!(error.message(), "No shadow exists with name: 'config'");
    }

    #[test]
    fn too_deep_names_the_maximum() {
        let error = ShadowError::too_deep(8);
        assert_eq!(error.code(), 400);
        assert_eq!(
            error.message(),
            "JSON contains too many levels of nesting; maximum is 8"
        );
    }

    #[test]
    fn fixed_texts_match_aws() {
        let cases = [
            (ShadowError::invalid_json(), 400, "Invalid JSON"),
            (
                ShadowError::missing_state(),
                400,
                "Missing required node: state",
            ),
            (
                ShadowError::state_not_object(),
                400,
                "State node must be an object",
            ),
            (
                ShadowError::desired_not_object(),
                400,
                "Desired node must be an object",
            ),
            (
                ShadowError::reported_not_object(),
                400,
                "Reported node must be an object",
            ),
            (ShadowError::invalid_version(), 400, "Invalid version"),
            (
                ShadowError::invalid_client_token(),
                400,
                "Invalid clientToken",
            ),
            (
                ShadowError::invalid_state_node(),
                400,
                "State contains an invalid node",
            ),
            (
                ShadowError::payload_too_large(),
                413,
                "The payload exceeds the maximum size allowed",
            ),
            (
                ShadowError::unsupported_encoding(),
                415,
                "Unsupported documented encoding; supported encoding is UTF-8",
            ),
            (ShadowError::internal(), 500, "Internal service failure"),
        ];
        for (error, code, message) in cases {
            assert_eq!(error.code(), code, "code of {message}");
            assert_eq!(error.message(), message);
        }
    }
}
