"""The MFCC + DTW baseline in the streaming harness: what a detector with no learning achieves on the same stream.

Per keyword, the references are its enrollment takes cut and centred exactly as enrollment does it
(`edge.commands.take_from_audio`). Every window that the encoder pass evaluated (same ends, same 100 ms hop) and
that its energy gate let through is compared with every take by DTW (`training.evaluation.dtw`: Euclidean
frame cost, steps (1,0)/(0,1)/(1,1), cost divided by n + m); the keyword's score is minus the smallest distance
over its takes. Windows the gate skipped get no score, as in the daemon. The same trigger/refractory logic
(`streaming.decide`) then turns scores into detections.

Features: `edge.frontend.StreamingMfcc` over the whole stream, the first 13 coefficients, and, to keep one hour
of audio within minutes of CPU, the frames averaged in pairs (20 ms steps: 74 frames per 1.5 s window; DTW
cost grows with the square of the frame count), then the window's mean removed (cepstral mean normalisation).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.commands import take_from_audio
from edge.frontend import DEFAULT_CONFIG, StreamingMfcc
from training.bench.streaming import WindowScores
from training.evaluation.dtw import batch_dtw, euclidean_cost

__all__ = ["DtwDetectorConfig", "DtwPass", "run_dtw_pass", "stream_mfcc"]

FloatArray = npt.NDArray[np.float32]
HOP = DEFAULT_CONFIG.hop_samples
WINDOWS_PER_BATCH = 32


@dataclass(frozen=True)
class DtwDetectorConfig:
    n_coefficients: int = 13
    frame_step: int = 2  # average this many 10 ms frames into one DTW frame

    def __post_init__(self) -> None:
        if not 1 <= self.n_coefficients <= 40 or self.frame_step < 1:
            raise ValueError(f"DtwDetectorConfig: n_coefficients 1..40 and frame_step >= 1, got {self}")


@dataclass(frozen=True)
class DtwPass:
    windows: WindowScores
    cpu_s: float
    windows_scored: int


def stream_mfcc(audio: FloatArray, chunk: int = 16000 * 10) -> FloatArray:
    """MFCC frames of a whole stream, computed in chunks by the board's streaming front end."""
    front = StreamingMfcc()
    parts = [front.push(audio[start : start + chunk]) for start in range(0, audio.shape[0], chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, DEFAULT_CONFIG.n_mfcc), dtype=np.float32)


def _dtw_features(frames: FloatArray, config: DtwDetectorConfig) -> FloatArray:
    """[..., F, 40] MFCC -> [..., F // step, n_coefficients], pair-averaged and mean-normalised per window."""
    kept = frames[..., : config.n_coefficients]
    usable = kept.shape[-2] // config.frame_step * config.frame_step
    shape = (*kept.shape[:-2], usable // config.frame_step, config.frame_step, config.n_coefficients)
    pooled = kept[..., :usable, :].reshape(shape).mean(axis=-2)
    centred: FloatArray = (pooled - pooled.mean(axis=-2, keepdims=True)).astype(np.float32)
    return centred


def _reference_features(
    takes: Sequence[FloatArray], window_samples: int, config: DtwDetectorConfig
) -> FloatArray:
    from edge.frontend import mfcc

    windows = [take_from_audio(take, window_samples, None, "dtw take") for take in takes]
    return _dtw_features(np.stack([mfcc(w) for w in windows]), config)


def run_dtw_pass(
    audio: FloatArray,
    keyword_takes: Mapping[str, Sequence[FloatArray]],
    like: WindowScores,
    window_samples: int,
    config: DtwDetectorConfig = DtwDetectorConfig(),
    progress: bool = True,
) -> DtwPass:
    """DTW scores for the windows of `like` (an encoder pass): same ends, same gate; keywords in its order."""
    names = list(like.names)
    started = time.process_time()
    references = [_reference_features(keyword_takes[name], window_samples, config) for name in names]
    takes_per_keyword = [r.shape[0] for r in references]
    stacked = np.concatenate(references)  # [T, f, c]
    frames = stream_mfcc(audio)
    frames_per_window = 1 + (window_samples - DEFAULT_CONFIG.window_samples) // HOP
    scores = np.full((like.ends.shape[0], len(names)), -np.inf, dtype=np.float32)
    todo = np.flatnonzero(~like.gated)
    bounds = np.cumsum([0, *takes_per_keyword])
    for batch_start in tqdm(
        range(0, todo.shape[0], WINDOWS_PER_BATCH), desc="dtw pass", unit="batch", disable=not progress
    ):
        rows = todo[batch_start : batch_start + WINDOWS_PER_BATCH]
        first = (like.ends[rows] - window_samples) // HOP
        window_frames = np.stack([frames[f : f + frames_per_window] for f in first])
        queries = _dtw_features(window_frames, config)
        cost = np.concatenate([euclidean_cost(q, stacked) for q in queries])
        length = queries.shape[1] + stacked.shape[1]
        distance = (batch_dtw(cost) / length).reshape(rows.shape[0], stacked.shape[0])
        for k in range(len(names)):
            scores[rows, k] = -distance[:, bounds[k] : bounds[k + 1]].min(axis=1)
    cpu_s = time.process_time() - started
    windows = WindowScores("mfcc-dtw", names, like.ends, scores, like.gated)
    return DtwPass(windows, cpu_s, int(todo.shape[0]))
