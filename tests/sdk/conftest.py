"""Fixtures that run shadowflow, Debian's mosquitto and AWS IoT Device SDK v2 clients.

Every process listens on 127.0.0.1 only and is stopped by PID at teardown. Every wait is
bounded by TIMEOUT_S, or by the longer start-up limit for child processes.
"""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
from awscrt import io, mqtt, mqtt5
from awsiot import iotshadow

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

# Seconds a test waits for one MQTT acknowledgement, response or event.
TIMEOUT_S = 10.0
# Seconds a child process has to start listening or to exit after SIGTERM.
PROCESS_TIMEOUT_S = 30.0
# Seconds a test waits to conclude that a message was not published.
SILENCE_S = 1.0

BROKERS = ["embedded", "mosquitto"]
EMBEDDED_BROKER_LACKS_MQTT5 = (
    "the embedded broker speaks MQTT 3.1.1 only (docs/compatibility.md, Known differences); "
    "MQTT 5 clients need an external broker such as mosquitto"
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def shadowflow_binary() -> Path:
    """Return the shadowflow executable: $SHADOWFLOW_BIN, else the debug build of this checkout."""
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))
    path = Path(os.environ.get("SHADOWFLOW_BIN", target_dir / "debug" / "shadowflow"))
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"shadowflow binary not found at {path}: run `cargo build` in {REPO_ROOT} "
            "or set SHADOWFLOW_BIN to the executable"
        )
    return path


def mosquitto_binary() -> Path:
    """Return the path of Debian's mosquitto, or fail the test with install instructions."""
    for candidate in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    found = shutil.which("mosquitto")
    if found is None:
        pytest.fail("mosquitto not found: install it with `apt-get install -y mosquitto`")
    return Path(found)


def stop_process(process: subprocess.Popen, name: str) -> int:
    """Send SIGTERM to process, wait for it, and return its exit code.

    A process still running after PROCESS_TIMEOUT_S is killed and the test fails.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=PROCESS_TIMEOUT_S)
        pytest.fail(f"{name} (pid {process.pid}) did not exit within {PROCESS_TIMEOUT_S} s of SIGTERM")


class Mosquitto:
    """Debian's mosquitto on a free loopback port with a throw-away configuration."""

    def __init__(self, directory: Path):
        self.port = free_port()
        config = directory / "mosquitto.conf"
        # max_queued_messages 0 lifts mosquitto's per-client queue limit (mosquitto.conf(5)), so a
        # persistent session keeps every QoS 1 message published while its client is offline.
        config.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"
            "log_dest stderr\n"
        )
        self.log_path = directory / "mosquitto.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(mosquitto_binary()), "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_listening()
        except BaseException:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=PROCESS_TIMEOUT_S)
            raise

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited with code {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"mosquitto did not listen on port {self.port} within {PROCESS_TIMEOUT_S} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process, "mosquitto")


class Shadowflow:
    """A running `shadowflow serve`, with the addresses from its ready line."""

    def __init__(self, data_dir: Path, log_dir: Path, broker_url: Optional[str]):
        if broker_url is None:
            mqtt_flags = ["--mqtt-listen", f"{LOOPBACK}:0"]
        else:
            mqtt_flags = ["--mqtt-broker", broker_url]
        command = [
            str(shadowflow_binary()),
            "serve",
            *mqtt_flags,
            "--http-listen",
            f"{LOOPBACK}:0",
            "--data-dir",
            str(data_dir),
        ]
        self.stderr_path = log_dir / "shadowflow.stderr"
        environment = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=environment,
            )
        self._stdout_lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        try:
            self._parse_ready_line(self._wait_for_ready_line())
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=PROCESS_TIMEOUT_S)

    def _read_stdout(self) -> None:
        # Drains stdout until the process exits, so the pipe never fills.
        for raw_line in self.process.stdout:
            self._stdout_lines.put(raw_line.decode(errors="replace").rstrip("\n"))

    def _wait_for_ready_line(self) -> str:
        try:
            return self._stdout_lines.get(timeout=PROCESS_TIMEOUT_S)
        except queue.Empty:
            self.kill()
            pytest.fail(
                f"shadowflow printed no ready line within {PROCESS_TIMEOUT_S} s "
                f"(exit code {self.process.returncode}); stderr:\n{self.stderr()}"
            )

    def _parse_ready_line(self, line: str) -> None:
        # Example: shadowflow ready http=http://127.0.0.1:8080 mqtt=mqtt://127.0.0.1:1883 data_dir=./data
        if not line.startswith("shadowflow ready "):
            self.kill()
            pytest.fail(f"unexpected first stdout line of shadowflow: {line!r}; stderr:\n{self.stderr()}")
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        self.http_url = fields["http"]
        mqtt_host, mqtt_port = fields["mqtt"].removeprefix("mqtt://").rsplit(":", 1)
        assert self.http_url.startswith(f"http://{LOOPBACK}:"), line
        assert mqtt_host == LOOPBACK, line
        self.mqtt_port = int(mqtt_port)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process, "shadowflow")


@dataclass
class Deployment:
    """shadowflow and the broker its devices connect to."""

    broker: str
    service: Shadowflow
    mqtt_port: int

    def shadow_url(self, thing: str, shadow: Optional[str] = None) -> str:
        url = f"{self.service.http_url}/things/{thing}/shadow"
        return url if shadow is None else f"{url}?name={shadow}"


@pytest.fixture
def deployment(request, tmp_path) -> Deployment:
    """Start shadowflow with the broker named by the parameter: "embedded" or "mosquitto".

    Teardown stops shadowflow with SIGTERM and fails the test unless it exits with code 0.
    """
    broker = getattr(request, "param", "embedded")
    assert broker in BROKERS, broker
    mosquitto = None
    service = None
    try:
        if broker == "mosquitto":
            mosquitto = Mosquitto(tmp_path)
            service = Shadowflow(tmp_path / "data", tmp_path, f"mqtt://{LOOPBACK}:{mosquitto.port}")
            mqtt_port = mosquitto.port
        else:
            service = Shadowflow(tmp_path / "data", tmp_path, None)
            mqtt_port = service.mqtt_port
        yield Deployment(broker=broker, service=service, mqtt_port=mqtt_port)
        exit_code = service.stop()
        assert exit_code == 0, f"shadowflow exited with code {exit_code} after SIGTERM; stderr:\n{service.stderr()}"
    finally:
        if service is not None:
            service.kill()
        if mosquitto is not None:
            mosquitto.stop()


def http_request(method: str, url: str, body: Optional[dict] = None) -> tuple[int, dict]:
    """Send one HTTP request to the service and return its status and JSON body."""
    assert url.startswith(f"http://{LOOPBACK}:"), url
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Inbox:
    """Messages delivered to one SDK callback, in arrival order."""

    def __init__(self, name: str):
        self.name = name
        self._messages: "queue.Queue" = queue.Queue()

    def __call__(self, message) -> None:
        self._messages.put(message)

    def next(self, timeout: float = TIMEOUT_S):
        """Return the next message; fail when none arrives within timeout seconds."""
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no message on {self.name} within {timeout} s")
        # The SDK passes None when it cannot parse a payload as the modeled class.
        assert message is not None, f"the SDK could not parse a message on {self.name}"
        return message

    def assert_empty(self, within: float = SILENCE_S) -> None:
        """Fail if any message arrives within `within` seconds."""
        try:
            message = self._messages.get(timeout=within)
        except queue.Empty:
            return
        pytest.fail(f"unexpected message on {self.name}: {message!r}")


class RawRecorder:
    """Plain MQTT 3.1.1 subscriber on every shadow topic, used to show raw payloads in failures."""

    def __init__(self, port: int, client_id: str):
        self.connection = new_mqtt3_connection(port, client_id, clean_session=True)
        self.connection.connect().result(TIMEOUT_S)
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes]] = []
        subscribed, _ = self.connection.subscribe("$aws/things/#", mqtt.QoS.AT_LEAST_ONCE, self._on_message)
        subscribed.result(TIMEOUT_S)

    def _on_message(self, topic, payload, **kwargs) -> None:
        with self._lock:
            self._messages.append((topic, payload))

    def payloads(self, topic: str) -> list[str]:
        """Return every payload received on topic so far, decoded as text."""
        with self._lock:
            return [payload.decode(errors="replace") for name, payload in self._messages if name == topic]

    def close(self) -> None:
        self.connection.disconnect().result(TIMEOUT_S)


def new_mqtt3_connection(port: int, client_id: str, clean_session: bool) -> mqtt.Connection:
    """Build an MQTT 3.1.1 connection without TLS (awscrt.mqtt.Client with tls_ctx=None)."""
    bootstrap = io.ClientBootstrap.get_or_create_static_default()
    client = mqtt.Client(bootstrap, tls_ctx=None)
    return mqtt.Connection(
        client=client,
        host_name=LOOPBACK,
        port=port,
        client_id=client_id,
        clean_session=clean_session,
        keep_alive_secs=30,
        protocol_operation_timeout_ms=int(TIMEOUT_S * 1000),
    )


class Mqtt3Device:
    """A device using the SDK's IotShadowClient over one MQTT 3.1.1 connection."""

    def __init__(self, port: int, client_id: str, clean_session: bool = True):
        self.connection = new_mqtt3_connection(port, client_id, clean_session)
        self.shadow = iotshadow.IotShadowClient(self.connection)
        self.connected = False

    def connect(self) -> bool:
        """Connect and return the broker's session-present flag."""
        result = self.connection.connect().result(TIMEOUT_S)
        self.connected = True
        return result["session_present"]

    def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.connection.disconnect().result(TIMEOUT_S)

    def subscribe(self, subscribe_call: Callable, request, name: str, qos=mqtt.QoS.AT_LEAST_ONCE) -> Inbox:
        """Call one of the SDK's subscribe_to_* methods and wait for the SUBACK."""
        inbox = Inbox(name)
        subscribed, _topic = subscribe_call(request=request, qos=qos, callback=inbox)
        granted = subscribed.result(TIMEOUT_S)
        assert granted in (mqtt.QoS.AT_MOST_ONCE, mqtt.QoS.AT_LEAST_ONCE), f"{name}: granted {granted!r}"
        return inbox

    def publish(self, publish_call: Callable, request) -> None:
        """Call one of the SDK's publish_* methods at QoS 1 and wait for the PUBACK."""
        publish_call(request=request, qos=mqtt.QoS.AT_LEAST_ONCE).result(TIMEOUT_S)


@pytest.fixture
def connect_device(deployment: Deployment):
    """Return a function that connects an Mqtt3Device. Teardown disconnects every device it connected."""
    devices: list[Mqtt3Device] = []

    def connect(client_id: str, clean_session: bool = True) -> Mqtt3Device:
        device = Mqtt3Device(deployment.mqtt_port, client_id, clean_session)
        devices.append(device)
        device.connect()
        return device

    yield connect
    for device in devices:
        device.disconnect()


@pytest.fixture
def recorder(deployment: Deployment):
    """A RawRecorder connected to the deployment's broker."""
    raw = RawRecorder(deployment.mqtt_port, "sdk-test-recorder")
    yield raw
    raw.close()


class Mqtt5Client:
    """An awscrt MQTT 5 client without TLS, started and stopped with bounded waits."""

    def __init__(self, port: int, client_id: str):
        self._connected: Future = Future()
        self._stopped: Future = Future()
        options = mqtt5.ClientOptions(
            host_name=LOOPBACK,
            port=port,
            bootstrap=io.ClientBootstrap.get_or_create_static_default(),
            tls_ctx=None,
            connect_options=mqtt5.ConnectPacket(client_id=client_id, keep_alive_interval_sec=30),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            on_lifecycle_event_connection_success_fn=self._on_connection_success,
            on_lifecycle_event_connection_failure_fn=self._on_connection_failure,
            on_lifecycle_event_stopped_fn=self._on_stopped,
        )
        self.client = mqtt5.Client(options)

    def _on_connection_success(self, data) -> None:
        if not self._connected.done():
            self._connected.set_result(data)

    def _on_connection_failure(self, data) -> None:
        if not self._connected.done():
            self._connected.set_exception(RuntimeError(f"MQTT 5 connection failed: {data.exception!r}"))

    def _on_stopped(self, data) -> None:
        if not self._stopped.done():
            self._stopped.set_result(data)

    def start(self) -> None:
        self.client.start()
        self._connected.result(TIMEOUT_S)

    def stop(self) -> None:
        self.client.stop()
        self._stopped.result(TIMEOUT_S)
