"""What the MQTT events look like and where they go: topics, node id, Home Assistant discovery payloads.

Pure functions of the configuration (no network), used by `edge.mqtt`; the topic layout is in its docstring.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import socket
from dataclasses import dataclass
from typing import Any

from edge.config import MqttConfig

__all__ = ["Message", "Topics", "discovery_payload", "node_id_for", "now_iso", "object_id", "sensor_payload"]


def node_id_for(config: MqttConfig) -> str:
    """This board's id in topics and entity ids: mqtt.node_id, else the host name made safe."""
    return config.node_id or re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "udkws"


def object_id(keyword: str) -> str:
    """A keyword as a discovery object id ([A-Za-z0-9_-]); '.' is not allowed there, so it is replaced and a
    short hash of the name keeps `a.b` and `a_b` apart."""
    safe = keyword.replace(".", "_")
    return safe if safe == keyword else f"{safe}_{hashlib.sha1(keyword.encode()).hexdigest()[:6]}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Topics:
    base: str
    discovery_prefix: str
    node: str

    @classmethod
    def of(cls, config: MqttConfig) -> Topics:
        node = node_id_for(config)
        return cls(f"{config.topic_prefix}/{node}", config.discovery_prefix, node)

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def keyword(self, name: str) -> str:
        return f"{self.base}/keyword/{name}"

    def discovery(self, name: str) -> str:
        return f"{self.discovery_prefix}/event/{self.node}/{object_id(name)}/config"

    @property
    def sensor_discovery(self) -> str:
        return f"{self.discovery_prefix}/sensor/{self.node}/keywords/config"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool = False


def _device(topics: Topics, version: str) -> dict[str, Any]:
    return {
        "identifiers": [f"udkws_{topics.node}"],
        "name": f"udkws {topics.node}",
        "manufacturer": "udkws",
        "model": "user-defined keyword spotter",
        "sw_version": version,
    }


def discovery_payload(topics: Topics, name: str, qos: int, version: str) -> dict[str, Any]:
    """Home Assistant MQTT discovery of one keyword's event entity."""
    return {
        "name": name,
        "unique_id": f"udkws_{topics.node}_{object_id(name)}",
        "state_topic": topics.keyword(name),
        "event_types": ["detected"],
        "availability_topic": topics.status,
        "icon": "mdi:account-voice",
        "qos": qos,
        "device": _device(topics, version),
        "origin": {"name": "udkws", "sw_version": version, "support_url": "https://github.com/udkws/udkws"},
    }


def sensor_payload(topics: Topics, qos: int, version: str) -> dict[str, Any]:
    return {
        "name": "keywords",
        "unique_id": f"udkws_{topics.node}_keywords",
        "state_topic": f"{topics.base}/keywords",
        "value_template": "{{ value_json.keywords | count }}",
        "json_attributes_topic": f"{topics.base}/keywords",
        "availability_topic": topics.status,
        "icon": "mdi:format-list-bulleted",
        "qos": qos,
        "device": _device(topics, version),
    }
