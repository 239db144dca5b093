//! The local subscriber: delivery, order and flow control as seen by a connected publisher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{Packet as RawPacket, PubAck, Publish};
use tokio::sync::mpsc;

use super::support::{RawClient, TestClient, connect_packet, options, start, test_config};
use crate::broker::{Delivery, LocalSubscriber};

/// Hands each message to a bounded channel, waiting while it is full.
struct ChannelSubscriber {
    sender: mpsc::Sender<(String, Bytes)>,
}

impl LocalSubscriber for ChannelSubscriber {
    fn deliver(&self, topic: &str, payload: &Bytes) -> Option<Delivery> {
        let sender = self.sender.clone();
        let message = (topic.to_owned(), payload.clone());
        Some(Box::pin(async move {
            let _ = sender.send(message).await;
        }))
    }
}

/// Returns the PUBACK that `client` receives within `wait`, if any.
async fn puback_within(client: &mut RawClient, wait: Duration) -> Option<u16> {
    match client.receive_within(wait).await {
        Some(RawPacket::PubAck(ack)) => Some(ack.pkid),
        None => None,
        Some(other) => panic!("expected a PUBACK, got {other:?}"),
    }
}

/// A full local subscriber delays the PUBACK and the later messages of its publisher. Once it
/// takes messages again, every message arrives, in order, and so do the PUBACKs.
/// Connected subscribers of the same topic get their copies as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_local_subscriber_holds_its_publisher_back() {
    const MESSAGES: usize = 5;
    let broker = start(&test_config()).await;
    let (sender, mut receiver) = mpsc::channel(1);
    broker
        .subscribe_local(
            vec!["requests/+".to_owned()],
            Arc::new(ChannelSubscriber { sender }),
        )
        .expect("register the local subscriber");
    let (mut watcher, _) = TestClient::connect(options(&broker, "watcher", true)).await;
    watcher.subscribe("requests/+", QoS::AtLeastOnce).await;

    let (mut device, _) =
        RawClient::connect(broker.local_addr(), connect_packet("device", true, 30)).await;
    for sequence in 0..MESSAGES {
        let mut publish = Publish::new("requests/a", QoS::AtLeastOnce, sequence.to_string());
        publish.pkid = u16::try_from(sequence + 1).expect("packet id fits in u16");
        device.send(RawPacket::Publish(publish)).await;
    }
    // The first message fills the channel; the second waits for room, and so its PUBACK.
    assert_eq!(
        puback_within(&mut device, Duration::from_secs(5)).await,
        Some(1)
    );
    assert_eq!(
        puback_within(&mut device, Duration::from_millis(300)).await,
        None
    );

    for sequence in 0..MESSAGES {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("message within 5 s")
            .expect("channel open");
        assert_eq!(
            (topic.as_str(), &payload[..]),
            ("requests/a", sequence.to_string().as_bytes())
        );
    }
    for packet_id in 2..=MESSAGES {
        let expected = u16::try_from(packet_id).expect("packet id fits in u16");
        assert_eq!(
            puback_within(&mut device, Duration::from_secs(5)).await,
            Some(expected)
        );
    }
    for sequence in 0..MESSAGES {
        assert_eq!(watcher.next_payload().await, sequence.to_string());
    }

    // A topic outside the filters is only acknowledged.
    let mut other = Publish::new("elsewhere", QoS::AtLeastOnce, "x");
    other.pkid = 100;
    device.send(RawPacket::Publish(other)).await;
    assert_eq!(
        puback_within(&mut device, Duration::from_secs(5)).await,
        Some(100)
    );
    assert!(receiver.try_recv().is_err());
    device.send(RawPacket::PubAck(PubAck::new(1))).await;
    broker.shutdown().await;
}

/// A broker takes one local subscriber and only valid filters.
#[tokio::test]
async fn second_local_subscriber_and_invalid_filter_are_refused() {
    let broker = start(&test_config()).await;
    let (sender, _receiver) = mpsc::channel(1);
    let subscriber = Arc::new(ChannelSubscriber { sender });
    assert!(
        broker
            .subscribe_local(
                vec!["a/#/b".to_owned()],
                Arc::clone(&subscriber) as Arc<dyn LocalSubscriber>
            )
            .is_err()
    );
    broker
        .subscribe_local(
            vec!["a/#".to_owned()],
            Arc::clone(&subscriber) as Arc<dyn LocalSubscriber>,
        )
        .expect("first subscriber");
    assert!(
        broker
            .subscribe_local(vec!["b".to_owned()], subscriber)
            .is_err()
    );
    broker.shutdown().await;
}
