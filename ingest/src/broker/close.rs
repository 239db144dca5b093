//! Reasons a connection ends, and the log line and counter of each.

use std::fmt;
use std::io;
use std::time::Duration;

use rumqttc::mqttbytes;

use super::link::SessionHandle;
use super::metrics::Counters;
use super::protocol::ProtocolError;

/// Reason a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
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
    /// The client's session stayed congested without progress for this long.
    SlowSubscriber(Duration),
    /// The broker is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Returns whether the will is published. It is when the connection ends without
    /// DISCONNECT, except at take-over (the router publishes it then) and at broker shutdown.
    pub(crate) fn publishes_will(&self) -> bool {
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
            CloseReason::SlowSubscriber(timeout) => write!(
                formatter,
                "queue stayed congested without progress for {} ms",
                timeout.as_millis()
            ),
            CloseReason::Shutdown => formatter.write_str("broker shutting down"),
        }
    }
}

/// Logs why the connection of `handle` ended, and counts protocol errors and slow
/// subscribers.
pub(crate) fn log_close(handle: &SessionHandle, reason: &CloseReason, counters: &Counters) {
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
        CloseReason::SlowSubscriber(timeout) => {
            Counters::add(&counters.slow_subscriber_disconnects, 1);
            tracing::warn!(client_id = %handle.client_id, timeout_ms = timeout.as_millis() as u64,
                "disconnecting slow subscriber: its queue stayed at or above \
                 flow_control_high_messages without a PUBACK or a byte written");
        }
        _ => {
            tracing::debug!(client_id = %handle.client_id, reason = %reason,
                "MQTT connection closed");
        }
    }
}
