//! Options of the monolith, as its command-line flags, with their defaults and checks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ingest::mqtt::MqttClientConfig;

/// Default capacity of each handler thread's queue of received updates.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Prefix of the monolith's MQTT client ids.
pub const CLIENT_ID_PREFIX: &str = "monolith";

/// SQLite's `PRAGMA synchronous` in WAL mode: when a commit returns, and what survives a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    /// Every commit syncs the write-ahead log before it returns, so an acknowledged update
    /// survives a power loss. The counterpart of shadowflow's `--durability sync`.
    Full,
    /// Commits write the log without syncing it, and only checkpoints sync. An acknowledged
    /// update survives a crash of the process, but not a power loss.
    Normal,
    /// SQLite never syncs: the operating system decides when the data reaches the disk.
    Off,
}

impl Synchronous {
    /// Returns the value of `PRAGMA synchronous`.
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
            Synchronous::Off => "OFF",
        }
    }
}

/// Flags of `monolith`.
#[derive(Clone, Debug, Args)]
pub struct MonolithConfig {
    /// Connects to a running MQTT broker at HOST:PORT (or mqtt://HOST:PORT); only loopback
    /// addresses are accepted.
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "embedded",
        required_unless_present = "embedded"
    )]
    pub broker: Option<String>,

    /// Starts shadowflow's embedded MQTT broker in this process, listening on HOST:PORT (port 0
    /// picks a free port); only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR")]
    pub embedded: Option<String>,

    /// Handler threads that apply updates; each thing is always handled by the same thread.
    /// Default: the number of cores.
    #[arg(long, value_name = "N", default_value_t = default_threads())]
    pub threads: usize,

    /// MQTT connections that publish responses; each thing always uses the same one.
    /// Default: the service's default, so both programs publish over as many connections.
    #[arg(long, value_name = "N", default_value_t = default_publisher_connections())]
    pub publisher_connections: usize,

    /// SQLite's synchronous setting: full syncs every commit before the update is acknowledged.
    #[arg(long, value_enum, default_value_t = Synchronous::Full)]
    pub synchronous: Synchronous,

    /// SQLite database file; shadows already in it are loaded at start. Default: a new file in
    /// a temporary folder that is removed at exit.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// With --embedded, hands responses to the embedded broker inside the process instead of
    /// publishing them over loopback MQTT connections, as `shadowflow serve` does with its
    /// embedded broker by default. Ignored with --broker.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub in_process_responses: bool,

    /// Received updates each handler thread may have queued before the receiving connection
    /// waits.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,
}

/// The broker the monolith uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerMode {
    /// A running broker at this address.
    Connect(SocketAddr),
    /// The embedded broker, started in this process on this address.
    Embedded(SocketAddr),
}

/// An invalid flag.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonolithConfigError {
    /// Neither `--broker` nor `--embedded` was given.
    #[error("no broker given: pass --broker HOST:PORT or --embedded HOST:PORT")]
    NoBroker,

    /// The address does not resolve.
    #[error("invalid --{flag} address {address:?}: {reason}")]
    InvalidAddress {
        /// The flag's name.
        flag: &'static str,
        /// The address as given.
        address: String,
        /// Reason the lookup failed.
        reason: String,
    },

    /// The address is not on this machine.
    #[error(
        "--{flag} address {address} is not a loopback address; the monolith only uses a broker \
         on this machine, such as 127.0.0.1:1883"
    )]
    NotLoopback {
        /// The flag's name.
        flag: &'static str,
        /// The resolved address.
        address: SocketAddr,
    },

    /// A count that must be positive is 0.
    #[error("invalid --{flag} 0: pass 1 or more")]
    Zero {
        /// The flag's name.
        flag: &'static str,
    },
}

impl MonolithConfig {
    /// Returns the defaults with the embedded broker on `listen`.
    pub fn embedded(listen: &str) -> Self {
        MonolithConfig {
            broker: None,
            embedded: Some(listen.to_owned()),
            threads: default_threads(),
            publisher_connections: default_publisher_connections(),
            synchronous: Synchronous::Full,
            db: None,
            in_process_responses: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }

    /// Checks the flags and resolves the broker address.
    ///
    /// # Errors
    /// Returns a [`MonolithConfigError`] naming the flag that is invalid.
    pub fn validate(&self) -> Result<BrokerMode, MonolithConfigError> {
        for (flag, value) in [
            ("threads", self.threads),
            ("publisher-connections", self.publisher_connections),
            ("queue-capacity", self.queue_capacity),
        ] {
            if value == 0 {
                return Err(MonolithConfigError::Zero { flag });
            }
        }
        match (&self.broker, &self.embedded) {
            (Some(address), _) => resolve_loopback("broker", address).map(BrokerMode::Connect),
            (None, Some(address)) => {
                resolve_loopback("embedded", address).map(BrokerMode::Embedded)
            }
            (None, None) => Err(MonolithConfigError::NoBroker),
        }
    }

    /// Returns the MQTT client settings: the service's defaults (TCP_NODELAY, an in-flight
    /// window of 1,000 QoS 1 publishes) under the monolith's client id prefix.
    pub fn mqtt_client(&self) -> MqttClientConfig {
        MqttClientConfig {
            client_id: CLIENT_ID_PREFIX.to_owned(),
            publisher_connections: self.publisher_connections,
            ..MqttClientConfig::default()
        }
    }
}

/// Returns the number of cores, or 1 when it cannot be read.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Returns the service's default number of publisher connections.
fn default_publisher_connections() -> usize {
    MqttClientConfig::default().publisher_connections
}

/// Resolves `HOST:PORT` or `mqtt://HOST:PORT` and checks that it is a loopback address.
fn resolve_loopback(flag: &'static str, address: &str) -> Result<SocketAddr, MonolithConfigError> {
    let host_port = address.strip_prefix("mqtt://").unwrap_or(address);
    let invalid = |reason: String| MonolithConfigError::InvalidAddress {
        flag,
        address: address.to_owned(),
        reason,
    };
    let resolved = host_port
        .to_socket_addrs()
        .map_err(|error| invalid(error.to_string()))?
        .next()
        .ok_or_else(|| invalid("the name resolves to no address".to_owned()))?;
    if !resolved.ip().is_loopback() {
        return Err(MonolithConfigError::NotLoopback {
            flag,
            address: resolved,
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: MonolithConfig,
    }

    fn parse(args: &[&str]) -> Result<MonolithConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("monolith").chain(args.iter().copied()))
            .map(|cli| cli.config)
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let config = parse(&["--embedded", "127.0.0.1:0"]).expect("flags parse");
        assert_eq!(config.synchronous, Synchronous::Full);
        assert_eq!(
            config.publisher_connections,
            default_publisher_connections()
        );
        assert!(config.threads >= 1);
        let mode = config.validate().expect("defaults validate");
        assert_eq!(
            mode,
            BrokerMode::Embedded("127.0.0.1:0".parse().expect("address"))
        );
    }

    #[test]
    fn broker_url_prefix_is_accepted() {
        let config = parse(&["--broker", "mqtt://127.0.0.1:1999"]).expect("flags parse");
        assert_eq!(
            config.validate().expect("valid"),
            BrokerMode::Connect("127.0.0.1:1999".parse().expect("address"))
        );
    }

    #[test]
    fn broker_is_required() {
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn broker_and_embedded_conflict() {
        assert!(parse(&["--broker", "127.0.0.1:1", "--embedded", "127.0.0.1:0"]).is_err());
    }

    #[test]
    fn non_loopback_broker_is_rejected() {
        let config = parse(&["--broker", "192.0.2.1:1883"]).expect("flags parse");
        assert!(matches!(
            config.validate(),
            Err(MonolithConfigError::NotLoopback { flag: "broker", .. })
        ));
    }

    #[test]
    fn zero_threads_is_rejected() {
        let config = parse(&["--embedded", "127.0.0.1:0", "--threads", "0"]).expect("flags parse");
        assert!(matches!(
            config.validate(),
            Err(MonolithConfigError::Zero { flag: "threads" })
        ));
    }
}
