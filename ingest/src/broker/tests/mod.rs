//! Tests of the embedded broker: unit tests of matching, sessions and routing without
//! sockets, and end-to-end tests with real rumqttc clients against a broker on 127.0.0.1.
//! Every wait is bounded by a timeout.

mod flow;
mod local;
mod pubsub;
mod robustness;
mod router;
mod session;
mod sessions;
mod support;
mod topic;

use super::*;

#[test]
fn default_config_round_trips() {
    let config = EmbeddedBrokerConfig::default();
    let text = serde_json::to_string(&config).expect("serialise");
    let back: EmbeddedBrokerConfig = serde_json::from_str(&text).expect("deserialise");
    assert_eq!(back, config);
    assert!(config.validate().is_ok());
}

#[test]
fn config_fills_missing_fields_with_defaults() {
    let config: EmbeddedBrokerConfig =
        serde_json::from_str(r#"{"listen": "127.0.0.1:0", "max_inflight": 7}"#).expect("parse");
    assert_eq!(config.max_inflight, 7);
    assert_eq!(config.max_queued_messages, DEFAULT_MAX_QUEUED_MESSAGES);
    assert_eq!(config.max_payload_bytes, DEFAULT_MAX_PAYLOAD_BYTES);
    assert_eq!(
        config.flow_control_high_messages,
        DEFAULT_FLOW_CONTROL_HIGH_MESSAGES
    );
    assert_eq!(
        config.slow_subscriber_timeout_ms,
        DEFAULT_SLOW_SUBSCRIBER_TIMEOUT_MS
    );
}

#[test]
fn config_rejects_unknown_fields() {
    let parsed = serde_json::from_str::<EmbeddedBrokerConfig>(r#"{"max_inflights": 7}"#);
    assert!(parsed.is_err());
}

#[test]
fn config_validation_names_the_field() {
    let cases = [
        EmbeddedBrokerConfig {
            max_inflight: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_inflight: 65_536,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_connections: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_payload_bytes: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_queued_messages: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_queued_qos0_messages: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            connect_timeout_ms: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            flow_control_high_messages: 0,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            max_queued_messages: 1_000,
            flow_control_high_messages: 1_001,
            ..Default::default()
        },
        EmbeddedBrokerConfig {
            slow_subscriber_timeout_ms: 0,
            ..Default::default()
        },
    ];
    let expected_fields = [
        "max_inflight",
        "max_inflight",
        "max_connections",
        "max_payload_bytes",
        "max_queued_messages",
        "max_queued_qos0_messages",
        "connect_timeout_ms",
        "flow_control_high_messages",
        "flow_control_high_messages",
        "slow_subscriber_timeout_ms",
    ];
    for (config, expected) in cases.iter().zip(expected_fields) {
        match config.validate() {
            Err(BrokerError::InvalidConfig { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected an invalid {expected}, got {other:?}"),
        }
    }
}
