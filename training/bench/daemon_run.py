"""The real daemon process over a test stream: `python -m edge.cli run --stdin` (what `kws-edge run` runs).

It is fed 16-bit PCM through a pipe as fast as it reads; its detections come from its JSON event lines, its CPU
seconds and peak RSS from `os.wait4` in a small launcher process that forks it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.bench.streaming import DEFAULT_EDGE_CONFIG, REPO, Event

__all__ = ["DaemonRun", "run_daemon_process"]

RATE = 16000
# A child's peak RSS counts the memory of whatever forked it (Linux keeps the pre-exec high-water mark), so the
# daemon is forked by this tiny launcher rather than by the bench process, which holds an hour of audio.
_LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    json.dump({"status": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kb": usage.ru_maxrss}, handle)
"""


@dataclass(frozen=True)
class DaemonRun:
    """One run of the daemon process over PCM fed through its stdin."""

    events: list[Event]
    cpu_s: float
    max_rss_mb: float
    wall_s: float
    audio_s: float
    stopped: dict[str, Any]


def run_daemon_process(
    model: Path,
    state_dir: Path,
    pcm: npt.NDArray[np.int16],
    gate: bool = True,
    config_path: Path = DEFAULT_EDGE_CONFIG,
    threads: int = 1,
) -> DaemonRun:
    """`python -m edge.cli run --stdin` (the `kws-edge run` daemon) over `pcm`; CPU and peak RSS of that process."""
    command = [
        sys.executable, "-m", "edge.cli", "run", "--stdin", "--no-gpio",
        "--config", str(config_path), "--model", str(model), "--state-dir", str(state_dir), "--threads", str(threads),
    ]  # fmt: skip
    if not gate:
        command.append("--no-gate")
    env = dict(
        os.environ,
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    usage_file = Path(tempfile.mkstemp(prefix="udkws-daemon-usage-", suffix=".json")[1])
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(usage_file), *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
    drain.start()

    def feed() -> None:
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        try:
            for start in range(0, len(data), 1 << 16):
                process.stdin.write(data[start : start + (1 << 16)])  # type: ignore[union-attr]
        except BrokenPipeError:
            pass
        finally:
            process.stdin.close()  # type: ignore[union-attr]

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    lines = process.stdout.read().decode().splitlines()
    process.wait()
    wall = time.perf_counter() - started
    writer.join()
    drain.join()
    try:
        usage = json.loads(usage_file.read_text() or "{}")
    finally:
        usage_file.unlink(missing_ok=True)
    process.returncode = usage.get("status", process.returncode)
    if process.returncode != 0:
        raise RuntimeError(f"daemon exited with {process.returncode}: {b''.join(errors).decode()[-2000:]}")
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    events = [
        Event(p["keyword"], float(p["time_s"]), float(p["score"]))
        for p in parsed
        if p.get("event") == "detection"
    ]
    stopped: dict[str, Any] = next((p for p in parsed if p.get("event") == "stopped"), {})
    return DaemonRun(
        events, float(usage["cpu_s"]), usage["maxrss_kb"] / 1024, wall, pcm.shape[0] / RATE, stopped
    )
