//! The types that tie a connection to its session in the router: the session handle, the
//! wake-up signals, and the connect request.

use std::sync::Arc;

use tokio::sync::Notify;

use super::flow::Congestion;
use super::session::Message;
use super::tree::ClientId;

/// Wake-ups from the router to one connection task.
#[derive(Debug, Default)]
pub(crate) struct ConnectionSignals {
    /// Notified when the session has new messages to send.
    pub(crate) outgoing: Notify,
    /// Notified when another connection with the same client id took the session over.
    pub(crate) replaced: Notify,
    /// Whether the session's queue is congested, which pauses its publishers.
    pub(crate) congestion: Arc<Congestion>,
}

/// Identifies the connection that currently owns a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionHandle {
    /// Client id of the session.
    pub(crate) client_id: ClientId,
    /// Broker-wide number of the connection, unique for the broker's lifetime.
    pub(crate) connection_id: u64,
}

/// The operation was refused because another connection has taken the session over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("another connection with the same client id took over the session")]
pub(crate) struct SessionTakenOver;

/// Session request of a new connection, taken from its checked CONNECT packet.
#[derive(Debug)]
pub(crate) struct ConnectRequest {
    /// Session to attach to.
    pub(crate) handle: SessionHandle,
    /// Whether to discard any stored session, and to end this one with the connection.
    pub(crate) clean_session: bool,
    /// Message to publish if the connection ends without DISCONNECT.
    pub(crate) will: Option<Message>,
    /// Wake-ups for the connection's task.
    pub(crate) signals: Arc<ConnectionSignals>,
}
