"""MQTT events against a real Mosquitto broker that each test starts on a free loopback port: what the daemon
publishes, Home Assistant discovery, a broker restart with events queued, TLS, and clear login errors."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ConfigError, MqttConfig, load_config
from edge.detector import Detection
from edge.mqtt import MqttError, MqttPublisher, check_connection
from edge.mqtt_topics import object_id
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
USER, PASSWORD = "udkws", "s3cret phrase"

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="Mosquitto is not installed (make setup installs the Debian package mosquitto)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Broker:
    """Mosquitto with a password file and persistence (so sessions and queued messages survive a restart)."""

    def __init__(self, folder: Path, tls: dict[str, Path] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        passwords = folder / "passwd"
        subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwords), USER, PASSWORD], check=True, timeout=30)
        lines = [
            f"listener {self.port} 127.0.0.1",
            # Started as root, mosquitto would switch to its own user, who cannot write in the test's folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence true",
            f"persistence_location {folder}/",
            f"log_dest file {folder / 'mosquitto.log'}",
        ]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (
                    (self.folder / "mosquitto.log").read_text()
                    if (self.folder / "mosquitto.log").is_file()
                    else ""
                )
                raise AssertionError(f"mosquitto exited: {log[-1000:]}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, what="mosquitto to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # saves the persistence file
            self.process.wait(timeout=30)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    running = Broker(folder)
    yield running
    running.stop()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "mqtt.password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


class Listener:
    """A Home Assistant-like subscriber: a persistent session (QoS 1), every message kept with its flags."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "listener") -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _keep(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, topic: str, count: int = 1, timeout_s: float = 60) -> list[str]:
        wait_until(lambda: len(self.on(topic)) >= count, timeout_s, f"{count} message(s) on {topic}")
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str = "#") -> dict[str, str]:
    """What a newcomer receives at once: the retained messages."""
    listener = Listener(port, topic, client_id=f"newcomer-{time.monotonic_ns()}")
    time.sleep(1.0)  # retained messages arrive right after the subscription
    listener.close()
    with listener.lock:
        return {t: payload for t, payload, flag in listener.messages if flag}


def mqtt_config(port: int, password_file: Path, **extra: Any) -> MqttConfig:
    return MqttConfig(
        enabled=True,
        host="127.0.0.1",
        port=port,
        username=USER,
        password_file=str(password_file),
        node_id="board",
        retry_max_s=1.0,
        **extra,
    )


def detection(keyword: str, seconds: float) -> Detection:
    end = int(seconds * 16000)
    return Detection(keyword, 0.8, 0.5, end - 24000, end, None, None, np.zeros(1, dtype=np.float32))


def kws_env() -> dict[str, str]:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("NOTIFY_SOCKET", None)
    return env


def kws(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=120, env=kws_env()
    )


def daemon_config(tmp_path: Path, model: Path, port: int, password_file: Path, extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{model}"\n[state]\ndir = "{tmp_path / "state"}"\nreload_s = 0.2\n'
        "[detector]\nthreshold = 0.7\n[gpio]\nenabled = false\n"
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\nusername = "{USER}"\n'
        f'password_file = "{password_file}"\nnode_id = "board"\nretry_max_s = 1.0\n{extra}'
    )
    return config


def test_the_daemon_publishes_detections_discovery_and_availability(
    tmp_path: Path,
    broker: Broker,
    password_file: Path,
    random_model_path: Path,
    keyword_stream: KeywordStream,
) -> None:
    config = daemon_config(tmp_path, random_model_path, broker.port, password_file)
    enrolled = kws(
        "enroll", "happy", str(keyword_stream.keyword_clip), "--config", str(config), "--no-checks"
    )
    assert enrolled.returncode == 0, enrolled.stderr
    listener = Listener(broker.port)
    try:
        wait_until(listener.client.is_connected, what="the listener to connect")
        run = kws("run", "--config", str(config), "--file", str(keyword_stream.path))
        assert run.returncode == 0, run.stderr
        detections = [json.loads(p) for p in listener.wait_for("udkws/board/detection", 3)]
        events = [json.loads(p) for p in listener.wait_for("udkws/board/keyword/happy", 3)]
        statuses = listener.wait_for("udkws/board/status", 2)
    finally:
        listener.close()
    daemon_times = [json.loads(line)["time_s"] for line in run.stdout.splitlines() if '"detection"' in line]
    assert [d["time_s"] for d in detections] == daemon_times and len(daemon_times) == 3
    assert {d["keyword"] for d in detections} == {"happy"} and all(0.7 <= d["score"] <= 1 for d in detections)
    assert all(e["event_type"] == "detected" and e["keyword"] == "happy" and "time" in e for e in events)
    assert statuses[0] == "online" and statuses[-1] == "offline"

    state = retained(broker.port)
    assert state["udkws/board/status"] == "offline"
    assert json.loads(state["udkws/board/keywords"]) == {"keywords": ["happy"]}
    discovery = json.loads(state["homeassistant/event/board/happy/config"])
    assert discovery["state_topic"] == "udkws/board/keyword/happy"
    assert (
        discovery["event_types"] == ["detected"] and discovery["availability_topic"] == "udkws/board/status"
    )
    assert discovery["unique_id"] == "udkws_board_happy" and discovery["device"]["identifiers"] == [
        "udkws_board"
    ]
    sensor = json.loads(state["homeassistant/sensor/board/keywords/config"])
    assert sensor["state_topic"] == "udkws/board/keywords" and "count" in sensor["value_template"]


def test_enrollment_and_removal_while_the_daemon_runs(
    tmp_path: Path,
    broker: Broker,
    password_file: Path,
    random_model_path: Path,
    keyword_stream: KeywordStream,
) -> None:
    """`kws-edge enroll` / `remove` from another process: the daemon's reload shows them on MQTT, and the
    discovery of a keyword removed while the daemon was down is cleared when it connects."""
    config = daemon_config(tmp_path, random_model_path, broker.port, password_file)
    ghost = Listener(broker.port, client_id="ghost-writer")
    ghost.client.publish("homeassistant/event/board/ghost/config", '{"name": "ghost"}', qos=1, retain=True)
    ghost.close()
    listener = Listener(broker.port)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=kws_env(),
    )
    try:
        listener.wait_for("udkws/board/status")
        wait_until(
            lambda: "" in listener.on("homeassistant/event/board/ghost/config"), what="the ghost's removal"
        )
        clip = str(keyword_stream.keyword_clip)
        assert kws("enroll", "a.word", clip, "--config", str(config), "--no-checks").returncode == 0
        added = json.loads(listener.wait_for("udkws/board/enrollment")[0])
        assert added["event"] == "added" and added["keyword"] == "a.word"
        config_topic = f"homeassistant/event/board/{object_id('a.word')}/config"
        assert json.loads(listener.wait_for(config_topic)[0])["name"] == "a.word"
        assert kws("remove", "a.word", "--config", str(config)).returncode == 0
        removed = json.loads(listener.wait_for("udkws/board/enrollment", 2)[1])
        assert removed["event"] == "removed" and removed["keyword"] == "a.word"
        assert listener.wait_for(config_topic, 2)[1] == ""
    finally:
        listener.close()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon.stderr.read()  # type: ignore[union-attr]
    state = retained(broker.port)
    assert not any(topic.startswith("homeassistant/event/") for topic in state), state
    assert json.loads(state["udkws/board/keywords"]) == {"keywords": []}


def test_a_broker_restart_is_survived_with_the_events_queued(broker: Broker, password_file: Path) -> None:
    listener = Listener(broker.port, "udkws/board/detection")
    publisher = MqttPublisher(mqtt_config(broker.port, password_file))
    publisher.keywords(["happy"])
    publisher.start()
    try:
        wait_until(lambda: publisher.connected, what="the publisher to connect")
        publisher.detection(detection("happy", 1.0))
        listener.wait_for("udkws/board/detection")
        broker.stop()
        wait_until(lambda: not publisher.connected, what="the publisher to notice")
        for seconds in (2.0, 3.0, 4.0):
            publisher.detection(detection("happy", seconds))  # the broker is down: queued, never blocking
        assert len(publisher._queue) >= 3  # waiting in the publisher's own queue, not in a blocked call
        broker.start()
        received = [json.loads(p)["time_s"] for p in listener.wait_for("udkws/board/detection", 4)]
    finally:
        publisher.close()
        listener.close()
    assert received == [1.0, 2.0, 3.0, 4.0] and publisher.dropped == 0


def test_a_full_queue_drops_the_oldest_events(password_file: Path) -> None:
    publisher = MqttPublisher(mqtt_config(free_port(), password_file, queue_size=3))  # nobody listens there
    publisher.keywords(["happy"])
    publisher.start()
    try:
        for seconds in range(1, 6):
            publisher.detection(detection("happy", float(seconds)))
        assert publisher.dropped == 7  # two messages per detection, three kept
    finally:
        publisher.close(timeout_s=0.5)


def test_a_wrong_password_is_a_clear_error(tmp_path: Path, broker: Broker, password_file: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    with pytest.raises(MqttError, match=r"refused the login of user 'udkws' .*wrong user name or password"):
        check_connection(mqtt_config(broker.port, wrong))
    assert "logged in" in check_connection(mqtt_config(broker.port, password_file))

    config = tmp_path / "check.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = "{USER}"\npassword_file = "{wrong}"\n'
    )
    result = kws("mqtt-check", "--config", str(config))
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert "wrong user name or password" in line and str(wrong) in line and "Traceback" not in result.stderr

    events: list[dict[str, Any]] = []
    publisher = MqttPublisher(mqtt_config(broker.port, wrong), events.append)
    publisher.start()
    try:
        wait_until(lambda: any(e["event"] == "mqtt_error" for e in events), what="the login error")
    finally:
        publisher.close(timeout_s=0.5)
    assert not publisher.connected
    errors = {e["error"] for e in events if e["event"] == "mqtt_error"}
    assert any("refused the login of user 'udkws'" in e for e in errors), errors


def test_password_rules(tmp_path: Path) -> None:
    readable = tmp_path / "readable.password"
    readable.write_text("secret\n")
    readable.chmod(0o640)
    with pytest.raises(MqttError, match=r"others may read it \(mode 640\).*chmod 600"):
        MqttPublisher(mqtt_config(1883, readable))
    empty = tmp_path / "empty.password"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(MqttError, match="empty"):
        MqttPublisher(mqtt_config(1883, empty))
    with pytest.raises(MqttError, match="cannot read it"):
        MqttPublisher(mqtt_config(1883, tmp_path / "absent"))
    in_toml = tmp_path / "c.toml"
    in_toml.write_text('[mqtt]\nusername = "u"\npassword = "secret"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.password: a password is never read from .*password_file"):
        load_config(in_toml)
    no_user = tmp_path / "d.toml"
    no_user.write_text(f'[mqtt]\npassword_file = "{empty}"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: a password needs a username"):
        load_config(no_user)


def test_the_daemon_refuses_a_password_file_others_can_read(
    tmp_path: Path, random_model_path: Path, password_file: Path
) -> None:
    password_file.chmod(0o644)
    config = daemon_config(tmp_path, random_model_path, 1883, password_file)
    result = kws("run", "--config", str(config), "--stdin")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"mqtt.password_file {password_file}: others may read it (mode 644)" in result.stderr


def _make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    files = {name: folder / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key")}
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=udkws test CA",
        "-keyout", str(files["ca-key"]), "-out", str(files["ca"]),
    )  # fmt: skip
    request = folder / "server.csr"
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(files["key"]), "-out", str(request),
    )  # fmt: skip
    extensions = folder / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(files["ca"]), "-CAkey", str(files["ca-key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(files["cert"]),
    )  # fmt: skip
    return files


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_tls_with_the_broker_certificate_authority(tmp_path: Path, password_file: Path) -> None:
    folder = tmp_path / "tls-broker"
    folder.mkdir()
    certificates = _make_certificates(folder)
    tls_broker = Broker(folder, tls=certificates)
    try:
        config = mqtt_config(tls_broker.port, password_file, tls=True, ca_file=str(certificates["ca"]))
        assert "logged in" in check_connection(config)
        with pytest.raises(MqttError, match="certificate verify failed"):
            check_connection(mqtt_config(tls_broker.port, password_file, tls=True))  # the system CAs
        with pytest.raises(MqttError, match=r"mqtt\.ca_file .*not a usable CA certificate"):
            check_connection(
                mqtt_config(tls_broker.port, password_file, tls=True, ca_file=str(password_file))
            )
    finally:
        tls_broker.stop()


def test_the_last_will_says_offline_when_the_daemon_dies(
    tmp_path: Path, broker: Broker, password_file: Path, random_model_path: Path
) -> None:
    config = daemon_config(tmp_path, random_model_path, broker.port, password_file)
    listener = Listener(broker.port, "udkws/board/status")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=kws_env(),
    )
    try:
        assert listener.wait_for("udkws/board/status")[-1] == "online"
        daemon.kill()  # no clean stop, no "offline" of its own: the broker publishes the will
        daemon.wait(timeout=30)
        assert listener.wait_for("udkws/board/status", 2)[-1] == "offline"
    finally:
        if daemon.poll() is None:
            daemon.kill()
        listener.close()
    assert retained(broker.port, "udkws/board/status") == {"udkws/board/status": "offline"}
