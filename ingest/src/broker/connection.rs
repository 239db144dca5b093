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

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{self, Instant};

use super::link::{ConnectRequest, ConnectionSignals, SessionHandle};
use super::metrics::Counters;
use super::protocol::{self, AcceptedConnect, ConnectionState, ProtocolError, Step};
use super::shared::Shared;
use super::transport::{READ_RESERVE_BYTES, Transport};

/// Bytes waiting to be written above which the task takes no more messages from the session.
const WRITE_HIGH_WATER_BYTES: usize = 64 * 1024;

/// Room for replies (PUBACK, SUBACK, PINGRESP) above a full write buffer before reading pauses.
const REPLY_ALLOWANCE_BYTES: usize = 64 * 1024;

/// Time allowed to send a CONNACK that rejects a connection.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reason a connection ended.
#[derive(Debug)]
enum CloseReason {
    /// The client sent DISCONNECT.
    Disconnected,
    /// The client closed the TCP connection without DISCONNECT.
    ClosedByClient,
    /// No packet arrived within 1.5 times the keep-alive interval.
    KeepAliveTimeout,
    /// The client broke the protocol.
    Protocol(ProtocolError),
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// A packet could not be encoded, which points to a broker bug.
    Encode(mqttbytes::Error),
    /// Another connection with the same client id took the session over.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Returns whether the will is published. It is when the connection ends without
    /// DISCONNECT, except at take-over (the router publishes it then) and at broker shutdown.
    fn publishes_will(&self) -> bool {
        !matches!(
            self,
            CloseReason::Disconnected | CloseReason::TakenOver | CloseReason::Shutdown
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Disconnected => formatter.write_str("client sent DISCONNECT"),
            CloseReason::ClosedByClient => formatter.write_str("client closed the connection"),
            CloseReason::KeepAliveTimeout => formatter.write_str("keep-alive timed out"),
            CloseReason::Protocol(error) => write!(formatter, "protocol violation: {error}"),
            CloseReason::Io(error) => write!(formatter, "socket error: {error}"),
            CloseReason::Encode(error) => write!(formatter, "encoding a packet failed: {error}"),
            CloseReason::TakenOver => formatter.write_str("taken over by a newer connection"),
            CloseReason::Shutdown => formatter.write_str("broker shutting down"),
        }
    }
}

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
    };
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present));
    let reason = match connection.transport.encode(&connack) {
        Ok(()) => connection.run().await,
        Err(error) => CloseReason::Encode(error),
    };
    registration.publish_will = reason.publishes_will();
    log_close(&handle, &reason, &shared.counters);
}

/// Reads and checks the CONNECT packet; on rejection sends the CONNACK return code.
async fn handshake(
    transport: &mut Transport,
    shared: &Shared,
    connection_id: u64,
) -> Option<AcceptedConnect> {
    let connect = match time::timeout(shared.limits.connect_timeout, transport.read_connect()).await
    {
        Err(_elapsed) => {
            tracing::debug!(
                timeout_ms = shared.limits.connect_timeout.as_millis() as u64,
                "no CONNECT in time; closing the connection"
            );
            return None;
        }
        Ok(Ok(None)) => {
            tracing::debug!("connection closed before CONNECT");
            return None;
        }
        Ok(Ok(Some(connect))) => connect,
        Ok(Err(ProtocolError::Malformed(
            mqttbytes::Error::InvalidProtocol | mqttbytes::Error::InvalidProtocolLevel(_),
        ))) => {
            tracing::warn!("rejecting CONNECT: only MQTT 3.1.1 is supported");
            reject_connect(transport, ConnectReturnCode::RefusedProtocolVersion).await;
            return None;
        }
        Ok(Err(error)) => return reject_malformed(shared, error),
    };
    if let Err(error) = protocol::check_will(&connect, shared.limits.max_payload_bytes) {
        return reject_malformed(shared, error);
    }
    let client_id = connect.client_id.clone();
    match protocol::check_connect(connect, connection_id, &*shared.authorizer) {
        Ok(accepted) => Some(accepted),
        Err(code) => {
            tracing::warn!(client_id, return_code = ?code, "rejecting CONNECT");
            reject_connect(transport, code).await;
            None
        }
    }
}

/// Sends a CONNACK with the rejecting return `code`; the caller then closes the connection.
async fn reject_connect(transport: &mut Transport, code: ConnectReturnCode) {
    transport.write_buffer.clear();
    if transport
        .encode(&Packet::ConnAck(ConnAck::new(code, false)))
        .is_ok()
    {
        let write = transport.writer.write_all_buf(&mut transport.write_buffer);
        // The connection closes either way, so a failed or slow write changes nothing.
        let _ = time::timeout(REJECT_WRITE_TIMEOUT, write).await;
    }
}

fn reject_malformed(shared: &Shared, error: ProtocolError) -> Option<AcceptedConnect> {
    Counters::add(&shared.counters.protocol_errors, 1);
    tracing::warn!(error = %error, "closing connection before CONNECT: protocol violation");
    None
}

fn log_close(handle: &SessionHandle, reason: &CloseReason, counters: &Counters) {
    match reason {
        CloseReason::Protocol(error) => {
            Counters::add(&counters.protocol_errors, 1);
            tracing::warn!(client_id = %handle.client_id, error = %error,
                "closing MQTT connection after a protocol violation");
        }
        CloseReason::Encode(error) => {
            tracing::error!(client_id = %handle.client_id, error = %error,
                "encoding a packet failed; closing the MQTT connection");
        }
        _ => {
            tracing::debug!(client_id = %handle.client_id, reason = %reason,
                "MQTT connection closed");
        }
    }
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
}

impl Connection {
    async fn run(&mut self) -> CloseReason {
        let read_pause_bytes =
            WRITE_HIGH_WATER_BYTES + self.transport.max_packet_bytes + REPLY_ALLOWANCE_BYTES;
        loop {
            if self.outgoing_ready
                && self.transport.write_buffer.len() < WRITE_HIGH_WATER_BYTES
                && let Err(reason) = self.fill_outgoing()
            {
                return reason;
            }
            let transport = &mut self.transport;
            transport.read_buffer.reserve(READ_RESERVE_BYTES);
            let can_read = transport.write_buffer.len() < read_pause_bytes;
            let can_write = !transport.write_buffer.is_empty();
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        return CloseReason::Shutdown;
                    }
                }
                () = self.signals.replaced.notified() => return CloseReason::TakenOver,
                () = self.signals.outgoing.notified(), if !self.outgoing_ready => {
                    self.outgoing_ready = true;
                }
                () = time::sleep_until(self.deadline), if !self.keep_alive_timeout.is_zero() => {
                    return CloseReason::KeepAliveTimeout;
                }
                read = transport.reader.read_buf(&mut transport.read_buffer), if can_read => {
                    match read {
                        Ok(0) => return CloseReason::ClosedByClient,
                        Ok(_) => {
                            if let Some(reason) = self.process_input() {
                                return reason;
                            }
                        }
                        Err(error) => return CloseReason::Io(error),
                    }
                }
                written = transport.writer.write_buf(&mut transport.write_buffer), if can_write => {
                    if let Err(error) = written {
                        return CloseReason::Io(error);
                    }
                }
            }
        }
    }

    /// Handles every complete packet read so far; returns why to close, if the client must
    /// be disconnected.
    fn process_input(&mut self) -> Option<CloseReason> {
        // Each pass consumes one packet from the read buffer, so the loop ends with its bytes.
        loop {
            let packet = match self.transport.decode() {
                Ok(Some(packet)) => packet,
                Ok(None) => return None,
                Err(error) => return Some(CloseReason::Protocol(error)),
            };
            self.deadline = Instant::now() + self.keep_alive_timeout;
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
                Step::Acknowledged => self.outgoing_ready = true,
                Step::Disconnect => return Some(CloseReason::Disconnected),
                Step::TakenOver => return Some(CloseReason::TakenOver),
            }
        }
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
