//! MQTT output: publishes responses, deltas and documents messages that the dataflow produces.

mod publisher;

pub use publisher::{spawn_publisher, MessagePublisher, PublisherHandle, PublisherStats};
