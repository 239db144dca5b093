//! One MQTT connection of the load generator: set-up, the sending task and the reply handler.
//!
//! Each connection serves a fixed set of devices. After CONNECT it subscribes at QoS 1 to
//! `/update/accepted` and `/update/rejected` of each of its things, one filter per topic. The
//! thing names `load-{n}` share no prefix per connection, so a `+` wildcard would deliver
//! every connection's replies to every connection. Then two tasks run: the sender
//! publishes QoS 1 updates, round-robin over the connection's things, and the event-loop task
//! matches each reply to its update by client token.
//!
//! # Notes
//! - Both tasks share one [`ConnectionState`] behind a std `Mutex`: the lock is held only to
//!   insert or remove one sequence number and record one latency, never across an `.await`.
//! - A connection error ends the connection for the rest of the run, without reconnecting. Its
//!   unanswered updates count as missing, and the report shows the error.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::config::LoopMode;
use super::token::ClientToken;
use crate::latency::{MAX_TRACKED_LATENCY_US, new_histogram};

/// Size of rumqttc's request channel per connection.
const REQUEST_CHANNEL_CAPACITY: usize = 1024;

/// QoS 1 publishes that may wait for their PubAck on one connection. Open-loop mode needs room
/// for the updates sent during a stall; rumqttc's default of 100 would pause the schedule.
const MAX_UNACKED_PUBLISHES: u16 = 1000;

/// Things per SUBSCRIBE packet; two filters each.
const THINGS_PER_SUBSCRIBE: usize = 64;

/// Time allowed for CONNECT and all SUBSCRIBEs of one connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// MQTT keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Largest packet the generator sends or accepts: the AWS IoT payload limit, 128 KiB.
const MAX_PACKET_BYTES: usize = 128 * 1024;

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

    /// `/update/accepted` replies matched to an update.
    pub accepted: u64,

    /// Accepted replies that arrived between the end of the warm-up and the end of sending.
    pub accepted_in_window: u64,

    /// `/update/rejected` replies matched to an update, by error code.
    pub rejected: BTreeMap<u16, u64>,

    /// Replies whose client token this connection did not issue.
    pub unexpected: u64,

    /// Second replies to an update that already had a reply.
    pub duplicate: u64,

    /// Latency from send (or scheduled send) to the accepted reply, in microseconds, of updates
    /// sent after the warm-up.
    pub latency: Histogram<u64>,

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
            rejected: BTreeMap::new(),
            unexpected: 0,
            duplicate: 0,
            latency: new_histogram(),
            send_lag: new_histogram(),
            last_accepted_us: 0,
            error: None,
        }
    }
}

/// State shared by a connection's sender and reply task.
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// Sequence numbers of updates published and still without a reply.
    pub outstanding: HashSet<u64>,

    /// Counts and latencies so far.
    pub stats: ConnectionStats,
}

/// One connected and subscribed MQTT connection, before its tasks start.
pub struct Connection {
    /// Handles for the sender.
    pub handles: ConnectionHandles,

    /// rumqttc event loop, polled by the reply task.
    pub event_loop: EventLoop,
}

impl Connection {
    /// Connects to `broker` and subscribes to the replies of `things`, whose update topics
    /// the sender then cycles through.
    ///
    /// # Errors
    /// Fails when the connection, a SUBSCRIBE or a filter is rejected, or set-up takes longer
    /// than 30 s.
    pub async fn open(
        broker: SocketAddr,
        index: u32,
        things: &[String],
        in_flight: u32,
        tcp_nodelay: bool,
    ) -> anyhow::Result<Self> {
        let client_id = format!("sfload-{}-{index}", std::process::id());
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
            .set_inflight(MAX_UNACKED_PUBLISHES)
            .set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(tcp_nodelay);
        event_loop.set_network_options(network);

        tokio::time::timeout(SETUP_TIMEOUT, subscribe(&client, &mut event_loop, things))
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
            state: Arc::new(Mutex::new(ConnectionState::default())),
            permits: Arc::new(Semaphore::new(in_flight as usize)),
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
) -> anyhow::Result<()> {
    loop {
        match event_loop.poll().await.context("connecting")? {
            Event::Incoming(Packet::ConnAck(_)) => break,
            _ => continue,
        }
    }
    let mut pending_acks = 0;
    for chunk in things.chunks(THINGS_PER_SUBSCRIBE) {
        let filters = chunk.iter().flat_map(|thing| {
            ["accepted", "rejected"].map(|reply| {
                let topic = format!("$aws/things/{thing}/shadow/update/{reply}");
                SubscribeFilter::new(topic, QoS::AtLeastOnce)
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

        let token = ClientToken {
            connection: connection.index,
            sequence,
            sent_at_us,
        };
        token_text.clear();
        token.write_to(&mut token_text);
        let topic = &connection.topics[sequence as usize % connection.topics.len()];
        let payload = update_payload(sequence, &token_text);
        {
            let mut state = connection
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.outstanding.insert(sequence);
            state.stats.sent += 1;
            if sent_at_us >= phases.measure_from_us {
                state.stats.sent_measured += 1;
                if plan.mode == LoopMode::Open {
                    let lag_us = clock.now_us().saturating_sub(sent_at_us);
                    state.stats.send_lag.saturating_record(lag_us);
                }
            }
        }
        connection
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await
            .context("publishing an update: the connection's event loop has ended")?;
    }
    Ok(())
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

    /// Shared with the reply task.
    pub state: Arc<Mutex<ConnectionState>>,

    /// Free in-flight slots in closed-loop mode.
    pub permits: Arc<Semaphore>,
}

/// Builds an update payload: a sensor's reported readings, varied by `sequence`, and the token.
///
/// Example: `{"state":{"reported":{"temperature":21.37,"humidity":48.2,"battery":87,
/// "rssi":-67}},"clientToken":"0.17.5000123"}`, about 110 bytes.
fn update_payload(sequence: u64, client_token: &str) -> Vec<u8> {
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

/// The fields of a reply the generator reads.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "clientToken", borrow)]
    client_token: Option<std::borrow::Cow<'a, str>>,
    code: Option<u16>,
}

/// Polls the connection's event loop, matching replies to updates, until DISCONNECT is sent or
/// the connection fails. The outcome is in the shared state.
pub async fn handle_replies(
    index: u32,
    mut event_loop: EventLoop,
    state: Arc<Mutex<ConnectionState>>,
    permits: Arc<Semaphore>,
    clock: Clock,
    phases: Phases,
) {
    loop {
        match event_loop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let now_us = clock.now_us();
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                if record_reply(&mut state, index, &publish, now_us, phases) {
                    permits.add_permits(1);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(error) => {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                state.stats.error = Some(error.to_string());
                return;
            }
        }
    }
}

/// Counts one reply and returns whether it matched an outstanding update.
fn record_reply(
    state: &mut ConnectionState,
    index: u32,
    publish: &Publish,
    now_us: u64,
    phases: Phases,
) -> bool {
    let accepted = publish.topic.ends_with("/update/accepted");
    if !accepted && !publish.topic.ends_with("/update/rejected") {
        state.stats.unexpected += 1;
        return false;
    }
    let reply: Option<Reply<'_>> = serde_json::from_slice(&publish.payload).ok();
    let token = reply
        .as_ref()
        .and_then(|reply| reply.client_token.as_deref())
        .and_then(ClientToken::parse)
        .filter(|token| token.connection == index);
    let Some(token) = token else {
        state.stats.unexpected += 1;
        return false;
    };
    if !state.outstanding.remove(&token.sequence) {
        state.stats.duplicate += 1;
        return false;
    }

    let stats = &mut state.stats;
    if accepted {
        stats.accepted += 1;
        stats.last_accepted_us = now_us;
        if (phases.measure_from_us..=phases.send_until_us).contains(&now_us) {
            stats.accepted_in_window += 1;
        }
        if token.sent_at_us >= phases.measure_from_us {
            let latency_us = now_us.saturating_sub(token.sent_at_us);
            stats
                .latency
                .saturating_record(latency_us.min(MAX_TRACKED_LATENCY_US));
        }
    } else {
        let code = reply.and_then(|reply| reply.code).unwrap_or(0);
        *stats.rejected.entry(code).or_default() += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: Phases = Phases {
        measure_from_us: 1_000,
        send_until_us: 10_000,
    };

    fn reply(topic: &str, payload: &str) -> Publish {
        Publish::new(topic, QoS::AtLeastOnce, payload.as_bytes().to_vec())
    }

    fn state_with_outstanding(sequences: &[u64]) -> ConnectionState {
        let mut state = ConnectionState::default();
        state.outstanding.extend(sequences);
        state
    }

    #[test]
    fn accepted_reply_records_latency() {
        let mut state = state_with_outstanding(&[3]);
        let publish = reply(
            "$aws/things/load-3/shadow/update/accepted",
            r#"{"state":{},"version":2,"clientToken":"0.3.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert!(state.outstanding.is_empty());
        assert_eq!(state.stats.accepted, 1);
        assert_eq!(state.stats.accepted_in_window, 1);
        assert_eq!(state.stats.latency.len(), 1);
        assert_eq!(state.stats.latency.max(), 500);
    }

    #[test]
    fn warm_up_update_is_not_measured() {
        let mut state = state_with_outstanding(&[0]);
        let publish = reply(
            "$aws/things/load-0/shadow/update/accepted",
            r#"{"clientToken":"0.0.500"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 1_200, PHASES));
        assert_eq!(state.stats.accepted, 1);
        assert_eq!(state.stats.latency.len(), 0);
    }

    #[test]
    fn rejected_reply_is_counted_by_code() {
        let mut state = state_with_outstanding(&[5]);
        let publish = reply(
            "$aws/things/load-5/shadow/update/rejected",
            r#"{"code":503,"message":"Service unavailable","clientToken":"0.5.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert_eq!(state.stats.rejected.get(&503), Some(&1));
        assert_eq!(state.stats.accepted, 0);
    }

    #[test]
    fn second_reply_counts_as_duplicate() {
        let mut state = state_with_outstanding(&[1]);
        let publish = reply(
            "$aws/things/load-1/shadow/update/accepted",
            r#"{"clientToken":"0.1.2000"}"#,
        );
        assert!(record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert!(!record_reply(&mut state, 0, &publish, 2_600, PHASES));
        assert_eq!(state.stats.duplicate, 1);
    }

    #[test]
    fn reply_of_other_connection_is_unexpected() {
        let mut state = state_with_outstanding(&[1]);
        let publish = reply(
            "$aws/things/load-1/shadow/update/accepted",
            r#"{"clientToken":"4.1.2000"}"#,
        );
        assert!(!record_reply(&mut state, 0, &publish, 2_500, PHASES));
        assert_eq!(state.stats.unexpected, 1);
        assert_eq!(state.outstanding.len(), 1);
    }

    #[test]
    fn payload_is_a_valid_update() {
        let payload = update_payload(17, "0.17.5000123");
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("payload is JSON");
        assert_eq!(value["clientToken"], "0.17.5000123");
        assert!(value["state"]["reported"]["temperature"].is_f64());
        assert!(value["state"]["reported"]["rssi"].is_i64());
    }

    #[test]
    fn budget_runs_out() {
        let budget = Budget::new(2);
        assert!(budget.take());
        assert!(budget.take());
        assert!(!budget.take());
    }
}
