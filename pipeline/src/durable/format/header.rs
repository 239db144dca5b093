//! Segment names and the segment header.
//!
//! A segment file is named `{generation:010}-{worker:04}-{sequence:010}.wal` and starts with a
//! fixed header that repeats those numbers and records the lsn of its first record. The writer
//! is in `segment`, and the reader in `scan`.
//!
//! # Notes
//!
//! Header layout, 44 bytes, integers little-endian: magic `SFLOWWAL` (8 bytes), format version
//! (u32, 1), generation (u64), worker (u32), sequence (u64), first lsn (u64), then the CRC-32 of
//! the 40 bytes before it (u32).

use std::fmt;

/// Magic bytes at the start of every segment.
const SEGMENT_MAGIC: [u8; 8] = *b"SFLOWWAL";

/// Format version in the segment header.
const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_BYTES: usize = 44;

/// Byte offset of the generation, worker and sequence fields in the header.
pub(crate) const HEADER_ID_OFFSET: u64 = 12;

/// Byte offset of the `first_lsn` field in the header.
pub(crate) const HEADER_FIRST_LSN_OFFSET: u64 = 32;

/// File name extension of segments.
const SEGMENT_EXTENSION: &str = ".wal";

/// Name of one segment: `{generation:010}-{worker:04}-{sequence:010}.wal`.
///
/// Order is by generation, then worker, then sequence, which is the replay order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    /// Start of the service that wrote the segment, counting from 1.
    pub generation: u64,

    /// Dataflow worker whose log the segment belongs to.
    pub worker: u32,

    /// Position of the segment in its `(generation, worker)` log, counting from 0.
    pub sequence: u64,
}

impl SegmentId {
    /// Returns the file name, such as `0000000003-0001-0000000002.wal`.
    pub fn file_name(&self) -> String {
        self.to_string()
    }

    /// Parses a file name made by [`SegmentId::file_name`], or returns `None` for any other
    /// name, including the same numbers with other zero padding.
    pub fn parse(file_name: &str) -> Option<Self> {
        let stem = file_name.strip_suffix(SEGMENT_EXTENSION)?;
        let mut parts = stem.split('-');
        let id = SegmentId {
            generation: parse_digits(parts.next()?)?,
            worker: parse_digits(parts.next()?)?,
            sequence: parse_digits(parts.next()?)?,
        };
        // Only the canonical spelling names a segment, so two files never share one id.
        (parts.next().is_none() && id.file_name() == file_name).then_some(id)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:010}-{:04}-{:010}{SEGMENT_EXTENSION}",
            self.generation, self.worker, self.sequence
        )
    }
}

fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) id: SegmentId,
    pub(crate) first_lsn: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.id.generation.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.id.worker.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.id.sequence.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..40]);
        bytes[40..44].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes a header, or returns the reason it is invalid.
    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> Result<Self, String> {
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);

        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("the file does not start with the segment magic bytes".to_owned());
        }
        if crc32fast::hash(&bytes[..40]) != u32_at(40) {
            return Err("header checksum mismatch".to_owned());
        }
        let version = u32_at(8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version}; this build reads version \
                 {SEGMENT_FORMAT_VERSION}"
            ));
        }
        Ok(SegmentHeader {
            id: SegmentId {
                generation: u64_at(12),
                worker: u32_at(20),
                sequence: u64_at(24),
            },
            first_lsn: u64_at(32),
        })
    }
}
