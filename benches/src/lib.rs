//! Benchmark tools for shadowflow: an MQTT load generator and a recovery benchmark.
//!
//! The binaries are thin shells over this library. `load` drives `shadowflow serve` over MQTT
//! like a fleet of devices and measures accepted updates per second and the latency from a
//! report to its `/update/accepted`. `recovery` writes a data folder the way the service's
//! write-ahead log and checkpoints do, then times `pipeline::durable::recover` on it.
//! `durability.sh`, beside this crate's `Cargo.toml`, runs `load` against the service in each
//! durability mode. The measured figures are in `BENCHMARKS.md` at the workspace root.
//!
//! # Layout
//! - [`load`]: the load generator: its options, client tokens, connections and report.
//! - [`recovery`]: the synthetic sensor fleet, the data-folder writer and the timed recovery.
//! - [`latency`]: summary of an HDR latency histogram.
//! - [`process`]: peak resident memory of this process and page-cache eviction of files.
//!
//! # Notes
//! - Every tool here talks only to loopback addresses: `load` rejects a broker address that
//!   is not a loopback address.
//! - Load generator and service share the machine's cores, so a figure measured on one machine
//!   includes the generator's own CPU use.
#![warn(missing_docs)]

pub mod latency;
pub mod load;
pub mod process;
pub mod recovery;
