//! Filter validation and topic matching, by the plain matcher and by the subscription tree.

use std::sync::Arc;

use rumqttc::mqttbytes::QoS;

use crate::broker::topic::{FilterSpec, is_valid_filter, is_valid_topic, matches, parse_filter};
use crate::broker::tree::{ClientId, SubscriptionTree};

/// `(filter, topic, matches)`: the examples of MQTT 3.1.1 section 4.7 plus AWS IoT shadow
/// topics.
const MATCH_CASES: &[(&str, &str, bool)] = &[
    ("#", "sport", true),
    ("#", "sport/tennis/player1", true),
    ("#", "/", true),
    ("#", "$SYS/broker/uptime", false),
    ("#", "$aws/things/lamp/shadow/update", false),
    ("+", "sport", true),
    ("+", "sport/tennis", false),
    ("+", "/finance", false),
    ("+", "$SYS", false),
    ("+/+", "/finance", true),
    ("+/+", "sport/tennis", true),
    ("+/+", "sport", false),
    ("+/+", "$SYS/uptime", false),
    ("/+", "/finance", true),
    ("sport/#", "sport", true),
    ("sport/#", "sport/", true),
    ("sport/#", "sport/tennis/player1/ranking", true),
    ("sport/#", "sports", false),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis", false),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+/player1", "sport/tennis/player1", true),
    ("sport/+", "sport/", true),
    ("Sport", "sport", false),
    ("a//b", "a//b", true),
    ("a/+/b", "a//b", true),
    ("a/b", "a/b/", false),
    ("$SYS/#", "$SYS", true),
    ("$SYS/#", "$SYS/broker/uptime", true),
    ("$SYS/+", "$SYS/uptime", true),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("#", "$share/group/topic", false),
    (
        "$aws/things/+/shadow/update",
        "$aws/things/lamp/shadow/update",
        true,
    ),
    (
        "$aws/things/+/shadow/update",
        "$aws/things/lamp/shadow/update/accepted",
        false,
    ),
    (
        "$aws/things/+/shadow/update/#",
        "$aws/things/lamp/shadow/update/accepted",
        true,
    ),
    (
        "$aws/things/lamp/shadow/#",
        "$aws/things/lamp/shadow/get/rejected",
        true,
    ),
    (
        "$aws/things/lamp/shadow/update/accepted",
        "$aws/things/lamp/shadow/update/accepted",
        true,
    ),
    (
        "$aws/things/lamp/shadow/update/accepted",
        "$aws/things/fan/shadow/update/accepted",
        false,
    ),
    (
        "$aws/+/lamp/shadow/update",
        "$aws/things/lamp/shadow/update",
        true,
    ),
    ("$aws/#", "$aws", true),
];

fn client(name: &str) -> ClientId {
    Arc::from(name)
}

fn plain(filter: &str) -> FilterSpec<'_> {
    FilterSpec {
        group: None,
        filter,
    }
}

/// Returns the clients of `tree` whose subscriptions match `topic`, sorted.
fn tree_matches(tree: &SubscriptionTree, topic: &str) -> Vec<String> {
    let mut found = Vec::new();
    tree.for_each_match(topic, &mut |subscribers| {
        found.extend(
            subscribers
                .clients
                .keys()
                .map(|client_id| client_id.to_string()),
        );
    });
    found.sort();
    found
}

#[test]
fn matcher_follows_table() {
    for &(filter, topic, expected) in MATCH_CASES {
        assert!(
            is_valid_filter(filter),
            "{filter:?} should be a valid filter"
        );
        assert!(is_valid_topic(topic), "{topic:?} should be a valid topic");
        assert_eq!(
            matches(filter, topic),
            expected,
            "matches({filter:?}, {topic:?})"
        );
    }
}

#[test]
fn tree_agrees_with_matcher() {
    let mut tree = SubscriptionTree::default();
    let filters: Vec<&str> = MATCH_CASES.iter().map(|(filter, _, _)| *filter).collect();
    for filter in &filters {
        tree.insert(plain(filter), &client(filter), QoS::AtLeastOnce);
    }
    for &(_, topic, _) in MATCH_CASES {
        let mut expected: Vec<String> = filters
            .iter()
            .filter(|filter| matches(filter, topic))
            .map(|filter| filter.to_string())
            .collect();
        expected.sort();
        expected.dedup();
        assert_eq!(
            tree_matches(&tree, topic),
            expected,
            "subscriptions matching {topic:?}"
        );
    }
}

#[test]
fn tree_visits_each_filter_once() {
    let mut tree = SubscriptionTree::default();
    for filter in ["a/#", "a/+", "+/b", "#", "a/b", "a/b/#"] {
        tree.insert(plain(filter), &client("same"), QoS::AtMostOnce);
    }
    let mut visits = 0;
    tree.for_each_match("a/b", &mut |subscribers| {
        visits += subscribers.clients.len()
    });
    assert_eq!(visits, 6);
}

#[test]
fn tree_removal_prunes_empty_nodes() {
    let mut tree = SubscriptionTree::default();
    let lamp = client("lamp");
    tree.insert(
        plain("$aws/things/+/shadow/update"),
        &lamp,
        QoS::AtLeastOnce,
    );
    tree.insert(plain("a/b/c"), &lamp, QoS::AtMostOnce);
    let shared = FilterSpec {
        group: Some("ingest"),
        filter: "a/#",
    };
    tree.insert(shared, &lamp, QoS::AtLeastOnce);

    tree.remove(plain("a/b/c"), "lamp");
    assert!(tree_matches(&tree, "a/b/c").is_empty());
    tree.remove(plain("$aws/things/+/shadow/update"), "lamp");
    tree.remove(shared, "lamp");
    assert!(tree.is_empty());
}

#[test]
fn filter_validation() {
    let valid = [
        "#",
        "+",
        "a/#",
        "a/+/b",
        "+/+",
        "/",
        "a//b",
        "$SYS/#",
        "$aws/things/+/shadow/update",
    ];
    let invalid = [
        "",
        "a/#/b",
        "a+",
        "a/b#",
        "#/a",
        "++",
        "a/+b",
        "a/#b",
        "sport/tennis#",
        "a\0b",
    ];
    for filter in valid {
        assert!(is_valid_filter(filter), "{filter:?} should be valid");
    }
    for filter in invalid {
        assert!(!is_valid_filter(filter), "{filter:?} should be invalid");
    }
}

#[test]
fn topic_validation() {
    for topic in ["a", "/", "a//b", "$aws/things/lamp/shadow/update", "sp ace"] {
        assert!(is_valid_topic(topic), "{topic:?} should be valid");
    }
    for topic in ["", "a/+", "#", "a/#", "a\0b"] {
        assert!(!is_valid_topic(topic), "{topic:?} should be invalid");
    }
}

#[test]
fn shared_filter_parsing() {
    let parsed = parse_filter("$share/ingest/$aws/things/+/shadow/update");
    assert_eq!(
        parsed,
        Some(FilterSpec {
            group: Some("ingest"),
            filter: "$aws/things/+/shadow/update"
        })
    );
    assert_eq!(
        parse_filter("$share/g/#"),
        Some(FilterSpec {
            group: Some("g"),
            filter: "#"
        })
    );
    assert_eq!(parse_filter("a/+"), Some(plain("a/+")));
    for invalid in [
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/#/a",
        "$share/g/a/#/b",
        "$share/g/",
    ] {
        assert_eq!(parse_filter(invalid), None, "{invalid:?} should be invalid");
    }
}
