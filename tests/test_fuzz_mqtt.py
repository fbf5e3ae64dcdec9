"""Fuzzing the MQTT side: the [mqtt] settings, the password file, keyword names in topics, and what the broker sends.

Every key of [mqtt] gets values of every type and hostile strings (wildcards, NUL, line breaks, empty, very
long): the outcome is a ConfigError whose one line names the key, or settings that work: topics that are valid
MQTT topic names, a host the socket layer can look up, and a login to a real Mosquitto (tests/test_mqtt.py's
broker) that succeeds or ends in one MqttError line, never a dead paho thread. Password files of any content,
mode and kind give a login or one MqttError line naming mqtt.password_file. Keyword names allowed by the
keyword rules give valid topics and discovery JSON. The publisher consumes broker input (the retained discovery
configs under its node, to empty those of removed keywords): any payload on any such topic leaves it connected,
publishing, and the configs of current keywords untouched. Regression tests for the bugs found follow.
"""
# ruff: noqa: F811  (the broker fixtures imported from tests.test_mqtt are redefined as parameters)

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, get_type_hints

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import ConfigError, MqttConfig, load_config
from edge.mqtt import MqttError, MqttPublisher, check_connection
from edge.mqtt_topics import Topics, discovery_payload, object_id, sensor_payload
from edge.templates import _NAME_PATTERN
from tests.test_fuzz_config import _toml, toml_values
from tests.test_mqtt import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    PASSWORD,
    USER,
    Broker,
    Listener,
    broker,  # noqa: F401
    detection,
    mqtt_config,
    password_file,  # noqa: F401
    wait_until,
)

pytestmark = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="Mosquitto is not installed (make setup installs the Debian package mosquitto)",
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BROKER_FUZZ = settings(FUZZ, max_examples=25)
HINTS = get_type_hints(MqttConfig)
KEYS = sorted(HINTS)
KEYWORDS = ["happy", "a.word", "x" * 64]  # plain, with a '.' (object id hashed), the longest name allowed
# fmt: off
HOSTILE = [
    "", "#", "+", "a/#", "a/+/b", "/", "a//b", "/a", "a/", "\x00", "a\x00b", "a\nb", "\ud800", " ", "*", "x" * 70000,
    "a" * 64 + ".com", "a..b", "[::1]", "::1", "-x", "$SYS", "ü", "é/x", "a b", "host:1883",
]
# fmt: on
wrong_type = toml_values.map(lambda value: value)  # one branch of one_of, not toml_values' seven
typed = {
    str: st.one_of(
        st.sampled_from(HOSTILE),
        st.text(max_size=20),
        *[st.from_regex(r"\A[a-z0-9_-]{1,30}(\.[a-z]{1,9})?\Z")] * 2,
    ),
    int: st.sampled_from(
        [-1, 0, 1, 2, 3, 4, 5, 60, 1883, 3600, 3601, 65535, 65536, 100000, 100001, 2**63 - 1]
    )
    | st.integers(),
    float: st.floats() | st.sampled_from([0.5, 1.0, 3600.0, 3600.5]),
    bool: st.booleans(),
}


def value_for(key: str) -> st.SearchStrategy[Any]:
    """Mostly of the key's own type (to get past the type check), sometimes of any other."""
    return st.one_of(typed[HINTS[key]], typed[HINTS[key]], wrong_type)


@pytest.fixture
def thread_deaths(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Exceptions that ended a thread (paho's network loop, the publisher's worker): none may happen."""
    deaths: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: deaths.append(f"{args.thread}: {args.exc_value!r}")
    )
    yield deaths


def valid_topic(topic: str) -> bool:
    """MQTT 3.1.1 topic names a client may publish to: 1-65535 UTF-8 bytes, no wildcards, no NUL."""
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 0 < size <= 65535 and not set(topic) & {"#", "+", "\x00"} and not topic.startswith("$")


def assert_topics_valid(config: MqttConfig) -> None:
    topics = Topics.of(config)
    names = [topics.status, topics.sensor_discovery, f"{topics.base}/keywords", f"{topics.base}/detection"]
    for keyword in KEYWORDS:
        names += [topics.keyword(keyword), topics.discovery(keyword)]
    assert all(valid_topic(t) for t in names), [t[:80] for t in names if not valid_topic(t)]


def login(config: MqttConfig, port: int) -> None:
    """A real login with these settings to the test broker: a sentence or one MqttError line, nothing else."""
    target = dataclasses.replace(config, host="127.0.0.1", port=port, tls=False, ca_file="")
    try:
        assert "logged in" in check_connection(target, timeout_s=20)
    except MqttError as error:
        assert "\n" not in str(error), str(error)


# ---------------------------------------------------------------------------------------- the settings


def check_settings(values: dict[str, Any]) -> MqttConfig | None:
    """[mqtt] with these values: a ConfigError or MqttError line naming one of the keys (or the file, for a
    string TOML cannot hold), or settings whose topics are valid, whose host the socket layer can take and
    whose password file and TLS files could be read (returned, to log in with)."""
    path = Path(tempfile.mkdtemp()) / "config.toml"
    lines = [f"{key} = {_toml(value)}" for key, value in values.items()]
    path.write_text("[mqtt]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    named = [f"mqtt.{key}" for key in values]
    try:
        config = load_config(path).mqtt
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and any(m in message for m in [*named, f"{path}: not valid TOML"]), message
        return None
    assert_topics_valid(config)
    with contextlib.suppress(socket.gaierror):  # the lookup paho's connection makes, without a name server
        socket.getaddrinfo(config.host, config.port, flags=socket.AI_NUMERICHOST)
    try:
        MqttPublisher(config)  # reads the password file, sets up TLS and the last will
    except MqttError as error:
        message = str(error)
        assert "\n" not in message and any(m in message for m in named), message
        return None
    return config


def _base_for(key: str) -> dict[str, Any]:
    """What a key needs beside it to be looked at at all (a password needs a user, a CA file TLS)."""
    return {"password_file": {"username": USER}, "ca_file": {"tls": True}}.get(key, {})


def test_every_hostile_string_in_every_mqtt_key(broker: Broker, thread_deaths: list[str]) -> None:
    usable = [check_settings(_base_for(key) | {key: value}) for key in KEYS for value in HOSTILE]
    logins = [config for config in usable if config is not None]
    with ThreadPoolExecutor(
        8
    ) as pool:  # about a second each: paho's loop notices the stop at its 1 s wake-up
        list(pool.map(lambda config: login(config, broker.port), logins))
    assert len(logins) >= 20 and not thread_deaths, (len(logins), thread_deaths)


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_any_values_for_any_mqtt_keys(broker: Broker, thread_deaths: list[str], data: st.DataObject) -> None:
    keys = data.draw(st.sets(st.sampled_from(KEYS), min_size=1, max_size=3))
    values = {key: data.draw(value_for(key), label=key) for key in sorted(keys)}
    base: dict[str, Any] = {}
    for key in values:
        base |= _base_for(key)
    config = check_settings(base | values)
    event("usable" if config is not None else "refused")
    if config is not None and set(values) & {"username", "client_id", "topic_prefix", "node_id"}:
        login(config, broker.port)  # what goes into the CONNECT packet
    assert not thread_deaths, thread_deaths


@FUZZ
@given(
    content=st.binary(max_size=80)
    | st.text(max_size=30).map(str.encode)
    | st.sampled_from([b"", b"\n", b"\r\n", b"\xef\xbb\xbf" + PASSWORD.encode(), b"\x00", b"p" * 70000])
    | st.builds(
        lambda tail: PASSWORD.encode() + tail, st.sampled_from([b"", b"\n", b"\r\nx", b"\x85", b" "])
    ),
    mode=st.sampled_from([0o600, 0o400, 0o000, 0o640, 0o604, 0o644, 0o700, 0o660]),
    kind=st.sampled_from(["file", "file", "missing", "directory", "symlink", "nul"]),
)
def test_any_password_file(
    broker: Broker, thread_deaths: list[str], content: bytes, mode: int, kind: str
) -> None:
    folder = Path(tempfile.mkdtemp())
    target = folder / "password"
    if kind in ("file", "symlink"):
        target.write_bytes(content)
        target.chmod(mode)
    elif kind == "directory":
        target.mkdir()
    path = str(target) if kind != "nul" else f"{target}\x00x"
    if kind == "symlink":
        path = str(folder / "link")
        os.symlink(target, path)
    config = mqtt_config(broker.port, Path(path))
    try:
        MqttPublisher(config)
    except MqttError as error:
        message = str(error)
        assert "\n" not in message and "\x00" not in message and "mqtt.password_file" in message, message
        assert path.replace("\x00", "\\x00") in message, message
        return
    assert kind in ("file", "symlink") and not mode & 0o077
    event("read: a login follows")
    login(config, broker.port)
    assert not thread_deaths, thread_deaths


# ---------------------------------------------------------------------------------------- keyword names


prefixes = st.from_regex(r"\A[A-Za-z0-9_.-]{1,12}(/[A-Za-z0-9_.-]{1,12}){0,3}\Z")


@FUZZ
@given(
    names=st.lists(st.from_regex(_NAME_PATTERN, fullmatch=True), min_size=1, max_size=6, unique=True),
    topic_prefix=prefixes,
    discovery_prefix=prefixes,
    node_id=st.just("") | st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    qos=st.sampled_from([0, 1, 2]),
)
def test_any_keyword_name_gives_valid_topics_and_discovery(
    names: list[str], topic_prefix: str, discovery_prefix: str, node_id: str, qos: int
) -> None:
    config = MqttConfig(
        topic_prefix=topic_prefix, discovery_prefix=discovery_prefix, node_id=node_id, qos=qos
    )
    config.validate("mqtt")
    topics = Topics.of(config)
    for name in names:
        assert valid_topic(topics.keyword(name)) and valid_topic(topics.discovery(name))
        assert re.fullmatch(r"[A-Za-z0-9_-]+", object_id(name))
        payload = discovery_payload(topics, name, qos, "1.0")
        assert json.loads(json.dumps(payload)) == payload
        assert payload["name"] == name and payload["state_topic"] == topics.keyword(name)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", payload["unique_id"])
    assert len({topics.discovery(name) for name in names}) == len(names)
    sensor = sensor_payload(topics, qos, "1.0")
    assert json.loads(json.dumps(sensor)) == sensor and valid_topic(topics.sensor_discovery)


@BROKER_FUZZ
@given(
    topic_prefix=prefixes,
    discovery_prefix=prefixes,
    node_id=st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    client_id=st.from_regex(r"\A[\x21-\x7e]{0,64}\Z"),
    qos=st.sampled_from([0, 1, 2]),
    keepalive_s=st.integers(5, 3600),
    names=st.lists(st.from_regex(_NAME_PATTERN, fullmatch=True), min_size=1, max_size=3, unique=True),
)
def test_valid_settings_publish_through_a_real_broker(
    broker: Broker,
    password_file: Path,
    thread_deaths: list[str],
    topic_prefix: str,
    discovery_prefix: str,
    node_id: str,
    client_id: str,
    qos: int,
    keepalive_s: int,
    names: list[str],
) -> None:
    """Any prefixes, node id, client id, QoS and keep-alive the settings allow: the publisher logs in, its
    discovery configs and a detection arrive where the topics say."""
    config = dataclasses.replace(
        mqtt_config(broker.port, password_file),
        topic_prefix=topic_prefix,
        discovery_prefix=discovery_prefix,
        node_id=node_id,
        client_id=client_id,
        qos=qos,
        keepalive_s=keepalive_s,
    )
    topics = Topics.of(config)
    listener = Listener(broker.port, client_id=f"listener-{time.monotonic_ns()}")
    publisher = MqttPublisher(config)
    try:
        wait_until(listener.client.is_connected, what="the listener")
        publisher.keywords(names)
        publisher.start()
        wait_until(lambda: publisher.connected, what="the publisher to connect")
        publisher.detection(detection(names[0], 1.0))
        heard = json.loads(listener.wait_for(topics.keyword(names[0]))[0])
        configs = [json.loads(listener.wait_for(topics.discovery(name))[-1]) for name in names]
    finally:
        publisher.close()
        listener.close()
    assert heard["keyword"] == names[0] and [c["name"] for c in configs] == names
    assert not thread_deaths, thread_deaths


# ------------------------------------------------------------------------------------ input from the broker


level_text = st.text(  # what a broker forwards: UTF-8 without NUL and controls; no '/' within one level
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/+#"), max_size=12
) | st.sampled_from(["", " ", "happy ", "HAPPY", "a_word", "a.word", "x" * 300])


class Watcher(Listener):
    """A Listener that keeps payloads that are not UTF-8 too (the fuzz sends such)."""

    def _keep(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(
                (message.topic, message.payload.decode(errors="replace"), bool(message.retain))
            )


@pytest.fixture
def serving_publisher(
    broker: Broker, password_file: Path, thread_deaths: list[str]
) -> Iterator[tuple[MqttPublisher, paho.Client, Listener]]:
    """A publisher with KEYWORDS, a client that writes to the broker, and one that watches the configs."""
    publisher = MqttPublisher(mqtt_config(broker.port, password_file))
    publisher.keywords(KEYWORDS)
    publisher.start()
    writer = paho.Client(CallbackAPIVersion.VERSION2, client_id="fuzz-writer")
    writer.username_pw_set(USER, PASSWORD)
    writer.connect("127.0.0.1", broker.port)
    writer.loop_start()
    watcher = Watcher(broker.port, "homeassistant/event/board/+/config", client_id="fuzz-watcher")
    wait_until(lambda: publisher.connected and writer.is_connected(), what="the clients to connect")
    yield publisher, writer, watcher
    writer.disconnect()
    writer.loop_stop()
    watcher.close()
    publisher.close()


@BROKER_FUZZ
@given(
    messages=st.lists(
        st.tuples(
            level_text,
            st.binary(max_size=64) | st.sampled_from([b"", b"{}", b"null", b"\xff" * 3, b"x" * 200000]),
            st.booleans(),
            st.sampled_from([0, 1, 2]),
        ),
        max_size=6,
    )
)
def test_any_payload_on_the_discovery_topics(
    serving_publisher: tuple[MqttPublisher, paho.Client, Listener],
    thread_deaths: list[str],
    messages: list[tuple[str, bytes, bool, int]],
) -> None:
    publisher, writer, watcher = serving_publisher
    current = {object_id(name) for name in KEYWORDS}
    prefix = "homeassistant/event/board"
    touched = []
    for level, payload, retain, qos in messages:
        if level in current:
            continue  # another client overwriting a current keyword's config is that client's doing
        writer.publish(f"{prefix}/{level}/config", payload, qos=qos, retain=retain).wait_for_publish(30)
        touched.append(f"{prefix}/{level}/config")
    marker = f"{prefix}/marker-{time.monotonic_ns()}/config"  # in order after the fuzz: cleared last
    writer.publish(marker, b"x", qos=1, retain=True).wait_for_publish(30)
    watcher.wait_for(marker, 2)  # ours, then the publisher's empty retained copy
    for topic in set(touched):  # a config of a keyword that does not exist ends up emptied
        assert watcher.on(topic)[-1] == "", (topic[:80], watcher.on(topic)[-3:])
    assert publisher.connected and not thread_deaths, thread_deaths
    published = publisher.published
    publisher.detection(detection("happy", 2.0))
    wait_until(lambda: publisher.published >= published + 2, what="a detection published after the fuzz")


# ------------------------------------------------------------------------------ regressions of the bugs found


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"host": "a" * 64 + ".example"}, "host"),  # UnicodeError in paho's thread: MQTT silently dead
        ({"host": "a..b"}, "host"),
        ({"host": "[::1]"}, "host"),  # the socket layer takes IPv6 without brackets only
        ({"topic_prefix": "t" * 70000}, "topic_prefix"),  # a topic over 65535 bytes: struct.error in paho
        ({"discovery_prefix": "d/" * 200 + "d"}, "discovery_prefix"),
        ({"username": "u" * 70000}, "username"),  # struct.error from check_connection: a traceback
        ({"username": "a\nb"}, "username"),  # the broker drops a CONNECT with a control character
        ({"username": "a\x00b"}, "username"),
    ],
)
def test_settings_paho_cannot_use_are_config_errors(tmp_path: Path, values: dict[str, Any], key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[mqtt]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))
    with pytest.raises(ConfigError, match=rf"^mqtt\.{key}: expected") as error:
        load_config(path)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


def test_hosts_that_work_are_still_taken() -> None:
    for host in (
        "localhost",
        "broker.local",
        "homeassistant.local.",
        "my_broker",
        "192.168.1.20",
        "::1",
        "fe80::1",
    ):
        MqttConfig(host=host).validate("mqtt")


@pytest.mark.parametrize("username", ["u" * 70000, "a\nb", "a\x7fb"])
def test_mqtt_check_with_an_unusable_username_is_one_line(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture, username: str
) -> None:
    """`kws-edge mqtt-check` died with a struct.error traceback (not an error the command catches) for a user
    name over 65535 bytes, and waited out its timeout for one with a control character (the broker drops
    such a CONNECT unanswered; the daemon retried it for ever as 'lost the connection')."""
    from edge.cli import main as kws_main

    path = tmp_path / "config.toml"
    path.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = {_toml(username)}\n')
    with caplog.at_level(logging.ERROR):
        assert kws_main(["mqtt-check", "--config", str(path)]) == 2
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert message.startswith("mqtt.username: expected") and "\n" not in message


@pytest.mark.parametrize(
    ("key", "path", "expected"),
    [  # a NUL in a path: ValueError('embedded null byte'), a line that named neither key nor file
        ("password_file", "/tmp/pass\x00word", r"mqtt\.password_file '/tmp/pass\\x00word': cannot read it"),
        ("ca_file", "/tmp/c\x00a.pem", r"mqtt\.ca_file '/tmp/c\\x00a.pem': not a usable CA certificate"),
    ],
)
def test_a_nul_in_a_file_name_is_one_line_naming_the_key(key: str, path: str, expected: str) -> None:
    extra = {"username": USER} if key == "password_file" else {"tls": True}
    with pytest.raises(MqttError, match=expected):
        MqttPublisher(MqttConfig(host="127.0.0.1", **extra, **{key: path}))


def test_a_password_longer_than_mqtt_allows_is_refused_when_read(tmp_path: Path) -> None:
    """Over 65535 bytes it passed, and paho's network thread died packing the CONNECT (struct.error)."""
    path = tmp_path / "password"
    path.write_text("p" * 70000 + "\n")
    path.chmod(0o600)
    with pytest.raises(MqttError, match=r"password_file .*: the password is over MQTT's 65535 bytes"):
        MqttPublisher(mqtt_config(1883, path))
