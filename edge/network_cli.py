"""The `kws-edge` commands of the network integrations: `wyoming` (the wake-word service on its own),
`mqtt-check` (try the broker login) and `network-dropin` (the systemd drop-in that install.sh writes)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import Config

__all__ = ["add_network_commands"]

log = logging.getLogger("kws-edge")

ConfigLoader = Callable[..., Config]
_NAMED = ("any", "localhost", "link-local", "multicast")


def _cmd_wyoming(args: argparse.Namespace, load: ConfigLoader) -> int:
    from edge.commands import open_model
    from edge.outputs import EventSink, SystemdNotifier
    from edge.resolver import KeywordResolver
    from edge.templates import TemplateStore
    from edge.wyoming_hosting import serve_until_stopped
    from edge.wyoming_server import WakeServer

    config = load(args, **{"wyoming.uri": args.uri, "detector.threshold": args.threshold})
    if not args.verbose:
        logging.getLogger().setLevel(config.service.log_level)
    encoder = open_model(config)
    events = EventSink(enabled=config.output.json_events)
    server = WakeServer(
        encoder,
        TemplateStore(config.state.dir),
        config.detector,
        config.wyoming,
        config.state.reload_s,
        events.emit,
        KeywordResolver.for_model(config, encoder.model_path, encoder.sha256),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.request_reload)
        await serve_until_stopped(server, stop, SystemdNotifier())

    asyncio.run(main())
    events.emit({"event": "stopped"})
    return 0


def _cmd_mqtt_check(args: argparse.Namespace, load: ConfigLoader) -> int:
    from edge.mqtt import check_connection

    print(check_connection(load(args).mqtt))
    return 0


DROPIN_TEMPLATE = Path(__file__).parent / "systemd" / "udkws-network.conf"


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def render_dropin(config: Config, force: bool = False) -> str | None:
    """The systemd drop-in that lets the service reach what [wyoming] and [mqtt] need; None when both are off."""
    if not (config.wyoming.enabled or config.mqtt.enabled or force):
        return None
    allow = list(config.network.allow)
    broker = _ip_literal(config.mqtt.host) if config.mqtt.enabled else None
    if broker is not None and not any(
        entry not in _NAMED and ipaddress.ip_address(broker) in ipaddress.ip_network(entry, strict=False)
        for entry in allow
    ):
        allow.append(broker)
    scheme, _, rest = config.wyoming.uri.partition("://")
    port = rest.rpartition(":")[2] if scheme == "tcp" else ""
    if config.wyoming.enabled and port not in ("", "0"):
        bind = f"SocketBindAllow=tcp:{port}\nSocketBindDeny=any"
    elif config.wyoming.enabled and port == "0":
        bind = "# (wyoming.uri asks for any free port: listening is not restricted to one)"
    else:
        bind = "SocketBindDeny=any"
    text = DROPIN_TEMPLATE.read_text()
    return text.replace("@IP_ADDRESS_ALLOW@", " ".join(allow)).replace("@SOCKET_BIND@", bind)


def _cmd_network_dropin(args: argparse.Namespace, load: ConfigLoader) -> int:
    dropin = render_dropin(load(args), force=args.force)
    if dropin is not None:
        sys.stdout.write(dropin)
    return 0


def add_network_commands(sub: Any, common: Callable[..., None], load: ConfigLoader) -> None:
    """Register the commands on the `kws-edge` subparsers; `load(args, **overrides)` reads the config."""
    wyoming = sub.add_parser(
        "wyoming",
        help="serve the enrolled keywords as Wyoming wake words (Home Assistant); audio comes from clients",
    )
    common(wyoming)
    wyoming.add_argument("--uri", help="tcp://HOST:PORT or unix:///PATH; overrides wyoming.uri")
    wyoming.add_argument(
        "--threshold", type=float, help="default cosine threshold; overrides detector.threshold"
    )
    wyoming.set_defaults(func=lambda args: _cmd_wyoming(args, load))

    check = sub.add_parser("mqtt-check", help="log in to the configured MQTT broker once and say how it went")
    common(check, False)
    check.set_defaults(func=lambda args: _cmd_mqtt_check(args, load))

    dropin = sub.add_parser(
        "network-dropin",
        help="print the systemd drop-in that opens the network [wyoming]/[mqtt] need (nothing when both are off)",
    )
    common(dropin, False)
    dropin.add_argument("--force", action="store_true", help="print it even when both are off")
    dropin.set_defaults(func=lambda args: _cmd_network_dropin(args, load))
