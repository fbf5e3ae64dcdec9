"""The daemon's outputs: JSON event lines, keyword hook commands, and systemd notifications (stdlib only)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TextIO

from edge.detector import Detection

__all__ = ["EventSink", "HookRunner", "SystemdNotifier"]

log = logging.getLogger(__name__)


class SystemdNotifier:
    """sd_notify(3) over the NOTIFY_SOCKET unix datagram socket, stdlib only; a no-op outside systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address.startswith("@"):
            self._address = "\0" + address[1:]  # abstract namespace
        elif address.startswith("/"):
            self._address = address
        usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, state: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as error:
            log.warning("sd_notify %r failed: %s", state, error)

    def watchdog(self, now: float) -> None:
        if self.watchdog_interval_s is not None and now - self._last_watchdog >= self.watchdog_interval_s:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")


class EventSink:
    """One JSON object per line on a text stream (stdout), flushed at once; thread-safe."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.enabled = enabled
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"wall": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **event})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class HookRunner:
    """Runs keyword hook commands on a worker pool with a timeout; failures are logged, never raised."""

    def __init__(self, timeout_s: float, workers: int, events: EventSink) -> None:
        self.timeout_s = timeout_s
        self.events = events
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hook")
        self._pending: list[Future[None]] = []

    def submit(self, detection: Detection) -> None:
        if detection.hook:
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._pool.submit(self._run, detection.hook, detection))

    def _run(self, command: str, detection: Detection) -> None:
        env = dict(os.environ)
        env.update(
            UDKWS_KEYWORD=detection.keyword,
            UDKWS_SCORE=f"{detection.score:.4f}",
            UDKWS_TIME_S=f"{detection.time_s:.3f}",
        )
        try:
            result = subprocess.run(
                command, shell=True, env=env, timeout=self.timeout_s, capture_output=True, check=False
            )
        except subprocess.TimeoutExpired:
            log.error("hook of %r timed out after %.1f s: %s", detection.keyword, self.timeout_s, command)
            self.events.emit({"event": "hook", "keyword": detection.keyword, "status": "timeout"})
            return
        except OSError as error:
            log.error("hook of %r could not run (%s): %s", detection.keyword, error, command)
            return
        if result.returncode != 0:
            log.error(
                "hook of %r exited %d: %s",
                detection.keyword,
                result.returncode,
                result.stderr[-500:].decode(errors="replace"),
            )
        self.events.emit({"event": "hook", "keyword": detection.keyword, "status": result.returncode})

    def close(self, wait_s: float = 1.0) -> None:
        """Give running hooks up to `wait_s` to finish (shutdown must stay prompt), then drop the rest."""
        wait(self._pending, timeout=wait_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
