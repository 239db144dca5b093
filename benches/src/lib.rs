//! Benchmark tools for shadowflow. The measured figures, with their commands and machine, are in
//! `BENCHMARKS.md` at the workspace root.
//!
//! The binaries are thin shells over this library:
//! - `load` drives an MQTT broker like a fleet of devices: open or closed loop, QoS 0 or 1,
//!   latency from a report to its `/update/accepted` and `/update/delta`. `sweep` runs `load` at
//!   rising rates to find the highest one whose delta p99 stays under a bound. `relay` is the
//!   limit to compare with: the embedded broker relaying the same messages to a subscriber that
//!   does nothing.
//! - `monolith` is the classic design shadowflow replaces: one locked map of shadows and one
//!   SQLite commit per update, behind the same MQTT topics.
//! - `pipeline` pushes updates straight into the dataflow, without a broker. `memory` measures
//!   resident memory per shadow. `archive` times the Parquet history archive on a real data set.
//!   `views` measures the cost of continuous views.
//! - `recovery` writes a data folder the way the write-ahead log and checkpoints do, then times
//!   `pipeline::durable::recover` on it; `sync-latency` times append plus `fdatasync`.
//! - Scripts beside this crate's `Cargo.toml`: `e2e.sh` (end to end with its baselines),
//!   `durability.sh` (each durability mode) and `replay.sh` (a full data-set replay).
//! - `benches/micro.rs`: criterion micro-benchmarks of the shadow functions and of Parquet
//!   encoding (`cargo bench -p shadowflow-benches --bench micro`).
//!
//! # Layout
//! - [`load`]: the load generator: its options, client tokens, connections and report.
//! - [`recovery`]: the synthetic sensor fleet, the data-folder writer and the timed recovery.
//! - [`pipeline`]: the dataflow without a broker: update throughput and input-to-delta latency.
//! - [`latency`]: summary of an HDR latency histogram.
//! - [`monolith`]: the reference program of the classic design: one locked map of shadows and
//!   one SQLite commit per update, behind the same MQTT topics.
//! - [`memory`]: the state, counting allocator and `/proc` readings of the `memory` tool.
//! - [`outputs`]: dataflow outputs that count applied updates and drop every message.
//! - [`process`]: peak resident memory of this process and page-cache eviction of files.
//! - [`archive`]: history rows of a real data set, the timed archive write and its read-back.
//!
//! # Notes
//! - Every tool here talks only to loopback addresses: `load` rejects a broker address that
//!   is not a loopback address.
//! - Load generator and service share the machine's cores, so a figure measured on one machine
//!   includes the generator's own CPU use.
#![warn(missing_docs)]

pub mod archive;
pub mod latency;
pub mod load;
pub mod memory;
pub mod monolith;
pub mod outputs;
pub mod pipeline;
pub mod process;
pub mod recovery;
