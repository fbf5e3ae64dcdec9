"""Cost measurements of the board-side pipeline, reported as medians of CPU time on one thread."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import numpy as np

from edge.frontend import DEFAULT_CONFIG, StreamingMfcc, mfcc

FRONTEND_BUDGET_MS_PER_S = 2.0


def _cpu_times(fn: Any, repeats: int) -> list[float]:
    fn()  # warm-up: table construction, allocator
    times = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return times


def run_frontend_bench(seconds: float = 10.0, repeats: int = 15) -> dict[str, Any]:
    """CPU milliseconds per second of audio for the batch and the streaming (100 ms chunks) front end."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(seconds * DEFAULT_CONFIG.sample_rate)) * 0.1).astype(np.float32)
    chunk = DEFAULT_CONFIG.sample_rate // 10

    def batch() -> None:
        mfcc(audio)

    def streaming() -> None:
        stream = StreamingMfcc()
        for start in range(0, audio.shape[0], chunk):
            stream.push(audio[start : start + chunk])

    batch_ms = 1000 * statistics.median(_cpu_times(batch, repeats)) / seconds
    stream_ms = 1000 * statistics.median(_cpu_times(streaming, repeats)) / seconds
    rows = [
        (
            "front end, batch",
            f"{batch_ms:.3f} ms CPU / s audio",
            f"{batch_ms / FRONTEND_BUDGET_MS_PER_S:.2f}",
        ),
        (
            "front end, streaming 100 ms chunks",
            f"{stream_ms:.3f} ms CPU / s audio",
            f"{stream_ms / FRONTEND_BUDGET_MS_PER_S:.2f}",
        ),
    ]
    table = "\n".join(
        [
            f"| measure | median of {repeats} | ratio to the {FRONTEND_BUDGET_MS_PER_S} ms budget |",
            "|---|---|---|",
        ]
        + [f"| {a} | {b} | {c} |" for a, b, c in rows]
        + [
            f"\nmachine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}, "
            f"numpy {np.__version__}, front end {DEFAULT_CONFIG.fingerprint}"
        ]
    )
    return {
        "frontend_batch_ms_per_s": batch_ms,
        "frontend_streaming_ms_per_s": stream_ms,
        "budget_ms_per_s": FRONTEND_BUDGET_MS_PER_S,
        "table": table,
    }
