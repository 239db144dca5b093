//! `relay`: the raw-relay baseline of the end-to-end benchmark. A broker relays the load
//! generator's updates to one subscriber that does nothing with them.
//!
//! By default it starts the embedded broker (`ingest::broker`) in this process on a free
//! loopback port, with the default settings that `shadowflow serve` also uses. With
//! `--broker ADDR` it uses a running broker such as mosquitto instead. One rumqttc client subscribes to
//! `$aws/things/+/shadow/update`, acknowledges each message at QoS 1 (rumqttc sends the PUBACK)
//! and counts it. Once subscribed it prints `relay ready mqtt=HOST:PORT` on stdout. On SIGINT
//! or SIGTERM it prints one JSON line with the count and its CPU time, and exits.
//!
//! Run `load --target relay` against it: the generator then subscribes to its own update
//! topics, so the broker delivers each update twice, to this subscriber and back to its
//! sender, whose copy is the reply that the generator times.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use ingest::broker::{EmbeddedBrokerConfig, start_embedded_broker};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS, SubscribeReasonCode};
use shadowflow_benches::process::cpu_seconds;
use tokio::signal::unix::{SignalKind, signal};

/// Topic filter of the subscriber: every classic shadow's update topic.
const UPDATE_FILTER: &str = "$aws/things/+/shadow/update";

/// Time allowed to connect and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Raw-relay baseline: a broker and one subscriber to `$aws/things/+/shadow/update` that
/// counts what it receives.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address of the embedded broker; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Use this running broker (HOST:PORT on a loopback address) instead of the embedded one.
    #[arg(long, value_name = "ADDR")]
    broker: Option<SocketAddr>,

    /// QoS of the subscription: 0 or 1.
    #[arg(long, value_name = "QOS", default_value_t = 1,
        value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,

    /// Tokio worker threads; 0 uses one per core, as `shadowflow serve` does.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.threads > 0 {
        builder.worker_threads(cli.threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(relay(cli))
}

async fn relay(cli: Cli) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let (address, embedded) = match cli.broker {
        Some(address) if !address.ip().is_loopback() => {
            bail!("--broker {address} is not a loopback address; pass a broker on this machine")
        }
        Some(address) => (address, None),
        None => {
            let config = EmbeddedBrokerConfig {
                listen: cli.listen,
                ..EmbeddedBrokerConfig::default()
            };
            let broker = start_embedded_broker(&config)
                .await
                .with_context(|| format!("starting the embedded broker on {}", cli.listen))?;
            (broker.local_addr(), Some(broker))
        }
    };

    let qos = if cli.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let received = Arc::new(AtomicU64::new(0));
    let subscriber = tokio::time::timeout(SETUP_TIMEOUT, subscribe(address, qos))
        .await
        .context("subscribing timed out after 15 s")??;
    let counter = Arc::clone(&received);
    let receiving = tokio::spawn(async move {
        let (_client, mut event_loop) = subscriber;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %error, "the relay subscriber lost its connection");
                    eprintln!("relay: the subscriber lost its connection: {error}");
                    return;
                }
            }
        }
    });
    println!("relay ready mqtt={address}");

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    receiving.abort();
    if let Some(broker) = embedded {
        broker.shutdown().await;
    }
    let cpu_secs = cpu_seconds().context("reading the relay's CPU time")?;
    println!(
        "{{\"bench\":\"relay\",\"received\":{},\"cpu_secs\":{cpu_secs:.2}}}",
        received.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Connects one client to `address` and subscribes it to [`UPDATE_FILTER`].
async fn subscribe(
    address: SocketAddr,
    qos: QoS,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let client_id = format!("sfrelay-{}", std::process::id());
    let mut options = MqttOptions::new(client_id, address.ip().to_string(), address.port());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(128 * 1024, 128 * 1024)
        .set_clean_session(true);
    let (client, mut event_loop) = AsyncClient::new(options, 64);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    event_loop.set_network_options(network);
    client
        .subscribe(UPDATE_FILTER, qos)
        .await
        .context("queueing SUBSCRIBE")?;
    loop {
        let event = event_loop
            .poll()
            .await
            .with_context(|| format!("connecting to the broker at {address}"))?;
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                bail!("the broker at {address} rejected the subscription to {UPDATE_FILTER}");
            }
            return Ok((client, event_loop));
        }
    }
}
