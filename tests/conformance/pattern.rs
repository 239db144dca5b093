//! JSON patterns: expected documents in which placeholders stand for volatile values.
//!
//! A pattern matches a document when both have the same shape. Objects have exactly the same
//! keys, so a key the pattern lacks must be absent, and arrays have the same length. Every other
//! value must be equal as serde_json compares it, so `1` does not match `1.0`. These strings are
//! placeholders instead of literal values:
//!
//! | placeholder | matches |
//! |---|---|
//! | `"$any"` | any value, but the key must be present |
//! | `"$timestamp"` | an integer epoch-seconds time within the case run |
//! | `"$prior_timestamp"` | such a time no later than the acknowledgement of the last prior step |
//! | `"$request_timestamp"` | such a time no earlier than the sending of the request |
//! | `"$meta"`, `"$prior_meta"`, `"$request_meta"` | a metadata leaf `{"timestamp": T}`, with `T` as above |
//! | `"$previous_next_token"` | the `nextToken` of the previous list reply, which the runner puts in place before matching |
//!
//! Any other string that starts with `$` and a lowercase letter is rejected when the cases load,
//! so a misspelt placeholder cannot silently turn into a literal.

use serde_json::Value;

/// Placeholder for the `nextToken` of the case's previous list reply, in a list step's
/// `next_token` and in the expected body of a list request.
pub const PREVIOUS_NEXT_TOKEN: &str = "$previous_next_token";

/// Placeholders a pattern may contain.
const PLACEHOLDERS: [&str; 8] = [
    "$any",
    "$timestamp",
    "$prior_timestamp",
    "$request_timestamp",
    "$meta",
    "$prior_meta",
    "$request_meta",
    PREVIOUS_NEXT_TOKEN,
];

/// Inclusive ranges of epoch seconds that the timestamp placeholders accept.
#[derive(Clone, Copy, Debug)]
pub struct TimeWindows {
    /// From the start of the case run to the moment of the check.
    pub case: (i64, i64),
    /// From the start of the case run to the acknowledgement of its last prior step.
    pub prior: (i64, i64),
    /// From the sending of the request to the moment of the check.
    pub request: (i64, i64),
}

/// Returns the first string in `pattern` that looks like a placeholder but is not one.
pub fn unknown_placeholder(pattern: &Value) -> Option<String> {
    match pattern {
        Value::String(text) => {
            let looks_like_placeholder = text
                .strip_prefix('$')
                .and_then(|rest| rest.chars().next())
                .is_some_and(|first| first.is_ascii_lowercase());
            (looks_like_placeholder && !PLACEHOLDERS.contains(&text.as_str())).then(|| text.clone())
        }
        Value::Array(elements) => elements.iter().find_map(unknown_placeholder),
        Value::Object(members) => members.values().find_map(unknown_placeholder),
        _ => None,
    }
}

/// Compares `actual` with `pattern` and returns one line per difference, each naming the path
/// (such as `state.reported.list[0]`) where it was found.
pub fn differences(pattern: &Value, actual: &Value, windows: &TimeWindows) -> Vec<String> {
    let mut found = Vec::new();
    compare(pattern, actual, "", windows, &mut found);
    found
}

fn compare(
    pattern: &Value,
    actual: &Value,
    path: &str,
    windows: &TimeWindows,
    found: &mut Vec<String>,
) {
    let at = if path.is_empty() { "(document)" } else { path };
    let placeholder = pattern.as_str();
    if let Some(result) = placeholder.and_then(|text| match_placeholder(text, actual, windows)) {
        if let Err(problem) = result {
            found.push(format!("{at}: {problem}"));
        }
        return;
    }
    match (pattern, actual) {
        (Value::Object(expected), Value::Object(members)) => {
            for (key, expected_member) in expected {
                let member_path = join(path, key);
                match members.get(key) {
                    Some(member) => compare(expected_member, member, &member_path, windows, found),
                    None => found.push(format!(
                        "{member_path}: missing, expected {}",
                        render(expected_member)
                    )),
                }
            }
            for (key, member) in members {
                if !expected.contains_key(key) {
                    let member_path = join(path, key);
                    found.push(format!(
                        "{member_path}: unexpected key = {}",
                        render(member)
                    ));
                }
            }
        }
        (Value::Array(expected), Value::Array(elements)) if expected.len() == elements.len() => {
            for (index, (expected_element, element)) in expected.iter().zip(elements).enumerate() {
                let element_path = format!("{path}[{index}]");
                compare(expected_element, element, &element_path, windows, found);
            }
        }
        _ if pattern == actual => {}
        _ => found.push(format!(
            "{at}: expected {}, got {}",
            render(pattern),
            render(actual)
        )),
    }
}

/// Matches `actual` against a placeholder; returns `None` when `placeholder` is a literal string.
fn match_placeholder(
    placeholder: &str,
    actual: &Value,
    windows: &TimeWindows,
) -> Option<Result<(), String>> {
    let result = match placeholder {
        "$any" => Ok(()),
        "$timestamp" => check_timestamp(actual, windows.case, "the case run"),
        "$prior_timestamp" => check_timestamp(actual, windows.prior, "the prior steps"),
        "$request_timestamp" => check_timestamp(actual, windows.request, "the request"),
        "$meta" => check_metadata_leaf(actual, windows.case, "the case run"),
        "$prior_meta" => check_metadata_leaf(actual, windows.prior, "the prior steps"),
        "$request_meta" => check_metadata_leaf(actual, windows.request, "the request"),
        PREVIOUS_NEXT_TOKEN => Err(format!(
            "{PREVIOUS_NEXT_TOKEN} was not replaced by a token, got {}",
            render(actual)
        )),
        _ => return None,
    };
    Some(result)
}

fn check_timestamp(actual: &Value, (from, to): (i64, i64), during: &str) -> Result<(), String> {
    match actual.as_i64() {
        Some(seconds) if (from..=to).contains(&seconds) => Ok(()),
        _ => Err(format!(
            "expected an integer epoch-seconds timestamp from {during} ({from} to {to}), got {}",
            render(actual)
        )),
    }
}

fn check_metadata_leaf(actual: &Value, window: (i64, i64), during: &str) -> Result<(), String> {
    let Some(members) = actual.as_object() else {
        return Err(format!(
            "expected a metadata leaf {{\"timestamp\": ..}}, got {}",
            render(actual)
        ));
    };
    if members.len() != 1 {
        return Err(format!(
            "expected a metadata leaf with only a timestamp, got {}",
            render(actual)
        ));
    }
    match members.get("timestamp") {
        Some(timestamp) => check_timestamp(timestamp, window, during),
        None => Err(format!(
            "expected a metadata leaf {{\"timestamp\": ..}}, got {}",
            render(actual)
        )),
    }
}

/// Returns `pattern` with every `"$previous_next_token"` replaced by the string `token`.
pub fn with_previous_next_token(pattern: &Value, token: &str) -> Value {
    match pattern {
        Value::String(text) if text == PREVIOUS_NEXT_TOKEN => Value::String(token.to_owned()),
        Value::Array(elements) => Value::Array(
            elements
                .iter()
                .map(|element| with_previous_next_token(element, token))
                .collect(),
        ),
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(key, member)| (key.clone(), with_previous_next_token(member, token)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Renders a value for a failure message, shortening long strings such as `$repeat` expansions.
pub fn render(value: &Value) -> String {
    const MAX_CHARS: usize = 600;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let head: String = text.chars().take(MAX_CHARS).collect();
    format!("{head}... ({} bytes in all)", text.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const WINDOWS: TimeWindows = TimeWindows {
        case: (100, 110),
        prior: (100, 104),
        request: (105, 110),
    };

    #[test]
    fn equal_documents_match() {
        let pattern = json!({"state": {"a": [1, {"b": "x"}]}, "version": 2});
        assert!(differences(&pattern, &pattern.clone(), &WINDOWS).is_empty());
    }

    #[test]
    fn extra_and_missing_keys_are_reported() {
        let pattern = json!({"state": {"a": 1}, "version": 2});
        let actual = json!({"state": {"b": 1}, "version": 2});
        let found = differences(&pattern, &actual, &WINDOWS);
        assert_eq!(
            found,
            [
                "state.a: missing, expected 1",
                "state.b: unexpected key = 1"
            ]
        );
    }

    #[test]
    fn integer_does_not_match_float() {
        let found = differences(&json!({"a": 1}), &json!({"a": 1.0}), &WINDOWS);
        assert_eq!(found, ["a: expected 1, got 1.0"]);
    }

    #[test]
    fn arrays_must_have_equal_length() {
        let found = differences(&json!([1, 2]), &json!([1, 2, 3]), &WINDOWS);
        assert_eq!(found, ["(document): expected [1,2], got [1,2,3]"]);
    }

    #[test]
    fn timestamps_must_fall_in_their_window() {
        let pattern = json!({"early": "$prior_timestamp", "late": "$request_timestamp"});
        assert!(differences(&pattern, &json!({"early": 104, "late": 105}), &WINDOWS).is_empty());

        let found = differences(&pattern, &json!({"early": 105, "late": 104}), &WINDOWS);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("early: expected"), "{found:?}");
        assert!(found[1].starts_with("late: expected"), "{found:?}");
    }

    #[test]
    fn millisecond_timestamp_is_rejected() {
        let found = differences(&json!("$timestamp"), &json!(105_000), &WINDOWS);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn metadata_leaf_needs_exactly_a_timestamp() {
        assert!(differences(&json!("$meta"), &json!({"timestamp": 101}), &WINDOWS).is_empty());
        let extra = json!({"timestamp": 101, "version": 1});
        assert_eq!(differences(&json!("$meta"), &extra, &WINDOWS).len(), 1);
        assert_eq!(differences(&json!("$meta"), &json!(101), &WINDOWS).len(), 1);
    }

    #[test]
    fn previous_next_token_matches_only_its_token() {
        let pattern = with_previous_next_token(&json!({"nextToken": "$previous_next_token"}), "b");
        assert!(differences(&pattern, &json!({"nextToken": "b"}), &WINDOWS).is_empty());
        assert_eq!(
            differences(&pattern, &json!({"nextToken": "d"}), &WINDOWS).len(),
            1
        );
    }

    #[test]
    fn unreplaced_previous_next_token_matches_nothing() {
        let pattern = json!({"nextToken": "$previous_next_token"});
        let found = differences(
            &pattern,
            &json!({"nextToken": "$previous_next_token"}),
            &WINDOWS,
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn misspelt_placeholder_is_found() {
        let pattern = json!({"a": ["$timestmp"], "b": "$any", "c": "$5", "d": "$Package"});
        assert_eq!(unknown_placeholder(&pattern).as_deref(), Some("$timestmp"));
        assert_eq!(unknown_placeholder(&json!({"b": "$meta"})), None);
    }
}
