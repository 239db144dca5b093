//! Outputs of the benched dataflow: no I/O, but the delivery time of every measured delta.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pipeline::dataflow::{HttpReply, MqttMessage, ShadowOutputs};
use pipeline::durable::ArchiveBarrier;
use pipeline::history::{HistoryRow, LogPosition};
use sinks::parquet_archive::ArchiveSender;

use super::payload::token_sequence;

/// Suffix of the topics of `/update/delta` messages.
const DELTA_SUFFIX: &str = "/update/delta";

/// Records when each measured delta was delivered, and forwards history rows to the archive.
pub struct TimingOutputs {
    /// Reference instant of every recorded time.
    origin: Instant,
    /// Delivery time of the delta of measured update `i`, in nanoseconds after `origin`;
    /// 0 until it is delivered.
    delivered_ns: Vec<AtomicU64>,
    /// Deltas whose token names a measured update.
    measured_deltas: AtomicU64,
    /// Deltas without such a token: those of the load phase.
    other_deltas: AtomicU64,
    /// Messages other than deltas.
    other_messages: AtomicU64,
    /// Destination of history rows; `None` drops them.
    archive: Option<ArchiveSender>,
}

impl TimingOutputs {
    /// Creates outputs for `updates` measured updates, timing from `origin`.
    pub fn new(origin: Instant, updates: u64, archive: Option<ArchiveSender>) -> Self {
        TimingOutputs {
            origin,
            delivered_ns: (0..updates).map(|_| AtomicU64::new(0)).collect(),
            measured_deltas: AtomicU64::new(0),
            other_deltas: AtomicU64::new(0),
            other_messages: AtomicU64::new(0),
            archive,
        }
    }

    /// Returns the number of deltas of measured updates delivered so far.
    pub fn measured_deltas(&self) -> u64 {
        self.measured_deltas.load(Ordering::Acquire)
    }

    /// Returns the number of other deltas delivered so far.
    pub fn other_deltas(&self) -> u64 {
        self.other_deltas.load(Ordering::Acquire)
    }

    /// Returns the number of messages other than deltas.
    pub fn other_messages(&self) -> u64 {
        self.other_messages.load(Ordering::Relaxed)
    }

    /// Returns the delivery time of measured update `sequence`, in nanoseconds after the origin,
    /// or `None` when its delta has not been delivered.
    pub fn delivered_ns(&self, sequence: u64) -> Option<u64> {
        let slot = self.delivered_ns.get(usize::try_from(sequence).ok()?)?;
        match slot.load(Ordering::Acquire) {
            0 => None,
            ns => Some(ns),
        }
    }
}

impl ShadowOutputs for TimingOutputs {
    fn publish(&self, message: MqttMessage) {
        if !message.topic.ends_with(DELTA_SUFFIX) {
            self.other_messages.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let slot = token_sequence(&message.payload)
            .and_then(|sequence| usize::try_from(sequence).ok())
            .and_then(|index| self.delivered_ns.get(index));
        match slot {
            Some(slot) => {
                let ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                slot.store(ns.max(1), Ordering::Release);
                self.measured_deltas.fetch_add(1, Ordering::AcqRel);
            }
            None => {
                self.other_deltas.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    fn reply_http(&self, _reply: HttpReply) {}

    fn archive(&self, row: HistoryRow, position: Option<LogPosition>) {
        let Some(archive) = &self.archive else {
            return;
        };
        let sent = match position {
            Some(position) => archive.send_logged(row, position),
            None => archive.send(row),
        };
        if let Err(error) = sent {
            tracing::error!(error = %error, "history row not archived");
        }
    }

    fn archive_barrier(&self) -> ArchiveBarrier {
        let Some(archive) = &self.archive else {
            return Box::new(|| Ok(()));
        };
        match archive.barrier() {
            Ok(barrier) => Box::new(move || {
                barrier
                    .wait()
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }),
            Err(error) => {
                let error = error.to_string();
                Box::new(move || Err(error))
            }
        }
    }
}
