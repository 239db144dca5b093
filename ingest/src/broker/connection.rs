//! The network side of one client connection: one tokio task that reads packets, hands them
//! to [`ConnectionState`], and writes replies and routed messages.
//!
//! # Notes
//! - Reading and writing run side by side in one `select!` loop over the two socket halves. A
//!   client that stops reading still has its packets read until the replies waiting for it
//!   pass a limit. Then reading pauses too, so TCP flow control slows the client down.
//! - The task takes routed messages from its session only while fewer than
//!   [`WRITE_HIGH_WATER_BYTES`] wait to be written. A slow reader's backlog stays in its
//!   session queue, which `max_queued_messages` and `max_queued_qos0_messages` bound.
//! - Flow control (see the `flow` module): while the task's client waits for congested
//!   subscribers, the task keeps the client's packets and stops reading after
//!   [`flow::HELD_HIGH_WATER_BYTES`], but keeps writing. Keep-alive is not checked during such a
//!   pause, and the client gets a full interval after it. While the task's own session is
//!   congested, the task disconnects its client after `slow_subscriber_timeout_ms` without
//!   a PUBACK read or a byte written.
//! - A PUBLISH that the local subscriber takes (see the `local` module) pauses the client's
//!   later packets the same way until the subscriber has it. Only then is its PUBACK sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{self, Instant};

use super::close::{CloseReason, log_close};
use super::flow::{self, Delivered, PublisherPause, StallWatch};
use super::handshake::handshake;
use super::link::{ConnectRequest, ConnectionSignals, SessionHandle};
use super::protocol::{AcceptedConnect, ConnectionState, Step};
use super::shared::Shared;
use super::transport::{READ_RESERVE_BYTES, Transport};

/// Bytes waiting to be written above which the task takes no more messages from the session.
const WRITE_HIGH_WATER_BYTES: usize = 64 * 1024;

/// Room for replies (PUBACK, SUBACK, PINGRESP) above a full write buffer before reading pauses.
const REPLY_ALLOWANCE_BYTES: usize = 64 * 1024;

/// Detaches the connection from its session when dropped, so that the session is detached
/// and the will published even if the task panics.
struct Registration {
    shared: Arc<Shared>,
    handle: SessionHandle,
    publish_will: bool,
}

impl Registration {
    /// Attaches the connection to its session in the router; returns the registration and
    /// whether a stored session was resumed.
    fn attach(
        shared: &Arc<Shared>,
        handle: SessionHandle,
        accepted: &AcceptedConnect,
        signals: Arc<ConnectionSignals>,
    ) -> (Registration, bool) {
        let session_present = shared.router().connect(ConnectRequest {
            handle: handle.clone(),
            clean_session: accepted.clean_session,
            will: accepted.will.clone(),
            signals,
        });
        let registration = Registration {
            shared: Arc::clone(shared),
            handle,
            publish_will: true,
        };
        (registration, session_present)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared
            .router()
            .disconnect(&self.handle, self.publish_will);
    }
}

/// Serves one client connection until it closes, is taken over, or `shutdown` turns true.
#[tracing::instrument(name = "mqtt_connection", skip_all,
    fields(peer = %peer, connection_id, client_id = tracing::field::Empty))]
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    connection_id: u64,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(error = %error, "setting TCP_NODELAY failed");
    }
    let mut transport = Transport::new(stream, shared.limits.max_packet_bytes);
    let accepted = tokio::select! {
        accepted = handshake(&mut transport, &shared, connection_id) => accepted,
        _ = shutdown.changed() => None,
    };
    let Some(accepted) = accepted else {
        return;
    };
    tracing::Span::current().record("client_id", &*accepted.client_id);

    let handle = SessionHandle {
        client_id: Arc::clone(&accepted.client_id),
        connection_id,
    };
    let signals = Arc::new(ConnectionSignals::default());
    let (mut registration, session_present) =
        Registration::attach(&shared, handle.clone(), &accepted, Arc::clone(&signals));
    tracing::debug!(client_id = %handle.client_id, session_present,
        keep_alive_s = accepted.keep_alive.as_secs(), "client connected");

    let keep_alive_timeout = accepted.keep_alive * 3 / 2;
    let mut connection = Connection {
        transport,
        state: ConnectionState::new(handle.clone()),
        shared: Arc::clone(&shared),
        signals,
        shutdown,
        keep_alive_timeout,
        deadline: Instant::now() + keep_alive_timeout,
        outgoing_ready: true,
        pause: PublisherPause::default(),
        stall: StallWatch::new(shared.limits.slow_subscriber_timeout),
        read_closed: false,
    };
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present));
    let reason = match connection.transport.encode(&connack) {
        Ok(()) => connection.run().await,
        Err(error) => CloseReason::Encode(error),
    };
    registration.publish_will = reason.publishes_will();
    log_close(&handle, &reason, &shared.counters);
}

/// One connected client after CONNECT.
struct Connection {
    transport: Transport,
    state: ConnectionState,
    shared: Arc<Shared>,
    signals: Arc<ConnectionSignals>,
    shutdown: watch::Receiver<bool>,
    /// 1.5 times the keep-alive interval; zero when the client turned keep-alive off.
    keep_alive_timeout: Duration,
    deadline: Instant,
    /// Whether the session may have messages to send.
    outgoing_ready: bool,
    /// The wait of this client's packets for congested subscribers, as a publisher.
    pause: PublisherPause,
    /// The progress of this client, as a subscriber whose own session may be congested.
    stall: StallWatch,
    /// Whether the client closed its sending side while held packets still wait.
    read_closed: bool,
}

impl Connection {
    async fn run(&mut self) -> CloseReason {
        loop {
            if let Err(reason) = self.prepare_wait() {
                return reason;
            }
            if let Some(reason) = self.wait_and_handle().await {
                return reason;
            }
        }
    }

    /// Ends a pause whose sessions have drained and handles the packets it held, then fills
    /// the write buffer from the session.
    fn prepare_wait(&mut self) -> Result<(), CloseReason> {
        if self.pause.remove_drained(&self.state.handle().client_id) {
            // Keep-alive is not checked during a pause, so the client gets a full interval.
            self.deadline = Instant::now() + self.keep_alive_timeout;
            if let Some(reason) = self.process_input() {
                return Err(reason);
            }
        }
        if self.read_closed && !self.pause.has_held() && !self.pause.is_delivering() {
            return Err(CloseReason::ClosedByClient);
        }
        if self.outgoing_ready && self.transport.write_buffer.len() < WRITE_HIGH_WATER_BYTES {
            self.fill_outgoing()?;
        }
        Ok(())
    }

    /// Waits for the next event of the connection and handles it; returns why to close, if
    /// the connection must end.
    async fn wait_and_handle(&mut self) -> Option<CloseReason> {
        let read_pause_bytes =
            WRITE_HIGH_WATER_BYTES + self.transport.max_packet_bytes + REPLY_ALLOWANCE_BYTES;
        let flow_deadline = self.flow_deadline();
        let checks_keep_alive = !self.keep_alive_timeout.is_zero() && !self.pause.is_paused();
        let transport = &mut self.transport;
        transport.read_buffer.reserve(READ_RESERVE_BYTES);
        let can_read = !self.read_closed
            && self.pause.can_read()
            && transport.write_buffer.len() < read_pause_bytes;
        let can_write = !transport.write_buffer.is_empty();
        tokio::select! {
            changed = self.shutdown.changed() => {
                if changed.is_err() || *self.shutdown.borrow() {
                    return Some(CloseReason::Shutdown);
                }
            }
            () = self.signals.replaced.notified() => return Some(CloseReason::TakenOver),
            () = self.signals.outgoing.notified(), if !self.outgoing_ready => {
                self.outgoing_ready = true;
            }
            // The next pass computes the new flow-control deadline.
            () = self.signals.congestion.wait_for_start() => {}
            delivered = self.pause.wait(), if self.pause.is_paused() => {
                if let Some(delivered) = delivered {
                    // Keep-alive is not checked during the hand-over, so the client gets a
                    // full interval after it.
                    self.deadline = Instant::now() + self.keep_alive_timeout;
                    return self
                        .after_delivery(delivered)
                        .or_else(|| self.process_input());
                }
            }
            () = time::sleep_until(flow_deadline.unwrap_or_else(Instant::now)),
                if flow_deadline.is_some() => return self.handle_flow_deadline(),
            () = time::sleep_until(self.deadline), if checks_keep_alive => {
                return Some(CloseReason::KeepAliveTimeout);
            }
            read = transport.reader.read_buf(&mut transport.read_buffer), if can_read => {
                return match read {
                    Ok(0) if self.pause.has_held() || self.pause.is_delivering() => {
                        self.read_closed = true;
                        None
                    }
                    Ok(0) => Some(CloseReason::ClosedByClient),
                    Ok(_) => self.process_input(),
                    Err(error) => Some(CloseReason::Io(error)),
                };
            }
            written = transport.writer.write_buf(&mut transport.write_buffer), if can_write => {
                match written {
                    Ok(0) => {}
                    Ok(_) => self.stall.record_progress(),
                    Err(error) => return Some(CloseReason::Io(error)),
                }
            }
        }
        None
    }

    /// Returns the earlier of two flow-control deadlines: when this client, as a congested
    /// subscriber, counts as stalled, and when its pause as a publisher counts as long.
    fn flow_deadline(&mut self) -> Option<Instant> {
        let stalled_at = self.stall.stalled_at(self.signals.congestion.is_active());
        match (stalled_at, self.pause.long_pause_at()) {
            (Some(stalled_at), Some(long_pause_at)) => Some(stalled_at.min(long_pause_at)),
            (stalled_at, long_pause_at) => stalled_at.or(long_pause_at),
        }
    }

    /// Acts on the flow-control deadline that has passed: disconnects a stalled subscriber,
    /// or reports a long pause.
    fn handle_flow_deadline(&mut self) -> Option<CloseReason> {
        let now = Instant::now();
        let stalled = self.stall.stalled_at(self.signals.congestion.is_active());
        if stalled.is_some_and(|stalled_at| stalled_at <= now) {
            return Some(CloseReason::SlowSubscriber(self.stall.timeout()));
        }
        if self
            .pause
            .long_pause_at()
            .is_some_and(|long_pause_at| long_pause_at <= now)
        {
            let publisher = &self.state.handle().client_id;
            self.pause
                .report_long_pause(publisher, &self.shared.long_pause_log);
        }
        None
    }

    /// Handles the held packets once no pause is left, then every complete packet read so
    /// far. During a pause, it keeps each packet that [`flow::is_handled_during_pause`] does
    /// not accept for later. Returns why to close, if the client must be disconnected.
    fn process_input(&mut self) -> Option<CloseReason> {
        // Each pass takes one held packet or consumes one packet from the read buffer, so the
        // loop ends with them.
        loop {
            let packet = match self.pause.next_held() {
                Some(packet) => packet,
                None => {
                    let buffered_bytes = self.transport.read_buffer.len();
                    let packet = match self.transport.decode() {
                        Ok(Some(packet)) => packet,
                        Ok(None) => return None,
                        Err(error) => return Some(CloseReason::Protocol(error)),
                    };
                    self.deadline = Instant::now() + self.keep_alive_timeout;
                    if self.pause.is_paused() && !flow::is_handled_during_pause(&packet) {
                        let bytes = buffered_bytes - self.transport.read_buffer.len();
                        self.pause.hold(packet, bytes);
                        continue;
                    }
                    packet
                }
            };
            if let Some(reason) = self.handle_packet(packet) {
                return Some(reason);
            }
        }
    }

    /// Handles one packet; returns why to close, if the client must be disconnected.
    fn handle_packet(&mut self, packet: Packet) -> Option<CloseReason> {
        let step = match self.state.handle_packet(&self.shared, packet) {
            Ok(step) => step,
            Err(error) => return Some(CloseReason::Protocol(error)),
        };
        match step {
            Step::Continue => {}
            Step::Reply(reply) => {
                if let Err(error) = self.transport.encode(&reply) {
                    return Some(CloseReason::Encode(error));
                }
            }
            Step::ReplyThenPause { reply, congested } => {
                if let Err(error) = self.transport.encode(&reply) {
                    return Some(CloseReason::Encode(error));
                }
                let publisher = &self.state.handle().client_id;
                self.pause
                    .pause(publisher, congested, &self.shared.counters);
            }
            Step::Deliver(mut pending) => {
                // Most hand-overs find room at once and need no wait.
                if pending.poll_once() {
                    return self.after_delivery(pending.into_delivered());
                }
                self.pause.start_delivery(pending);
            }
            Step::Acknowledged => {
                self.outgoing_ready = true;
                self.stall.record_progress();
            }
            Step::Disconnect => return Some(CloseReason::Disconnected),
            Step::TakenOver => return Some(CloseReason::TakenOver),
        }
        None
    }

    /// Sends the PUBACK of a message that the local subscriber has taken, then pauses for the
    /// congested sessions its copies went to. Returns why to close, if the client must be
    /// disconnected.
    fn after_delivery(&mut self, (reply, congested): Delivered) -> Option<CloseReason> {
        if let Some(reply) = reply
            && let Err(error) = self.transport.encode(&reply)
        {
            return Some(CloseReason::Encode(error));
        }
        if !congested.is_empty() {
            let publisher = &self.state.handle().client_id;
            self.pause
                .pause(publisher, congested, &self.shared.counters);
        }
        None
    }

    /// Moves the session's next messages into the write buffer, up to the high-water mark.
    fn fill_outgoing(&mut self) -> Result<(), CloseReason> {
        let budget = WRITE_HIGH_WATER_BYTES.saturating_sub(self.transport.write_buffer.len());
        let batch = self
            .shared
            .router()
            .take_outgoing(self.state.handle(), budget)
            .map_err(|_| CloseReason::TakenOver)?;
        self.outgoing_ready = batch.more;
        for publish in batch.packets {
            self.transport
                .encode(&Packet::Publish(publish))
                .map_err(CloseReason::Encode)?;
        }
        Ok(())
    }
}
