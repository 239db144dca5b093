//! Size and shape limits that every shadow request is checked against.
//!
//! The defaults are the AWS IoT Device Shadow service quotas, so a client that works against AWS
//! works here unchanged. This module only defines the numbers, and `request` and `merge` enforce
//! them.

use serde::{Deserialize, Serialize};

/// Default for [`Limits::max_state_bytes`]: 8 KiB, the AWS quota for desired plus reported state.
pub const DEFAULT_MAX_STATE_BYTES: usize = 8192;

/// Default for [`Limits::max_depth`]: 8 levels, above the 6 that the AWS error message names, so
/// every request that AWS accepts passes.
pub const DEFAULT_MAX_DEPTH: usize = 8;

/// Default for [`Limits::max_payload_bytes`]: 128 KiB, the AWS IoT message broker payload limit.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Default for [`Limits::max_client_token_bytes`]: the AWS limit for `clientToken`.
pub const DEFAULT_MAX_CLIENT_TOKEN_BYTES: usize = 64;

/// Default for [`Limits::max_thing_name_bytes`]: the AWS limit for thing names.
pub const DEFAULT_MAX_THING_NAME_BYTES: usize = 128;

/// Default for [`Limits::max_shadow_name_bytes`]: the AWS limit for named-shadow names.
pub const DEFAULT_MAX_SHADOW_NAME_BYTES: usize = 64;

/// Limits on shadow requests and on the stored shadow state.
///
/// Every field is optional in a configuration file and falls back to its `DEFAULT_*` constant,
/// which matches the AWS quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum size in bytes of the stored state: the compact JSON of `desired` plus the compact
    /// JSON of `reported`, measured after the update is merged. Metadata does not count. An update
    /// that would grow the state past this is rejected with 413, even if the request is small.
    pub max_state_bytes: usize,

    /// Maximum nesting depth inside `state.desired` and `state.reported`. The section object is
    /// level 1, and every object or array inside it adds a level, but scalars add none. Deeper
    /// requests are rejected with 400.
    pub max_depth: usize,

    /// Maximum size in bytes of a request payload. Larger payloads are rejected with 413 before
    /// they are parsed.
    pub max_payload_bytes: usize,

    /// Maximum length in bytes of a request's `clientToken`. Longer tokens are rejected with 400
    /// "Invalid clientToken".
    pub max_client_token_bytes: usize,

    /// Maximum length in bytes of a thing name.
    pub max_thing_name_bytes: usize,

    /// Maximum length in bytes of a named-shadow name, including a leading `$`.
    pub max_shadow_name_bytes: usize,

    /// Maximum requests per second to one shadow; more get 429 "Rate exceeded". Off (`None`)
    /// by default, because the limit protects a shared cloud service and would throttle a
    /// data-set replay. AWS IoT's value is 20.
    pub max_requests_per_second: Option<u32>,

    /// Maximum requests of one thing that have been received but not yet responded to; more get
    /// 429. Off (`None`) by default for the same reason as `max_requests_per_second`. AWS
    /// IoT's value is 10.
    pub max_in_flight_per_thing: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_client_token_bytes: DEFAULT_MAX_CLIENT_TOKEN_BYTES,
            max_thing_name_bytes: DEFAULT_MAX_THING_NAME_BYTES,
            max_shadow_name_bytes: DEFAULT_MAX_SHADOW_NAME_BYTES,
            max_requests_per_second: None,
            max_in_flight_per_thing: None,
        }
    }
}

impl Limits {
    /// Returns limits that accept every size and depth, for re-applying changes that were
    /// accepted under limits which may since have been lowered.
    pub fn unbounded() -> Self {
        Self {
            max_state_bytes: usize::MAX,
            max_depth: usize::MAX,
            max_payload_bytes: usize::MAX,
            max_client_token_bytes: usize::MAX,
            max_thing_name_bytes: usize::MAX,
            max_shadow_name_bytes: usize::MAX,
            max_requests_per_second: None,
            max_in_flight_per_thing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_json() {
        let limits = Limits::default();
        let json = serde_json::to_string(&limits).expect("limits serialize");
        let parsed: Limits = serde_json::from_str(&json).expect("limits deserialize");
        assert_eq!(parsed, limits);
    }

    #[test]
    fn missing_fields_take_defaults() {
        let parsed: Limits =
            serde_json::from_str(r#"{"max_state_bytes": 30720}"#).expect("limits deserialize");
        assert_eq!(parsed.max_state_bytes, 30720);
        assert_eq!(parsed.max_depth, DEFAULT_MAX_DEPTH);
        assert_eq!(parsed.max_payload_bytes, DEFAULT_MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let parsed = serde_json::from_str::<Limits>(r#"{"max_state_byte": 1}"#);
        assert!(parsed.is_err());
    }
}
