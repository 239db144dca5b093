//! `pipeline`: the shadow dataflow without a broker. Reports updates per second and the latency
//! from an update's submission to the delivery of its `/update/delta` message.
//!
//! Prints the report as one JSON line on stdout and one line for people on stderr. See
//! `shadowflow_benches::pipeline` for what is measured, and `--help` for the flags.
//!
//! ```sh
//! cargo build --release -p shadowflow-benches --bin pipeline
//! target/release/pipeline --workers 2 --things 1000000 --updates 2000000
//! target/release/pipeline --workers 2 --things 10000 --pacing open --rate 50000 --archive
//! ```

use clap::Parser;
use shadowflow_benches::pipeline::{self, PipelineConfig};

/// mimalloc, as in the service: both allocate per update, so the allocator is part of the figure.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Drives the shadow dataflow in this process with sensor reports and times their deltas.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: PipelineConfig,
}

fn main() -> anyhow::Result<()> {
    let config = Cli::parse().config;
    let report = pipeline::run(&config)?;
    println!("{}", report.to_json_line());
    eprintln!("{}", report.to_human_line());
    Ok(())
}
