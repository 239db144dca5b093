//! The two halves of a client's TCP socket with their read and write buffers, and packet
//! decoding and encoding with rumqttc's MQTT 3.1.1 codec.

use bytes::BytesMut;
use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::{Connect, Packet};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::protocol::ProtocolError;

/// Bytes of free space kept in the read buffer before each read.
pub(crate) const READ_RESERVE_BYTES: usize = 8 * 1024;

/// Packet type of CONNECT, in the high four bits of a packet's first byte.
const CONNECT_PACKET_TYPE: u8 = 1;

/// Protocol level of MQTT 3.1.1 in a CONNECT packet.
const MQTT_311_LEVEL: u8 = 4;

/// Returns the protocol level of the CONNECT packet at the start of `buffer`, once enough of it
/// has arrived: after the fixed header come a two-byte name length, the name (`MQTT`, or
/// `MQIsdp` for 3.1) and the level byte.
fn connect_protocol_level(buffer: &[u8]) -> Option<u8> {
    // The remaining length takes one to four bytes, each with a continuation bit.
    let length_bytes = buffer
        .iter()
        .skip(1)
        .take(4)
        .position(|byte| byte & 0x80 == 0)?
        + 1;
    let name_start = 1 + length_bytes;
    let name_length = u16::from_be_bytes([*buffer.get(name_start)?, *buffer.get(name_start + 1)?]);
    buffer
        .get(name_start + 2 + usize::from(name_length))
        .copied()
}

/// The socket halves and their buffers.
pub(crate) struct Transport {
    pub(crate) reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    /// Bytes read and not yet decoded.
    pub(crate) read_buffer: BytesMut,
    /// Encoded packets not yet written.
    pub(crate) write_buffer: BytesMut,
    /// Largest remaining length of an incoming packet.
    pub(crate) max_packet_bytes: usize,
}

impl Transport {
    /// Splits `stream` into halves with empty buffers.
    pub(crate) fn new(stream: TcpStream, max_packet_bytes: usize) -> Self {
        let (reader, writer) = stream.into_split();
        Transport {
            reader,
            writer,
            read_buffer: BytesMut::with_capacity(READ_RESERVE_BYTES),
            write_buffer: BytesMut::with_capacity(READ_RESERVE_BYTES),
            max_packet_bytes,
        }
    }

    /// Decodes the next complete packet from the bytes read so far.
    pub(crate) fn decode(&mut self) -> Result<Option<Packet>, ProtocolError> {
        match Packet::read(&mut self.read_buffer, self.max_packet_bytes) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                Err(ProtocolError::PacketTooLarge {
                    size,
                    max: self.max_packet_bytes,
                })
            }
            Err(error) => Err(ProtocolError::Malformed(error)),
        }
    }

    /// Reads the connection's first packet, which must be CONNECT; returns `None` when the
    /// client closes first.
    ///
    /// The first byte alone decides whether the packet is a CONNECT, so that a client that
    /// speaks another protocol (an HTTP request, say) is turned away at once instead of after
    /// the CONNECT timeout.
    pub(crate) async fn read_connect(&mut self) -> Result<Option<Connect>, ProtocolError> {
        loop {
            if let Some(&first_byte) = self.read_buffer.first() {
                if first_byte >> 4 != CONNECT_PACKET_TYPE {
                    return Err(ProtocolError::NotConnect { first_byte });
                }
                // Check the protocol level before decoding: an MQTT 5 CONNECT has properties
                // the 3.1.1 decoder cannot read, and must still get CONNACK 0x01.
                if let Some(level) = connect_protocol_level(&self.read_buffer)
                    && level != MQTT_311_LEVEL
                {
                    return Err(ProtocolError::Malformed(
                        mqttbytes::Error::InvalidProtocolLevel(level),
                    ));
                }
                if let Some(Packet::Connect(connect)) = self.decode()? {
                    return Ok(Some(connect));
                }
            }
            self.read_buffer.reserve(READ_RESERVE_BYTES);
            match self.reader.read_buf(&mut self.read_buffer).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// Appends `packet` to the write buffer.
    pub(crate) fn encode(&mut self, packet: &Packet) -> Result<(), mqttbytes::Error> {
        // Outgoing packets are bounded by the incoming limits already, so no size cap here.
        packet.write(&mut self.write_buffer, usize::MAX).map(drop)
    }
}
