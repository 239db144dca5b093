//! Topic names and topic filters of MQTT 3.1.1 (section 4.7): validation, matching, and the
//! `$share/{group}/{filter}` form of shared subscriptions.
//!
//! # Notes
//! - A filter whose first level is `+` or `#` does not match a topic that starts with `$`
//!   (`$SYS/...`, `$aws/...`). A filter that names the `$` level itself, such as
//!   `$aws/things/+/shadow/update`, matches those topics.
//! - `#` also matches its parent level: `sport/#` matches `sport`.
//! - `+` matches one level, which may be empty: `+/+` matches `/finance`.

/// Prefix of a shared subscription filter, followed by the group name and the filter.
pub(crate) const SHARED_PREFIX: &str = "$share/";

/// A valid subscription filter: the filter proper, and the share group for a `$share/` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FilterSpec<'a> {
    /// Share group of a `$share/{group}/{filter}` subscription.
    pub(crate) group: Option<&'a str>,
    /// Filter matched against topics.
    pub(crate) filter: &'a str,
}

/// Parses a SUBSCRIBE or UNSUBSCRIBE filter, or returns `None` when it is invalid.
///
/// A shared filter needs a non-empty group without `/`, `+` or `#`, and a valid filter after
/// it: `$share/ingest/$aws/things/+/shadow/update`.
pub(crate) fn parse_filter(filter: &str) -> Option<FilterSpec<'_>> {
    let Some(shared) = filter.strip_prefix(SHARED_PREFIX) else {
        return is_valid_filter(filter).then_some(FilterSpec {
            group: None,
            filter,
        });
    };
    let (group, inner) = shared.split_once('/')?;
    let group_is_valid = !group.is_empty() && !group.contains(['+', '#', '\0']);
    (group_is_valid && is_valid_filter(inner)).then_some(FilterSpec {
        group: Some(group),
        filter: inner,
    })
}

/// Returns whether `filter` is a valid topic filter: not empty, no NUL character, and each
/// wildcard alone in its level, with `#` only as the last level.
pub(crate) fn is_valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let valid = match level {
            "#" => is_last,
            "+" => true,
            _ => !level.contains(['+', '#']),
        };
        if !valid {
            return false;
        }
    }
    true
}

/// Returns whether `topic` is a valid topic name to publish to: not empty, and no wildcard
/// or NUL character.
pub(crate) fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Returns whether the valid filter `filter` matches the valid topic name `topic`.
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for filter_level in filter.split('/') {
        if filter_level == "#" {
            return true;
        }
        match topic_levels.next() {
            Some(level) if filter_level == "+" || filter_level == level => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}
