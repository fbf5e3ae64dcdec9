"""The daemon's MQTT events, with Home Assistant MQTT discovery (paho-mqtt 2.x).

Topics, with BASE = `topic_prefix/node_id`:
- BASE/status: "online" / "offline", retained; "offline" is also the last will, so the broker says it when the
  daemon vanishes. Home Assistant's availability topic.
- BASE/detection: every detection, {"keyword", "score", "threshold", "time_s", "time"} (time: when it was heard).
- BASE/keyword/NAME: the same as {"event_type": "detected", ...}: the state topic of NAME's event entity.
- BASE/keywords: retained {"keywords": [...]}, the active keywords.
- BASE/enrollment: {"event": "added" | "removed", "keyword", "time"}, derived from the daemon's reloads, so
  `kws-edge enroll`, the button and `kws-edge remove` all show up.
- DISCOVERY/event/NODE/OBJECT/config: each keyword's event entity (retained; emptied when the keyword goes,
  also for keywords removed while the daemon was down), and DISCOVERY/sensor/NODE/keywords/config.

Nothing here blocks the caller (the audio loop): events go into a bounded queue (the oldest dropped beyond
`queue_size`, counted) that a worker thread hands to paho while connected. While the broker is away they wait
and go out in order on reconnection; the state (status, discovery, keyword list) is republished on every
connection. The password comes from `password_file` only, which must be readable by its owner alone.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from edge.config import MqttConfig
from edge.detector import Detection
from edge.mqtt_topics import Message, Topics, discovery_payload, now_iso, object_id, sensor_payload
from edge.version import package_version

__all__ = ["MqttError", "MqttPublisher", "check_connection", "read_password"]

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
_AUTH_CODES = {134, 135, 4, 5}  # bad user name or password / not authorized (MQTT 5 and 3.1.1 numbering)


class MqttError(ValueError):
    """The MQTT settings cannot work (password file, TLS files) or the broker refused us; one line."""


MAX_PASSWORD_BYTES = 65535  # MQTT's limit: a longer one made paho's network thread die (struct.error)


def _shown(path: str) -> str:
    return path if path.isprintable() else ascii(path)


def read_password(path: str) -> str:
    """The first line of `path`, refused when anyone but its owner may read the file."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        if mode & 0o077:
            raise MqttError(
                f"mqtt.password_file {_shown(path)}: others may read it (mode {mode & 0o777:o}); it must be "
                f"readable by the service user only: chmod 600 {_shown(path)}"
            )
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as error:  # ValueError: UnicodeDecodeError, or a NUL in the path
        reason = (
            error.strerror
            if isinstance(error, OSError)
            else "not UTF-8 text"
            if isinstance(error, UnicodeDecodeError)
            else str(error)
        )
        raise MqttError(f"mqtt.password_file {_shown(path)}: cannot read it ({reason})") from None
    if not lines or not lines[0]:
        raise MqttError(f"mqtt.password_file {_shown(path)}: empty; put the password on its first line")
    if len(lines[0].encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise MqttError(
            f"mqtt.password_file {_shown(path)}: the password is over MQTT's {MAX_PASSWORD_BYTES} bytes"
        )
    return lines[0]


def make_client(config: MqttConfig, password: str | None) -> paho.Client:
    """A paho client with this configuration's identity, login, TLS and last will (not yet connected)."""
    topics = Topics.of(config)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=config.client_id or f"udkws-{topics.node}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    if config.username:
        client.username_pw_set(config.username, password)
    if config.tls:
        try:
            client.tls_set(ca_certs=config.ca_file or None)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError; ValueError: a NUL in the path
            raise MqttError(
                f"mqtt.ca_file {_shown(config.ca_file)}: not a usable CA certificate ({error})"
            ) from None
    client.will_set(topics.status, "offline", qos=1, retain=True)
    client.reconnect_delay_set(1, int(config.retry_max_s))
    return client


def _refusal(config: MqttConfig, reason: Any) -> str:
    where = f"the MQTT broker {config.host}:{config.port}"
    if getattr(reason, "value", None) in _AUTH_CODES:
        login = f"the login of user {config.username!r}" if config.username else "a login without user name"
        return (
            f"{where} refused {login} ({reason}): a wrong user name or password? Check mqtt.username and "
            f"the password in {config.password_file or 'mqtt.password_file'}"
        )
    return f"{where} refused the connection: {reason}"


def _unreachable(config: MqttConfig, error: BaseException | None) -> str:
    text = getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error or "unknown error")
    hint = ""
    if getattr(error, "errno", None) == 97:  # EAFNOSUPPORT: systemd's RestrictAddressFamilies=AF_UNIX
        hint = "; under systemd the network drop-in is missing: re-run install.sh (docs/home-assistant.md)"
    return f"cannot reach the MQTT broker {config.host}:{config.port} ({text}){hint}"


class MqttPublisher:
    """Publishes the daemon's events; `start()`, then `detection()` / `keywords()` from any thread, `close()`."""

    def __init__(self, config: MqttConfig, on_event: EventCallback | None = None) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.version = package_version()
        self._on_event = on_event
        password = read_password(config.password_file) if config.password_file else None
        self._client = make_client(config, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()
        self._keywords: list[str] | None = None
        self._connected = False
        self._closing = False
        self._problem = ""
        self.dropped = 0
        self.published = 0
        self._worker = threading.Thread(target=self._drain, name="mqtt-publish", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive_s)
        self._client.loop_start()
        self._worker.start()

    def detection(self, detection: Detection) -> None:
        event = {
            "keyword": detection.keyword,
            "score": round(detection.score, 4),
            "threshold": round(detection.threshold, 4),
            "time_s": round(detection.time_s, 3),
            "time": now_iso(),
        }
        self._enqueue(
            Message(f"{self.topics.base}/detection", json.dumps(event)),
            Message(self.topics.keyword(detection.keyword), json.dumps({"event_type": "detected", **event})),
        )

    def keywords(self, names: Sequence[str]) -> None:
        """The active keywords now (after each reload); differences become enrollment events."""
        with self._cond:
            previous, self._keywords = self._keywords, list(names)
        if previous is None:  # the first set: published as state on connection, no events
            if self._connected:
                self._enqueue(*self._state_messages())
            return
        added = [name for name in names if name not in previous]
        removed = [name for name in previous if name not in names]
        messages: list[Message] = []
        for name in removed:
            if self.config.discovery:
                messages.append(Message(self.topics.discovery(name), "", retain=True))
        for name in added:
            if self.config.discovery:
                messages.append(self._discovery_message(name))
        if added or removed:
            messages.append(self._keyword_list_message(names))
        for kind, group in (("removed", removed), ("added", added)):
            for name in group:
                event = {"event": kind, "keyword": name, "time": now_iso()}
                messages.append(Message(f"{self.topics.base}/enrollment", json.dumps(event)))
        self._enqueue(*messages)

    def _discovery_message(self, name: str) -> Message:
        payload = discovery_payload(self.topics, name, self.config.qos, self.version)
        return Message(self.topics.discovery(name), json.dumps(payload), retain=True)

    def _keyword_list_message(self, names: Sequence[str]) -> Message:
        return Message(f"{self.topics.base}/keywords", json.dumps({"keywords": list(names)}), retain=True)

    def _state_messages(self) -> list[Message]:
        names = list(self._keywords or [])
        messages = [Message(self.topics.status, "online", retain=True)]
        if self.config.discovery:
            payload = sensor_payload(self.topics, self.config.qos, self.version)
            messages.append(Message(self.topics.sensor_discovery, json.dumps(payload), retain=True))
            messages += [self._discovery_message(name) for name in names]
        messages.append(self._keyword_list_message(names))
        return messages

    def _enqueue(self, *messages: Message) -> None:
        with self._cond:
            for message in messages:
                if len(self._queue) >= self.config.queue_size:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning(
                            "mqtt: %d event(s) dropped: the broker has been away for %d queued events",
                            self.dropped,
                            self.config.queue_size,
                        )
                self._queue.append(message)
            self._cond.notify_all()

    def _drain(self) -> None:
        """The worker: hand queued messages to paho, in order, while connected."""
        while True:
            with self._cond:
                while not (self._queue and self._connected) and not self._closing:
                    self._cond.wait()
                if not (self._queue and self._connected):
                    return
                message = self._queue.popleft()
                self._cond.notify_all()  # close() waits for an empty queue
            info = self._client.publish(message.topic, message.payload, self.config.qos, message.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.config.qos == 0:
                with self._cond:  # lost in a disconnection race: keep it for the next connection
                    self._queue.appendleft(message)
                    self._connected = False
            elif info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                log.error("mqtt: publishing to %s failed: %s", message.topic, paho.error_string(info.rc))
            else:
                self.published += 1  # with QoS >= 1, paho resends it after a reconnection if needed

    def _report(self, problem: str) -> None:
        if problem != self._problem:  # once per kind of problem, not at every retry
            self._problem = problem
            log.error("mqtt: %s; retrying every %.0f s at most", problem, self.config.retry_max_s)
            if self._on_event is not None:
                self._on_event({"event": "mqtt_error", "error": problem})

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._report(_refusal(self.config, reason))
            return
        self._problem = ""
        log.info("mqtt: connected to %s:%d as %s", self.config.host, self.config.port, self.topics.base)
        if self._on_event is not None:
            self._on_event({"event": "mqtt_connected", "broker": f"{self.config.host}:{self.config.port}"})
        for message in self._state_messages():
            client.publish(message.topic, message.payload, self.config.qos, message.retain)
        if self.config.discovery:  # retained configs of keywords removed while we were away get emptied
            client.subscribe(f"{self.config.discovery_prefix}/event/{self.topics.node}/+/config", qos=1)
        with self._cond:
            self._connected = True
            self._cond.notify_all()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._cond:
            self._connected = False
        if not self._closing:
            self._report(f"lost the connection to {self.config.host}:{self.config.port} ({reason})")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._report(_unreachable(self.config, sys.exc_info()[1]))  # called inside paho's `except OSError`

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self._keywords is None:
            return
        current = {object_id(name) for name in self._keywords}
        parts = message.topic.split("/")
        if message.payload and len(parts) >= 2 and parts[-2] not in current:
            log.info("mqtt: removing the discovery of %r (no such keyword any more)", parts[-2])
            client.publish(message.topic, "", qos=1, retain=True)

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued (up to `timeout_s` while connected), say "offline", disconnect."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue or not self._connected, timeout_s)
            self._closing = True
            self._cond.notify_all()
            if self._queue:
                log.warning("mqtt: %d event(s) not sent: the broker is unreachable", len(self._queue))
        if self._connected:
            info = self._client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as error:
                log.debug("mqtt: offline status not sent: %s", error)
        self._client.disconnect()
        self._client.loop_stop()
        self._worker.join(timeout_s)


def check_connection(config: MqttConfig, timeout_s: float = 10.0) -> str:
    """Log in once (`kws-edge mqtt-check`); a sentence on success, MqttError with the reason otherwise."""
    client = make_client(config, read_password(config.password_file) if config.password_file else None)
    result: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        result["reason"] = reason
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(config.host, config.port, config.keepalive_s)
    except (OSError, ssl.SSLError) as error:
        raise MqttError(_unreachable(config, error)) from None
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            raise MqttError(
                f"the MQTT broker {config.host}:{config.port} did not answer within {timeout_s:.0f} s"
            )
        if result["reason"].is_failure:
            raise MqttError(_refusal(config, result["reason"]))
    finally:
        client.disconnect()
        client.loop_stop()
    return f"logged in to the MQTT broker {config.host}:{config.port}; events go to {Topics.of(config).base}/"
