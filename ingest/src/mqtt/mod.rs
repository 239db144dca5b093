//! MQTT: the connection settings shared by every MQTT client of the service, and the request
//! source that subscribes to the shadow request topics.

mod address;
mod config;
mod source;

pub use address::{BrokerAddress, DEFAULT_BROKER_HOST, DEFAULT_BROKER_PORT, InvalidBrokerAddress};
pub use config::MqttClientConfig;
pub use source::{SourceReady, now_ms, run_source};
