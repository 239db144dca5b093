//! MQTT: the connection settings shared by every MQTT client of the service, and the request
//! source that subscribes to the shadow request topics.

mod config;
mod source;

pub use config::{BrokerAddress, MqttClientConfig, DEFAULT_BROKER_PORT};
pub use source::{now_ms, run_source, SourceReady};
