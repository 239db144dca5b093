//! Write-ahead log records: one accepted shadow change, and its compact binary encoding.
//!
//! A record carries what recovery needs to apply the change again: the key, the kind of change,
//! the resulting version, the acceptance time, the origin, the client token and the request's
//! `state` node. It does not carry the resulting document, because replaying the request on the
//! recovered shadow computes it.
//!
//! # Notes
//!
//! Body layout, format version 1, all integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version (1) |
//! | 1 | change: 0 update, 1 delete |
//! | 1 | origin: 0 MQTT, 1 HTTP, 2 replay |
//! | 1 | flags: bit 0 shadow name, bit 1 client token, bit 2 request state; other bits 0 |
//! | 8 | lsn |
//! | 8 | version |
//! | 8 | `accepted_at_ms` (signed) |
//! | 4 + n | thing name: length, then UTF-8 bytes |
//! | 4 + n | shadow name, if flag bit 0 |
//! | 4 + n | client token, if flag bit 1 |
//! | 4 + n | request state JSON, if flag bit 2 |
//!
//! The decoder checks the UTF-8 of every string but not that the request state is valid JSON,
//! because the consumer that applies the request parses it anyway.

use super::error::{DecodeError, RecordTooLarge};
use super::frame::{FieldReader, append_frame, put_str};
use crate::history::{ChangeKind, Origin};
use crate::shadow::ShadowKey;

/// Maximum encoded body size of one log record: 1 MiB.
///
/// The reader treats a longer length field as damage, so a corrupt length never makes it
/// allocate more. With the default limits a record stays below 130 KiB, because the request
/// state is at most `max_payload_bytes` (128 KiB) and the names and token add less than 300
/// bytes. A service configured with a larger payload limit can produce records that
/// [`LogRecord::encode_frame`] rejects with [`RecordTooLarge`].
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Format version byte at the start of every record body.
pub(crate) const RECORD_FORMAT_VERSION: u8 = 1;

/// Size of a body whose strings are all absent or empty: the fixed fields plus one length.
pub(crate) const MIN_RECORD_BYTES: usize = 4 + 3 * 8 + 4;

const FLAG_SHADOW_NAME: u8 = 1;
const FLAG_CLIENT_TOKEN: u8 = 1 << 1;
const FLAG_REQUEST_STATE: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_SHADOW_NAME | FLAG_CLIENT_TOKEN | FLAG_REQUEST_STATE;

/// One accepted change of one shadow, as the write-ahead log stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Sequence number within its `(generation, worker)` log, counting from 0.
    pub lsn: u64,

    /// The changed shadow.
    pub key: ShadowKey,

    /// Whether the change is an update or a delete.
    pub change: ChangeKind,

    /// Shadow version after the update, or for a delete the version that was deleted.
    pub version: u64,

    /// When the service accepted the change, in milliseconds since the Unix epoch (UTC).
    pub accepted_at_ms: i64,

    /// Channel the request arrived on.
    pub origin: Origin,

    /// The request's `clientToken`, if it carried one.
    pub client_token: Option<String>,

    /// For an update, the compact JSON text of the request's `state` node, which may be `null`.
    /// For a delete, `None`.
    pub request_state: Option<String>,
}

impl LogRecord {
    /// Appends this record to `out` as one frame: length, CRC-32 and body.
    ///
    /// Encoding allocates nothing except when `out` has to grow, so a caller that reuses one
    /// buffer encodes without allocating per record.
    ///
    /// # Errors
    ///
    /// Returns [`RecordTooLarge`] and leaves `out` unchanged when the body would exceed
    /// [`MAX_RECORD_BYTES`].
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), RecordTooLarge> {
        append_frame(out, MAX_RECORD_BYTES, |body| self.encode_body(body))
            .map(drop)
            .map_err(|bytes| RecordTooLarge {
                lsn: self.lsn,
                bytes,
                max: MAX_RECORD_BYTES,
            })
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        let mut flags = 0;
        if self.key.shadow_name.is_some() {
            flags |= FLAG_SHADOW_NAME;
        }
        if self.client_token.is_some() {
            flags |= FLAG_CLIENT_TOKEN;
        }
        if self.request_state.is_some() {
            flags |= FLAG_REQUEST_STATE;
        }
        out.extend_from_slice(&[
            RECORD_FORMAT_VERSION,
            change_tag(self.change),
            origin_tag(self.origin),
            flags,
        ]);
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.accepted_at_ms.to_le_bytes());
        put_str(out, &self.key.thing_name);
        let optional = [
            &self.key.shadow_name,
            &self.client_token,
            &self.request_state,
        ];
        for value in optional.into_iter().flatten() {
            put_str(out, value);
        }
    }

    /// Decodes a record body, the part of a frame after its header.
    ///
    /// # Errors
    ///
    /// Returns a [`DecodeError`] when the body is truncated, has an unknown format version,
    /// enum tag or flag bit, contains a string that is not UTF-8, or has bytes left over. Any
    /// input returns an error or a record, never a panic.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut fields = FieldReader::new(body);
        let format_version = fields.u8("format version")?;
        if format_version != RECORD_FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                version: format_version,
            });
        }
        let change = decode_change(fields.u8("change")?)?;
        let origin = decode_origin(fields.u8("origin")?)?;
        let flags = fields.u8("flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DecodeError::InvalidTag {
                field: "flags",
                value: flags,
            });
        }
        let lsn = fields.u64("lsn")?;
        let version = fields.u64("version")?;
        let accepted_at_ms = fields.i64("accepted_at_ms")?;
        let thing_name = fields.str("thing_name")?.to_owned();
        let shadow_name = fields.optional_str(flags & FLAG_SHADOW_NAME != 0, "shadow_name")?;
        let client_token = fields.optional_str(flags & FLAG_CLIENT_TOKEN != 0, "client_token")?;
        let request_state =
            fields.optional_str(flags & FLAG_REQUEST_STATE != 0, "request_state")?;
        fields.finish()?;

        Ok(LogRecord {
            lsn,
            key: ShadowKey {
                thing_name,
                shadow_name: shadow_name.map(str::to_owned),
            },
            change,
            version,
            accepted_at_ms,
            origin,
            client_token: client_token.map(str::to_owned),
            request_state: request_state.map(str::to_owned),
        })
    }
}

fn change_tag(change: ChangeKind) -> u8 {
    match change {
        ChangeKind::Update => 0,
        ChangeKind::Delete => 1,
    }
}

fn decode_change(tag: u8) -> Result<ChangeKind, DecodeError> {
    match tag {
        0 => Ok(ChangeKind::Update),
        1 => Ok(ChangeKind::Delete),
        value => Err(DecodeError::InvalidTag {
            field: "change",
            value,
        }),
    }
}

fn origin_tag(origin: Origin) -> u8 {
    match origin {
        Origin::Mqtt => 0,
        Origin::Http => 1,
        Origin::Replay => 2,
    }
}

fn decode_origin(tag: u8) -> Result<Origin, DecodeError> {
    match tag {
        0 => Ok(Origin::Mqtt),
        1 => Ok(Origin::Http),
        2 => Ok(Origin::Replay),
        value => Err(DecodeError::InvalidTag {
            field: "origin",
            value,
        }),
    }
}
