//! Parsing request topics and formatting response topics.
//!
//! Classic shadows use `$aws/things/{thing}/shadow/{operation}` and named shadows
//! `$aws/things/{thing}/shadow/name/{shadow}/{operation}`, where `{operation}` is `update`,
//! `get` or `delete`. The service responds on the same topic followed by `/accepted`,
//! `/rejected`, and for updates also `/delta` and `/documents`.
//!
//! # Notes
//! - Name validation (length, character set) lives in [`crate::shadow`]; this module only splits
//!   topics, so that a request with a bad name can still get a response on its `/rejected` topic.
//! - A segment containing an MQTT wildcard (`+`, `#`) or an empty segment never parses: no
//!   response topic can be formed from it.

use crate::dataflow::Operation;
use crate::shadow::ShadowKey;

const PREFIX: &str = "$aws/things/";

/// A request topic split into its shadow and operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowTopic {
    /// Thing name and optional shadow name as they appear in the topic (not yet validated).
    pub key: ShadowKey,
    /// The requested operation.
    pub operation: Operation,
}

/// Reason a topic is not a shadow request topic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not start with `$aws/things/` or has no `/shadow/` part.
    #[error("topic {0:?} is not a shadow topic")]
    NotShadowTopic(String),
    /// The topic is a shadow response topic (`.../accepted`, `.../delta`, ...), not a request.
    #[error("topic {0:?} is a shadow response topic, not a request topic")]
    ResponseTopic(String),
    /// A name segment is empty or contains an MQTT wildcard.
    #[error("topic {0:?} has an empty segment or a wildcard in a name")]
    InvalidSegment(String),
}

/// Response topics that the service publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// `/accepted`
    Accepted,
    /// `/rejected`
    Rejected,
    /// `/delta` (updates only)
    Delta,
    /// `/documents` (updates only)
    Documents,
}

impl ResponseKind {
    fn suffix(self) -> &'static str {
        match self {
            ResponseKind::Accepted => "accepted",
            ResponseKind::Rejected => "rejected",
            ResponseKind::Delta => "delta",
            ResponseKind::Documents => "documents",
        }
    }
}

impl ShadowTopic {
    /// Parses a request topic such as `$aws/things/lamp/shadow/update`.
    ///
    /// # Errors
    /// Returns [`TopicError`] when the topic is not a shadow request topic.
    pub fn parse(topic: &str) -> Result<ShadowTopic, TopicError> {
        let not_shadow = || TopicError::NotShadowTopic(topic.to_owned());
        let rest = topic.strip_prefix(PREFIX).ok_or_else(not_shadow)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let (thing, shadow, operation, extra) = match segments.as_slice() {
            [thing, "shadow", operation] => (*thing, None, *operation, None),
            [thing, "shadow", operation, extra] => (*thing, None, *operation, Some(*extra)),
            [thing, "shadow", "name", shadow, operation] => {
                (*thing, Some(*shadow), *operation, None)
            }
            [thing, "shadow", "name", shadow, operation, extra] => {
                (*thing, Some(*shadow), *operation, Some(*extra))
            }
            _ => return Err(not_shadow()),
        };
        let operation = match operation {
            "update" => Operation::Update,
            "get" => Operation::Get,
            "delete" => Operation::Delete,
            _ => return Err(not_shadow()),
        };
        if extra.is_some() {
            return Err(TopicError::ResponseTopic(topic.to_owned()));
        }
        let bad = |name: &str| name.is_empty() || name.contains(['+', '#']);
        if bad(thing) || shadow.is_some_and(bad) {
            return Err(TopicError::InvalidSegment(topic.to_owned()));
        }
        let key = match shadow {
            None => ShadowKey::classic(thing),
            Some(shadow) => ShadowKey::named(thing, shadow),
        };
        Ok(ShadowTopic { key, operation })
    }

    /// Formats the request topic of `operation` on `key`.
    pub fn request(key: &ShadowKey, operation: Operation) -> String {
        let mut topic = prefix(key);
        topic.push_str(operation.as_str());
        topic
    }

    /// Formats the response topic of `operation` on `key`, e.g. `.../update/accepted`.
    pub fn response(key: &ShadowKey, operation: Operation, kind: ResponseKind) -> String {
        let mut topic = prefix(key);
        topic.push_str(operation.as_str());
        topic.push('/');
        topic.push_str(kind.suffix());
        topic
    }

    /// Topic filters that receive every request topic, classic and named.
    pub fn request_filters() -> Vec<String> {
        let mut filters = Vec::new();
        for operation in [Operation::Update, Operation::Get, Operation::Delete] {
            let name = operation.as_str();
            filters.push(format!("{PREFIX}+/shadow/{name}"));
            filters.push(format!("{PREFIX}+/shadow/name/+/{name}"));
        }
        filters
    }
}

fn prefix(key: &ShadowKey) -> String {
    let mut topic = String::with_capacity(64);
    topic.push_str(PREFIX);
    topic.push_str(&key.thing_name);
    topic.push_str("/shadow/");
    if let Some(shadow) = &key.shadow_name {
        topic.push_str("name/");
        topic.push_str(shadow);
        topic.push('/');
    }
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_update_topic_parses() {
        let topic = ShadowTopic::parse("$aws/things/lamp-1/shadow/update").expect("valid topic");
        assert_eq!(topic.key, ShadowKey::classic("lamp-1"));
        assert_eq!(topic.operation, Operation::Update);
    }

    #[test]
    fn named_get_topic_parses() {
        let topic =
            ShadowTopic::parse("$aws/things/lamp/shadow/name/cfg/get").expect("valid topic");
        assert_eq!(topic.key, ShadowKey::named("lamp", "cfg"));
        assert_eq!(topic.operation, Operation::Get);
    }

    #[test]
    fn response_topics_are_not_requests() {
        let error = ShadowTopic::parse("$aws/things/lamp/shadow/update/accepted");
        assert!(matches!(error, Err(TopicError::ResponseTopic(_))));
    }

    #[test]
    fn empty_and_wildcard_segments_are_rejected() {
        for topic in [
            "$aws/things//shadow/update",
            "$aws/things/a+b/shadow/get",
            "$aws/things/lamp/shadow/name//update",
            "$aws/things/lamp/shadow/name/#/delete",
        ] {
            assert!(
                matches!(
                    ShadowTopic::parse(topic),
                    Err(TopicError::InvalidSegment(_))
                ),
                "{topic}"
            );
        }
    }

    #[test]
    fn foreign_topics_are_not_shadow_topics() {
        for topic in [
            "sensors/lamp",
            "$aws/things/lamp/jobs/get",
            "$aws/things/lamp/shadow/patch",
        ] {
            assert!(
                matches!(
                    ShadowTopic::parse(topic),
                    Err(TopicError::NotShadowTopic(_))
                ),
                "{topic}"
            );
        }
    }

    #[test]
    fn response_topic_round_trips_named_shadow() {
        let key = ShadowKey::named("lamp", "cfg");
        let topic = ShadowTopic::response(&key, Operation::Update, ResponseKind::Delta);
        assert_eq!(topic, "$aws/things/lamp/shadow/name/cfg/update/delta");
        let request = ShadowTopic::request(&key, Operation::Delete);
        assert_eq!(ShadowTopic::parse(&request).expect("valid topic").key, key);
    }
}
