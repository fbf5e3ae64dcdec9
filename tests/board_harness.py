"""Real board processes for the robustness tests: `kws-edge` runs, and a daemon on a pipe with a notify socket.

Shared by tests/test_powercut*.py, tests/test_stream_faults.py and tests/test_fuzz_cli.py. The daemon's notify
socket is training.bench.soak_probe.NotifyListener, the one the soak uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from training.bench.soak_probe import NotifyListener

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edge" / "demo"
TAKES = sorted(DEMO.glob("enroll_happy_*.wav"))


def env(**extra: str) -> dict[str, str]:
    values = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    values.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    values.pop("NOTIFY_SOCKET", None)
    values.update(extra)
    return values


def kws_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", *args]


def kws(*args: str, timeout: float = 120, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`kws-edge ARGS` as a user runs it, to completion."""
    return subprocess.run(
        kws_command(*args), capture_output=True, text=True, timeout=timeout, env=env(), check=False, **popen
    )


def write_config(folder: Path, model: Path, **sections: dict[str, Any]) -> Path:
    """A daemon configuration in `folder` (state in folder/state, no GPIO), with extra TOML sections."""
    tables: dict[str, dict[str, Any]] = {
        "model": {"path": str(model)},
        "state": {"dir": str(folder / "state"), "reload_s": 0.5},
        "gpio": {"enabled": False},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed: exit status 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


class Daemon:
    """`kws-edge run --stdin --config C` with a notify socket; its JSON events are read on a thread."""

    def __init__(self, config: Path, folder: Path, *args: str, watchdog_usec: int = 400000) -> None:
        self.notify = NotifyListener(folder / f"notify-{time.monotonic_ns()}.sock")
        self.process = subprocess.Popen(
            kws_command("run", "--stdin", "--config", str(config), *args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC=str(watchdog_usec)),
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(b"{"):
                with self._lock:
                    self.events.append(json.loads(line))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == kind]

    def wait_for(self, kind: str, count: int = 1, timeout_s: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.of_kind(kind)) < count and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.02)
        found = self.of_kind(kind)
        assert len(found) >= count, (kind, count, self.events[-5:], self.stderr[-2000:])
        return found

    def feed(self, pcm: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(pcm)
        self.process.stdin.flush()

    def watchdog_pings(self) -> int:
        return sum(1 for _, message in self.notify.times_and_messages() if message == "WATCHDOG=1")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then the exit status (the pipe stays open: the loop must notice the signal)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.close(timeout_s)

    def end_of_input(self, timeout_s: float = 120) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.close(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.close()

    def close(self, timeout_s: float = 60) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for reader in self._readers:
                reader.join(timeout=10)
            self.notify.close()
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
        return code


def starts_cleanly(config: Path, folder: Path, expected: list[str]) -> None:
    """The daemon comes up (READY=1, the expected keywords active) and stops on SIGTERM with status 0."""
    daemon = Daemon(config, folder)
    try:
        assert daemon.notify.wait_for("READY=1", 60), daemon.stderr[-2000:]
        active = daemon.wait_for("keywords")[0]["active"]
    finally:
        code = daemon.stop()
    assert code == 0 and b"Traceback" not in daemon.stderr, daemon.stderr[-2000:]
    assert active == expected, (active, expected, daemon.stderr[-2000:])
