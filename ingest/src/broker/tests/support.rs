//! Helpers for the broker tests: a broker on 127.0.0.1 port 0, a rumqttc client whose events
//! arrive on a channel, and a raw client that sends and reads single packets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, Packet as RawPacket, Publish, SubAck, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::{EmbeddedBroker, EmbeddedBrokerConfig, start_embedded_broker};

/// Maximum wait for any single expected event.
pub(super) const TIMEOUT: Duration = Duration::from_secs(20);

/// Largest packet the test clients send or accept.
pub(super) const CLIENT_MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Returns a broker configuration on 127.0.0.1 with a port picked by the system.
pub(super) fn test_config() -> EmbeddedBrokerConfig {
    EmbeddedBrokerConfig {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        ..EmbeddedBrokerConfig::default()
    }
}

/// Starts a broker with `config`.
pub(super) async fn start(config: &EmbeddedBrokerConfig) -> EmbeddedBroker {
    start_embedded_broker(config)
        .await
        .expect("start the embedded broker")
}

/// Waits until `condition` holds, checking every 10 ms for at most [`TIMEOUT`].
pub(super) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Options for a rumqttc client of `broker` with large packet limits.
pub(super) fn options(
    broker: &EmbeddedBroker,
    client_id: &str,
    clean_session: bool,
) -> MqttOptions {
    let address = broker.local_addr();
    let mut options = MqttOptions::new(client_id, address.ip().to_string(), address.port());
    options
        .set_clean_session(clean_session)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(CLIENT_MAX_PACKET_BYTES, CLIENT_MAX_PACKET_BYTES);
    options
}

/// A rumqttc client whose event loop runs on its own task and stops at the first error, so
/// that it never reconnects by itself. Dropping it closes the socket without DISCONNECT.
pub(super) struct TestClient {
    pub(super) client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    pending: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestClient {
    /// Connects with `options` and returns the client and the broker's CONNACK.
    pub(super) async fn connect(options: MqttOptions) -> (TestClient, ConnAck) {
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        let (sender, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await.map_err(|error| error.to_string());
                let failed = event.is_err();
                if sender.send(event).is_err() || failed {
                    return;
                }
            }
        });
        let mut test_client = TestClient {
            client,
            events,
            pending: VecDeque::new(),
            task,
        };
        let connack = test_client
            .next_incoming("CONNACK", |packet| match packet {
                Packet::ConnAck(connack) => Some(connack.clone()),
                _ => None,
            })
            .await;
        (test_client, connack)
    }

    /// Waits for the next event; panics after [`TIMEOUT`] or when the connection failed.
    async fn next_event(&mut self, what: &str) -> Event {
        let event = tokio::time::timeout(TIMEOUT, self.events.recv()).await;
        match event {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("client event loop ended while waiting for {what}"),
            Ok(Some(Err(error))) => panic!("connection failed while waiting for {what}: {error}"),
            Ok(Some(Ok(event))) => event,
        }
    }

    /// Waits for an incoming packet that `select` accepts, keeping PUBLISH packets met on the
    /// way for [`TestClient::next_publish`].
    async fn next_incoming<T>(&mut self, what: &str, select: impl Fn(&Packet) -> Option<T>) -> T {
        loop {
            if let Event::Incoming(packet) = self.next_event(what).await {
                if let Some(found) = select(&packet) {
                    return found;
                }
                if let Packet::Publish(publish) = packet {
                    self.pending.push_back(publish);
                }
            }
        }
    }

    /// Subscribes to `filter` and returns the SUBACK return codes.
    pub(super) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        self.next_incoming("SUBACK", |packet| match packet {
            Packet::SubAck(suback) => Some(suback.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Queues a PUBLISH.
    pub(super) async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) {
        let payload: Bytes = payload.into();
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .expect("queue PUBLISH");
    }

    /// Waits for `count` PUBACKs from the broker.
    pub(super) async fn wait_for_pubacks(&mut self, count: usize) {
        for _ in 0..count {
            self.next_incoming("PUBACK", |packet| {
                matches!(packet, Packet::PubAck(_)).then_some(())
            })
            .await;
        }
    }

    /// Waits for the next PUBLISH from the broker.
    pub(super) async fn next_publish(&mut self) -> Publish {
        if let Some(publish) = self.pending.pop_front() {
            return publish;
        }
        self.next_incoming("PUBLISH", |packet| match packet {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the next PUBLISH and returns its payload as text.
    pub(super) async fn next_payload(&mut self) -> String {
        let publish = self.next_publish().await;
        String::from_utf8(publish.payload.to_vec()).expect("UTF-8 payload")
    }

    /// Sends DISCONNECT and waits until the client has written it.
    pub(super) async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        loop {
            let event = tokio::time::timeout(TIMEOUT, self.events.recv()).await;
            match event.expect("DISCONNECT sent in time") {
                Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Waits until the broker closes the connection; returns the client's error text.
    pub(super) async fn wait_for_close(&mut self) -> String {
        loop {
            let event = tokio::time::timeout(TIMEOUT, self.events.recv()).await;
            match event.expect("connection closed in time") {
                Some(Err(error)) => return error,
                None => return "event loop ended".to_owned(),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// A client on a plain TCP socket that sends and reads single MQTT packets.
pub(super) struct RawClient {
    stream: TcpStream,
    buffer: BytesMut,
}

impl RawClient {
    /// Opens a TCP connection to `address`.
    pub(super) async fn open(address: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(address)
            .await
            .expect("connect to the broker");
        RawClient {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK.
    pub(super) async fn connect(address: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::open(address).await;
        client.send(RawPacket::Connect(connect)).await;
        match client.receive().await {
            Some(RawPacket::ConnAck(connack)) => (client, connack),
            other => panic!("expected CONNACK, received {other:?}"),
        }
    }

    /// Sends one packet.
    pub(super) async fn send(&mut self, packet: RawPacket) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, usize::MAX).expect("encode packet");
        self.send_bytes(&bytes).await;
    }

    /// Sends raw bytes.
    pub(super) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the broker");
    }

    /// Reads the next packet; returns `None` when the broker closed the connection. Panics
    /// after [`TIMEOUT`].
    pub(super) async fn receive(&mut self) -> Option<RawPacket> {
        tokio::time::timeout(TIMEOUT, self.read_packet())
            .await
            .expect("packet or close in time")
    }

    /// Reads the next packet if one arrives within `wait`.
    pub(super) async fn receive_within(&mut self, wait: Duration) -> Option<RawPacket> {
        tokio::time::timeout(wait, self.read_packet())
            .await
            .ok()
            .flatten()
    }

    async fn read_packet(&mut self) -> Option<RawPacket> {
        loop {
            match RawPacket::read(&mut self.buffer, usize::MAX) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("broker sent an undecodable packet: {error}"),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits until the broker closes the connection, skipping packets before that.
    pub(super) async fn expect_closed(&mut self) {
        for _ in 0..10_000 {
            if self.receive().await.is_none() {
                return;
            }
        }
        panic!("broker kept sending packets instead of closing the connection");
    }

    /// Subscribes to `filters` and returns the SUBACK.
    pub(super) async fn subscribe(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> SubAck {
        let filters = filters
            .iter()
            .map(|(path, qos)| SubscribeFilter::new((*path).to_owned(), *qos))
            .collect();
        self.send(RawPacket::Subscribe(Subscribe {
            pkid: packet_id,
            filters,
        }))
        .await;
        match self.receive().await {
            Some(RawPacket::SubAck(suback)) => suback,
            other => panic!("expected SUBACK, received {other:?}"),
        }
    }

    /// Reads the next packet and expects a PUBLISH.
    pub(super) async fn receive_publish(&mut self) -> Publish {
        match self.receive().await {
            Some(RawPacket::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, received {other:?}"),
        }
    }
}

/// Builds an MQTT 3.1.1 CONNECT packet.
pub(super) fn connect_packet(client_id: &str, clean_session: bool, keep_alive_s: u16) -> Connect {
    let mut connect = Connect::new(client_id);
    connect.clean_session = clean_session;
    connect.keep_alive = keep_alive_s;
    connect
}
