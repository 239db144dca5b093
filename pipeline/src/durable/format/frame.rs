//! Checksummed frames and the little-endian field encoding inside them.
//!
//! A frame is `[body length: u32 LE][CRC-32 of body: u32 LE][body]`. Log segments and snapshots
//! both store their entries as frames. This module only builds and checks frames, and `record`
//! and `snapshot` define what a body contains.
//!
//! The checksum is CRC-32 (ISO-HDLC, the zlib polynomial) as `crc32fast` computes it, with
//! hardware carry-less multiplication where the CPU has it.

use super::error::DecodeError;

/// Bytes of the frame header: the body length and its checksum.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// Length and checksum of one frame, as read from its header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameHeader {
    pub(crate) body_len: u32,
    pub(crate) crc: u32,
}

impl FrameHeader {
    /// Reads the header at the start of `bytes`, or returns `None` when fewer than
    /// [`FRAME_HEADER_BYTES`] bytes are given.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let body_len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
        let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        Some(FrameHeader { body_len, crc })
    }

    /// Returns whether `body` has the checksum this header records.
    pub(crate) fn matches(&self, body: &[u8]) -> bool {
        crc32fast::hash(body) == self.crc
    }
}

/// Appends one frame to `out`, with the body that `encode_body` appends.
///
/// Returns the body length. A body longer than `max_body` is removed again, so `out` is as
/// before, and `Err` carries the rejected length.
pub(crate) fn append_frame(
    out: &mut Vec<u8>,
    max_body: usize,
    encode_body: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, usize> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    encode_body(out);

    let body_start = start + FRAME_HEADER_BYTES;
    let body_len = out.len() - body_start;
    let Some(length_field) = u32::try_from(body_len)
        .ok()
        .filter(|_| body_len <= max_body)
    else {
        out.truncate(start);
        return Err(body_len);
    };
    let crc = crc32fast::hash(&out[body_start..]);
    out[start..start + 4].copy_from_slice(&length_field.to_le_bytes());
    out[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
    Ok(body_len)
}

/// Appends a string as `[length: u32 LE][UTF-8 bytes]`.
///
/// A string of 4 GiB or more gets the length `u32::MAX`, which makes its frame longer than any
/// frame limit, so [`append_frame`] rejects it.
pub(crate) fn put_str(out: &mut Vec<u8>, value: &str) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// Cursor that decodes the fields of one frame body and never reads past it.
pub(crate) struct FieldReader<'a> {
    bytes: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        FieldReader { bytes }
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < len {
            return Err(DecodeError::Truncated { field });
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        // `take` returned exactly N bytes, so the conversion cannot fail.
        bytes
            .try_into()
            .map_err(|_| DecodeError::Truncated { field })
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// Decodes a string written by [`put_str`].
    pub(crate) fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u32(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { field })?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// Decodes a string when `present`, or returns `None` without reading.
    pub(crate) fn optional_str(
        &mut self,
        present: bool,
        field: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        present.then(|| self.str(field)).transpose()
    }

    /// Returns every byte not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Checks that every byte was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.bytes.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}
