//! Flow control from slow connected subscribers back to their publishers: the congestion
//! state of a session, the pause of a publisher's connection, and the watch for subscribers
//! that stall.
//!
//! A connected session is congested once a QoS 1 message leaves its queue at or above the
//! high-water mark. Each publisher whose QoS 1 message went into a congested queue pauses.
//! Its connection then handles no further packet from the client, PUBACK and PINGREQ
//! excepted, until every session it waits for has drained to the low-water mark or has lost
//! its connection. The PUBACKs of the waiting messages wait too, so the client's own
//! inflight window and then TCP slow it down. The router sets and ends
//! congestion under its lock. Connections read it without the lock and wait on [`Notify`],
//! so nothing polls.
//!
//! # Notes
//! - A paused connection still reads ahead up to [`HELD_HIGH_WATER_BYTES`], replies to
//!   PINGREQ and applies PUBACKs for messages the broker sent. Only then does it stop
//!   reading its socket. Two clients that publish to each other's subscriptions would
//!   otherwise wait for each other forever, because neither could acknowledge what it
//!   receives. Every other packet waits, in order, until the pause ends.
//! - A client that keeps publishing past its 64 KiB read-ahead while it waits can still end
//!   in such a cycle. The slow-subscriber timeout then disconnects one side.
//! - A pause ends at the first drain after it began, even if other publishers congest the
//!   session again before the paused connection runs. So no publisher starves.
//! - Queues of offline sessions, QoS 0 copies and a client's messages to itself never pause
//!   a publisher. Wills and retained messages are queued without pausing anybody, but they
//!   can make a session congested.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use rumqttc::mqttbytes::v4::Packet;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::local::Delivery;
use super::metrics::Counters;
use super::tree::ClientId;

/// Bytes of packets a paused connection reads and keeps before it stops reading its socket.
pub(crate) const HELD_HIGH_WATER_BYTES: usize = 64 * 1024;

/// Pause length after which a pause is reported at WARN.
const LONG_PAUSE: Duration = Duration::from_secs(5);

/// Shortest time between two WARN lines about long pauses, broker-wide.
const LONG_PAUSE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The flow-control marks of session queues, in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowControlLimits {
    /// Queue length at which a connected session becomes congested.
    pub(crate) high_messages: usize,
    /// Queue length at or below which congestion ends: half the high-water mark, so that a
    /// publisher is not paused again by the very next message after it resumes.
    pub(crate) low_messages: usize,
}

impl FlowControlLimits {
    /// Creates the limits for the high-water mark `high_messages`.
    pub(crate) fn new(high_messages: usize) -> Self {
        FlowControlLimits {
            high_messages,
            low_messages: high_messages / 2,
        }
    }
}

/// Congestion state of one connected session, shared by the router, the session's
/// connection task, and the publishers that wait for the session to drain.
///
/// Design: only the router changes the state, under its lock. `releases` counts the ends of
/// congestion, so a publisher waits for the count to move past the value it saw when its
/// message was queued.
#[derive(Debug, Default)]
pub(crate) struct Congestion {
    active: AtomicBool,
    releases: AtomicU64,
    /// Wakes the session's own connection task, which then watches for a stall.
    started: Notify,
    /// Wakes every waiting publisher.
    released: Notify,
}

impl Congestion {
    /// Returns whether the session is congested.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Marks the session as congested, and wakes its connection task if it was not.
    pub(crate) fn activate(&self) {
        if !self.active.swap(true, Ordering::AcqRel) {
            self.started.notify_one();
        }
    }

    /// Ends the congestion, if any, and wakes every publisher waiting for it.
    pub(crate) fn release(&self) {
        if self.active.swap(false, Ordering::AcqRel) {
            self.releases.fetch_add(1, Ordering::AcqRel);
            self.released.notify_waiters();
        }
    }

    /// Waits until the session becomes congested. Returns at once if it did so after the
    /// previous call returned, because [`Notify::notify_one`] keeps a permit.
    pub(crate) async fn wait_for_start(&self) {
        self.started.notified().await;
    }

    fn releases(&self) -> u64 {
        self.releases.load(Ordering::Acquire)
    }

    async fn wait_for_release(&self, seen: u64) {
        loop {
            // Register before checking, so that a release between the check and the wait
            // still wakes this task.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.releases() != seen {
                return;
            }
            released.await;
        }
    }
}

/// A congested session that a publisher waits for.
#[derive(Clone, Debug)]
pub(crate) struct CongestedSession {
    /// Client id of the session, for log messages.
    pub(crate) client_id: ClientId,
    congestion: Arc<Congestion>,
    releases_seen: u64,
}

impl CongestedSession {
    /// Creates the wait for `congestion`'s next release. Call it under the router lock,
    /// right after the message was queued.
    pub(crate) fn new(client_id: ClientId, congestion: &Arc<Congestion>) -> Self {
        CongestedSession {
            client_id,
            congestion: Arc::clone(congestion),
            releases_seen: congestion.releases(),
        }
    }

    /// Returns whether the session drained or lost its connection since the message.
    pub(crate) fn has_drained(&self) -> bool {
        self.congestion.releases() != self.releases_seen
    }

    async fn wait_until_drained(&self) {
        self.congestion.wait_for_release(self.releases_seen).await;
    }
}

/// Returns whether a paused connection handles `packet` at once instead of holding it.
/// PUBACK and PINGREQ do not depend on the client's earlier packets.
pub(crate) fn is_handled_during_pause(packet: &Packet) -> bool {
    matches!(packet, Packet::PubAck(_) | Packet::PingReq)
}

/// A message that a connection hands to the local subscriber, with what the connection does
/// once the hand-over is done.
pub(crate) struct PendingDelivery {
    /// The hand-over to await.
    pub(crate) delivery: Delivery,
    /// The PUBACK of a QoS 1 message.
    pub(crate) reply: Option<Packet>,
    /// Subscribers' sessions that got a QoS 1 copy and are congested.
    pub(crate) congested: Vec<CongestedSession>,
}

impl std::fmt::Debug for PendingDelivery {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PendingDelivery")
            .field("reply", &self.reply)
            .field("congested", &self.congested.len())
            .finish_non_exhaustive()
    }
}

/// The PUBACK to send and the congested sessions to wait for once a hand-over is done.
pub(crate) type Delivered = (Option<Packet>, Vec<CongestedSession>);

impl PendingDelivery {
    /// Polls the hand-over once without a waker; returns whether it is done.
    pub(crate) fn poll_once(&mut self) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        self.delivery.as_mut().poll(&mut context).is_ready()
    }

    /// Returns the PUBACK and the congested sessions that follow the hand-over.
    pub(crate) fn into_delivered(self) -> Delivered {
        (self.reply, self.congested)
    }
}

/// The pause of one publisher's connection, and the packets read during it: while it waits
/// for congested subscribers, or for the local subscriber to take its message.
#[derive(Debug, Default)]
pub(crate) struct PublisherPause {
    waiting: Vec<CongestedSession>,
    delivery: Option<PendingDelivery>,
    /// Packets read during the pause, with their sizes in bytes, in the order received.
    held_packets: VecDeque<(Packet, usize)>,
    held_bytes: usize,
    started_at: Option<Instant>,
    long_pause_reported: bool,
}

impl PublisherPause {
    /// Returns whether the connection waits for congested sessions.
    pub(crate) fn is_paused(&self) -> bool {
        !self.waiting.is_empty() || self.delivery.is_some()
    }

    /// Returns whether a hand-over to the local subscriber is pending.
    pub(crate) fn is_delivering(&self) -> bool {
        self.delivery.is_some()
    }

    /// Holds the connection's packets until `delivery` is done. Called only while the
    /// connection is not paused, because a paused connection handles no PUBLISH.
    pub(crate) fn start_delivery(&mut self, delivery: PendingDelivery) {
        debug_assert!(!self.is_paused(), "a delivery starts only outside a pause");
        self.delivery = Some(delivery);
    }

    /// Returns whether the connection may read its socket: always when not paused, and
    /// while it keeps less than [`HELD_HIGH_WATER_BYTES`] of packets when paused.
    pub(crate) fn can_read(&self) -> bool {
        !self.is_paused() || self.held_bytes < HELD_HIGH_WATER_BYTES
    }

    /// Returns whether packets wait to be handled.
    pub(crate) fn has_held(&self) -> bool {
        !self.held_packets.is_empty()
    }

    /// Pauses the connection of `publisher` until each of `sessions` has drained, or adds
    /// them to the current pause.
    pub(crate) fn pause(
        &mut self,
        publisher: &ClientId,
        sessions: Vec<CongestedSession>,
        counters: &Counters,
    ) {
        if !self.is_paused() {
            Counters::add(&counters.flow_control_pauses, 1);
            self.started_at = Some(Instant::now());
            self.long_pause_reported = false;
            tracing::debug!(client_id = %publisher, subscribers = %client_ids(&sessions),
                "pausing reads from publisher until its congested subscribers drain");
        }
        self.waiting.extend(sessions);
    }

    /// Forgets the sessions that have drained; returns whether that ended the pause.
    pub(crate) fn remove_drained(&mut self, publisher: &ClientId) -> bool {
        if self.waiting.is_empty() || self.delivery.is_some() {
            return false;
        }
        self.waiting.retain(|session| !session.has_drained());
        if self.is_paused() {
            return false;
        }
        let paused_ms = self
            .started_at
            .take()
            .map_or(0, |started_at| started_at.elapsed().as_millis() as u64);
        tracing::debug!(client_id = %publisher, paused_ms, "resuming reads from publisher");
        true
    }

    /// Waits until the pending hand-over to the local subscriber is done, and returns what
    /// follows it. Without a hand-over, waits until the first session of the pause drains,
    /// and never returns when not paused.
    ///
    /// A hand-over interrupted by another event resumes on the next call.
    pub(crate) async fn wait(&mut self) -> Option<Delivered> {
        if let Some(pending) = self.delivery.as_mut() {
            pending.delivery.as_mut().await;
            return self.delivery.take().map(PendingDelivery::into_delivered);
        }
        match self.waiting.first() {
            Some(session) => session.wait_until_drained().await,
            None => std::future::pending().await,
        }
        None
    }

    /// Keeps `packet`, of `bytes` bytes, until the pause ends.
    pub(crate) fn hold(&mut self, packet: Packet, bytes: usize) {
        self.held_bytes += bytes;
        self.held_packets.push_back((packet, bytes));
    }

    /// Takes the oldest held packet once the pause has ended.
    pub(crate) fn next_held(&mut self) -> Option<Packet> {
        if self.is_paused() {
            return None;
        }
        let (packet, bytes) = self.held_packets.pop_front()?;
        self.held_bytes -= bytes;
        Some(packet)
    }

    /// Returns when the current pause should be reported as long, unless it has been.
    pub(crate) fn long_pause_at(&self) -> Option<Instant> {
        match (self.started_at, self.long_pause_reported) {
            (Some(started_at), false) if self.is_paused() => Some(started_at + LONG_PAUSE),
            _ => None,
        }
    }

    /// Reports the current pause of `publisher` as long, within the rate limit of `log`.
    pub(crate) fn report_long_pause(&mut self, publisher: &ClientId, log: &LongPauseLog) {
        self.long_pause_reported = true;
        log.report(publisher, &self.waiting);
    }
}

/// Progress of a subscriber while its session is congested, to find subscribers that stall.
#[derive(Debug)]
pub(crate) struct StallWatch {
    timeout: Duration,
    progress_at: Instant,
    was_congested: bool,
}

impl StallWatch {
    /// Creates a watch that allows `timeout` without progress.
    pub(crate) fn new(timeout: Duration) -> Self {
        StallWatch {
            timeout,
            progress_at: Instant::now(),
            was_congested: false,
        }
    }

    /// Allowed time without progress.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records progress: a PUBACK read, or bytes written to the client.
    pub(crate) fn record_progress(&mut self) {
        self.progress_at = Instant::now();
    }

    /// Returns when the subscriber counts as stalled, or `None` while it is not congested.
    /// The time runs from the later of the last progress and the start of the congestion.
    pub(crate) fn stalled_at(&mut self, congested: bool) -> Option<Instant> {
        if congested && !self.was_congested {
            self.progress_at = Instant::now();
        }
        self.was_congested = congested;
        congested.then(|| self.progress_at + self.timeout)
    }
}

/// Rate limit of the WARN line about long pauses, shared by every connection of a broker.
#[derive(Debug, Default)]
pub(crate) struct LongPauseLog {
    state: Mutex<LongPauseLogState>,
}

#[derive(Debug, Default)]
struct LongPauseLogState {
    last_logged_at: Option<Instant>,
    suppressed: u64,
}

impl LongPauseLog {
    /// Logs that `publisher` has waited [`LONG_PAUSE`] for `waiting`, or counts the line as
    /// suppressed when one was logged less than [`LONG_PAUSE_LOG_INTERVAL`] ago.
    fn report(&self, publisher: &ClientId, waiting: &[CongestedSession]) {
        let now = Instant::now();
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let recent = state
                .last_logged_at
                .is_some_and(|logged_at| now < logged_at + LONG_PAUSE_LOG_INTERVAL);
            if recent {
                state.suppressed += 1;
                return;
            }
            state.last_logged_at = Some(now);
            std::mem::take(&mut state.suppressed)
        };
        tracing::warn!(client_id = %publisher, subscribers = %client_ids(waiting),
            paused_s = LONG_PAUSE.as_secs(), suppressed_since_last = suppressed,
            "publisher paused for a long time because the listed subscribers drain slowly");
    }
}

/// Returns the client ids of `sessions`, comma-separated, for log messages.
fn client_ids(sessions: &[CongestedSession]) -> String {
    let ids: Vec<&str> = sessions.iter().map(|session| &*session.client_id).collect();
    ids.join(",")
}
