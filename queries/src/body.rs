//! Reading a request body with a size cap, whether or not the client sent `Content-Length`.

use bytes::Buf;
use futures_util::{Stream, StreamExt};

/// Reason a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the cap.
    TooLarge,
    /// The connection failed while reading.
    Read(warp::Error),
}

/// Reads at most `max_bytes` from `body`.
pub async fn read_capped<S, B>(body: S, max_bytes: usize) -> Result<Vec<u8>, BodyError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut collected = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(BodyError::Read)?;
        if collected.len() + chunk.remaining() > max_bytes {
            return Err(BodyError::TooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            collected.extend_from_slice(part);
            let length = part.len();
            chunk.advance(length);
        }
    }
    Ok(collected)
}
