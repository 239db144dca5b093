//! `sweep`: open-loop `load` runs at rising rates against one broker, to find the highest
//! rate that a shadow service (or a relay) sustains within a latency bound.
//!
//! Each point is one open-loop run of `shadowflow_benches::load` at the next rate, with the
//! warm-up and measured time of the flags. A point passes when no update is missing its
//! reply or delta, none was rejected, no connection failed, the accepted rate is within 2 %
//! of the target, and the p99 latency stays under `--p99-limit-ms`. The latency checked is
//! report-to-delta for a shadow service and report-to-relayed-copy for `--target relay`.
//! The sweep stops at the first point that fails, after the highest rate, or when the next
//! point would end after `--max-total-secs`. It prints one JSON line per point (the `load`
//! report plus `passed`) and a summary line with the highest passing rate.

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use shadowflow_benches::load::{self, LoadConfig, LoadReport, LoopMode, Target};

/// Open-loop rate sweep: runs `load --mode open` at RATE, RATE+STEP, ... and reports the
/// highest rate whose p99 latency stays under the limit with nothing missing.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: LoadConfig,

    /// First rate of the sweep, in updates per second.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10_000)]
    start_rate: u32,

    /// Increase of the rate from one point to the next, in updates per second.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 10_000)]
    step: u32,

    /// Highest rate to try, in updates per second.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 150_000)]
    max_rate: u32,

    /// Largest p99 latency of a passing point, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10.0)]
    p99_limit_ms: f64,

    /// Upper bound on the sweep's wall time, in seconds; no point starts that could end
    /// after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    max_total_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let broker = cli.config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.config.threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;

    let started = Instant::now();
    // Each point takes its warm-up and measured time, at most its drain time and a margin
    // for connecting and setting desired states.
    let point_bound_secs =
        cli.config.warmup_secs + cli.config.duration_secs + cli.config.drain_secs + 5;
    let mut best: Option<u32> = None;
    let mut points = 0;
    let mut rate = cli.start_rate;
    while rate <= cli.max_rate {
        if started.elapsed().as_secs() + point_bound_secs > cli.max_total_secs {
            eprintln!("sweep: stopping before {rate}/s, which could end after --max-total-secs");
            break;
        }
        let mut config = cli.config.clone();
        config.mode = LoopMode::Open;
        config.rate = rate;
        config.label = format!("{} sweep {rate}/s", cli.config.label)
            .trim()
            .to_owned();
        let report = runtime
            .block_on(load::run(&config, broker))
            .with_context(|| format!("running the sweep point at {rate} updates/s"))?;
        points += 1;
        let passed = passes(&report, rate, cli.p99_limit_ms);
        let mut line = serde_json::to_value(&report).context("serialising the report")?;
        line["passed"] = json!(passed);
        println!("{line}");
        eprintln!(
            "{} -> {}",
            report.to_human_line(),
            if passed { "pass" } else { "fail" }
        );
        if !passed {
            break;
        }
        best = Some(rate);
        rate = rate.saturating_add(cli.step.max(1));
    }

    let summary = json!({
        "bench": "sweep",
        "label": cli.config.label,
        "target": cli.config.target,
        "qos": cli.config.qos,
        "p99_limit_ms": cli.p99_limit_ms,
        "points": points,
        "max_passing_rate": best,
        "elapsed_secs": started.elapsed().as_secs_f64(),
    });
    println!("{summary}");
    match best {
        Some(rate) => eprintln!("sweep: highest passing rate {rate} updates/s"),
        None => eprintln!("sweep: no rate passed"),
    }
    Ok(())
}

/// Returns whether a point at `rate` passes: nothing missing, rejected or failed, at least
/// 98 % of the target rate accepted, and a p99 latency under `p99_limit_ms`.
fn passes(report: &LoadReport, rate: u32, p99_limit_ms: f64) -> bool {
    let p99_us = match report.target {
        Target::Shadow => report.delta_latency.delta_p99_us,
        Target::Relay => report.latency.p99_us,
    };
    report.missing == 0
        && report.missing_delta == 0
        && report.rejected == 0
        && report.connection_errors == 0
        && report.throughput_per_s >= 0.98 * f64::from(rate)
        && (p99_us as f64) < p99_limit_ms * 1000.0
}
