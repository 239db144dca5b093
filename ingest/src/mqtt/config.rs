//! Settings of the service's MQTT client connections (request source and response publisher).

use std::time::Duration;

use rumqttc::MqttOptions;
use serde::{Deserialize, Serialize};

use super::address::BrokerAddress;

/// Default prefix of the service's MQTT client ids.
pub const DEFAULT_CLIENT_ID: &str = "shadowflow";

/// Default keep-alive interval, in seconds.
pub const DEFAULT_KEEP_ALIVE_S: u64 = 30;

/// Default largest MQTT packet the service sends, in bytes: AWS IoT's 128 KiB payload limit plus
/// room for the topic and packet header.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 132 * 1024;

/// Default largest MQTT packet the service receives, in bytes: the largest packet MQTT 3.1.1
/// can encode (a remaining length of 268,435,455 bytes plus a 5-byte fixed header).
///
/// A broker such as mosquitto forwards requests larger than the payload limit. The service must
/// receive them to reject them with 413, because a smaller client limit drops the connection.
pub const DEFAULT_MAX_INCOMING_PACKET_BYTES: usize = 268_435_460;

/// Default number of unacknowledged QoS 1 publishes per connection. The response publisher
/// sends several messages per update, so a window of 100 would cap it at 100 messages per
/// broker round trip.
pub const DEFAULT_INFLIGHT: u16 = 1000;

/// Default number of connections that publish responses, deltas and documents.
pub const DEFAULT_PUBLISHER_CONNECTIONS: usize = 4;

/// Settings shared by the service's MQTT client connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttClientConfig {
    /// Prefix of the client ids; each connection appends its role (`-requests`, `-responses`).
    pub client_id: String,
    /// Keep-alive interval, in seconds.
    pub keep_alive_s: u64,
    /// Largest MQTT packet sent, in bytes.
    pub max_packet_bytes: usize,
    /// Largest MQTT packet received, in bytes. Requests over the payload limit are still
    /// received and rejected with 413; a packet over this size closes the connection.
    pub max_incoming_packet_bytes: usize,
    /// Unacknowledged QoS 1 publishes allowed per connection.
    pub inflight: u16,
    /// Connections that publish responses; each shadow's messages always use the same one, so
    /// their order is kept.
    pub publisher_connections: usize,
    /// User name, for brokers that require one.
    pub username: Option<String>,
    /// Password that goes with `username`.
    pub password: Option<String>,
}

impl Default for MqttClientConfig {
    fn default() -> Self {
        MqttClientConfig {
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            keep_alive_s: DEFAULT_KEEP_ALIVE_S,
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            max_incoming_packet_bytes: DEFAULT_MAX_INCOMING_PACKET_BYTES,
            inflight: DEFAULT_INFLIGHT,
            publisher_connections: DEFAULT_PUBLISHER_CONNECTIONS,
            username: None,
            password: None,
        }
    }
}

impl MqttClientConfig {
    /// Returns the network settings of the service's connections. TCP_NODELAY is on, so that
    /// Nagle's algorithm does not hold small responses back while it waits for an ACK.
    pub fn network_options(&self) -> rumqttc::NetworkOptions {
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network
    }

    /// Builds client options for the connection with `role` to `broker`.
    pub fn options(&self, broker: &BrokerAddress, role: &str) -> MqttOptions {
        let client_id = format!("{}-{role}-{}", self.client_id, std::process::id());
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s.max(5)))
            .set_max_packet_size(self.max_incoming_packet_bytes, self.max_packet_bytes)
            .set_inflight(self.inflight.max(1))
            .set_clean_session(true);
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            options.set_credentials(username.clone(), password.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips() {
        let config = MqttClientConfig::default();
        let text = serde_json::to_string(&config).expect("serialise");
        let back: MqttClientConfig = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, config);
    }
}
