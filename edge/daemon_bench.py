"""`kws-edge bench-daemon`: what the detection loop costs on this machine, measured, not assumed.

Replays a recording through the daemon's detector in 100 ms chunks (the live loop's path: streaming MFCC, gate,
int8 encoder, matching) and reports CPU time as a percentage of the audio's duration with the energy gate on and
off, the encoder's latency per window (median and 95th percentile of wall time), the detector's added latency
per chunk, and the process's peak resident memory. One interpreter thread unless told otherwise. Then, unless
`wyoming_repeats` is 0, what the Wyoming service adds over the plain daemon with the recording played live
(`edge.wyoming_bench`; about a minute of wall time per repeat).
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import load_audio
from edge.config import DetectorConfig
from edge.detector import Detector
from edge.model import load_model
from edge.templates import Template

__all__ = ["run_daemon_bench"]

CHUNK = 1600


def _replay_cpu(detector: Detector, audio: np.ndarray) -> tuple[float, list[float]]:
    chunk_wall = []
    started = time.process_time()
    for start in range(0, audio.shape[0], CHUNK):
        t0 = time.perf_counter()
        detector.push(audio[start : start + CHUNK])
        chunk_wall.append(time.perf_counter() - t0)
    return time.process_time() - started, chunk_wall


def run_daemon_bench(
    model_path: Path, audio_path: Path, num_threads: int = 1, repeats: int = 3, wyoming_repeats: int = 3
) -> dict[str, Any]:
    encoder = load_model(model_path, num_threads=num_threads)
    rss_after_load_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    audio = load_audio(audio_path)
    seconds = audio.shape[0] / 16000
    # One keyword template (the stream's first second) so matching runs too; its detections do not matter here.
    template = Template.from_takes(
        "bench",
        encoder.embed_windows(audio[None, : encoder.window_samples]),
        encoder.sha256,
        encoder.frontend_fingerprint,
    )
    results: dict[str, Any] = {"audio_s": round(seconds, 2), "model": str(model_path), "threads": num_threads}
    for gate in (True, False):
        cpu, walls, gated = [], [], 0
        for _ in range(repeats):
            detector = Detector(encoder, [template], DetectorConfig(gate=gate))
            cpu_s, chunk_wall = _replay_cpu(detector, audio)
            cpu.append(cpu_s)
            walls.extend(chunk_wall)
            gated = detector.windows_gated
        key = "gate_on" if gate else "gate_off"
        results[key] = {
            "cpu_percent_of_real_time": round(100 * statistics.median(cpu) / seconds, 2),
            "windows_skipped_by_gate": gated,
            "chunk_wall_ms_p95": round(1000 * float(np.percentile(walls, 95)), 3),
            "chunk_wall_ms_max": round(1000 * max(walls), 3),
        }
    windows = np.stack(
        [
            audio[s : s + encoder.window_samples]
            for s in range(0, audio.shape[0] - encoder.window_samples, 16000)
        ]
    )
    features = np.stack([encoder.normalize_features(f) for f in _features(windows)])
    latencies = []
    for row in features:
        t0 = time.perf_counter()
        encoder.embed_features(row, normalized=True)
        latencies.append(time.perf_counter() - t0)
    results["encoder_ms_per_window_median"] = round(1000 * statistics.median(latencies), 3)
    results["encoder_ms_per_window_p95"] = round(1000 * float(np.percentile(latencies, 95)), 3)
    results["rss_mb_after_model_load"] = round(rss_after_load_mb, 1)
    results["rss_mb_peak"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # The Wyoming service's cost over the plain daemon, both played live (edge/wyoming_bench.py).
    if wyoming_repeats > 0:
        from edge.wyoming_bench import run_wyoming_bench

        results["wyoming"] = run_wyoming_bench(model_path, audio, template, repeats=wyoming_repeats)
    results["machine"] = f"{platform.machine()} {platform.processor()}, Python {platform.python_version()}"
    results["note"] = (
        "detection latency = hop (100 ms) x (trigger_level - 1) after the keyword fills the window, plus "
        "chunk_wall (the time one 100 ms chunk takes to process)"
    )
    return results


def _features(windows: np.ndarray) -> list[np.ndarray]:
    from edge.frontend import mfcc

    return [mfcc(w) for w in windows]
