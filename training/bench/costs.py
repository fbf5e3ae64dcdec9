"""The cost side of `kws-bench`: the machine, the model's size and MACs, the encoder's time per window, and the
daemon process's CPU, memory and detections over an excerpt of the stream (`daemon_run.py` runs it)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.frontend import mfcc
from edge.model import Encoder
from training.bench.daemon_run import run_daemon_process
from training.bench.streaming import REPO, Event

__all__ = ["daemon_costs", "encoder_ms_per_window", "machine_info", "model_info", "same_events", "shown"]

log = logging.getLogger("kws-bench")


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:
        litert = "unknown"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "litert": litert,
        "platform": platform.platform(),
    }


def model_info(model_path: Path, encoder: Encoder, checkpoint: Path | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "file": shown(model_path),
        "file_bytes": model_path.stat().st_size,
        "sha256": encoder.sha256,
        "name": encoder.sidecar.raw.get("model_name", "?"),
        "parameters": None,
        "macs": None,
        "macs_source": "no checkpoint given",
    }
    if checkpoint is not None and checkpoint.is_file():
        from edge.model import file_sha256
        from training.checkpoint import load_checkpoint

        expected = encoder.sidecar.raw.get("checkpoint_sha256")
        if expected and file_sha256(checkpoint) != expected:
            info["macs_source"] = f"{shown(checkpoint)} is not the checkpoint this model was converted from"
            return info
        from training.models.macs import count_params_and_macs

        loaded = load_checkpoint(checkpoint)
        params, macs = count_params_and_macs(loaded.build_model(), (loaded.frames, 40))
        info.update(parameters=params, macs=macs, macs_source=f"{shown(checkpoint)} (count_params_and_macs)")
    elif checkpoint is not None:
        info["macs_source"] = f"{shown(checkpoint)} not found"
    return info


def encoder_ms_per_window(encoder: Encoder, audio: np.ndarray, repeats: int, count: int = 200) -> float:
    step = max(1, (audio.shape[0] - encoder.window_samples) // count)
    starts = range(0, audio.shape[0] - encoder.window_samples, step)
    features = np.stack([mfcc(audio[s : s + encoder.window_samples]) for s in starts][:count])
    normalized = encoder.normalize_features(features)
    encoder.embed_features(normalized[:2], normalized=True)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.process_time()
        encoder.embed_features(normalized, normalized=True)
        times.append((time.process_time() - started) / normalized.shape[0])
    return 1000 * float(statistics.median(times))


def same_events(first: Sequence[Event], second: Sequence[Event]) -> bool:
    def key(events: Sequence[Event]) -> list[tuple[str, float]]:
        return [(e.keyword, round(e.time_s, 3)) for e in events]

    return key(first) == key(second)


def daemon_costs(
    model: Path, state_dir: Path, config: Path, audio: np.ndarray, excerpt_s: float, args: argparse.Namespace
) -> tuple[dict[str, Any], list[Event]]:
    repeats, threads = args.repeats, args.threads
    pcm = np.round(audio[: int(excerpt_s * 16000)] * 32768).clip(-32768, 32767).astype(np.int16)
    empty = np.zeros(0, dtype=np.int16)
    startup = [
        run_daemon_process(model, state_dir, empty, config_path=config, threads=threads).cpu_s
        for _ in range(repeats)
    ]
    startup_cpu = statistics.median(startup)
    result: dict[str, Any] = {"startup_cpu_s": startup_cpu}
    rss, events_gate_on = [], []
    for gate in (True, False):
        runs = []
        for _ in range(repeats):
            run = run_daemon_process(model, state_dir, pcm, gate=gate, config_path=config, threads=threads)
            runs.append(run)
            rss.append(run.max_rss_mb)
            log.info("daemon (gate %s): %.2f CPU s over %.0f s of audio", gate, run.cpu_s, run.audio_s)
        cpu = statistics.median(r.cpu_s for r in runs)
        seconds = runs[0].audio_s
        steady = max(cpu - startup_cpu, 0.0)
        result["gate_on" if gate else "gate_off"] = {
            "cpu_s": cpu,
            "cpu_percent": 100 * steady / seconds,
            "cpu_s_per_hour": 3600 * steady / seconds,
            "windows": runs[0].stopped.get("windows"),
            "windows_gated": runs[0].stopped.get("windows_gated"),
        }
        if gate:
            events_gate_on = runs[0].events
    result["peak_rss_mb"] = max(rss)
    result["rss_mb_runs"] = rss
    return result, events_gate_on
