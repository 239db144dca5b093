//! Dataflow outputs for benchmarks that run the dataflow without MQTT or HTTP.

use std::sync::atomic::{AtomicU64, Ordering};

use pipeline::dataflow::{HttpReply, MqttMessage, ShadowOutputs};
use pipeline::history::{HistoryRow, LogPosition};

/// Outputs that drop every message but count the `/update/documents` publications, one per
/// applied update.
#[derive(Debug, Default)]
pub struct CountingOutputs {
    documents: AtomicU64,
}

impl CountingOutputs {
    /// Returns the number of `/update/documents` messages published so far.
    pub fn documents(&self) -> u64 {
        self.documents.load(Ordering::Relaxed)
    }
}

impl ShadowOutputs for CountingOutputs {
    fn publish(&self, message: MqttMessage) {
        if message.topic.ends_with("/update/documents") {
            self.documents.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reply_http(&self, _reply: HttpReply) {}

    fn archive(&self, _row: HistoryRow, _position: Option<LogPosition>) {}
}
