//! One MQTT connection of the load generator: set-up and the sending task.
//!
//! Each connection serves a fixed set of devices. After CONNECT it subscribes to the replies
//! of each of its things, one filter per topic: `/update/accepted`, `/update/rejected` and
//! `/update/delta` for a shadow service, or the thing's own `/update` topic for a bare relay.
//! The thing names `load-{n}` share no prefix per connection, so a `+` wildcard would deliver
//! every connection's replies to every connection. For a shadow service, each device then
//! sets its desired state once (see [`DESIRED_SETUP_PAYLOAD`]) and the set-up waits for those
//! replies. Then two tasks run: the sender publishes updates, round-robin over the
//! connection's things, and the reply task (in `replies`) matches each reply to its update by
//! client token.
//!
//! # Notes
//! - Both tasks share one [`ConnectionState`] behind a std `Mutex`: the lock is held only to
//!   insert or remove one sequence number and record one latency, never across an `.await`.
//! - A connection error ends the connection for the rest of the run, without reconnecting. Its
//!   unanswered updates count as missing, and the report shows the error.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::Semaphore;

use super::config::{LoopMode, Target};
use super::token::ClientToken;
use crate::latency::new_histogram;

/// Size of rumqttc's request channel per connection.
const REQUEST_CHANNEL_CAPACITY: usize = 1024;

/// QoS 1 publishes that may wait for their PubAck on one connection. Open-loop mode needs room
/// for the updates sent during a stall; rumqttc's default of 100 would pause the schedule.
const MAX_UNACKED_PUBLISHES: u16 = 1000;

/// Things per SUBSCRIBE packet; up to three filters each.
const THINGS_PER_SUBSCRIBE: usize = 64;

/// Desired-state updates sent during set-up before waiting for their replies. It is well below
/// [`REQUEST_CHANNEL_CAPACITY`], so queueing one chunk never waits for the event loop.
const SETUP_CHUNK: usize = 256;

/// Time allowed for CONNECT, all SUBSCRIBEs and the desired-state set-up of one connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// MQTT keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Largest packet the generator sends or accepts: the AWS IoT payload limit, 128 KiB.
const MAX_PACKET_BYTES: usize = 128 * 1024;

/// Client token of the set-up updates; it does not parse as a [`ClientToken`].
pub const SETUP_CLIENT_TOKEN: &str = "load-setup";

/// The update each device sends once before the clock starts. No report contains `mode`, so
/// desired never matches reported and every accepted report produces an `/update/delta`.
const DESIRED_SETUP_PAYLOAD: &str =
    r#"{"state":{"desired":{"mode":"eco"}},"clientToken":"load-setup"}"#;

/// Count of runs in this process so far. It is part of each client id, so a run that follows
/// another in the same process (as in `sweep`) does not take over a session that is closing.
static RUNS: AtomicU32 = AtomicU32::new(0);

/// Returns a number for the next run of this process.
pub fn next_run_number() -> u32 {
    RUNS.fetch_add(1, Ordering::Relaxed)
}

/// Common start instant of all connections; times are microseconds since it.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Returns the microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Returns the instant `us` microseconds after the start.
    pub fn instant_at(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }
}

/// Phases of a run, in microseconds since the [`Clock`] start.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// End of the warm-up: replies to updates sent from here on are measured.
    pub measure_from_us: u64,

    /// End of sending.
    pub send_until_us: u64,
}

/// Updates left to send in the whole run, shared by all connections.
#[derive(Debug)]
pub struct Budget(AtomicU64);

impl Budget {
    /// Creates a budget of `updates`.
    pub fn new(updates: u64) -> Self {
        Budget(AtomicU64::new(updates))
    }

    /// Takes one update from the budget, or returns `false` when it is used up.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// Counts and latencies of one connection.
#[derive(Debug)]
pub struct ConnectionStats {
    /// Updates published.
    pub sent: u64,

    /// Updates published at or after the end of the warm-up.
    pub sent_measured: u64,

    /// `/update/accepted` replies (or relayed copies) matched to an update.
    pub accepted: u64,

    /// Accepted replies that arrived between the end of the warm-up and the end of sending.
    pub accepted_in_window: u64,

    /// `/update/delta` messages matched to an update.
    pub deltas: u64,

    /// `/update/rejected` replies matched to an update, by error code.
    pub rejected: BTreeMap<u16, u64>,

    /// Replies whose client token this connection did not issue.
    pub unexpected: u64,

    /// Replies of a kind that an update already had.
    pub duplicate: u64,

    /// Latency from send (or scheduled send) to the accepted reply, in microseconds, of updates
    /// sent after the warm-up.
    pub latency: Histogram<u64>,

    /// Latency from send (or scheduled send) to the delta, in microseconds, of updates sent
    /// after the warm-up.
    pub delta_latency: Histogram<u64>,

    /// Open-loop mode: how late each measured update left after its scheduled time, in
    /// microseconds.
    pub send_lag: Histogram<u64>,

    /// Time of the last accepted reply, in microseconds since the clock start.
    pub last_accepted_us: u64,

    /// The error that ended the connection, if one did.
    pub error: Option<String>,
}

impl Default for ConnectionStats {
    fn default() -> Self {
        ConnectionStats {
            sent: 0,
            sent_measured: 0,
            accepted: 0,
            accepted_in_window: 0,
            deltas: 0,
            rejected: BTreeMap::new(),
            unexpected: 0,
            duplicate: 0,
            latency: new_histogram(),
            delta_latency: new_histogram(),
            send_lag: new_histogram(),
            last_accepted_us: 0,
            error: None,
        }
    }
}

/// Replies an update still waits for, as bits.
pub type Awaiting = u8;

/// The update waits for its `/update/accepted` (or `/update/rejected`, or relayed copy).
pub const AWAITING_REPLY: Awaiting = 1;

/// The update waits for its `/update/delta`.
pub const AWAITING_DELTA: Awaiting = 2;

/// State shared by a connection's sender and reply task.
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Sequence numbers of updates published and still waiting for a reply or a delta.
    pub outstanding: HashMap<u64, Awaiting>,

    /// Counts and latencies so far.
    pub stats: ConnectionStats,
}

impl ConnectionState {
    /// Returns the updates without a reply and the updates without a delta.
    pub fn missing(&self) -> (u64, u64) {
        let count = |bit: Awaiting| {
            self.outstanding
                .values()
                .filter(|awaiting| **awaiting & bit != 0)
                .count() as u64
        };
        (count(AWAITING_REPLY), count(AWAITING_DELTA))
    }
}

/// One connected and subscribed MQTT connection, before its tasks start.
pub struct Connection {
    /// Handles for the sender.
    pub handles: ConnectionHandles,

    /// rumqttc event loop, polled by the reply task.
    pub event_loop: EventLoop,
}

/// Settings of one connection that come from the run's flags.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionOptions {
    /// Kind of server that replies to the updates.
    pub target: Target,

    /// QoS of updates and subscriptions.
    pub qos: QoS,

    /// Shadow target: whether every update also waits for its delta.
    pub deltas: bool,

    /// Closed loop: updates waiting for their replies.
    pub in_flight: u32,

    /// Whether the socket sets TCP_NODELAY.
    pub tcp_nodelay: bool,

    /// Number of the run in this process.
    pub run: u32,
}

impl Connection {
    /// Connects to `broker`, subscribes to the replies of `things`, whose update topics the
    /// sender then cycles through, and (for a shadow service) sets each thing's desired state.
    ///
    /// # Errors
    /// Fails when the connection, a SUBSCRIBE, a filter or a set-up update is rejected, or
    /// set-up takes longer than 30 s.
    pub async fn open(
        broker: SocketAddr,
        index: u32,
        things: &[String],
        options: ConnectionOptions,
    ) -> anyhow::Result<Self> {
        let client_id = format!("sfload-{}-{}-{index}", std::process::id(), options.run);
        let mut mqtt = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        mqtt.set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(MAX_UNACKED_PUBLISHES)
            .set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(mqtt, REQUEST_CHANNEL_CAPACITY);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(options.tcp_nodelay);
        event_loop.set_network_options(network);

        let setup = async {
            subscribe(&client, &mut event_loop, things, options).await?;
            if options.target == Target::Shadow && options.deltas {
                set_desired(&client, &mut event_loop, things).await?;
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .with_context(|| format!("connection {index}: set-up timed out after 30 s"))?
            .with_context(|| format!("connection {index} to {broker}"))?;

        let handles = ConnectionHandles {
            index,
            topics: things
                .iter()
                .map(|thing| format!("$aws/things/{thing}/shadow/update"))
                .collect(),
            client,
            qos: options.qos,
            awaiting: match options.target {
                Target::Shadow if options.deltas => AWAITING_REPLY | AWAITING_DELTA,
                Target::Shadow | Target::Relay => AWAITING_REPLY,
            },
            state: Arc::new(Mutex::new(ConnectionState::default())),
            permits: Arc::new(Semaphore::new(options.in_flight as usize)),
        };
        Ok(Connection {
            handles,
            event_loop,
        })
    }
}

/// Waits for the ConnAck, sends the SUBSCRIBEs and waits for every SubAck.
async fn subscribe(
    client: &AsyncClient,
    event_loop: &mut EventLoop,
    things: &[String],
    options: ConnectionOptions,
) -> anyhow::Result<()> {
    loop {
        match event_loop.poll().await.context("connecting")? {
            Event::Incoming(Packet::ConnAck(_)) => break,
            _ => continue,
        }
    }
    let suffixes: &[&str] = match options.target {
        Target::Shadow if options.deltas => &["/accepted", "/rejected", "/delta"],
        Target::Shadow => &["/accepted", "/rejected"],
        Target::Relay => &[""],
    };
    let mut pending_acks = 0;
    for chunk in things.chunks(THINGS_PER_SUBSCRIBE) {
        let filters = chunk.iter().flat_map(|thing| {
            suffixes.iter().map(move |suffix| {
                let topic = format!("$aws/things/{thing}/shadow/update{suffix}");
                SubscribeFilter::new(topic, options.qos)
            })
        });
        client
            .subscribe_many(filters.collect::<Vec<_>>())
            .await
            .context("queueing SUBSCRIBE")?;
        pending_acks += 1;
    }
    while pending_acks > 0 {
        if let Event::Incoming(Packet::SubAck(ack)) =
            event_loop.poll().await.context("subscribing")?
        {
            if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                bail!(
                    "the broker rejected a subscription (SubAck packet id {})",
                    ack.pkid
                );
            }
            pending_acks -= 1;
        }
    }
    Ok(())
}

/// Publishes [`DESIRED_SETUP_PAYLOAD`] for every thing at QoS 1 and waits until each has its
/// `/update/accepted`.
async fn set_desired(
    client: &AsyncClient,
    event_loop: &mut EventLoop,
    things: &[String],
) -> anyhow::Result<()> {
    for chunk in things.chunks(SETUP_CHUNK) {
        for thing in chunk {
            client
                .publish(
                    format!("$aws/things/{thing}/shadow/update"),
                    QoS::AtLeastOnce,
                    false,
                    DESIRED_SETUP_PAYLOAD,
                )
                .await
                .context("queueing a desired-state update")?;
        }
        let mut accepted = 0;
        while accepted < chunk.len() {
            let event = event_loop.poll().await.context("setting desired states")?;
            let Event::Incoming(Packet::Publish(publish)) = event else {
                continue;
            };
            if publish.topic.ends_with("/update/rejected") {
                bail!(
                    "the service rejected the desired-state update of {}: {}",
                    publish.topic,
                    String::from_utf8_lossy(&publish.payload)
                );
            }
            if publish.topic.ends_with("/update/accepted") {
                accepted += 1;
            }
        }
    }
    Ok(())
}

/// Pacing and limits of one sender.
#[derive(Clone, Copy, Debug)]
pub struct SendPlan {
    /// Closed or open loop.
    pub mode: LoopMode,

    /// Open-loop time between two updates of this connection, in nanoseconds.
    pub period_ns: u64,

    /// Open-loop offset of this connection's first update, in nanoseconds, which spreads the
    /// connections' schedules over one period.
    pub offset_ns: u64,
}

/// Publishes updates until the send phase ends or the budget is used up.
///
/// # Errors
/// Fails when rumqttc's request channel is closed, because the event loop has ended.
pub async fn send_updates(
    connection: ConnectionHandles,
    plan: SendPlan,
    clock: Clock,
    phases: Phases,
    budget: Arc<Budget>,
) -> anyhow::Result<()> {
    let send_until = clock.instant_at(phases.send_until_us);
    let mut token_text = String::with_capacity(64);
    for sequence in 0.. {
        let sent_at_us = match plan.mode {
            LoopMode::Closed => {
                let permit =
                    tokio::time::timeout_at(send_until.into(), connection.permits.acquire()).await;
                match permit {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) | Err(_) => break,
                }
                clock.now_us()
            }
            LoopMode::Open => {
                let due_us = (plan.offset_ns + sequence * plan.period_ns) / 1000;
                if due_us >= phases.send_until_us {
                    break;
                }
                tokio::time::sleep_until(clock.instant_at(due_us).into()).await;
                due_us
            }
        };
        if !budget.take() {
            break;
        }
        let lag_us =
            (plan.mode == LoopMode::Open).then(|| clock.now_us().saturating_sub(sent_at_us));
        let (topic, payload) = begin_update(
            &connection,
            sequence,
            sent_at_us,
            lag_us,
            phases,
            &mut token_text,
        );
        connection
            .client
            .publish(topic, connection.qos, false, payload)
            .await
            .context("publishing an update: the connection's event loop has ended")?;
    }
    Ok(())
}

/// Records update `sequence` of `connection` as outstanding and returns its topic and payload.
/// `lag_us` is how late an open-loop update leaves after its scheduled time `sent_at_us`.
pub fn begin_update<'a>(
    connection: &'a ConnectionHandles,
    sequence: u64,
    sent_at_us: u64,
    lag_us: Option<u64>,
    phases: Phases,
    token_text: &mut String,
) -> (&'a str, Vec<u8>) {
    let token = ClientToken {
        connection: connection.index,
        sequence,
        sent_at_us,
    };
    token_text.clear();
    token.write_to(token_text);
    let topic = &connection.topics[sequence as usize % connection.topics.len()];
    let payload = update_payload(sequence, token_text);
    let mut state = connection
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    state.outstanding.insert(sequence, connection.awaiting);
    state.stats.sent += 1;
    if sent_at_us >= phases.measure_from_us {
        state.stats.sent_measured += 1;
        if let Some(lag_us) = lag_us {
            state.stats.send_lag.saturating_record(lag_us);
        }
    }
    (topic.as_str(), payload)
}

/// The parts of a [`Connection`] that its sender uses.
#[derive(Clone)]
pub struct ConnectionHandles {
    /// Index of the connection.
    pub index: u32,

    /// Update topics of the connection's things.
    pub topics: Arc<[String]>,

    /// rumqttc handle for publishing.
    pub client: AsyncClient,

    /// QoS of the updates.
    pub qos: QoS,

    /// Replies each update waits for.
    pub awaiting: Awaiting,

    /// Shared with the reply task.
    pub state: Arc<Mutex<ConnectionState>>,

    /// Free in-flight slots in closed-loop mode.
    pub permits: Arc<Semaphore>,
}

/// Builds an update payload: a sensor's reported readings, varied by `sequence`, and the token.
///
/// Example: `{"state":{"reported":{"temperature":21.37,"humidity":48.2,"battery":87,
/// "rssi":-67}},"clientToken":"0.17.5000123"}`, about 110 bytes.
pub fn update_payload(sequence: u64, client_token: &str) -> Vec<u8> {
    let mix = sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let temperature = 15.0 + (mix % 1500) as f64 / 100.0;
    let humidity = 30.0 + (mix % 400) as f64 / 10.0;
    let battery = 100 - (sequence / 1000) % 100;
    let rssi = -40 - (mix % 50) as i64;
    let mut payload = String::with_capacity(128);
    write!(
        payload,
        r#"{{"state":{{"reported":{{"temperature":{temperature:.2},"humidity":{humidity:.1},"#
    )
    .and_then(|()| {
        write!(
            payload,
            r#""battery":{battery},"rssi":{rssi}}}}},"clientToken":"{client_token}"}}"#
        )
    })
    .expect("writing to a String cannot fail");
    payload.into_bytes()
}
