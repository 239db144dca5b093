//! Shadow identity: the thing name plus an optional shadow name, and the rules for both names.
//!
//! A thing has one classic (unnamed) shadow and any number of named shadows. Names reach the
//! service in MQTT topics and HTTP paths, so the rules keep them free of `/`, `+` and `#`.
//!
//! # Notes
//!
//! - Shadow names follow the AWS API pattern `[$a-zA-Z0-9:_-]+` only in part: `$` is accepted as
//!   the first character, as in the AWS-reserved `$package` shadow, and nowhere else.

use serde::{Deserialize, Serialize};

use super::error::ShadowError;
use super::limits::Limits;

/// Identity of one shadow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShadowKey {
    /// Name of the thing that owns the shadow.
    pub thing_name: String,

    /// Name of a named shadow, or `None` for the thing's classic shadow.
    pub shadow_name: Option<String>,
}

impl ShadowKey {
    /// Creates the key of a thing's classic (unnamed) shadow.
    pub fn classic(thing: impl Into<String>) -> Self {
        Self {
            thing_name: thing.into(),
            shadow_name: None,
        }
    }

    /// Creates the key of a named shadow.
    pub fn named(thing: impl Into<String>, shadow: impl Into<String>) -> Self {
        Self {
            thing_name: thing.into(),
            shadow_name: Some(shadow.into()),
        }
    }
}

/// Checks that `name` is a valid thing name: 1 to `limits.max_thing_name_bytes` bytes of
/// `[a-zA-Z0-9:_-]`.
///
/// # Errors
///
/// Returns a 400 error whose message quotes the name and states the rule.
pub fn validate_thing_name(name: &str, limits: &Limits) -> Result<(), ShadowError> {
    let max = limits.max_thing_name_bytes;
    if is_valid_name(name, max) {
        return Ok(());
    }
    let rule = format!("must be 1 to {max} bytes of [a-zA-Z0-9:_-]");
    Err(ShadowError::invalid_name("thingName", name, &rule))
}

/// Checks that `name` is a valid shadow name: 1 to `limits.max_shadow_name_bytes` bytes of
/// `[a-zA-Z0-9:_-]`, optionally preceded by one `$`.
///
/// # Errors
///
/// Returns a 400 error whose message quotes the name and states the rule.
pub fn validate_shadow_name(name: &str, limits: &Limits) -> Result<(), ShadowError> {
    let max = limits.max_shadow_name_bytes;
    let rest = name.strip_prefix('$').unwrap_or(name);
    if name.len() <= max && is_valid_name(rest, max) {
        return Ok(());
    }
    let rule =
        format!("must be 1 to {max} bytes of [a-zA-Z0-9:_-], optionally after a leading '$'");
    Err(ShadowError::invalid_name("shadowName", name, &rule))
}

fn is_valid_name(name: &str, max_bytes: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_bytes
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_name_accepts_allowed_characters() {
        let limits = Limits::default();
        assert_eq!(validate_thing_name("Lamp_01:kitchen-A", &limits), Ok(()));
        assert_eq!(validate_thing_name(&"a".repeat(128), &limits), Ok(()));
    }

    #[test]
    fn thing_name_rejects_bad_names() {
        let limits = Limits::default();
        let too_long = "a".repeat(129);
        for name in [
            "",
            "a/b",
            "a+b",
            "a#b",
            "$lamp",
            "lamp ",
            "lämp",
            too_long.as_str(),
        ] {
            let error = validate_thing_name(name, &limits).expect_err(name);
            assert_eq!(error.code(), 400, "code for {name:?}");
            assert!(error.message().contains(&format!("'{name}'")), "{error}");
        }
    }

    #[test]
    fn thing_name_message_states_rule() {
        let error = validate_thing_name("a/b", &Limits::default()).expect_err("slash");
        assert_eq!(
            error.message(),
            "Invalid thingName 'a/b': must be 1 to 128 bytes of [a-zA-Z0-9:_-]"
        );
    }

    #[test]
    fn shadow_name_allows_leading_dollar() {
        let limits = Limits::default();
        assert_eq!(validate_shadow_name("$package", &limits), Ok(()));
        assert_eq!(validate_shadow_name("config:v2", &limits), Ok(()));
        assert_eq!(validate_shadow_name(&"s".repeat(64), &limits), Ok(()));
    }

    #[test]
    fn shadow_name_rejects_bad_names() {
        let limits = Limits::default();
        let too_long = "s".repeat(65);
        let dollar_too_long = format!("${}", "s".repeat(64));
        for name in [
            "",
            "$",
            "a$b",
            "$$a",
            "a/b",
            too_long.as_str(),
            dollar_too_long.as_str(),
        ] {
            let error = validate_shadow_name(name, &limits).expect_err(name);
            assert_eq!(error.code(), 400, "code for {name:?}");
            assert!(error.message().starts_with("Invalid shadowName"), "{error}");
        }
    }

    #[test]
    fn name_limits_come_from_limits() {
        let limits = Limits {
            max_thing_name_bytes: 4,
            max_shadow_name_bytes: 3,
            ..Limits::default()
        };
        assert_eq!(validate_thing_name("abcd", &limits), Ok(()));
        assert!(validate_thing_name("abcde", &limits).is_err());
        assert_eq!(validate_shadow_name("$ab", &limits), Ok(()));
        assert!(validate_shadow_name("$abc", &limits).is_err());
    }

    #[test]
    fn keys_order_classic_before_named() {
        let classic = ShadowKey::classic("lamp");
        let named = ShadowKey::named("lamp", "config");
        assert!(classic < named);
        assert_eq!(classic.shadow_name, None);
        assert_eq!(named.shadow_name.as_deref(), Some("config"));
    }
}
