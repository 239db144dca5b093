//! The AWS IoT Device Shadow MQTT protocol: topic names for requests and responses.

mod topic;

pub use topic::{MAX_TOPIC_BYTES, ResponseKind, ShadowTopic, TopicError};
