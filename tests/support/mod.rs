//! Helpers for end-to-end tests: the `shadowflow` binary as a child process, Debian's
//! mosquitto, an MQTT device client, an HTTP client and an independent Parquet reader.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// How long a test waits for one expected message.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns a port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Path of the shared data sets, which tests read but never copy.
pub fn datasets_dir() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/raw");
    assert!(
        path.is_dir(),
        "data sets not found at {}: they live beside the repository in shared/datasets/raw",
        path.display()
    );
    path
}

/// A running `shadowflow serve`.
pub struct Service {
    child: Option<Child>,
    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:41234`.
    pub http: String,
    /// Broker URL the service uses, e.g. `mqtt://127.0.0.1:1883`.
    pub mqtt: String,
    /// MQTT port the service uses.
    pub mqtt_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Faults every service under test injects: applying an update whose clientToken is
/// `fault-injected-panic` panics, which the service must reject with 500.
const INJECTED_FAULTS: &str = "shadow-update=return(fault-injected-panic)";

impl Service {
    /// Starts the service with its embedded broker on a free port.
    pub fn start_embedded(data_dir: &Path, workers: usize) -> Service {
        let listen = format!("127.0.0.1:{}", free_port());
        Self::start(&["--mqtt-listen", &listen], data_dir, workers)
    }

    /// Starts the service against a running broker.
    pub fn start_with_broker(broker: &str, data_dir: &Path, workers: usize) -> Service {
        Self::start(&["--mqtt-broker", broker], data_dir, workers)
    }

    /// Starts the service against a running broker, with extra `serve` flags.
    pub fn start_with_broker_and_flags(
        broker: &str,
        extra: &[&str],
        data_dir: &Path,
        workers: usize,
    ) -> Service {
        let mut args = vec!["--mqtt-broker", broker];
        args.extend_from_slice(extra);
        Self::start(&args, data_dir, workers)
    }

    /// Starts the service with its embedded broker and extra `serve` flags.
    pub fn start_embedded_with(extra: &[&str], data_dir: &Path, workers: usize) -> Service {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--mqtt-listen", &listen];
        args.extend_from_slice(extra);
        Self::start(&args, data_dir, workers)
    }

    fn start(extra: &[&str], data_dir: &Path, workers: usize) -> Service {
        let workers = workers.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_shadowflow"))
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--workers",
                &workers,
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info,rumqttc=warn")
            .env("FAILPOINTS", INJECTED_FAULTS)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shadowflow serve");
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().expect("stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = match ready.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "shadowflow did not print its ready line within 60 s; stderr:\n{}",
                    stderr.join().unwrap_or_default()
                );
            }
        };
        assert!(
            line.starts_with("shadowflow ready"),
            "unexpected first line: {line}"
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("ready line lacks {name}: {line}"))
                .to_owned()
        };
        let http = field("http=");
        let mqtt = field("mqtt=");
        let mqtt_port = mqtt
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("mqtt port");
        Service {
            child: Some(child),
            http,
            mqtt,
            mqtt_port,
            data_dir: data_dir.to_owned(),
            stderr: Some(stderr),
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status and stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("service still running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for shadowflow") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("shadowflow did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = self
            .stderr
            .take()
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default();
        (status, stderr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Debian's mosquitto on a free loopback port, stopped when dropped.
pub struct Mosquitto {
    child: Child,
    /// Port it listens on.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto; fails the test with install instructions when it is missing.
    pub fn start() -> Mosquitto {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("mosquitto not found: install it with `apt-get install -y mosquitto`");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    /// Broker URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An MQTT client playing a device.
pub struct Device {
    client: Client,
    messages: mpsc::Receiver<(String, Value)>,
    acks: mpsc::Receiver<()>,
}

impl Device {
    /// Connects to the broker on `port` and subscribes to `filters` at QoS 1.
    pub fn connect(id: &str, port: u16, filters: &[String]) -> Device {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut connection) = Client::new(options, 100);
        let (message_sender, messages) = mpsc::channel();
        let (ack_sender, acks) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let payload =
                            serde_json::from_slice(&publish.payload).unwrap_or(Value::Null);
                        if message_sender.send((publish.topic, payload)).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ack_sender.send(());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        for filter in filters {
            client
                .subscribe(filter.clone(), QoS::AtLeastOnce)
                .expect("subscribe");
            acks.recv_timeout(MESSAGE_TIMEOUT)
                .expect("SUBACK from the broker");
        }
        Device {
            client,
            messages,
            acks,
        }
    }

    /// Publishes `payload` on `topic` at QoS 1.
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .expect("publish");
    }

    /// Waits for the next message on `topic`, skipping others.
    pub fn expect_on(&self, topic: &str) -> Value {
        let deadline = Instant::now() + MESSAGE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok((received, payload)) if received == topic => return payload,
                Ok(_) => continue,
                Err(_) => panic!("no message on {topic} within {MESSAGE_TIMEOUT:?}"),
            }
        }
    }

    /// Returns the next message, or `None` when none arrives within `timeout`.
    pub fn next_message(&self, timeout: Duration) -> Option<(String, Value)> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// Returns every message that arrives within `window`.
    pub fn drain(&self, window: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + window;
        let mut received = Vec::new();
        while let Ok(message) = self
            .messages
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            received.push(message);
        }
        received
    }
}

impl Device {
    /// Waits until the connection closes, and returns the messages that arrived before it did;
    /// returns `None` when the connection is still open after `timeout`.
    ///
    /// The connection counts as closed once the client's event loop reports an error, which is
    /// usually the broker closing the socket.
    pub fn wait_for_close(&self, timeout: Duration) -> Option<Vec<(String, Value)>> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) => received.push(message),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Some(received),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
            }
        }
    }
}

/// A small HTTP client that returns status and JSON body.
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    /// Client for the API at `base`.
    pub fn new(base: &str) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http {
            agent,
            base: base.to_owned(),
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("HTTP GET");
        Self::read(response)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .agent
            .delete(format!("{}{path}", self.base))
            .call()
            .expect("HTTP DELETE");
        Self::read(response)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)
            .expect("HTTP POST");
        Self::read(response)
    }

    /// `POST path` with a body of raw bytes, which need not be UTF-8 or JSON.
    pub fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)
            .expect("HTTP POST");
        Self::read(response)
    }

    fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("read body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }
}

/// Reads every history row under `history` with pyarrow, an independent Parquet reader.
pub fn read_history(history: &Path) -> Vec<Value> {
    let script = r#"
import json, sys
import pyarrow.dataset as ds
table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive").to_table()
rows = table.to_pylist()
for row in rows:
    row["accepted_at"] = int(row["accepted_at"].timestamp() * 1000)
    row["date"] = str(row.get("date"))
print(json.dumps(rows))
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(history)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "reading the history with pyarrow failed (install it with `pip install pyarrow`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("pyarrow output is JSON")
}

impl Service {
    /// Process id of the service.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("service still running").id()
    }

    /// Kills the process with SIGKILL, as a crash would, and returns its stderr.
    pub fn kill(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stderr
            .take()
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The MQTT connection of a [`Device`] has closed.
#[derive(Debug)]
pub struct ConnectionClosed;

impl Device {
    /// Publishes `payload` on `topic` at QoS 1; returns an error instead of panicking once the
    /// connection has closed.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), rumqttc::ClientError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
    }

    /// Returns the next message within `timeout`, `Ok(None)` when none arrives, or
    /// `Err(ConnectionClosed)` once the connection has closed and every message was read.
    pub fn next_message_or_closed(
        &self,
        timeout: Duration,
    ) -> Result<Option<(String, Value)>, ConnectionClosed> {
        match self.messages.recv_timeout(timeout) {
            Ok(message) => Ok(Some(message)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConnectionClosed),
        }
    }
}

impl Http {
    /// Client for the API at `base` whose requests fail after `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Http {
            agent,
            base: base.to_owned(),
        }
    }

    /// `GET path`; returns an error instead of panicking when the service cannot be reached.
    pub fn try_get(&self, path: &str) -> Result<(u16, Value), ureq::Error> {
        let response = self.agent.get(format!("{}{path}", self.base)).call()?;
        Self::try_read(response)
    }

    /// `POST path` with a JSON body; returns an error instead of panicking when the service
    /// cannot be reached or the connection breaks.
    pub fn try_post(&self, path: &str, body: &str) -> Result<(u16, Value), ureq::Error> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)?;
        Self::try_read(response)
    }

    /// `DELETE path` with a JSON body such as `{"clientToken":"..."}`; returns an error instead
    /// of panicking when the service cannot be reached or the connection breaks.
    pub fn try_delete_with_body(
        &self,
        path: &str,
        body: &str,
    ) -> Result<(u16, Value), ureq::Error> {
        let response = self
            .agent
            .delete(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .force_send_body()
            .send(body)?;
        Self::try_read(response)
    }

    fn try_read(
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<(u16, Value), ureq::Error> {
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }
}
