//! Checkpoint snapshots: every shadow of one worker, written once and read back whole.
//!
//! A snapshot is written to `PATH.tmp`, synced, and renamed to `PATH`, so a snapshot file that
//! exists is complete. Unlike a log segment it has no torn tail: the reader rejects any damage.
//! The checkpoint folder and its manifest are in `checkpoint`.
//!
//! # Notes
//!
//! Layout, integers little-endian: the header is magic `SFLOWSNP` (8 bytes) and the format
//! version (u32, 1). Then one frame per entry, whose body is:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | flags: bit 0 shadow name, bit 1 live, bit 2 client token (only when live) |
//! | 8 | deleted version |
//! | 4 + n | thing name: length, then UTF-8 bytes |
//! | 4 + n | shadow name, if flag bit 0 |
//! | 8 | `updated_at_ms` (signed), if live |
//! | 4 + n | client token, if flag bit 2 |
//! | rest | the shadow's serde JSON, if live |
//!
//! The trailer is the marker `0xFFFF_FFFF` (u32, a length no entry has), the entry count (u64)
//! and the CRC-32 of those 12 bytes (u32). It must end the file.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::error::{DecodeError, FileKind, LogError, with_path};
use super::frame::{FRAME_HEADER_BYTES, FieldReader, FrameHeader, append_frame, put_str};
use super::fs::{rename_durably, tmp_path};
use crate::dataflow::ShadowVersion;
use crate::shadow::{Shadow, ShadowKey};

/// Maximum encoded size of one snapshot entry: 16 MiB.
///
/// The reader rejects longer length fields as damage. A shadow within the default limits
/// encodes to a few tens of KiB, because its state is at most 8 KiB and the metadata adds one
/// timestamp per leaf.
pub const MAX_SNAPSHOT_ENTRY_BYTES: usize = 16 << 20;

const SNAPSHOT_MAGIC: [u8; 8] = *b"SFLOWSNP";
const SNAPSHOT_FORMAT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 12;
const TRAILER_MARKER: u32 = u32::MAX;
const TRAILER_BYTES: u64 = 16;

/// Buffer size for writing and reading: 1 MiB keeps syscalls to about one per thousand entries
/// of 1 KiB.
const IO_BUFFER_BYTES: usize = 1 << 20;

const FLAG_SHADOW_NAME: u8 = 1;
const FLAG_LIVE: u8 = 1 << 1;
const FLAG_CLIENT_TOKEN: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_SHADOW_NAME | FLAG_LIVE | FLAG_CLIENT_TOKEN;

/// One shadow key of a snapshot: a live shadow, or the tombstone of a deleted one.
#[derive(Clone, Debug)]
pub struct SnapshotEntry {
    /// The shadow's key.
    pub key: ShadowKey,

    /// The current version, or `None` for a deleted shadow that keeps only its last version.
    pub live: Option<Arc<ShadowVersion>>,

    /// Version of the shadow at its last delete, or 0 if it was never deleted.
    pub deleted_version: u64,
}

/// Size of a written snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Number of entries written.
    pub entries: u64,

    /// File size in bytes.
    pub bytes: u64,
}

/// Writes a snapshot of `entries` to `path`: each is `(key, live version or None, deleted
/// version)`.
///
/// Writes `path` with `.tmp` appended first, syncs it, renames it to `path` and syncs the
/// folder, so `path` either does not exist or is complete, also after a crash. An existing
/// `path` is replaced.
///
/// # Errors
///
/// Fails, naming the file, when writing, syncing or renaming fails, or when an entry encodes to
/// more than [`MAX_SNAPSHOT_ENTRY_BYTES`]. The temporary file is removed again where possible.
pub fn write_snapshot<'a>(
    path: &Path,
    entries: impl IntoIterator<Item = (&'a ShadowKey, Option<&'a ShadowVersion>, u64)>,
) -> io::Result<SnapshotStats> {
    let tmp = tmp_path(path);
    let written = write_snapshot_file(&tmp, entries)
        .map_err(|error| with_path(error, "writing checkpoint snapshot", &tmp))
        .and_then(|stats| rename_durably(&tmp, path).map(|()| stats));
    if written.is_err() {
        // The snapshot is useless without its rename, and a later attempt rewrites it anyway.
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn write_snapshot_file<'a>(
    tmp: &Path,
    entries: impl IntoIterator<Item = (&'a ShadowKey, Option<&'a ShadowVersion>, u64)>,
) -> io::Result<SnapshotStats> {
    let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, File::create(tmp)?);
    writer.write_all(&SNAPSHOT_MAGIC)?;
    writer.write_all(&SNAPSHOT_FORMAT_VERSION.to_le_bytes())?;
    let mut bytes = SNAPSHOT_HEADER_BYTES as u64;
    let mut count: u64 = 0;

    let mut frame = Vec::new();
    for (key, live, deleted_version) in entries {
        frame.clear();
        let mut json_error = None;
        let appended = append_frame(&mut frame, MAX_SNAPSHOT_ENTRY_BYTES, |body| {
            json_error = encode_entry(body, key, live, deleted_version).err();
        });
        if let Some(error) = json_error {
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        if let Err(entry_bytes) = appended {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the entry of {key:?} encodes to {entry_bytes} bytes, above the maximum of \
                     {MAX_SNAPSHOT_ENTRY_BYTES}"
                ),
            ));
        }
        writer.write_all(&frame)?;
        bytes += frame.len() as u64;
        count += 1;
    }

    let mut trailer = [0; TRAILER_BYTES as usize];
    trailer[0..4].copy_from_slice(&TRAILER_MARKER.to_le_bytes());
    trailer[4..12].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&trailer[0..12]);
    trailer[12..16].copy_from_slice(&crc.to_le_bytes());
    writer.write_all(&trailer)?;
    bytes += TRAILER_BYTES;

    let file = writer
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    file.sync_data()?;
    Ok(SnapshotStats {
        entries: count,
        bytes,
    })
}

fn encode_entry(
    out: &mut Vec<u8>,
    key: &ShadowKey,
    live: Option<&ShadowVersion>,
    deleted_version: u64,
) -> serde_json::Result<()> {
    let mut flags = 0;
    if key.shadow_name.is_some() {
        flags |= FLAG_SHADOW_NAME;
    }
    if let Some(live) = live {
        flags |= FLAG_LIVE;
        if live.client_token.is_some() {
            flags |= FLAG_CLIENT_TOKEN;
        }
    }
    out.push(flags);
    out.extend_from_slice(&deleted_version.to_le_bytes());
    put_str(out, &key.thing_name);
    if let Some(shadow_name) = &key.shadow_name {
        put_str(out, shadow_name);
    }
    if let Some(live) = live {
        out.extend_from_slice(&live.updated_at_ms.to_le_bytes());
        if let Some(client_token) = &live.client_token {
            put_str(out, client_token);
        }
        serde_json::to_writer(&mut *out, &live.shadow)?;
    }
    Ok(())
}

/// Reads the snapshot at `path` and passes every entry to `visit`, in the order written.
/// Returns the number of entries.
///
/// # Errors
///
/// Returns [`LogError::Corrupt`] with the byte offset when the header, an entry or the trailer
/// is damaged or missing, or when bytes follow the trailer. [`LogError::Io`] names the file
/// when reading fails, and [`LogError::Visit`] returns the first error of `visit`.
pub fn read_snapshot<E>(
    path: &Path,
    mut visit: impl FnMut(SnapshotEntry) -> Result<(), E>,
) -> Result<u64, LogError<E>> {
    let io_error = |error| LogError::io("reading checkpoint snapshot", path, error);
    let corrupt = |offset, reason| LogError::corrupt(FileKind::Snapshot, path, offset, reason);
    let file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let mut reader = BufReader::with_capacity(IO_BUFFER_BYTES, file);

    if file_len < SNAPSHOT_HEADER_BYTES as u64 {
        return Err(corrupt(
            0,
            format!("the file of {file_len} bytes has no complete header"),
        ));
    }
    let mut header = [0; SNAPSHOT_HEADER_BYTES];
    reader.read_exact(&mut header).map_err(io_error)?;
    if header[0..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(
            0,
            "the file does not start with the snapshot magic bytes".into(),
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != SNAPSHOT_FORMAT_VERSION {
        let reason = format!(
            "unsupported snapshot format version {version}; this build reads version \
             {SNAPSHOT_FORMAT_VERSION}"
        );
        return Err(corrupt(8, reason));
    }

    let mut position = SNAPSHOT_HEADER_BYTES as u64;
    let mut entries: u64 = 0;
    let mut body = Vec::new();
    loop {
        let remaining = file_len - position;
        if remaining < FRAME_HEADER_BYTES as u64 {
            let reason = format!("the file ends after {entries} entries without a trailer");
            return Err(corrupt(position, reason));
        }
        let mut frame_header = [0; FRAME_HEADER_BYTES];
        reader.read_exact(&mut frame_header).map_err(io_error)?;
        let Some(header) = FrameHeader::parse(&frame_header) else {
            return Err(corrupt(position, "incomplete entry header".into()));
        };
        if header.body_len == TRAILER_MARKER {
            return read_trailer(&mut reader, &frame_header, remaining, entries)
                .map_err(io_error)?
                .map_err(|reason| corrupt(position, reason));
        }

        let body_len = u64::from(header.body_len);
        if body_len > MAX_SNAPSHOT_ENTRY_BYTES as u64 || body_len > remaining - 8 {
            let reason = format!("entry length {body_len} runs past the end of the file");
            return Err(corrupt(position, reason));
        }
        // The length is at most MAX_SNAPSHOT_ENTRY_BYTES, so it fits in usize.
        body.resize(header.body_len as usize, 0);
        reader.read_exact(&mut body).map_err(io_error)?;
        if !header.matches(&body) {
            return Err(corrupt(position, "checksum mismatch".into()));
        }
        let entry = decode_entry(&body).map_err(|reason| corrupt(position, reason))?;
        visit(entry).map_err(LogError::Visit)?;
        entries += 1;
        position += FRAME_HEADER_BYTES as u64 + body_len;
    }
}

/// Checks the trailer, whose first 8 bytes are already read, and returns the entry count or the
/// reason the trailer is invalid.
fn read_trailer(
    reader: &mut impl Read,
    start: &[u8; FRAME_HEADER_BYTES],
    remaining: u64,
    entries: u64,
) -> io::Result<Result<u64, String>> {
    if remaining != TRAILER_BYTES {
        return Ok(Err(if remaining < TRAILER_BYTES {
            format!("the trailer is truncated to {remaining} of {TRAILER_BYTES} bytes")
        } else {
            format!(
                "{} unexpected bytes follow the trailer",
                remaining - TRAILER_BYTES
            )
        }));
    }
    let mut trailer = [0; TRAILER_BYTES as usize];
    trailer[..FRAME_HEADER_BYTES].copy_from_slice(start);
    reader.read_exact(&mut trailer[FRAME_HEADER_BYTES..])?;

    let crc = u32::from_le_bytes([trailer[12], trailer[13], trailer[14], trailer[15]]);
    if crc32fast::hash(&trailer[0..12]) != crc {
        return Ok(Err("trailer checksum mismatch".to_owned()));
    }
    let mut count_bytes = [0; 8];
    count_bytes.copy_from_slice(&trailer[4..12]);
    let count = u64::from_le_bytes(count_bytes);
    if count != entries {
        return Ok(Err(format!(
            "the trailer counts {count} entries, but the file has {entries}"
        )));
    }
    Ok(Ok(count))
}

fn decode_entry(body: &[u8]) -> Result<SnapshotEntry, String> {
    let mut fields = FieldReader::new(body);
    let (key, live_fields, deleted_version) =
        decode_entry_fields(&mut fields).map_err(|error| format!("undecodable entry ({error})"))?;
    let live = match live_fields {
        None => {
            fields
                .finish()
                .map_err(|error| format!("undecodable entry ({error})"))?;
            None
        }
        Some((updated_at_ms, client_token)) => {
            let shadow: Shadow = serde_json::from_slice(fields.rest())
                .map_err(|error| format!("invalid shadow JSON for {key:?} ({error})"))?;
            Some(ShadowVersion::new(shadow, updated_at_ms, client_token))
        }
    };
    Ok(SnapshotEntry {
        key,
        live,
        deleted_version,
    })
}

/// The fields of a live entry before its shadow JSON: `updated_at_ms` and the client token.
type LiveFields = (i64, Option<String>);

fn decode_entry_fields(
    fields: &mut FieldReader<'_>,
) -> Result<(ShadowKey, Option<LiveFields>, u64), DecodeError> {
    let flags = fields.u8("flags")?;
    let live = flags & FLAG_LIVE != 0;
    if flags & !KNOWN_FLAGS != 0 || (!live && flags & FLAG_CLIENT_TOKEN != 0) {
        return Err(DecodeError::InvalidTag {
            field: "flags",
            value: flags,
        });
    }
    let deleted_version = fields.u64("deleted_version")?;
    let key = ShadowKey {
        thing_name: fields.str("thing_name")?.to_owned(),
        shadow_name: fields
            .optional_str(flags & FLAG_SHADOW_NAME != 0, "shadow_name")?
            .map(str::to_owned),
    };
    let live_fields = if live {
        let updated_at_ms = fields.i64("updated_at_ms")?;
        let client_token = fields.optional_str(flags & FLAG_CLIENT_TOKEN != 0, "client_token")?;
        Some((updated_at_ms, client_token.map(str::to_owned)))
    } else {
        None
    };
    Ok((key, live_fields, deleted_version))
}
