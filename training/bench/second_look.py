"""The detector's second look at vetoed windows (edge.takematch), over a whole cached stream.

The daemon looks again only at a window that reaches its keyword's threshold and is vetoed. The benchmark's
curve moves every threshold, so here every vetoed window within `REACH` of the threshold is looked at, and only
where it could take part in a detection (the trigger rule met by the windows around it, vetoes aside): a lone
peak cannot fire whatever the second look says. Below the reach the curve keeps the vetoes, so its far end is a
little pessimistic for rules with the second look.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.audio import load_audio
from edge.frontend import DEFAULT_CONFIG
from edge.takematch import COEFFICIENTS, FIRST_COEFFICIENT, best_distance, match_features
from training.bench.dtw_baseline import stream_mfcc
from training.bench.embedcache import StreamWindows

__all__ = ["REACH", "StreamFrames", "given_back", "may_trigger"]

FloatArray = npt.NDArray[np.float32]
HOP = DEFAULT_CONFIG.hop_samples
REACH = 0.1  # below the threshold: the bench curve's offsets near the rule (training/bench/sweep.NEAR_RULE)


class StreamFrames:
    """The MFCC frames (the coefficients the second look reads) of the last few streams, computed once."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._frames: OrderedDict[Path, FloatArray] = OrderedDict()

    def of(self, audio_path: Path) -> FloatArray:
        if audio_path not in self._frames:
            # only what match_features reads, to keep hours of frames small
            frames = stream_mfcc(load_audio(audio_path))[:, : FIRST_COEFFICIENT + COEFFICIENTS]
            self._frames[audio_path] = np.ascontiguousarray(frames)
            while len(self._frames) > self.keep:
                self._frames.popitem(last=False)
        self._frames.move_to_end(audio_path)
        return self._frames[audio_path]

    def windows(self, windows: StreamWindows, rows: npt.NDArray[np.int64], window_samples: int) -> FloatArray:
        """The second look's features of the windows `rows` of a stream: [n, steps, 13], from the same frames
        as the detector's (the window starting at sample s holds frames s / hop onwards)."""
        frames = self.of(windows.audio_path)
        per_window = 1 + (window_samples - DEFAULT_CONFIG.window_samples) // HOP
        first = (windows.ends[rows] - window_samples) // HOP
        return match_features(np.stack([frames[f : f + per_window] for f in first]))


FRAMES = StreamFrames()


def may_trigger(reached: npt.NDArray[np.bool_], level: int, window: int) -> npt.NDArray[np.bool_]:
    """Windows inside some run of `window` consecutive windows of which at least `level` reached."""
    counts = np.convolve(reached.astype(np.int32), np.ones(window, dtype=np.int32))[: reached.shape[0]]
    ends = counts >= level  # the trigger could fire at this window, counting it and the window - 1 before
    inside = np.zeros_like(reached)
    for back in range(window):
        inside[: reached.shape[0] - back] |= ends[back:]
    return inside


def given_back(
    windows: StreamWindows,
    rows: npt.NDArray[np.int64],
    take_speech: Sequence[FloatArray],
    spread: float,
    window_samples: int,
) -> npt.NDArray[np.int64]:
    """Which of the vetoed windows `rows` follow one of the takes within `spread` (the detector's test)."""
    if rows.size == 0:
        return rows
    distances = best_distance(take_speech, FRAMES.windows(windows, rows, window_samples))
    kept: npt.NDArray[np.int64] = rows[distances <= spread]
    return kept
