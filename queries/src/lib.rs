//! The HTTP API: AWS IoT Device Shadow REST routes over the shadows the dataflow maintains.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /things/{thing}/shadow[?name=]` | returns the shadow document with its delta |
//! | `GET /things/{thing}/shadow?version=N` or `?at=T` `[&name=]` | returns the document at a past version or time, from the history archive |
//! | `GET /things/{thing}/shadow/history[?name=&from=&to=&limit=&nextToken=]` | returns a page of the shadow's accepted changes, oldest first |
//! | `POST /things/{thing}/shadow[?name=]` | applies an update request; returns the accepted document |
//! | `DELETE /things/{thing}/shadow[?name=]` | deletes the shadow; returns its last version |
//! | `GET /healthz` | returns `{"status":"ok"}` while the service runs |
//!
//! Errors use the AWS error document `{"code","message","timestamp"}` with the same HTTP
//! status as `code`.
//!
//! # Layout
//! - `routes`: the warp filters and handlers.
//! - `body`: reading request bodies with a size cap.
//! - `history`: the history routes, which read the Parquet archive.
#![warn(missing_docs)]

mod body;
pub mod fleet;
mod history;
mod routes;

pub use routes::{ApiState, routes, serve};
