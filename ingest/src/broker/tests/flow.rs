//! Flow control end to end: publishers wait for slow connected subscribers instead of
//! losing their QoS 1 messages, and stalled subscribers are disconnected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::mqttbytes::v4::{Packet as RawPacket, PubAck, Publish};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use tokio::task::JoinHandle;

use super::support::{
    RawClient, TIMEOUT, TestClient, connect_packet, options, start, test_config, wait_until,
};
use crate::broker::{DEFAULT_MAX_INFLIGHT, EmbeddedBroker, EmbeddedBrokerConfig};

const UPDATE_FILTER: &str = "$aws/things/+/shadow/update";

fn update_topic(thing: usize) -> String {
    format!("$aws/things/thing-{thing}/shadow/update")
}

/// Time limit of a whole flow-control test.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Messages received by a subscriber, checked as they arrive.
#[derive(Debug, Default)]
struct Received {
    /// Next expected sequence number per topic.
    next_sequence: HashMap<String, usize>,
    /// Messages received in total.
    count: usize,
}

impl Received {
    /// Records one message, and panics when it is not the next one of its topic.
    fn record(&mut self, topic: &str, payload: &[u8]) {
        let sequence: usize = std::str::from_utf8(payload)
            .expect("UTF-8 payload")
            .parse()
            .expect("sequence number payload");
        let expected = self.next_sequence.entry(topic.to_owned()).or_default();
        assert_eq!(
            sequence, *expected,
            "message {} on {topic}: lost, duplicated or out of order",
            self.count
        );
        *expected += 1;
        self.count += 1;
    }
}

/// A subscriber whose event loop sleeps 1 ms after every `burst` messages, so that it reads
/// more slowly than the publishers send. rumqttc acknowledges each message when its event
/// loop reads it, so the broker receives the PUBACKs late.
struct SlowSubscriber {
    task: JoinHandle<Received>,
    progress: Arc<AtomicUsize>,
}

impl SlowSubscriber {
    async fn connect(
        broker: &EmbeddedBroker,
        client_id: &str,
        expected: usize,
        burst: usize,
    ) -> Self {
        let (client, mut event_loop) = AsyncClient::new(options(broker, client_id, true), 64);
        client
            .subscribe(UPDATE_FILTER, QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        wait_for_suback(&mut event_loop).await;
        let progress = Arc::new(AtomicUsize::new(0));
        let task_progress = Arc::clone(&progress);
        let task = tokio::spawn(async move {
            // The client must live as long as the event loop, or the loop ends.
            let _client = client;
            let mut received = Received::default();
            while received.count < expected {
                let event = tokio::time::timeout(TIMEOUT, event_loop.poll())
                    .await
                    .expect("slow subscriber: next event in time")
                    .expect("slow subscriber: connection stays up");
                if let Event::Incoming(Packet::Publish(publish)) = event {
                    received.record(&publish.topic, &publish.payload);
                    task_progress.store(received.count, Ordering::Relaxed);
                    if received.count % burst == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            received
        });
        SlowSubscriber { task, progress }
    }
}

async fn wait_for_suback(event_loop: &mut EventLoop) {
    loop {
        let event = tokio::time::timeout(TIMEOUT, event_loop.poll())
            .await
            .expect("SUBACK in time")
            .expect("connection stays up");
        if let Event::Incoming(Packet::SubAck(_)) = event {
            return;
        }
    }
}

/// Starts one task per publisher that sends `per_publisher` QoS 1 messages, numbered from
/// 0, to its own thing's update topic as fast as rumqttc allows, then waits for every
/// PUBACK.
async fn spawn_publishers(
    broker: &EmbeddedBroker,
    publishers: usize,
    per_publisher: usize,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for thing in 0..publishers {
        let (mut publisher, _) =
            TestClient::connect(options(broker, &format!("thing-{thing}"), true)).await;
        tasks.push(tokio::spawn(async move {
            let topic = update_topic(thing);
            for sequence in 0..per_publisher {
                publisher
                    .publish(&topic, QoS::AtLeastOnce, false, sequence.to_string())
                    .await;
            }
            publisher.wait_for_pubacks(per_publisher).await;
        }));
    }
    tasks
}

/// Publishers faster than their only subscriber lose no QoS 1 message: each arrives once
/// and in order, and the publishers finish only once the subscriber has nearly caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_subscriber_loses_no_qos1_message() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 15_000;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    const HIGH_MESSAGES: usize = 500;
    // rumqttc reads up to 10 packets at a time, and acknowledges them before the test
    // counts them.
    const CLIENT_READ_AHEAD: usize = 10;
    let config = EmbeddedBrokerConfig {
        max_queued_messages: 2_000,
        flow_control_high_messages: HIGH_MESSAGES,
        ..test_config()
    };
    let broker = start(&config).await;
    let subscriber = SlowSubscriber::connect(&broker, "shadow-service", TOTAL, 20).await;

    tokio::time::timeout(TEST_TIMEOUT, async {
        let started_at = std::time::Instant::now();
        for task in spawn_publishers(&broker, PUBLISHERS, PER_PUBLISHER).await {
            task.await.expect("publisher task");
        }
        let published_in = started_at.elapsed();
        let received_by_then = subscriber.progress.load(Ordering::Relaxed);
        let received = subscriber.task.await.expect("subscriber task");
        let metrics = broker.metrics();
        println!(
            "published {TOTAL} in {published_in:?}; subscriber had {received_by_then} by then, \
             all in {:?}; {metrics:?}",
            started_at.elapsed()
        );
        assert_eq!(received.count, TOTAL);
        assert_eq!(received.next_sequence.len(), PUBLISHERS);
        assert!(
            received
                .next_sequence
                .values()
                .all(|&next| next == PER_PUBLISHER),
            "messages per topic: {:?}",
            received.next_sequence
        );
        assert_eq!(metrics.queued_dropped, 0, "{metrics:?}");
        assert!(metrics.flow_control_pauses > 0, "{metrics:?}");

        // When the last PUBACK went out, the subscriber's queue held at most the mark plus one
        // message per publisher, and the inflight window the rest.
        let max_lag = HIGH_MESSAGES + PUBLISHERS + DEFAULT_MAX_INFLIGHT + CLIENT_READ_AHEAD;
        let lag = TOTAL - received_by_then;
        assert!(
            lag <= max_lag,
            "publishers finished while the subscriber lagged {lag} messages behind \
             (at most {max_lag} expected)"
        );
    })
    .await
    .expect("test finished in time");
    broker.shutdown().await;
}

/// A connected subscriber that never reads pauses its publishers until
/// `slow_subscriber_timeout_ms` has passed. Then it is disconnected, the publishers finish,
/// and a healthy subscriber of the same messages receives every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_subscriber_is_disconnected() {
    const PUBLISHERS: usize = 2;
    const PER_PUBLISHER: usize = 2_000;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
    let config = EmbeddedBrokerConfig {
        max_queued_messages: 2_000,
        flow_control_high_messages: 200,
        slow_subscriber_timeout_ms: 500,
        ..test_config()
    };
    let broker = start(&config).await;
    let (mut stalled, _) =
        RawClient::connect(broker.local_addr(), connect_packet("stalled-lamp", true, 0)).await;
    stalled
        .subscribe(1, &[(UPDATE_FILTER, QoS::AtLeastOnce)])
        .await;
    let healthy = SlowSubscriber::connect(&broker, "shadow-service", TOTAL, 1_000).await;

    tokio::time::timeout(TEST_TIMEOUT, async {
        for task in spawn_publishers(&broker, PUBLISHERS, PER_PUBLISHER).await {
            task.await.expect("publisher task");
        }
        let metrics = broker.metrics();
        assert_eq!(metrics.slow_subscriber_disconnects, 1, "{metrics:?}");
        assert!(metrics.flow_control_pauses > 0, "{metrics:?}");
        assert_eq!(metrics.queued_dropped, 0, "{metrics:?}");

        let received = healthy.task.await.expect("healthy subscriber task");
        assert_eq!(received.count, TOTAL);
        stalled.expect_closed().await;
    })
    .await
    .expect("test finished in time");
    broker.shutdown().await;
}

/// The queue of an offline persistent session never pauses publishers: it keeps the newest
/// `max_queued_messages` and drops the rest, which the client receives when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_session_does_not_pause_publishers() {
    const MESSAGES: usize = 2_000;
    const MAX_QUEUED: usize = 500;
    let config = EmbeddedBrokerConfig {
        max_queued_messages: MAX_QUEUED,
        flow_control_high_messages: 100,
        ..test_config()
    };
    let broker = start(&config).await;
    let (mut sleeper, _) = TestClient::connect(options(&broker, "sleeping-lamp", false)).await;
    sleeper.subscribe(UPDATE_FILTER, QoS::AtLeastOnce).await;
    sleeper.disconnect().await;
    wait_until("the persistent client is offline", || {
        broker.metrics().connections_active == 0
    })
    .await;

    tokio::time::timeout(TEST_TIMEOUT, async {
        for task in spawn_publishers(&broker, 1, MESSAGES).await {
            task.await.expect("publisher task");
        }
    })
    .await
    .expect("publisher finished in time");
    let metrics = broker.metrics();
    assert_eq!(metrics.flow_control_pauses, 0, "{metrics:?}");
    assert_eq!(
        metrics.queued_dropped,
        (MESSAGES - MAX_QUEUED) as u64,
        "{metrics:?}"
    );

    let (mut sleeper, connack) =
        TestClient::connect(options(&broker, "sleeping-lamp", false)).await;
    assert!(connack.session_present);
    for sequence in MESSAGES - MAX_QUEUED..MESSAGES {
        assert_eq!(sleeper.next_payload().await, sequence.to_string());
    }
    broker.shutdown().await;
}

/// Sends `count` QoS 1 messages numbered from 0 to `topic` without reading anything.
async fn send_numbered(client: &mut RawClient, topic: &str, count: usize) {
    for sequence in 0..count {
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, sequence.to_string());
        publish.pkid = u16::try_from(sequence + 1).expect("packet id fits in u16");
        client.send(RawPacket::Publish(publish)).await;
    }
}

/// Reads until `count` messages and `count` PUBACKs have arrived, acknowledging each message
/// and checking that they arrive numbered from 0 and in order.
async fn receive_numbered(client: &mut RawClient, count: usize) {
    let mut received = 0;
    let mut acknowledged = 0;
    for _ in 0..4 * count {
        if received == count && acknowledged == count {
            return;
        }
        match client.receive().await {
            Some(RawPacket::Publish(publish)) => {
                assert_eq!(&publish.payload[..], received.to_string().as_bytes());
                received += 1;
                client
                    .send(RawPacket::PubAck(PubAck::new(publish.pkid)))
                    .await;
            }
            Some(RawPacket::PubAck(_)) => acknowledged += 1,
            other => panic!("expected PUBLISH or PUBACK, received {other:?}"),
        }
    }
    panic!("received {received} of {count} messages and {acknowledged} PUBACKs");
}

/// A client that publishes to its own subscription faster than it reads is never paused
/// waiting for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_subscription_does_not_pause_publisher() {
    const MESSAGES: usize = 1_000;
    let config = EmbeddedBrokerConfig {
        flow_control_high_messages: 50,
        ..test_config()
    };
    let broker = start(&config).await;
    let (mut client, _) =
        RawClient::connect(broker.local_addr(), connect_packet("echo", true, 0)).await;
    client.subscribe(1, &[("echo/#", QoS::AtLeastOnce)]).await;

    send_numbered(&mut client, "echo/self", MESSAGES).await;
    receive_numbered(&mut client, MESSAGES).await;
    let metrics = broker.metrics();
    assert_eq!(metrics.flow_control_pauses, 0, "{metrics:?}");
    assert_eq!(metrics.slow_subscriber_disconnects, 0, "{metrics:?}");
    broker.shutdown().await;
}

/// Two clients that publish to each other's subscriptions before reading both pause, yet
/// neither waits for the other forever: a paused connection still reads PUBACKs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_subscribers_do_not_deadlock() {
    const MESSAGES: usize = 300;
    let config = EmbeddedBrokerConfig {
        flow_control_high_messages: 20,
        ..test_config()
    };
    let broker = start(&config).await;
    let address = broker.local_addr();
    let (mut first, _) = RawClient::connect(address, connect_packet("first", true, 0)).await;
    first.subscribe(1, &[("to/first", QoS::AtLeastOnce)]).await;
    let (mut second, _) = RawClient::connect(address, connect_packet("second", true, 0)).await;
    second
        .subscribe(1, &[("to/second", QoS::AtLeastOnce)])
        .await;

    send_numbered(&mut first, "to/second", MESSAGES).await;
    send_numbered(&mut second, "to/first", MESSAGES).await;
    let first_task = tokio::spawn(async move { receive_numbered(&mut first, MESSAGES).await });
    let second_task = tokio::spawn(async move { receive_numbered(&mut second, MESSAGES).await });
    first_task.await.expect("first client");
    second_task.await.expect("second client");

    let metrics = broker.metrics();
    assert!(metrics.flow_control_pauses >= 2, "{metrics:?}");
    assert_eq!(metrics.slow_subscriber_disconnects, 0, "{metrics:?}");
    broker.shutdown().await;
}
