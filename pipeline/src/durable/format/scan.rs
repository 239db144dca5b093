//! Reading one write-ahead log segment back, and telling a torn tail from corruption.
//!
//! A crash in the middle of a write leaves a *torn tail*: the last frames of the segment are
//! incomplete or zero-filled. Those records were never acknowledged, because a record is
//! acknowledged only after the sync that follows its write, so the reader stops before them and
//! reports where the good part ends. Damage anywhere else is *corruption*: stopping there would
//! silently skip acknowledged updates, so the reader returns [`LogError::Corrupt`] instead.
//!
//! # Notes
//!
//! A bad frame (incomplete header, length past the end of the file or above
//! [`MAX_RECORD_BYTES`], checksum mismatch, or a body that does not decode) is a torn tail when:
//!
//! - its length is plausible and inside the file, and every byte after the frame is zero; or
//! - its length is not usable, so the frame's end is unknown, and no valid frame starts anywhere
//!   after its first byte.
//!
//! Otherwise it is corruption. The second rule keeps a bit flip in a length field in the middle
//! of a segment from being taken for a torn tail, which would drop every record after it. A
//! valid frame whose lsn is not the next one is always corruption.
//!
//! A file shorter than the header, or whose header is all zero bytes, is a segment torn while
//! it was created: it contains no records and is reported as torn at offset 0.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{FileKind, LogError, with_path};
use super::frame::{FRAME_HEADER_BYTES, FrameHeader};
use super::header::{HEADER_ID_OFFSET, SEGMENT_HEADER_BYTES, SegmentHeader, SegmentId};
use super::record::{LogRecord, MAX_RECORD_BYTES, MIN_RECORD_BYTES, RECORD_FORMAT_VERSION};

/// Read buffer size: 256 KiB turns a segment scan into few large reads.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Chunk size when checking that a tail is all zero bytes.
const ZERO_CHECK_BYTES: usize = 64 * 1024;

/// Window size when searching for a valid frame after a bad one. It must exceed the largest
/// frame, so that every candidate frame fits in some window.
const SEARCH_WINDOW_BYTES: usize = 4 * MAX_RECORD_BYTES;

/// Result of reading one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment's id, from its file name.
    pub id: SegmentId,

    /// Lsn of the segment's first record, from its header. It is 0 when the header is torn.
    pub first_lsn: u64,

    /// Lsn after the last good record, equal to `first_lsn` when the segment contains none.
    pub next_lsn: u64,

    /// Byte offset after the last good frame: the length the file keeps once its torn tail is
    /// cut. It is 0 when the header is torn.
    pub good_len: u64,

    /// The torn tail, if the segment ends in one.
    pub torn: Option<TornTail>,
}

/// Incomplete data at the end of a segment, left by a crash during a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset where the torn data starts. It is 0 when the header itself is torn.
    pub offset: u64,

    /// Number of torn bytes, from `offset` to the end of the file.
    pub bytes: u64,
}

/// Reads every record of the segment at `path` in lsn order and passes it to `visit`.
///
/// The segment must not be written to while it is read. A torn tail is reported in the
/// summary and left in place; [`cut_torn_tail`] removes it.
///
/// # Errors
///
/// Returns [`LogError::Corrupt`] with the byte offset when the header or a frame is damaged and
/// the damage is not a torn tail, or when a record's lsn is not the next one.
/// [`LogError::Io`] names the file when reading fails or its name is not a segment name, and
/// [`LogError::Visit`] returns the first error of `visit`.
pub fn read_segment<E>(
    path: &Path,
    visit: impl FnMut(LogRecord) -> Result<(), E>,
) -> Result<SegmentSummary, LogError<E>> {
    scan_segment(path, u64::MAX, visit)
}

/// Cuts the segment at `path` back to `good_len` bytes and syncs it.
///
/// Use it with [`SegmentSummary::good_len`] of a segment whose tail is torn. Cutting to 0
/// leaves an empty file, which is still a torn segment; remove such a file instead.
///
/// # Errors
///
/// Fails, naming the file, when it cannot be opened, cut or synced.
pub fn cut_torn_tail(path: &Path, good_len: u64) -> io::Result<()> {
    truncate_file(path, good_len)
        .map_err(|error| with_path(error, "cutting the torn tail of segment", path))
}

/// Cuts the file at `path` to `len` bytes and syncs it, returning the OS error as it is.
pub(crate) fn truncate_file(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_data()
}

/// Reads the segment like [`read_segment`], but stops before the record at `stop_lsn`.
///
/// Frames from `stop_lsn` on are neither decoded nor checked, because a later segment contains
/// those lsns and supersedes them.
pub(crate) fn scan_segment<E>(
    path: &Path,
    stop_lsn: u64,
    mut visit: impl FnMut(LogRecord) -> Result<(), E>,
) -> Result<SegmentSummary, LogError<E>> {
    let io_error = |error| LogError::io("reading write-ahead log segment", path, error);
    let id = segment_id_of(path)?;
    let file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let Some(header) = read_header(&file, path, id, file_len)? else {
        let torn = TornTail {
            offset: 0,
            bytes: file_len,
        };
        return Ok(SegmentSummary {
            id,
            first_lsn: 0,
            next_lsn: 0,
            good_len: 0,
            torn: Some(torn),
        });
    };

    let mut position = SEGMENT_HEADER_BYTES as u64;
    let mut next_lsn = header.first_lsn;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, &file);
    reader.seek(SeekFrom::Start(position)).map_err(io_error)?;
    let mut body = Vec::new();
    let torn = loop {
        if next_lsn >= stop_lsn || position == file_len {
            break None;
        }
        let bad = match read_frame(&mut reader, position, file_len, &mut body).map_err(io_error)? {
            Err(bad) => bad,
            Ok(()) => match LogRecord::decode(&body) {
                Err(error) => BadFrame {
                    offset: position,
                    end: Some(position + (FRAME_HEADER_BYTES + body.len()) as u64),
                    reason: format!("undecodable record ({error})"),
                },
                Ok(record) if record.lsn != next_lsn => {
                    let reason = format!("record has lsn {}, expected {next_lsn}", record.lsn);
                    return Err(LogError::corrupt(FileKind::Segment, path, position, reason));
                }
                Ok(record) => {
                    visit(record).map_err(LogError::Visit)?;
                    position += (FRAME_HEADER_BYTES + body.len()) as u64;
                    // No overflow: the loop runs only while next_lsn < stop_lsn <= u64::MAX.
                    next_lsn += 1;
                    continue;
                }
            },
        };
        break Some(classify_bad_frame(&file, path, bad, file_len)?);
    };

    Ok(SegmentSummary {
        id,
        first_lsn: header.first_lsn,
        next_lsn,
        good_len: position,
        torn,
    })
}

/// Returns the id that the file name of `path` spells.
pub(crate) fn segment_id_of<E>(path: &Path) -> Result<SegmentId, LogError<E>> {
    let name = path.file_name().and_then(|name| name.to_str());
    name.and_then(SegmentId::parse).ok_or_else(|| {
        let source = io::Error::new(
            io::ErrorKind::InvalidInput,
            "expected a name of the form {generation:010}-{worker:04}-{sequence:010}.wal",
        );
        LogError::io("reading the segment id from the name of", path, source)
    })
}

/// Reads and checks the header, or returns `None` when the segment was torn while it was
/// created.
pub(crate) fn read_header<E>(
    file: &File,
    path: &Path,
    id: SegmentId,
    file_len: u64,
) -> Result<Option<SegmentHeader>, LogError<E>> {
    if file_len < SEGMENT_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut bytes = [0; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| LogError::io("reading write-ahead log segment", path, error))?;
    if bytes.iter().all(|&byte| byte == 0) {
        return Ok(None);
    }
    let header = SegmentHeader::decode(&bytes)
        .map_err(|reason| LogError::corrupt(FileKind::Segment, path, 0, reason))?;
    if header.id != id {
        let reason = format!("the header belongs to segment {}", header.id);
        return Err(LogError::corrupt(
            FileKind::Segment,
            path,
            HEADER_ID_OFFSET,
            reason,
        ));
    }
    Ok(Some(header))
}

/// A frame that failed its checks.
struct BadFrame {
    offset: u64,
    /// End of the frame when its length field is usable, or `None` when the end is unknown.
    end: Option<u64>,
    reason: String,
}

/// Reads the frame at `position` into `body`, or returns what is wrong with it.
fn read_frame(
    reader: &mut impl Read,
    position: u64,
    file_len: u64,
    body: &mut Vec<u8>,
) -> io::Result<Result<(), BadFrame>> {
    let bad = |end, reason| {
        Ok(Err(BadFrame {
            offset: position,
            end,
            reason,
        }))
    };
    let remaining = file_len - position;
    if remaining < FRAME_HEADER_BYTES as u64 {
        return bad(
            None,
            format!("incomplete frame header of {remaining} bytes"),
        );
    }
    let mut header_bytes = [0; FRAME_HEADER_BYTES];
    reader.read_exact(&mut header_bytes)?;
    let Some(header) = FrameHeader::parse(&header_bytes) else {
        return bad(None, "incomplete frame header".to_owned());
    };

    let body_len = u64::from(header.body_len);
    let end = position + FRAME_HEADER_BYTES as u64 + body_len;
    if body_len > MAX_RECORD_BYTES as u64 {
        let reason = format!("frame length {body_len} exceeds the maximum of {MAX_RECORD_BYTES}");
        return bad(None, reason);
    }
    if end > file_len {
        return bad(
            None,
            format!("frame length {body_len} runs past the end of the file"),
        );
    }
    // The length is at most MAX_RECORD_BYTES, so it fits in usize.
    body.resize(header.body_len as usize, 0);
    reader.read_exact(body)?;
    if !header.matches(body) {
        return bad(Some(end), "checksum mismatch".to_owned());
    }
    Ok(Ok(()))
}

/// Decides whether `bad` starts a torn tail, by the rules in the module notes.
fn classify_bad_frame<E>(
    file: &File,
    path: &Path,
    bad: BadFrame,
    file_len: u64,
) -> Result<TornTail, LogError<E>> {
    let io_error = |error| LogError::io("reading write-ahead log segment", path, error);
    let evidence = match bad.end {
        Some(end) => first_non_zero(file, end, file_len)
            .map_err(io_error)?
            .map(|at| format!("non-zero data follows at byte {at}")),
        None => find_valid_frame(file, bad.offset + 1, file_len)
            .map_err(io_error)?
            .map(|at| format!("a valid record follows at byte {at}")),
    };
    match evidence {
        None => Ok(TornTail {
            offset: bad.offset,
            bytes: file_len - bad.offset,
        }),
        Some(evidence) => {
            let reason = format!("{}, and {evidence}", bad.reason);
            Err(LogError::corrupt(
                FileKind::Segment,
                path,
                bad.offset,
                reason,
            ))
        }
    }
}

/// Returns the offset of the first non-zero byte in `start..end` of the file, if any.
fn first_non_zero(file: &File, start: u64, end: u64) -> io::Result<Option<u64>> {
    let mut chunk = vec![0; ZERO_CHECK_BYTES];
    let mut offset = start;
    while offset < end {
        let len = (end - offset).min(ZERO_CHECK_BYTES as u64) as usize;
        file.read_exact_at(&mut chunk[..len], offset)?;
        if let Some(at) = chunk[..len].iter().position(|&byte| byte != 0) {
            return Ok(Some(offset + at as u64));
        }
        offset += len as u64;
    }
    Ok(None)
}

/// Returns the offset of the first valid log frame that starts in `start..end`, if any.
///
/// The file is read in windows that overlap by less than one maximal frame, so the search reads
/// each byte about once and keeps at most [`SEARCH_WINDOW_BYTES`] in memory.
fn find_valid_frame(file: &File, start: u64, end: u64) -> io::Result<Option<u64>> {
    let mut window = Vec::new();
    let mut window_start = start;
    while window_start < end {
        let len = (end - window_start).min(SEARCH_WINDOW_BYTES as u64) as usize;
        window.resize(len, 0);
        file.read_exact_at(&mut window, window_start)?;
        let at_end = window_start + len as u64 == end;

        let mut candidate = 0;
        while candidate + FRAME_HEADER_BYTES <= window.len() {
            match check_candidate(&window[candidate..]) {
                Candidate::Valid => return Ok(Some(window_start + candidate as u64)),
                Candidate::NeedsMoreBytes if !at_end => break,
                Candidate::NeedsMoreBytes | Candidate::Invalid => candidate += 1,
            }
        }
        if at_end {
            break;
        }
        // A candidate needs more bytes only within one maximal frame of the window's end, so
        // the next window starts well after this one.
        window_start += candidate.max(1) as u64;
    }
    Ok(None)
}

enum Candidate {
    Valid,
    Invalid,
    NeedsMoreBytes,
}

/// Checks whether a valid log frame starts at the beginning of `bytes`.
fn check_candidate(bytes: &[u8]) -> Candidate {
    let Some(header) = FrameHeader::parse(bytes) else {
        return Candidate::NeedsMoreBytes;
    };
    let body_len = header.body_len as usize;
    if !(MIN_RECORD_BYTES..=MAX_RECORD_BYTES).contains(&body_len) {
        return Candidate::Invalid;
    }
    let Some(body) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_len) else {
        return Candidate::NeedsMoreBytes;
    };
    // The version byte and then the checksum rule out nearly every offset cheaply.
    if body[0] == RECORD_FORMAT_VERSION && header.matches(body) && LogRecord::decode(body).is_ok() {
        Candidate::Valid
    } else {
        Candidate::Invalid
    }
}

/// Returns the first lsn from the header of segment `id` at `path`, or `None` when the header is
/// torn.
pub(crate) fn read_first_lsn<E>(id: SegmentId, path: &Path) -> Result<Option<u64>, LogError<E>> {
    let io_error = |error| LogError::io("reading write-ahead log segment", path, error);
    let file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let header = read_header(&file, path, id, file_len)?;
    Ok(header.map(|header| header.first_lsn))
}
