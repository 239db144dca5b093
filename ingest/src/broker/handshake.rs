//! The CONNECT handshake of a new connection: reading and checking its CONNECT packet, and
//! the CONNACK that rejects it.

use std::time::Duration;

use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::AsyncWriteExt;
use tokio::time;

use super::metrics::Counters;
use super::protocol::{self, AcceptedConnect, ProtocolError};
use super::shared::Shared;
use super::transport::Transport;

/// Time allowed to send a CONNACK that rejects a connection.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and checks the CONNECT packet; on rejection sends the CONNACK return code.
pub(crate) async fn handshake(
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
