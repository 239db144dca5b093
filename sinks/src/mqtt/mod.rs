//! MQTT output: publishes responses, deltas and documents messages that the dataflow produces.

mod publisher;

pub use publisher::{MessagePublisher, PublisherHandle, PublisherStats, spawn_publisher};
