"""What the soak watches from outside the daemon: its /proc figures and its systemd notifications."""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["NotifyListener", "ProcessSample", "growth", "sample_process", "trend_growth"]


@dataclass(frozen=True)
class ProcessSample:
    audio_s: float  # simulated time fed when sampled
    wall_s: float
    rss_mb: float
    fds: int
    threads: int
    cpu_s: float  # user + system, whole process

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread: nanoseconds from schedstat where the kernel has it, else clock ticks."""
    total_ns, counted = 0, False
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            total_ns += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
            counted = True
    except (OSError, ValueError, IndexError):
        counted = False
    if counted:
        return total_ns / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def sample_process(pid: int, audio_s: float, started: float) -> ProcessSample:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return ProcessSample(
        audio_s=audio_s,
        wall_s=time.monotonic() - started,
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        cpu_s=_cpu_seconds(pid),
    )


def growth(baseline: float, later: list[float]) -> float:
    """How far the largest later value is above the baseline, as a fraction of it."""
    return (max(later) - baseline) / baseline if later and baseline > 0 else 0.0


def trend_growth(values: list[float]) -> float:
    """The least-squares line through `values`, from its first point to its last, as a fraction of its mean.

    Per-block CPU of one hour varies by a few per cent on a shared machine; a leak shows as a slope.
    """
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum(
        (i - mean_x) ** 2 for i in range(n)
    )
    return slope * (n - 1) / mean_y if mean_y > 0 else 0.0


class NotifyListener:
    """A NOTIFY_SOCKET as systemd offers it: a unix datagram socket whose messages are kept with their times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.5)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="notify", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.extend((time.monotonic(), line) for line in data.decode().splitlines())

    def wait_for(self, state: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(message == state for _, message in self.times_and_messages()):
                return True
            time.sleep(0.05)
        return False

    def times_and_messages(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def watchdog_gaps(self) -> tuple[int, float]:
        """(WATCHDOG=1 count, longest wall-clock gap from READY=1 through the pings to STOPPING=1)."""
        marks = [t for t, m in self.times_and_messages() if m in ("READY=1", "WATCHDOG=1", "STOPPING=1")]
        pings = sum(1 for _, m in self.times_and_messages() if m == "WATCHDOG=1")
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        return pings, max(gaps, default=0.0)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._socket.close()
        self.path.unlink(missing_ok=True)
