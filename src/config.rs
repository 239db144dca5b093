//! Settings of `shadowflow serve`: a TOML file (`--config`) with command-line flags on top.
//!
//! ```toml
//! workers = 2
//! data_dir = "./data"
//!
//! [embedded_broker]
//! listen = "127.0.0.1:1883"
//!
//! [mqtt]
//! # broker = "mqtt://127.0.0.1:1883"  # use a running broker instead of the embedded one
//!
//! [http]
//! listen = "127.0.0.1:8080"
//!
//! [limits]
//! max_state_bytes = 8192
//!
//! [archive]
//! max_file_rows = 1000000
//!
//! [durability]
//! mode = "sync"               # sync, batch or none
//! batch_interval_ms = 10      # longest time between syncs in batch mode
//! checkpoint_interval_s = 300
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ingest::broker::EmbeddedBrokerConfig;
use ingest::mqtt::{BrokerAddress, MqttClientConfig};
use pipeline::durable::Durability;
use pipeline::shadow::Limits;
use serde::{Deserialize, Serialize};
use sinks::parquet_archive::ArchiveConfig;

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8080";

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Command-line flags of `serve`; each overrides the same setting of the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with the service settings (see the README for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Number of dataflow worker threads [default: number of cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Address of the embedded MQTT broker; port 0 picks a free port [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Use this running broker (mqtt://HOST:PORT) instead of starting the embedded one.
    #[arg(long, value_name = "URL")]
    pub mqtt_broker: Option<BrokerAddress>,
    /// Address of the HTTP API; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Directory for the write-ahead log, checkpoints and history archive [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Feed this data set (files or folders) straight into the dataflow at start-up, without
    /// MQTT; its history rows have origin `replay`. Needs --replay-dataset.
    #[arg(long, value_name = "PATH", requires = "replay_dataset")]
    pub replay: Vec<PathBuf>,
    /// Data set of --replay: beijing, chicago or occupancy.
    #[arg(long, value_name = "NAME")]
    pub replay_dataset: Option<ingest::replay::Dataset>,
    /// When an update is acknowledged: sync (after fdatasync of the write-ahead log), batch
    /// (after the write; synced every --durability-batch-ms) or none (memory only) [default: sync].
    #[arg(long, value_name = "MODE")]
    pub durability: Option<DurabilityMode>,
    /// Maximum time between two syncs of the write-ahead log in batch mode [default: 10].
    #[arg(long, value_name = "MS")]
    pub durability_batch_ms: Option<u64>,
    /// Seconds between two checkpoints; 0 takes them only at shutdown [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub checkpoint_interval_secs: Option<u64>,
}

/// Name of a durability mode, as the flag and the config file write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge after fdatasync of the write-ahead log.
    Sync,
    /// Acknowledge after the write; sync at least every `batch_interval_ms`.
    Batch,
    /// No log: shadows live in memory only.
    None,
}

/// `[durability]`: the write-ahead log and checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySection {
    /// When an update is acknowledged.
    pub mode: DurabilityMode,
    /// Maximum time between two syncs in batch mode, in milliseconds.
    pub batch_interval_ms: u64,
    /// Seconds between two checkpoints; 0 takes them only at shutdown.
    pub checkpoint_interval_s: u64,
}

impl Default for DurabilitySection {
    fn default() -> Self {
        DurabilitySection {
            mode: DurabilityMode::Sync,
            batch_interval_ms: 10,
            checkpoint_interval_s: 300,
        }
    }
}

impl DurabilitySection {
    /// Returns the mode with its interval.
    pub fn durability(&self) -> Durability {
        match self.mode {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Batch => Durability::Batch {
                interval: Duration::from_millis(self.batch_interval_ms.max(1)),
            },
            DurabilityMode::None => Durability::None,
        }
    }

    /// Returns the time between checkpoints, `None` for checkpoints at shutdown only.
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        (self.checkpoint_interval_s > 0).then(|| Duration::from_secs(self.checkpoint_interval_s))
    }
}

/// Everything `serve` needs, after merging the file and the flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Number of dataflow worker threads.
    pub workers: usize,
    /// Number of tokio worker threads for the broker, the MQTT clients and the HTTP API. 0
    /// (the default) takes the cores that the dataflow workers leave, at least 1, because the
    /// dataflow workers run on their own threads and more runnable threads than cores only
    /// add context switches.
    pub io_threads: usize,
    /// Directory for the history archive and other state.
    pub data_dir: PathBuf,
    /// The embedded MQTT broker, started unless `mqtt.broker` is set.
    pub embedded_broker: EmbeddedBrokerConfig,
    /// MQTT settings.
    pub mqtt: MqttSection,
    /// HTTP settings.
    pub http: HttpSection,
    /// Request limits (sizes, depth, names).
    pub limits: Limits,
    /// Parquet history archive settings.
    pub archive: ArchiveConfig,
    /// Write-ahead log and checkpoint settings.
    pub durability: DurabilitySection,
}

/// `[mqtt]`: which broker the service uses, and its client connections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// Running broker to use instead of the embedded one (`mqtt://HOST:PORT`).
    pub broker: Option<BrokerAddress>,
    /// With the embedded broker, whether the dataflow workers route responses straight into
    /// it (true, the default) instead of publishing them over loopback MQTT connections. In
    /// process saves the encoding, the socket writes and reads and the PUBACK of each of the
    /// up to three messages per update. Ignored with `broker`.
    pub in_process_responses: bool,
    /// With the embedded broker, whether it hands the requests that devices publish straight
    /// to the dataflow (true, the default) instead of delivering them to the service's request
    /// client over a loopback MQTT connection. In process saves the encoding, the socket write
    /// and read, the decoding and the PUBACK of each request. Ignored with `broker`.
    pub in_process_requests: bool,
    /// Settings of the service's own client connections (`[mqtt.client]`).
    pub client: MqttClientConfig,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            broker: None,
            in_process_responses: true,
            in_process_requests: true,
            client: MqttClientConfig::default(),
        }
    }
}

/// `[http]`: the HTTP API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Seconds an HTTP request waits for the dataflow's reply before it gets 503.
    pub reply_timeout_s: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            io_threads: 0,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            embedded_broker: EmbeddedBrokerConfig::default(),
            mqtt: MqttSection::default(),
            http: HttpSection::default(),
            limits: Limits::default(),
            archive: ArchiveConfig::default(),
            durability: DurabilitySection::default(),
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: DEFAULT_HTTP_LISTEN
                .parse()
                .expect("the default HTTP address is valid"),
            reply_timeout_s: 10,
        }
    }
}

impl ServeConfig {
    /// Reads the config file named by `args` (if any) and applies the flags on top.
    ///
    /// # Errors
    /// Fails when the file cannot be read or parsed, or a setting is invalid.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => ServeConfig::default(),
        };
        if let Some(workers) = args.workers {
            config.workers = workers;
        }
        if let Some(listen) = args.mqtt_listen {
            config.embedded_broker.listen = listen;
        }
        if let Some(broker) = &args.mqtt_broker {
            config.mqtt.broker = Some(broker.clone());
        }
        if let Some(listen) = args.http_listen {
            config.http.listen = listen;
        }
        if let Some(data_dir) = &args.data_dir {
            config.data_dir = data_dir.clone();
        }
        if let Some(mode) = args.durability {
            config.durability.mode = mode;
        }
        if let Some(interval) = args.durability_batch_ms {
            config.durability.batch_interval_ms = interval;
        }
        if let Some(interval) = args.checkpoint_interval_secs {
            config.durability.checkpoint_interval_s = interval;
        }
        anyhow::ensure!(
            config.workers >= 1,
            "invalid worker count 0: pass --workers 1 or more"
        );
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_through_toml() {
        let config = ServeConfig::default();
        let text = toml::to_string(&config).expect("serialise");
        let back: ServeConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, config);
    }

    #[test]
    fn config_file_sets_nested_values() {
        let text = "workers = 3\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1999\"\n[limits]\nmax_state_bytes = 16384\n";
        let config: ServeConfig = toml::from_str(text).expect("parse");
        assert_eq!(config.workers, 3);
        assert_eq!(config.mqtt.broker.expect("broker").port, 1999);
        assert_eq!(config.limits.max_state_bytes, 16384);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<ServeConfig>("wrokers = 2").is_err());
    }
}
