//! The AWS IoT Device Shadow MQTT protocol: topic names for requests and responses.

mod topic;

pub use topic::{ResponseKind, ShadowTopic, TopicError};
