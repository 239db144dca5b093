//! The monolith: the classic design of a shadow service, as a reference for shadowflow's
//! benchmarks.
//!
//! One process keeps every shadow in one `HashMap` behind one `Mutex`, and writes each accepted
//! update as one row of a SQLite table, in its own transaction, while it holds that lock. It
//! uses the same MQTT topics as shadowflow: requests on classic and named `/update`, responses
//! on `/update/accepted` or `/update/rejected`, `/update/delta` and `/update/documents` at
//! QoS 1. It applies updates with shadowflow's own functions from `pipeline::shadow`. So the
//! same load generator runs unchanged against both, and a comparison measures the design (a
//! global lock and one synchronous commit per update, against the dataflow with group commit),
//! not the JSON code.
//!
//! # Layout
//! - `config`: [`MonolithConfig`], the command-line flags, and [`Synchronous`].
//! - `store`: [`ShadowStore`], the locked map and its SQLite [`Database`].
//! - `handler`: [`handle_update`], one request in, its response messages out.
//! - `publish`: [`Responder`], over MQTT publisher connections or into the embedded broker.
//! - `receive`: the connection that subscribes to the update topics and queues requests.
//! - `server`: [`Monolith`], the broker, the MQTT connections, the handler threads and
//!   shutdown.
//!
//! # Notes
//! - Only `/update` is served: `/get` and `/delete` requests get no response, and a shadow is
//!   never deleted.
//! - With `--synchronous full` (the default) every update waits for SQLite to sync its commit
//!   before its response is published, like shadowflow's `--durability sync`. shadowflow syncs
//!   once per batch of updates, while this program syncs once per update, under the lock.
//! - There is no fleet query, view, HTTP API or history archive.
//!
//! # Example
//!
//! ```text
//! monolith --embedded 127.0.0.1:1884 --synchronous full
//! load --broker 127.0.0.1:1884 --devices 1000 --connections 8 --mode closed
//! ```

mod config;
mod handler;
mod publish;
mod receive;
mod server;
mod store;

pub use config::{BrokerMode, MonolithConfig, MonolithConfigError, Synchronous};
pub use handler::{HandlerCounts, Response, UpdateJob, handle_update};
pub use publish::Responder;
pub use server::{Monolith, Summary};
pub use store::{Applied, Database, LockTimes, ShadowStore};

#[cfg(test)]
mod tests;
