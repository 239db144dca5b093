//! History routes: a shadow's accepted changes, and its document at a past version or time.
//!
//! | method and path | what it returns |
//! |---|---|
//! | `GET /things/{thing}/shadow/history[?name=&from=&to=&limit=&nextToken=]` | a page of changes, oldest first |
//! | `GET /things/{thing}/shadow?version=N[&name=]` | the document after the update that produced version N |
//! | `GET /things/{thing}/shadow?at=T[&name=]` | the document after the last change accepted at or before T |
//!
//! Times are ms since the Unix epoch or RFC 3339. Both routes read the Parquet archive through
//! a [`HistoryReader`](sinks::parquet_archive::HistoryReader), which also reads changes whose
//! file the archive writer has not committed yet, and waits until the writer has taken every
//! change queued before the request. So a read returns every change acknowledged before the
//! request arrived.
//!
//! # Layout
//! - `params`: parsing and checking the query parameters, and the page token.
//! - `handlers`: running the reads on a blocking thread and building the JSON documents.

mod handlers;
mod params;

pub use handlers::{changes_document, past_document};
pub use params::PastDocument;
