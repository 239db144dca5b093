//! The error of a query that does not parse or breaks a [`QueryLimits`](super::QueryLimits)
//! limit.

/// A query that cannot be run: where it fails, what the parser expected there and what it found.
///
/// `Display` prints one line, for example
/// `invalid query at position 10: expected a value after ':', found end of query`.
/// The service returns that line as the message of an `InvalidQueryException`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid query at position {position}: expected {expected}, found {found}")]
pub struct QueryError {
    /// Byte offset in the query string where the problem starts.
    pub position: usize,

    /// The input that would be valid at `position`, such as `"a value after ':'"`.
    pub expected: String,

    /// The input at `position`, such as `"'AND'"` or `"end of query"`.
    pub found: String,
}

impl QueryError {
    pub(crate) fn new(
        position: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self {
            position,
            expected: expected.into(),
            found: found.into(),
        }
    }
}
