//! MQTT: the connection settings shared by every MQTT client of the service, the request
//! source that subscribes to the shadow request topics, and the in-process request intake
//! that takes them from the embedded broker instead.

mod address;
mod config;
mod intake;
mod source;

pub use address::{BrokerAddress, DEFAULT_BROKER_HOST, DEFAULT_BROKER_PORT, InvalidBrokerAddress};
pub use config::MqttClientConfig;
pub use intake::RequestIntake;
pub use source::{SourceReady, now_ms, run_source};
