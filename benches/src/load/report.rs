//! The result of a load run: totals over all connections, as one JSON line and one human line.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{LoadConfig, LoopMode, Target};
use super::connection::{ConnectionStats, Phases};
use crate::latency::{DeltaLatencySummary, LatencySummary, format_ms, new_histogram};

/// Totals of one run. Serialised as the JSON line that `durability.sh` reads; the numeric
/// fields are top-level so that a shell script can pick them out.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Always `"load"`, which marks the line as a load report among other benchmarks' lines.
    pub bench: &'static str,

    /// The `--label` text.
    pub label: String,

    /// Pacing of the run.
    pub mode: LoopMode,

    /// Kind of server that replied to the updates.
    pub target: Target,

    /// QoS of the updates and subscriptions.
    pub qos: u8,

    /// Simulated devices.
    pub devices: u32,

    /// MQTT connections.
    pub connections: u32,

    /// Closed loop: updates in flight per connection.
    pub in_flight: Option<u32>,

    /// Open loop: target rate in updates per second.
    pub target_rate: Option<u32>,

    /// Warm-up time in seconds.
    pub warmup_secs: u64,

    /// Length of the measured window in seconds: `--duration-secs`, or less when
    /// `--max-requests` ended sending early.
    pub measured_secs: f64,

    /// Updates published, warm-up included.
    pub sent: u64,

    /// Updates published after the warm-up.
    pub sent_measured: u64,

    /// Accepted replies, warm-up included.
    pub accepted: u64,

    /// Accepted replies that arrived in the measured window.
    pub accepted_in_window: u64,

    /// Accepted replies per second in the measured window.
    pub throughput_per_s: f64,

    /// Rejected replies.
    pub rejected: u64,

    /// Rejected replies by error code.
    pub rejected_by_code: BTreeMap<u16, u64>,

    /// Updates without any reply by the end of the drain time.
    pub missing: u64,

    /// `/update/delta` messages matched to an update.
    pub deltas: u64,

    /// Shadow target: updates without their delta by the end of the drain time.
    pub missing_delta: u64,

    /// Replies whose client token no connection of this run issued.
    pub unexpected: u64,

    /// Second replies to an update that already had a reply.
    pub duplicate: u64,

    /// Connections that ended with an error.
    pub connection_errors: u64,

    /// The first connection error, if any.
    pub first_error: Option<String>,

    /// Latency from the (scheduled) send of an update to its accepted reply, for updates sent
    /// after the warm-up.
    #[serde(flatten)]
    pub latency: LatencySummary,

    /// Latency from the (scheduled) send of an update to its delta, for updates sent after
    /// the warm-up; all zeros for the relay target.
    #[serde(flatten)]
    pub delta_latency: DeltaLatencySummary,

    /// Open loop: median of how late updates left after their scheduled time.
    pub send_lag_p50_us: u64,

    /// Open loop: 99th percentile of how late updates left after their scheduled time.
    pub send_lag_p99_us: u64,

    /// Open loop: the latest any update left after its scheduled time.
    pub send_lag_max_us: u64,

    /// CPU time the generator used for the whole run, user plus system, in seconds.
    pub generator_cpu_secs: f64,
}

impl LoadReport {
    /// Adds up the stats of every connection. `missing` is the number of updates still
    /// without a reply, and without a delta, after the drain.
    pub fn new(
        config: &LoadConfig,
        phases: Phases,
        stats: &[ConnectionStats],
        missing: (u64, u64),
        generator_cpu_secs: f64,
    ) -> Self {
        let mut latency = new_histogram();
        let mut delta_latency = new_histogram();
        let mut send_lag = new_histogram();
        let mut rejected_by_code = BTreeMap::new();
        for connection in stats {
            latency
                .add(&connection.latency)
                .expect("every histogram has the same bounds");
            delta_latency
                .add(&connection.delta_latency)
                .expect("every histogram has the same bounds");
            send_lag
                .add(&connection.send_lag)
                .expect("every histogram has the same bounds");
            for (code, count) in &connection.rejected {
                *rejected_by_code.entry(*code).or_default() += count;
            }
        }
        let sum = |field: fn(&ConnectionStats) -> u64| stats.iter().map(field).sum::<u64>();

        // The window ends at the end of sending, or earlier at the last accepted reply when
        // the budget of --max-requests ran out before.
        let last_accepted_us = stats.iter().map(|s| s.last_accepted_us).max().unwrap_or(0);
        let window_end_us = if sum(|s| s.sent) >= config.max_requests {
            last_accepted_us.min(phases.send_until_us)
        } else {
            phases.send_until_us
        };
        let measured_secs =
            window_end_us.saturating_sub(phases.measure_from_us) as f64 / 1_000_000.0;
        let accepted_in_window = sum(|s| s.accepted_in_window);
        let errors: Vec<&String> = stats.iter().filter_map(|s| s.error.as_ref()).collect();

        LoadReport {
            bench: "load",
            label: config.label.clone(),
            mode: config.mode,
            target: config.target,
            qos: config.qos,
            devices: config.devices,
            connections: config.connections,
            in_flight: (config.mode == LoopMode::Closed).then_some(config.in_flight),
            target_rate: (config.mode == LoopMode::Open).then_some(config.rate),
            warmup_secs: config.warmup_secs,
            measured_secs,
            sent: sum(|s| s.sent),
            sent_measured: sum(|s| s.sent_measured),
            accepted: sum(|s| s.accepted),
            accepted_in_window,
            throughput_per_s: if measured_secs > 0.0 {
                accepted_in_window as f64 / measured_secs
            } else {
                0.0
            },
            rejected: rejected_by_code.values().sum(),
            rejected_by_code,
            missing: missing.0,
            deltas: sum(|s| s.deltas),
            missing_delta: missing.1,
            unexpected: sum(|s| s.unexpected),
            duplicate: sum(|s| s.duplicate),
            connection_errors: errors.len() as u64,
            first_error: errors.first().map(|error| (*error).clone()),
            latency: LatencySummary::of(&latency),
            delta_latency: LatencySummary::of(&delta_latency).into(),
            send_lag_p50_us: LatencySummary::of(&send_lag).p50_us,
            send_lag_p99_us: LatencySummary::of(&send_lag).p99_us,
            send_lag_max_us: send_lag.max(),
            generator_cpu_secs,
        }
    }

    /// Returns the report as one JSON line.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("the report has only string keys and finite numbers")
    }

    /// Returns a one-line summary for people.
    pub fn to_human_line(&self) -> String {
        let pacing = match self.mode {
            LoopMode::Closed => format!(
                "closed loop, {} in flight per connection",
                self.in_flight.unwrap_or(0)
            ),
            LoopMode::Open => format!(
                "open loop at {} updates/s (send lag p99 {})",
                self.target_rate.unwrap_or(0),
                format_ms(self.send_lag_p99_us)
            ),
        };
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.label)
        };
        let mut line = format!(
            "{label}{pacing}, {} devices over {} connections, {:.1} s after {} s warm-up: \
             {:.0} accepted/s at QoS {}; ack latency p50 {}, p99 {}, p99.9 {}, max {}; {} \
             rejected, {} missing",
            self.devices,
            self.connections,
            self.measured_secs,
            self.warmup_secs,
            self.throughput_per_s,
            self.qos,
            format_ms(self.latency.p50_us),
            format_ms(self.latency.p99_us),
            format_ms(self.latency.p999_us),
            format_ms(self.latency.max_us),
            self.rejected,
            self.missing,
        );
        if self.target == Target::Shadow && self.deltas + self.missing_delta > 0 {
            line.push_str(&format!(
                "; delta latency p50 {}, p99 {}, p99.9 {}, max {}; {} missing deltas",
                format_ms(self.delta_latency.delta_p50_us),
                format_ms(self.delta_latency.delta_p99_us),
                format_ms(self.delta_latency.delta_p999_us),
                format_ms(self.delta_latency.delta_max_us),
                self.missing_delta,
            ));
        }
        if self.unexpected + self.duplicate > 0 {
            line.push_str(&format!(
                ", {} unexpected, {} duplicate replies",
                self.unexpected, self.duplicate
            ));
        }
        if let Some(error) = &self.first_error {
            line.push_str(&format!(
                "; {} connections failed, first: {error}",
                self.connection_errors
            ));
        }
        line
    }
}
