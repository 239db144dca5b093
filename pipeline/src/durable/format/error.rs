//! Errors of the durable formats, each naming the file it concerns.
//!
//! [`LogError`] is what readers return: an I/O failure, a damaged file with the byte offset of
//! the damage and what the operator can do about it, or the caller's own visitor error.
//! [`DecodeError`] is the small error of decoding one frame body, and [`RecordTooLarge`] rejects
//! a log record that its reader would refuse.
//!
//! Functions that only write return `io::Result`, and their errors name the file in the message
//! (see [`with_path`]).

use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Kind of binary file that a [`LogError::Corrupt`] names. It selects the advice in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A write-ahead log segment.
    Segment,
    /// The checkpoint snapshot of one worker.
    Snapshot,
}

/// Failure to read or recover a durable file.
///
/// `E` is the error type of the caller's visitor, which is returned unchanged as
/// [`LogError::Visit`]. Functions without a visitor use the default, [`Infallible`].
///
/// `Display` of [`LogError::Io`] includes the OS error, as the service's other I/O errors do,
/// because log lines print errors with `Display` alone.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError<E = Infallible> {
    /// An operating-system call on `path` failed.
    Io {
        /// Operation that failed, as a phrase such as "reading write-ahead log segment".
        operation: &'static str,

        /// The file or folder concerned.
        path: PathBuf,

        /// The error of the operating system.
        source: io::Error,
    },

    /// The file at `path` is damaged at byte `offset`, so reading on would skip or invent data.
    Corrupt {
        /// Whether `path` is a log segment or a snapshot.
        kind: FileKind,

        /// The damaged file.
        path: PathBuf,

        /// Byte offset of the first damaged frame or header field.
        offset: u64,

        /// Description of the damage, such as "checksum mismatch".
        reason: String,
    },

    /// A checkpoint manifest does not parse, or lists a snapshot file that does not exist.
    InvalidCheckpoint {
        /// The manifest or the missing snapshot file.
        path: PathBuf,

        /// Description of the problem.
        reason: String,
    },

    /// The caller's visitor returned an error, so reading stopped at that record.
    Visit(E),
}

impl<E> LogError<E> {
    /// Wraps an I/O error with the operation and the file it concerns.
    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        LogError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    }

    /// Converts the visitor's error with `convert`, keeping every other variant.
    pub fn map_visit<F>(self, convert: impl FnOnce(E) -> F) -> LogError<F> {
        match self {
            LogError::Io {
                operation,
                path,
                source,
            } => LogError::Io {
                operation,
                path,
                source,
            },
            LogError::Corrupt {
                kind,
                path,
                offset,
                reason,
            } => LogError::Corrupt {
                kind,
                path,
                offset,
                reason,
            },
            LogError::InvalidCheckpoint { path, reason } => {
                LogError::InvalidCheckpoint { path, reason }
            }
            LogError::Visit(error) => LogError::Visit(convert(error)),
        }
    }

    /// Converts the visitor's error to its message, so that errors of different visitors
    /// share one type.
    pub fn into_string(self) -> LogError<String>
    where
        E: fmt::Display,
    {
        self.map_visit(|error| error.to_string())
    }

    /// Creates a [`LogError::Corrupt`].
    pub(crate) fn corrupt(kind: FileKind, path: &Path, offset: u64, reason: String) -> Self {
        LogError::Corrupt {
            kind,
            path: path.to_owned(),
            offset,
            reason,
        }
    }
}

impl<E: fmt::Display> fmt::Display for LogError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io {
                operation,
                path,
                source,
            } => write!(f, "{operation} {} failed: {source}", path.display()),
            LogError::Corrupt {
                kind: FileKind::Segment,
                path,
                offset,
                reason,
            } => write!(
                f,
                "write-ahead log segment {} is corrupt at byte {offset}: {reason}. Recovery \
                 stopped so that no accepted update is skipped. Restore the file from a backup, \
                 or move it and the later segments of the same worker out of its folder to start \
                 without the updates they contain",
                path.display()
            ),
            LogError::Corrupt {
                kind: FileKind::Snapshot,
                path,
                offset,
                reason,
            } => write!(
                f,
                "checkpoint snapshot {} is corrupt at byte {offset}: {reason}. Restore the file \
                 from a backup. Moving its checkpoint folder away makes recovery start from an \
                 older checkpoint, which loses updates if the write-ahead log since that \
                 checkpoint has been removed",
                path.display()
            ),
            LogError::InvalidCheckpoint { path, reason } => write!(
                f,
                "checkpoint file {} is invalid: {reason}. Restore the checkpoint folder from a \
                 backup. Moving the folder away makes recovery start from an older checkpoint, \
                 which loses updates if the write-ahead log since that checkpoint has been \
                 removed",
                path.display()
            ),
            LogError::Visit(error) => error.fmt(f),
        }
    }
}

/// `E` needs only `Display`, so that a visitor can fail with a plain `String`. The visitor's
/// error is therefore not a `source`, but [`LogError::Visit`] displays it.
impl<E: fmt::Debug + fmt::Display> Error for LogError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            LogError::Corrupt { .. } | LogError::InvalidCheckpoint { .. } | LogError::Visit(_) => {
                None
            }
        }
    }
}

/// Error of decoding one frame body whose checksum matched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ends inside `field`.
    #[error("body ends inside field {field}")]
    Truncated {
        /// Name of the field being decoded.
        field: &'static str,
    },

    /// The body starts with a format version this build does not read.
    #[error("unsupported format version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },

    /// A string field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    InvalidUtf8 {
        /// Name of the string field.
        field: &'static str,
    },

    /// An enum or flag byte has a value no writer produces.
    #[error("field {field} has invalid value {value}")]
    InvalidTag {
        /// Name of the field.
        field: &'static str,

        /// The byte found.
        value: u8,
    },

    /// Bytes remain after the last field.
    #[error("{count} unexpected bytes after the last field")]
    TrailingBytes {
        /// Number of bytes left over.
        count: usize,
    },
}

/// A log record whose frame would exceed [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES).
///
/// The reader rejects longer frames as corrupt, so the writer does not write them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "log record {lsn} encodes to {bytes} bytes, above the maximum of {max} bytes for one record"
)]
pub struct RecordTooLarge {
    /// Sequence number of the rejected record.
    pub lsn: u64,

    /// Encoded body size in bytes.
    pub bytes: usize,

    /// The maximum body size in bytes.
    pub max: usize,
}

/// Returns an `io::Error` of the same kind whose message names the operation, the file and the
/// cause, such as "writing write-ahead log segment /data/wal/x.wal: No space left on device".
///
/// The cause is part of the message, not a `source`, because callers of `io::Result`
/// functions commonly print an `io::Error` with `Display` alone.
pub(crate) fn with_path(error: io::Error, operation: &str, path: &Path) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{operation} {}: {error}", path.display()),
    )
}
