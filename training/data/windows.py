"""Fixed-length windows from clips of any length: pad short clips, crop long ones around their speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.audio import TARGET_RATE, load_audio
from training.data.manifest import Clip

__all__ = ["ENERGY_HOP", "fit_window", "load_window", "speech_crop_start", "window_samples"]

FloatArray = npt.NDArray[np.float32]

ENERGY_HOP = 160  # 10 ms at 16 kHz: the resolution of the speech search
# With an rng, any crop keeping this share of the best crop's energy may be picked (a natural time shift).
RANDOM_CROP_ENERGY_SHARE = 0.95


def window_samples(window_seconds: float, sample_rate: int = TARGET_RATE) -> int:
    if not window_seconds > 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    return round(window_seconds * sample_rate)


def _crop_energies(audio: FloatArray, length: int) -> tuple[npt.NDArray[np.float64], int]:
    """Energy enclosed by a window of `length` samples starting at every multiple of ENERGY_HOP."""
    blocks = audio.shape[0] // ENERGY_HOP
    energy = (
        np.square(audio[: blocks * ENERGY_HOP].astype(np.float64)).reshape(blocks, ENERGY_HOP).sum(axis=1)
    )
    span = length // ENERGY_HOP
    cumulative = np.concatenate(([0.0], np.cumsum(energy)))
    return cumulative[span:] - cumulative[: blocks - span + 1], span


def speech_crop_start(audio: FloatArray, length: int, rng: np.random.Generator | None = None) -> int:
    """Start of the `length`-sample crop of `audio` that encloses the most energy (its speech).

    Without `rng`: the best crop (the middle one among equals, e.g. in silence). With `rng`: a random crop
    among those that keep RANDOM_CROP_ENERGY_SHARE of the best energy.
    """
    excess = audio.shape[0] - length
    if excess <= 0:
        return 0
    scores, _ = _crop_energies(audio, length)
    best = float(scores.max())
    if rng is None:
        candidates = np.flatnonzero(scores >= best * (1.0 - 1e-9))
        start = int(candidates[len(candidates) // 2]) * ENERGY_HOP
    else:
        candidates = np.flatnonzero(scores >= best * RANDOM_CROP_ENERGY_SHARE)
        start = int(rng.choice(candidates)) * ENERGY_HOP + int(rng.integers(0, ENERGY_HOP))
    return int(min(start, excess))


def fit_window(audio: FloatArray, length: int, rng: np.random.Generator | None = None) -> FloatArray:
    """Pad (zeros; centred, or at a random offset with `rng`) or crop around the speech to `length` samples."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"fit_window: expected mono 1-D audio, got shape {audio.shape}")
    n = audio.shape[0]
    if n == length:
        return audio.copy()
    if n > length:
        start = speech_crop_start(audio, length, rng)
        return audio[start : start + length].copy()
    room = length - n
    offset = room // 2 if rng is None else int(rng.integers(0, room + 1))
    window = np.zeros(length, dtype=np.float32)
    window[offset : offset + n] = audio
    return window


def load_window(
    clip_or_path: Clip | str | Path, window_seconds: float, rng: np.random.Generator | None = None
) -> FloatArray:
    """A clip as `window_seconds` of 16 kHz float32 audio (see `fit_window`)."""
    path = clip_or_path.path if isinstance(clip_or_path, Clip) else Path(clip_or_path)
    return fit_window(load_audio(path, TARGET_RATE), window_samples(window_seconds), rng)
