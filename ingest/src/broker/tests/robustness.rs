//! Limits and misbehaving clients: oversize packets, garbage bytes, QoS 2, slow readers,
//! the connection limit, CONNECT rules, authorisation and shutdown.

use std::sync::Arc;

use rumqttc::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, LastWill, Login, Packet as RawPacket, Publish, SubscribeReasonCode,
};

use super::support::{
    RawClient, TIMEOUT, TestClient, connect_packet, options, start, test_config, wait_until,
};
use crate::broker::auth::Authorizer;
use crate::broker::server::start_with_authorizer;
use crate::broker::{EmbeddedBroker, EmbeddedBrokerConfig};

/// Checks that `broker` still routes a message between two new clients.
async fn assert_still_serving(broker: &EmbeddedBroker, name: &str) {
    let (mut subscriber, _) =
        TestClient::connect(options(broker, &format!("{name}-sub"), true)).await;
    subscriber.subscribe("health", QoS::AtLeastOnce).await;
    let (publisher, _) = TestClient::connect(options(broker, &format!("{name}-pub"), true)).await;
    publisher
        .publish("health", QoS::AtLeastOnce, false, "ok")
        .await;
    assert_eq!(subscriber.next_payload().await, "ok");
}

/// A payload over the limit closes only the publisher's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_payload_closes_only_that_connection() {
    let config = EmbeddedBrokerConfig {
        max_payload_bytes: 1024,
        ..test_config()
    };
    let broker = start(&config).await;
    let (mut bystander, _) = TestClient::connect(options(&broker, "bystander", true)).await;
    bystander.subscribe("big", QoS::AtLeastOnce).await;

    let (mut offender, _) = TestClient::connect(options(&broker, "offender", true)).await;
    offender
        .publish("big", QoS::AtLeastOnce, false, vec![b'x'; 1025])
        .await;
    offender.wait_for_close().await;

    let (publisher, _) = TestClient::connect(options(&broker, "publisher", true)).await;
    publisher
        .publish("big", QoS::AtLeastOnce, false, vec![b'y'; 1024])
        .await;
    let publish = bystander.next_publish().await;
    assert_eq!(
        publish.payload.len(),
        1024,
        "the bystander got only the allowed message"
    );
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}

/// A packet header announcing more than the limit closes the connection before the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_packet_header_closes_connection() {
    let config = EmbeddedBrokerConfig {
        max_payload_bytes: 1024,
        ..test_config()
    };
    let broker = start(&config).await;
    let (mut client, _) =
        RawClient::connect(broker.local_addr(), connect_packet("huge", true, 30)).await;
    // PUBLISH QoS 0 with a remaining length of 10,000,000 bytes, of which none follow.
    client.send_bytes(&[0x30, 0x80, 0xAD, 0xE2, 0x04]).await;
    client.expect_closed().await;
    assert_still_serving(&broker, "after-huge").await;
    broker.shutdown().await;
}

/// Garbage bytes close that connection, before or after CONNECT, and the broker keeps
/// serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_do_not_stop_broker() {
    let broker = start(&test_config()).await;
    let address = broker.local_addr();
    let garbage_streams: [&[u8]; 4] = [
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01],
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        &[0x10, 0x03, 0x00, 0x04, b'M'],
        &[0x00, 0x00],
    ];
    for garbage in garbage_streams {
        let mut client = RawClient::open(address).await;
        client.send_bytes(garbage).await;
        client.expect_closed().await;
    }

    let (mut connected, _) = RawClient::connect(address, connect_packet("garbler", true, 30)).await;
    connected.send_bytes(&[0xF0, 0x00, 0xDE, 0xAD]).await;
    connected.expect_closed().await;

    assert_still_serving(&broker, "after-garbage").await;
    assert!(broker.metrics().protocol_errors >= 4);
    broker.shutdown().await;
}

/// A QoS 2 PUBLISH closes the connection, as on AWS IoT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_publish_closes_connection() {
    let broker = start(&test_config()).await;
    let (mut client, _) =
        RawClient::connect(broker.local_addr(), connect_packet("qos2", true, 30)).await;
    let mut publish = Publish::new("a", QoS::ExactlyOnce, "x");
    publish.pkid = 1;
    client.send(RawPacket::Publish(publish)).await;
    client.expect_closed().await;
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}

/// A PUBLISH to a topic with a wildcard closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_topic_publish_closes_connection() {
    let broker = start(&test_config()).await;
    let (mut client, _) =
        RawClient::connect(broker.local_addr(), connect_packet("wild", true, 30)).await;
    client
        .send(RawPacket::Publish(Publish::new(
            "a/+",
            QoS::AtMostOnce,
            "x",
        )))
        .await;
    client.expect_closed().await;
    broker.shutdown().await;
}

/// Subscribers that never read hold up the publisher and other subscribers for at most
/// `slow_subscriber_timeout_ms`. The QoS 0 one never does: its messages are dropped and
/// counted. The QoS 1 one is disconnected, and its persistent session then drops its oldest
/// messages.
///
/// The publisher sends in chunks and waits for the reader after each chunk, so the reader
/// never lags by more than its queue bound, while the stalled subscribers fall ever further
/// behind. 16 MiB in total exceeds what the loopback socket buffers of the stalled QoS 0
/// subscriber can hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_subscriber_does_not_block_others() {
    const MESSAGES: usize = 2_000;
    const CHUNK: usize = 50;
    let config = EmbeddedBrokerConfig {
        max_queued_messages: 200,
        max_queued_qos0_messages: 10,
        flow_control_high_messages: 100,
        slow_subscriber_timeout_ms: 300,
        ..test_config()
    };
    let broker = start(&config).await;
    let address = broker.local_addr();
    let (mut stalled_qos0, _) =
        RawClient::connect(address, connect_packet("stalled-0", true, 0)).await;
    stalled_qos0
        .subscribe(1, &[("load/#", QoS::AtMostOnce)])
        .await;
    let (mut stalled_qos1, _) =
        RawClient::connect(address, connect_packet("stalled-1", false, 0)).await;
    stalled_qos1
        .subscribe(1, &[("load/#", QoS::AtLeastOnce)])
        .await;

    let (mut reader, _) = TestClient::connect(options(&broker, "reader", true)).await;
    reader.subscribe("load/#", QoS::AtLeastOnce).await;
    let (publisher, _) = TestClient::connect(options(&broker, "publisher", true)).await;
    let filler = vec![b'p'; 8 * 1024];
    for chunk_start in (0..MESSAGES).step_by(CHUNK) {
        for index in chunk_start..chunk_start + CHUNK {
            let mut payload = index.to_string().into_bytes();
            payload.extend_from_slice(&filler);
            publisher
                .publish("load/a", QoS::AtLeastOnce, false, payload)
                .await;
        }
        for index in chunk_start..chunk_start + CHUNK {
            let publish = reader.next_publish().await;
            let digits: Vec<u8> = publish
                .payload
                .iter()
                .copied()
                .take_while(u8::is_ascii_digit)
                .collect();
            let sequence = String::from_utf8(digits).expect("ASCII digits");
            assert_eq!(
                sequence,
                index.to_string(),
                "sequence number of message {index}"
            );
        }
    }

    let metrics = broker.metrics();
    assert!(
        metrics.qos0_dropped > 0,
        "no QoS 0 message dropped: {metrics:?}"
    );
    assert!(
        metrics.queued_dropped > 0,
        "no queued QoS 1 message dropped: {metrics:?}"
    );
    assert_eq!(
        metrics.slow_subscriber_disconnects, 1,
        "only the stalled QoS 1 subscriber is disconnected: {metrics:?}"
    );
    drop((stalled_qos0, stalled_qos1));
    broker.shutdown().await;
}

/// Connections past `max_connections` are closed at once and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_rejects_extra_connections() {
    let config = EmbeddedBrokerConfig {
        max_connections: 2,
        ..test_config()
    };
    let broker = start(&config).await;
    let (_first, _) = TestClient::connect(options(&broker, "first", true)).await;
    let (_second, _) = TestClient::connect(options(&broker, "second", true)).await;

    let mut third = RawClient::open(broker.local_addr()).await;
    third.expect_closed().await;
    let metrics = broker.metrics();
    assert_eq!(metrics.connections_rejected, 1);
    assert_eq!(metrics.connections_active, 2);
    broker.shutdown().await;
}

/// A connection that sends no CONNECT in time, or another packet first, is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_must_come_first_and_in_time() {
    let config = EmbeddedBrokerConfig {
        connect_timeout_ms: 200,
        ..test_config()
    };
    let broker = start(&config).await;
    let mut silent = RawClient::open(broker.local_addr()).await;
    silent.expect_closed().await;

    let mut pinger = RawClient::open(broker.local_addr()).await;
    pinger.send(RawPacket::PingReq).await;
    pinger.expect_closed().await;
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}

/// An MQTT 3.1 CONNECT (`MQIsdp`, level 3) gets CONNACK "unacceptable protocol version".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_connect_is_rejected() {
    let broker = start(&test_config()).await;
    let mut client = RawClient::open(broker.local_addr()).await;
    let connect_v31 = [
        0x10, 15, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x01, b'x',
    ];
    client.send_bytes(&connect_v31).await;
    match client.receive().await {
        Some(RawPacket::ConnAck(connack)) => {
            assert_eq!(connack.code, ConnectReturnCode::RefusedProtocolVersion);
        }
        other => panic!("expected CONNACK, received {other:?}"),
    }
    client.expect_closed().await;
    broker.shutdown().await;
}

/// An MQTT 5 CONNECT with properties and a user name, as the AWS IoT Device SDK sends it, gets
/// CONNACK "unacceptable protocol version" rather than a silent close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_connect_is_rejected() {
    let broker = start(&test_config()).await;
    let mut client = RawClient::open(broker.local_addr()).await;
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x82, 0x00, 0x1e];
    body.extend_from_slice(&[0x00]); // no properties
    body.extend_from_slice(&[0x00, 0x06]);
    body.extend_from_slice(b"device");
    let user = b"?SDK=IoTDeviceSDK/Python&Platform=Unix";
    body.extend_from_slice(&(user.len() as u16).to_be_bytes());
    body.extend_from_slice(user);
    let mut connect_v5 = vec![0x10, body.len() as u8];
    connect_v5.extend_from_slice(&body);
    client.send_bytes(&connect_v5).await;
    match client.receive().await {
        Some(RawPacket::ConnAck(connack)) => {
            assert_eq!(connack.code, ConnectReturnCode::RefusedProtocolVersion);
        }
        other => panic!("expected CONNACK, received {other:?}"),
    }
    client.expect_closed().await;
    broker.shutdown().await;
}

/// Shutdown closes open connections and stops the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections() {
    let broker = start(&test_config()).await;
    let address = broker.local_addr();
    assert_ne!(address.port(), 0, "port 0 is replaced by the bound port");
    let (mut client, _) = RawClient::connect(address, connect_packet("lamp", true, 30)).await;

    tokio::time::timeout(TIMEOUT, broker.shutdown())
        .await
        .expect("shutdown in time");
    client.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
}

/// Authorizer that rejects one client id, one filter and one topic.
struct DenySecrets;

impl Authorizer for DenySecrets {
    fn authorize_connect(
        &self,
        client_id: &str,
        _: Option<&Login>,
    ) -> Result<(), ConnectReturnCode> {
        if client_id == "banned" {
            Err(ConnectReturnCode::NotAuthorized)
        } else {
            Ok(())
        }
    }

    fn authorize_subscribe(&self, _: &str, filter: &str) -> bool {
        !filter.starts_with("secret")
    }

    fn authorize_publish(&self, _: &str, topic: &str) -> bool {
        !topic.starts_with("secret")
    }
}

/// The authorizer decides CONNECT, each SUBSCRIBE filter and each PUBLISH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizer_decides_connect_subscribe_publish() {
    let broker = start_with_authorizer(&test_config(), Arc::new(DenySecrets))
        .await
        .expect("start");
    let address = broker.local_addr();
    let (mut banned, connack) =
        RawClient::connect(address, connect_packet("banned", true, 30)).await;
    assert_eq!(connack.code, ConnectReturnCode::NotAuthorized);
    banned.expect_closed().await;

    let (mut client, _) = RawClient::connect(address, connect_packet("device", true, 30)).await;
    let suback = client
        .subscribe(
            1,
            &[("secret/#", QoS::AtMostOnce), ("public/#", QoS::AtMostOnce)],
        )
        .await;
    assert_eq!(
        suback.return_codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtMostOnce)
        ]
    );
    client
        .send(RawPacket::Publish(Publish::new(
            "secret/key",
            QoS::AtMostOnce,
            "x",
        )))
        .await;
    client.expect_closed().await;
    assert!(broker.metrics().protocol_errors >= 1);
    broker.shutdown().await;
}

/// Accepted and open connections are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_connections_are_counted() {
    let broker = start(&test_config()).await;
    let (client, _) = TestClient::connect(options(&broker, "counted", true)).await;
    assert_eq!(broker.metrics().connections_accepted, 1);
    drop(client);
    wait_until("the connection closed", || {
        broker.metrics().connections_active == 0
    })
    .await;
    broker.shutdown().await;
}

/// A CONNECT whose will topic has a wildcard is closed without CONNACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_will_topic_closes_connection() {
    let broker = start(&test_config()).await;
    let mut connect = connect_packet("wild-will", true, 30);
    connect.last_will = Some(LastWill::new(
        "devices/+/status",
        "gone",
        QoS::AtMostOnce,
        false,
    ));
    let mut client = RawClient::open(broker.local_addr()).await;
    client.send(RawPacket::Connect(connect)).await;
    assert_eq!(client.receive().await, None, "closed without CONNACK");
    assert_eq!(broker.metrics().protocol_errors, 1);
    broker.shutdown().await;
}
