"""The daemon's configuration: one TOML file read into frozen dataclasses, every value validated.

Precedence: command-line options over the TOML file over the defaults here. Unknown sections or keys and
bad values raise `ConfigError` naming the key (`detector.hop_ms: ...`). Every field is documented in
`edge/default_config.toml`, which a test keeps in step with these classes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.tomlconfig import ConfigError, coerce_sections, read_toml
from edge.tomlconfig import require as _require

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AudioConfig",
    "Config",
    "ConfigError",
    "DetectorConfig",
    "GpioConfig",
    "ModelConfig",
    "MqttConfig",
    "NetworkConfig",
    "OutputConfig",
    "ServiceConfig",
    "StateConfig",
    "WyomingConfig",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/udkws/config.toml")
SHIPPED_DEFAULTS = Path(__file__).with_name("default_config.toml")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "/usr/share/udkws/udkws_int8.tflite"
    num_threads: int = 1
    cohort: str = (
        ""  # the impostor cohort for false-alarm budgets; "" = `<model>.cohort.npz` beside the model
    )

    def validate(self, section: str) -> None:
        _require(bool(self.path), f"{section}.path", "must not be empty")
        _require(1 <= self.num_threads <= 8, f"{section}.num_threads", f"must be 1-8, got {self.num_threads}")


@dataclass(frozen=True)
class AudioConfig:
    source: str = "mic"
    file: str = ""
    device: str = ""
    sample_rate: int = 0
    chunk_ms: int = 100
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0

    def validate(self, section: str) -> None:
        _require(
            self.source in ("mic", "stdin", "file"),
            f"{section}.source",
            f"must be 'mic', 'stdin' or 'file', got {self.source!r}",
        )
        _require(
            self.source != "file" or bool(self.file), f"{section}.file", "source = 'file' needs a file path"
        )
        _require(
            self.sample_rate in (0, 16000, 22050, 32000, 44100, 48000),
            f"{section}.sample_rate",
            f"must be 0 (auto) or one of 16000, 22050, 32000, 44100, 48000, got {self.sample_rate}",
        )
        _require(10 <= self.chunk_ms <= 500, f"{section}.chunk_ms", f"must be 10-500, got {self.chunk_ms}")
        _require(
            0 < self.retry_initial_s <= self.retry_max_s,
            f"{section}.retry_initial_s",
            "must be > 0 and <= retry_max_s",
        )
        _require(self.retry_max_s <= 300, f"{section}.retry_max_s", f"must be <= 300, got {self.retry_max_s}")


@dataclass(frozen=True)
class DetectorConfig:
    hop_ms: int = 100
    threshold: float = 0.495
    trigger_level: int = 4
    trigger_window: int = 5
    refractory_ms: int = 1500
    gate: bool = True
    gate_dbfs: float = -45.0
    false_alarms_per_hour: float = 0.5
    hard_negatives: int = 100
    veto_margin: float = 0.0
    lookalike_prune_floor: float = 0.7
    take_match_spread: float = 8.0
    take_match_floor: float = 7.0

    def validate(self, section: str) -> None:
        _require(
            10 <= self.hop_ms <= 1000 and self.hop_ms % 10 == 0,
            f"{section}.hop_ms",
            f"must be a multiple of 10 in 10-1000 (the MFCC hop), got {self.hop_ms}",
        )
        _require(
            -1.0 <= self.threshold <= 1.0,
            f"{section}.threshold",
            f"must be a cosine in [-1, 1], got {self.threshold}",
        )
        _require(
            1 <= self.trigger_window <= 50,
            f"{section}.trigger_window",
            f"must be 1-50, got {self.trigger_window}",
        )
        _require(
            1 <= self.trigger_level <= self.trigger_window,
            f"{section}.trigger_level",
            f"must be 1..trigger_window ({self.trigger_window}), got {self.trigger_level}",
        )
        _require(
            0 <= self.refractory_ms <= 60000,
            f"{section}.refractory_ms",
            f"must be 0-60000, got {self.refractory_ms}",
        )
        _require(
            0.0 <= self.false_alarms_per_hour <= 100.0,
            f"{section}.false_alarms_per_hour",
            f"must be 0 (off: every keyword uses `threshold`) or a rate up to 100 per hour, "
            f"got {self.false_alarms_per_hour}",
        )
        _require(
            0 <= self.hard_negatives <= 1000,
            f"{section}.hard_negatives",
            f"must be 0 (off) to 1000, got {self.hard_negatives}",
        )
        _require(
            0.0 <= self.veto_margin <= 1.0,
            f"{section}.veto_margin",
            f"must be a cosine difference in [0, 1], got {self.veto_margin}",
        )
        _require(
            0.0 <= self.lookalike_prune_floor <= 1.0,
            f"{section}.lookalike_prune_floor",
            f"must be a cosine in [0, 1] (1: never prune), got {self.lookalike_prune_floor}",
        )
        _require(
            0.0 <= self.take_match_spread <= 100.0,
            f"{section}.take_match_spread",
            f"must be 0 (off) or a DTW distance up to 100, got {self.take_match_spread}",
        )
        _require(
            0.0 <= self.take_match_floor <= 100.0,
            f"{section}.take_match_floor",
            f"must be a DTW distance in [0, 100], got {self.take_match_floor}",
        )
        _require(
            -120.0 <= self.gate_dbfs <= 0.0,
            f"{section}.gate_dbfs",
            f"must be in [-120, 0] dBFS, got {self.gate_dbfs}",
        )


@dataclass(frozen=True)
class StateConfig:
    dir: str = "/var/lib/udkws"
    reload_s: float = 2.0
    keep_detection_audio: bool = True

    def validate(self, section: str) -> None:
        _require(bool(self.dir), f"{section}.dir", "must not be empty")
        _require(
            0.1 <= self.reload_s <= 3600, f"{section}.reload_s", f"must be 0.1-3600, got {self.reload_s}"
        )


@dataclass(frozen=True)
class OutputConfig:
    json_events: bool = True
    hook_timeout_s: float = 10.0
    hook_workers: int = 2

    def validate(self, section: str) -> None:
        _require(
            0 < self.hook_timeout_s <= 600,
            f"{section}.hook_timeout_s",
            f"must be in (0, 600], got {self.hook_timeout_s}",
        )
        _require(
            1 <= self.hook_workers <= 16, f"{section}.hook_workers", f"must be 1-16, got {self.hook_workers}"
        )


@dataclass(frozen=True)
class GpioConfig:
    enabled: bool = True
    led_pin: int = 17
    button_pin: int = 27
    keyword_pins: tuple[int, ...] = (22, 23, 24)
    hold_s: float = 2.0
    bounce_s: float = 0.05
    double_press_s: float = 0.6
    confirm_s: float = 5.0
    takes: int = 3

    def validate(self, section: str) -> None:
        for key, pin in (
            ("led_pin", self.led_pin),
            ("button_pin", self.button_pin),
            *((f"keyword_pins[{i}]", p) for i, p in enumerate(self.keyword_pins)),
        ):
            _require(0 <= pin <= 27, f"{section}.{key}", f"must be a BCM GPIO number 0-27, got {pin}")
        used = [self.led_pin, self.button_pin, *self.keyword_pins]
        _require(len(set(used)) == len(used), f"{section}.keyword_pins", f"pins must all differ, got {used}")
        _require(0.3 <= self.hold_s <= 10, f"{section}.hold_s", f"must be 0.3-10 s, got {self.hold_s}")
        _require(0 <= self.bounce_s <= 0.5, f"{section}.bounce_s", f"must be 0-0.5 s, got {self.bounce_s}")
        _require(
            0.1 <= self.double_press_s <= 2,
            f"{section}.double_press_s",
            f"must be 0.1-2 s, got {self.double_press_s}",
        )
        _require(1 <= self.confirm_s <= 60, f"{section}.confirm_s", f"must be 1-60 s, got {self.confirm_s}")
        _require(1 <= self.takes <= 10, f"{section}.takes", f"must be 1-10, got {self.takes}")


@dataclass(frozen=True)
class ServiceConfig:
    log_level: str = "INFO"

    def validate(self, section: str) -> None:
        _require(
            self.log_level in ("DEBUG", "INFO", "WARNING", "ERROR"),
            f"{section}.log_level",
            f"must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}",
        )


_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _is_host(host: str) -> bool:
    """An IP address, or a name the socket layer can encode: anything else (an empty label, one over 63
    characters) raised UnicodeError inside paho's network thread, which then died."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


_IP_ALLOW_NAMES = ("any", "localhost", "link-local", "multicast")


def _check_wyoming_uri(uri: str, key: str) -> None:
    scheme, _, rest = uri.partition("://")
    if scheme == "unix":
        _require(rest.startswith("/"), key, f"unix:// needs an absolute socket path, got {uri!r}")
        return
    host, _, port = rest.rpartition(":")
    _require(
        scheme == "tcp" and bool(host) and port.isdigit() and int(port) <= 65535,
        key,
        f"expected tcp://HOST:PORT or unix:///PATH, got {uri!r}",
    )


@dataclass(frozen=True)
class WyomingConfig:
    enabled: bool = False
    uri: str = "tcp://0.0.0.0:10400"
    max_clients: int = 8
    idle_timeout_s: float = 120.0

    def validate(self, section: str) -> None:
        _check_wyoming_uri(self.uri, f"{section}.uri")
        _require(
            1 <= self.max_clients <= 64, f"{section}.max_clients", f"must be 1-64, got {self.max_clients}"
        )
        _require(
            5 <= self.idle_timeout_s <= 86400,
            f"{section}.idle_timeout_s",
            f"must be 5-86400 s, got {self.idle_timeout_s}",
        )


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    username: str = ""
    password_file: str = ""
    tls: bool = False
    ca_file: str = ""
    client_id: str = ""
    node_id: str = ""
    topic_prefix: str = "udkws"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive_s: int = 60
    qos: int = 1
    queue_size: int = 1000
    retry_max_s: float = 30.0

    def validate(self, section: str) -> None:
        _require(
            _is_host(self.host),
            f"{section}.host",
            f"expected a host name (letters, digits, '-', '_' in labels of up to 63, joined by '.') or an IP "
            f"address (IPv6 without brackets), got {self.host!r:.80}",
        )
        _require(1 <= self.port <= 65535, f"{section}.port", f"must be 1-65535, got {self.port}")
        _require(
            not self.password_file or bool(self.username),
            f"{section}.password_file",
            "a password needs a username (mqtt.username)",
        )
        _require(
            len(self.username) <= 256 and self.username.isprintable(),  # MQTT refuses controls and NUL
            f"{section}.username",
            f"expected up to 256 printable characters, got {self.username!r:.80}",
        )
        _require(not self.ca_file or self.tls, f"{section}.ca_file", "needs tls = true")
        for key in ("topic_prefix", "discovery_prefix"):
            value = getattr(self, key)
            _require(  # bounded: a topic over 65535 bytes made paho's thread die at connection
                bool(_TOPIC_LEVEL.match(value)) and len(value) <= 200,
                f"{section}.{key}",
                f"expected topic levels of letters, digits, '_', '-', '.' joined by '/', up to 200 characters, "
                f"got {value!r:.80}",
            )
        _require(
            not self.node_id or re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.node_id) is not None,
            f"{section}.node_id",
            f"expected 1-64 letters, digits, '_' or '-' (Home Assistant's rule), got {self.node_id!r}",
        )
        _require(
            re.fullmatch(r"[\x21-\x7e]{0,64}", self.client_id) is not None,
            f"{section}.client_id",
            f"expected up to 64 printable characters without spaces, got {self.client_id!r}",
        )
        _require(
            5 <= self.keepalive_s <= 3600, f"{section}.keepalive_s", f"must be 5-3600, got {self.keepalive_s}"
        )
        _require(self.qos in (0, 1, 2), f"{section}.qos", f"must be 0, 1 or 2, got {self.qos}")
        _require(
            1 <= self.queue_size <= 100000,
            f"{section}.queue_size",
            f"must be 1-100000, got {self.queue_size}",
        )
        _require(
            1 <= self.retry_max_s <= 3600,
            f"{section}.retry_max_s",
            f"must be 1-3600 s, got {self.retry_max_s}",
        )


@dataclass(frozen=True)
class NetworkConfig:
    allow: tuple[str, ...] = (
        "localhost",
        "link-local",
        "multicast",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    )

    def validate(self, section: str) -> None:
        for i, entry in enumerate(self.allow):
            if entry in _IP_ALLOW_NAMES:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{section}.allow[{i}]: expected an IP address, a prefix (192.168.1.0/24) or one of "
                    f"{', '.join(_IP_ALLOW_NAMES)}, got {entry!r}"
                ) from None


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    state: StateConfig = field(default_factory=StateConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)

    def validate(self) -> Config:
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate(section.name)
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """Apply dotted overrides (`{"detector.threshold": 0.8}`), as the CLI does; validated."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            sections.setdefault(section, {})[key] = value
        return _build(sections, base=self, where="command line")


def _build(sections: dict[str, Any], base: Config, where: str) -> Config:
    mqtt = sections.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        raise ConfigError(
            f"mqtt.password: a password is never read from {where}; put it in a file only the service user "
            "can read (chmod 600) and name that file in mqtt.password_file"
        )
    changes = coerce_sections(Config, sections, where)
    replaced = {name: dataclasses.replace(getattr(base, name), **values) for name, values in changes.items()}
    return dataclasses.replace(base, **replaced).validate()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file (if `path` is given, or /etc/udkws/config.toml exists), then overrides.

    An explicitly given path must exist; the system path is optional.
    """
    config = Config()
    chosen = (
        Path(path) if path is not None else (DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None)
    )
    if chosen is not None:
        if not chosen.is_file():
            raise ConfigError(f"{chosen}: no such configuration file")
        config = _build(read_toml(chosen), config, str(chosen))
    config.validate()
    return config.with_overrides(overrides) if overrides else config
