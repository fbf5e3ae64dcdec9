"""The soak's processes: the daemon under test, the keyword changer, and a fresh daemon to compare CPU with.

`SoakRun` starts the daemon (`python -m edge.cli run --stdin`, systemd notify socket, 2 s watchdog) and the
mutator (`training.bench.soak_mutator`), reads their output on threads, and matches every keyword change with the
daemon's next `keywords` event. `FreshDaemon` is a second daemon, started anew for each block and fed that
block's audio along with the daemon under test: on a machine shared with other jobs the CPU time of a
fixed piece of work varies with the load by tens of per cent, but two processes doing the same work at the same
time see the same load, so the ratio of their CPU times shows what the long-running daemon adds, if anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from training.bench.soak_probe import NotifyListener, ProcessSample, sample_process
from training.bench.soak_stream import Occurrence

__all__ = ["FreshDaemon", "SoakRun", "soak_env"]

REPO = Path(__file__).resolve().parents[2]


def soak_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.pop("NOTIFY_SOCKET", None)
    return env


class SoakRun:
    """The daemon, the mutator and the threads that read them; `act()` asks for one change and waits for it."""

    def __init__(
        self, work: Path, config: Path, mutator_args: list[str], reload_timeout_s: float = 120.0
    ) -> None:
        self.work = work
        self.config = config
        self.reload_timeout_s = reload_timeout_s
        self.started = time.monotonic()
        self.notify = NotifyListener(work / "notify.sock")
        env = soak_env() | {"NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "2000000"}
        self.stderr = open(work / "daemon.log", "wb")  # noqa: SIM115  (closed in finish)
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--stdin", "--config", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, cwd=work,
        )  # fmt: skip
        self.mutator_log = open(work / "mutator.log", "wb")  # noqa: SIM115
        self.mutator = subprocess.Popen(
            [sys.executable, "-m", "training.bench.soak_mutator", "--config", str(config),
             "--pid", str(self.daemon.pid), *mutator_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.mutator_log, env=soak_env(), text=True,
        )  # fmt: skip
        self.fresh: FreshDaemon | None = None
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.events: list[dict[str, Any]] = []
        self.reloads: list[tuple[float, list[str]]] = []
        self.actions: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.samples: list[ProcessSample] = []
        self.occurrences: list[Occurrence] = []
        self.cpu_ratios: list[float] = []  # per block: its CPU over the fresh daemon's on the same audio
        self._pending: dict[str, Any] | None = None
        self._threads = [
            threading.Thread(target=self._read_daemon, name="daemon-events", daemon=True),
            threading.Thread(target=self._read_mutator, name="mutator", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_daemon(self) -> None:
        assert self.daemon.stdout is not None
        for raw in self.daemon.stdout:
            event = json.loads(raw) if raw.startswith(b"{") else {"event": "text", "line": raw.decode()}
            with self.lock:
                self.events.append(event)
                if event.get("event") == "keywords":
                    self.reloads.append((time.monotonic(), list(event["active"])))
                    self._check_pending()

    def _read_mutator(self) -> None:
        assert self.mutator.stdout is not None
        for line in self.mutator.stdout:
            result = json.loads(line)
            with self.lock:
                assert self._pending is not None
                self._pending.update(result, done=time.monotonic())
                if not result["ok"]:
                    self.failures.append(f"{result['action']} failed: {result['error']}")
                self._check_pending()

    def _check_pending(self) -> None:
        pending = self._pending
        if pending is None or "done" not in pending:
            return
        if pending["expect"] is not None:
            seen = [t for t, active in self.reloads if t >= pending["sent"] and active == pending["expect"]]
            if not seen:
                return
            pending["reload_s"] = round(seen[0] - pending["sent"], 3)
        self.actions.append(pending)
        self._pending = None
        self.idle.set()

    def wait_idle(self) -> None:
        if self.idle.wait(self.reload_timeout_s):
            return
        with self.lock:
            pending = self._pending or {}
            self.failures.append(
                f"reload missed: after {pending.get('action')} no keywords event {pending.get('expect')} within "
                f"{self.reload_timeout_s:.0f} s (last seen: {self.reloads[-1][1] if self.reloads else None})"
            )
            self._pending = None
            self.idle.set()

    def act(self, audio_s: float) -> None:
        self.wait_idle()
        with self.lock:
            self.idle.clear()
            self._pending = {"sent": time.monotonic(), "audio_s": round(audio_s, 1)}
        assert self.mutator.stdin is not None
        self.mutator.stdin.write(json.dumps({"act": True}) + "\n")
        self.mutator.stdin.flush()

    def feed(self, data: bytes) -> None:
        """Into the daemon's stdin (and the fresh daemon's, while one runs), in pipe-sized pieces."""
        assert self.daemon.stdin is not None
        for start in range(0, len(data), 1 << 16):
            self.daemon.stdin.write(data[start : start + (1 << 16)])
            if self.fresh is not None:
                self.fresh.feed(data[start : start + (1 << 16)])

    def finish(self) -> int:
        self.wait_idle()
        assert self.mutator.stdin is not None and self.daemon.stdin is not None
        self.mutator.stdin.write(json.dumps({"stop": True}) + "\n")
        self.mutator.stdin.close()
        self.daemon.stdin.close()
        try:
            code = self.daemon.wait(timeout=300)
        finally:
            if self.fresh is not None:
                self.fresh.finish()
            for process in (self.daemon, self.mutator):
                if process.poll() is None:
                    process.kill()
                process.wait()
            for thread in self._threads:
                thread.join(timeout=10)
            self.notify.close()
            self.stderr.close()
            self.mutator_log.close()
        return code


class FreshDaemon:
    """A daemon started now with the same configuration and keywords, for a CPU comparison."""

    def __init__(self, config: Path, work: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--stdin", "--config", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=soak_env(), cwd=work,
        )  # fmt: skip
        assert self.process.stdout is not None
        for line in self.process.stdout:  # the "started" event: model and keywords loaded, the loop begins
            if b'"event": "started"' in line:
                break
        self._drain = threading.Thread(target=self.process.stdout.read, daemon=True)
        self._drain.start()
        self.start = sample_process(self.process.pid, 0.0, time.monotonic())

    def feed(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    def cpu_s(self) -> float:
        """CPU seconds since its loop began (call while it still runs)."""
        return sample_process(self.process.pid, 0.0, time.monotonic()).cpu_s - self.start.cpu_s

    def finish(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()
            self.process.wait(timeout=120)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self._drain.join(timeout=10)
