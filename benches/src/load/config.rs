//! Options of one load run, as `load`'s command-line flags, with their defaults and checks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;

/// Default broker address: the embedded broker's default listen address.
pub const DEFAULT_BROKER: &str = "127.0.0.1:1883";

/// Default number of simulated devices.
pub const DEFAULT_DEVICES: u32 = 1000;

/// Default number of MQTT connections the devices share.
pub const DEFAULT_CONNECTIONS: u32 = 8;

/// Default number of updates each connection keeps waiting for a reply in closed-loop mode.
pub const DEFAULT_IN_FLIGHT: u32 = 32;

/// Default total send rate of open-loop mode, in updates per second.
pub const DEFAULT_RATE: u32 = 10_000;

/// Default warm-up time, in seconds, whose replies are not measured.
pub const DEFAULT_WARMUP_SECS: u64 = 5;

/// Default measured time, in seconds.
pub const DEFAULT_DURATION_SECS: u64 = 30;

/// Default maximum number of updates sent in one run.
pub const DEFAULT_MAX_REQUESTS: u64 = 10_000_000;

/// Default time, in seconds, to wait for the last replies after sending stops.
pub const DEFAULT_DRAIN_SECS: u64 = 10;

/// Largest `--rate`: one update per microsecond of schedule.
const MAX_RATE: u32 = 1_000_000;

/// Pacing of the generator's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoopMode {
    /// Each connection keeps `--in-flight` updates waiting for a reply and sends the next
    /// update when a reply arrives. This finds the maximum throughput, and its latency
    /// includes queueing behind the connection's own updates.
    Closed,
    /// Updates leave on a fixed schedule of `--rate` per second, whatever the replies do.
    /// Latency counts from the scheduled send time, so a stalled service or generator shows
    /// up in the latency instead of silently lowering the rate.
    Open,
}

/// Kind of server that replies to the generator's updates, which decides the messages that count
/// as replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `shadowflow serve` (or another shadow service). Before the clock starts, each device
    /// sets a desired value that no report contains, so every accepted report also produces
    /// an `/update/delta`. The generator times both `/update/accepted` and `/update/delta`.
    Shadow,
    /// A bare broker with a subscriber such as the `relay` bin. Each connection subscribes to
    /// its own things' `/update` topics, so the broker relays every update back to its sender,
    /// and that relayed copy is the reply. There is no delta.
    Relay,
}

/// Timing of open-loop updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pacer {
    /// One thread sleeps, then spins to each scheduled time, and sends every update within
    /// tens of microseconds of it. Its wake-ups cost about 2.5 times the generator's CPU per
    /// update of `tokio`, CPU that broker and service then lack.
    Thread,
    /// Each connection's task waits on tokio's timer, whose resolution is 1 ms, so updates
    /// leave up to about 1 ms late. Cheaper: for high rates with a latency bound well above
    /// 1 ms, such as a rate sweep.
    Tokio,
}

/// Flags of `load`.
#[derive(Clone, Debug, Args)]
pub struct LoadConfig {
    /// Broker to connect to, as HOST:PORT or mqtt://HOST:PORT; only loopback addresses are
    /// accepted.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_BROKER)]
    pub broker: String,

    /// Number of simulated devices; device N updates the shadow of thing `load-N`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DEVICES)]
    pub devices: u32,

    /// Number of MQTT connections; device n uses connection n % CONNECTIONS.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: u32,

    /// Pacing: closed (fixed number of updates in flight) or open (fixed rate).
    #[arg(long, value_enum, default_value_t = LoopMode::Closed)]
    pub mode: LoopMode,

    /// Kind of server that replies: a shadow service, or a bare broker that relays the updates.
    #[arg(long, value_enum, default_value_t = Target::Shadow)]
    pub target: Target,

    /// Shadow target: whether each device first sets a desired value that its reports never
    /// contain, so that every report also produces an `/update/delta` that the generator
    /// times. Pass false for reports that produce no delta, as before this option existed.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub deltas: bool,

    /// QoS of the updates and of the generator's subscriptions: 0 or 1.
    #[arg(long, value_name = "QOS", default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,

    /// Updates each connection keeps waiting for a reply in closed-loop mode.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_IN_FLIGHT)]
    pub in_flight: u32,

    /// Total send rate of open-loop mode, in updates per second over all connections.
    #[arg(long, value_name = "PER_SECOND", default_value_t = DEFAULT_RATE)]
    pub rate: u32,

    /// Seconds of load before measuring starts; their replies are counted as warm-up only.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WARMUP_SECS)]
    pub warmup_secs: u64,

    /// Seconds of measured load after the warm-up.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DURATION_SECS)]
    pub duration_secs: u64,

    /// Maximum number of updates to send, warm-up included; sending stops early when it is
    /// reached.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REQUESTS)]
    pub max_requests: u64,

    /// Seconds to wait for outstanding replies after sending stops; replies still missing
    /// then are reported as missing.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DRAIN_SECS)]
    pub drain_secs: u64,

    /// Timing of open-loop updates: `thread` (precise) or `tokio` (cheaper, up to 1 ms late).
    #[arg(long, value_enum, default_value_t = Pacer::Thread)]
    pub pacer: Pacer,

    /// Sets TCP_NODELAY on the generator's sockets, so Nagle's algorithm holds back no small
    /// packet on the generator's side. Pass false to measure with Nagle's algorithm.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tcp_nodelay: bool,

    /// Tokio worker threads of the generator; 1 runs everything on one thread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// Free text copied into the JSON report, such as the service's durability mode.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
}

/// An invalid combination of flags.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadConfigError {
    /// The broker address does not resolve.
    #[error("invalid broker address {address:?}: {reason}")]
    InvalidBroker {
        /// The address as given.
        address: String,
        /// Reason the lookup failed.
        reason: String,
    },

    /// The broker address is not on this machine.
    #[error(
        "broker address {address} is not a loopback address; load only targets a broker on this \
         machine, such as 127.0.0.1:1883"
    )]
    NotLoopback {
        /// The resolved address.
        address: SocketAddr,
    },

    /// A count that must be positive is 0.
    #[error("invalid --{flag} 0: pass 1 or more")]
    Zero {
        /// The flag's name.
        flag: &'static str,
    },

    /// More connections than devices would leave connections without devices.
    #[error("invalid --connections {connections}: it must not exceed --devices {devices}")]
    MoreConnectionsThanDevices {
        /// Connections requested.
        connections: u32,
        /// Devices requested.
        devices: u32,
    },

    /// The open-loop rate is above what the scheduler can pace.
    #[error("invalid --rate {rate}: the maximum is {MAX_RATE} updates per second")]
    RateTooHigh {
        /// Rate requested.
        rate: u32,
    },
}

impl LoadConfig {
    /// Checks the flags and resolves the broker address.
    ///
    /// # Errors
    /// Returns a [`LoadConfigError`] naming the flag that is invalid.
    pub fn validate(&self) -> Result<SocketAddr, LoadConfigError> {
        for (flag, value) in [
            ("devices", u64::from(self.devices)),
            ("connections", u64::from(self.connections)),
            ("in-flight", u64::from(self.in_flight)),
            ("rate", u64::from(self.rate)),
            ("duration-secs", self.duration_secs),
            ("max-requests", self.max_requests),
            ("threads", self.threads as u64),
        ] {
            if value == 0 {
                return Err(LoadConfigError::Zero { flag });
            }
        }
        if self.connections > self.devices {
            return Err(LoadConfigError::MoreConnectionsThanDevices {
                connections: self.connections,
                devices: self.devices,
            });
        }
        if self.rate > MAX_RATE {
            return Err(LoadConfigError::RateTooHigh { rate: self.rate });
        }
        resolve_loopback(&self.broker)
    }

    /// Returns the MQTT QoS of `--qos`.
    pub fn mqtt_qos(&self) -> rumqttc::QoS {
        if self.qos == 0 {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        }
    }

    /// Returns the warm-up time.
    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    /// Returns the measured time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    /// Returns the time to wait for the last replies.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

/// Resolves `HOST:PORT` or `mqtt://HOST:PORT` and checks that it is a loopback address.
fn resolve_loopback(broker: &str) -> Result<SocketAddr, LoadConfigError> {
    let host_port = broker.strip_prefix("mqtt://").unwrap_or(broker);
    let invalid = |reason: String| LoadConfigError::InvalidBroker {
        address: broker.to_owned(),
        reason,
    };
    let address = host_port
        .to_socket_addrs()
        .map_err(|error| invalid(error.to_string()))?
        .next()
        .ok_or_else(|| invalid("the name resolves to no address".to_owned()))?;
    if !address.ip().is_loopback() {
        return Err(LoadConfigError::NotLoopback { address });
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: LoadConfig,
    }

    fn parse(args: &[&str]) -> LoadConfig {
        Cli::parse_from(std::iter::once("load").chain(args.iter().copied())).config
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]);
        assert_eq!(config.devices, DEFAULT_DEVICES);
        assert_eq!(config.mode, LoopMode::Closed);
        assert_eq!(config.target, Target::Shadow);
        assert_eq!(config.mqtt_qos(), rumqttc::QoS::AtLeastOnce);
        let address = config.validate().expect("defaults validate");
        assert_eq!(address, DEFAULT_BROKER.parse().expect("address"));
    }

    #[test]
    fn mqtt_url_prefix_is_accepted() {
        let config = parse(&["--broker", "mqtt://127.0.0.1:1999"]);
        assert_eq!(config.validate().expect("valid").port(), 1999);
    }

    #[test]
    fn qos_above_one_is_rejected() {
        let parsed = Cli::try_parse_from(["load", "--qos", "2"]);
        assert!(parsed.is_err());
        assert_eq!(parse(&["--qos", "0"]).mqtt_qos(), rumqttc::QoS::AtMostOnce);
    }

    #[test]
    fn non_loopback_broker_is_rejected() {
        let config = parse(&["--broker", "192.0.2.1:1883"]);
        assert!(matches!(
            config.validate(),
            Err(LoadConfigError::NotLoopback { .. })
        ));
    }

    #[test]
    fn zero_devices_is_rejected() {
        let config = parse(&["--devices", "0"]);
        assert!(matches!(
            config.validate(),
            Err(LoadConfigError::Zero { flag: "devices" })
        ));
    }

    #[test]
    fn more_connections_than_devices_is_rejected() {
        let config = parse(&["--devices", "4", "--connections", "8"]);
        assert!(matches!(
            config.validate(),
            Err(LoadConfigError::MoreConnectionsThanDevices { .. })
        ));
    }
}
