//! Errors of starting the embedded broker and of registering its local subscriber.

use std::net::SocketAddr;

/// Error starting the embedded broker or registering its local subscriber.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address cannot be bound (in use, or not a local address).
    #[error(
        "cannot listen for MQTT on {address}; pass another --mqtt-listen address, or --mqtt-broker to use a running broker"
    )]
    Bind {
        /// Address that could not be bound.
        address: SocketAddr,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A setting of `[embedded_broker]` is out of its allowed range.
    #[error("invalid embedded_broker.{field} = {value}: expected a value from {min} to {max}")]
    InvalidConfig {
        /// Name of the setting.
        field: &'static str,
        /// Value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },

    /// A filter given to `subscribe_local` is not a valid MQTT topic filter.
    #[error(
        "invalid local subscription filter {filter:?}: expected a topic filter with '+' and '#' only as whole levels"
    )]
    InvalidLocalFilter {
        /// The filter as given.
        filter: String,
    },

    /// `subscribe_local` was called a second time on the same broker.
    #[error("the embedded broker has a local subscriber already; register one per broker")]
    LocalSubscriberExists,
}
