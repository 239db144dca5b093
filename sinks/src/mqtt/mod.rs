//! MQTT output: publishes responses, deltas and documents messages that the dataflow produces.

mod publisher;

pub use publisher::{
    MessagePublisher, PublisherHandle, PublisherStats, in_process_publisher, spawn_publisher,
};
