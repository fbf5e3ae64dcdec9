"""A second look at a vetoed window: does its sound follow one of the user's own takes?

The look-alike veto (edge.budget.veto_mask) drops a window that some ordinary speech from the cohort resembles
more than the keyword does. For a user saying their own word that is most of what is missed (docs/RESULTS.md):
the embedding of a person's word can sit nearer a look-alike than the mean of their takes. Their takes,
though, agree closely frame by frame, and ordinary speech does not follow them. So a window that reaches the
threshold but is vetoed is given back when its MFCC sequence aligns with one of the takes (dynamic time
warping, the take's speech anywhere in the window) about as closely as the takes align with each other (or
within a floor, for takes said so alike that a later saying of the word could not follow them as closely).

Features: MFCC coefficients 1-13 of the board's front end, frames averaged in pairs (20 ms); a take's reference is
the loud core of the speech in its centred window. Numpy only; a look costs a millisecond or two per take and
runs only on vetoed windows at the threshold, when the trigger needs them (edge.detector.TriggerSmoother).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.frontend import DEFAULT_CONFIG, mfcc

__all__ = [
    "COEFFICIENTS",
    "FEATURES",
    "FRAME_STEP",
    "TakeReference",
    "best_distance",
    "checked_take_features",
    "look_distance",
    "looks_again",
    "match_features",
    "take_spread",
]

FloatArray = npt.NDArray[np.float32]

# c1-c13: the spectral envelope without its level (c0), so a take said louder or softer still matches; the higher
# coefficients carry pitch detail that differs between takes.
FIRST_COEFFICIENT = 1
COEFFICIENTS = 13
FRAME_STEP = 2  # 10 ms frames averaged in pairs: a 1.5 s window is 74 steps
MIN_SPEECH_STEPS = 6  # 120 ms: a shorter "word" is the voice-activity cut's error, keep some context
# A take's reference is the loud core of its speech: steps within this many dB of its loudest. Quiet frames' cepstra
# are those of the room, not of the word: with them the same take in other room noise aligns twice as badly.
CORE_DB = 20.0
# c0 is the ortho DCT's mean of natural-log mel powers times sqrt(n_mels): 1 dB louder adds this much.
_C0_PER_DB = np.log(10.0) / 10.0 * np.sqrt(DEFAULT_CONFIG.n_mels)
# What the stored take features are; caches of them (the bench's enrollments) are rebuilt when it changes.
FEATURES = "mfcc c1-c13, 20 ms pairs, the take's speech core within 20 dB"
CHUNK = 256  # windows per block when many are scored at once (bench), to bound memory


def match_features(frames: npt.ArrayLike) -> FloatArray:
    """[..., F, n_mfcc] MFCC frames -> [..., F // 2, 13]: c1-c13, pair-averaged. No mean is removed: a window's
    mean depends on whatever else it holds (silence, other talk), the speech frames themselves do not."""
    array = np.asarray(frames, dtype=np.float32)[..., FIRST_COEFFICIENT : FIRST_COEFFICIENT + COEFFICIENTS]
    usable = array.shape[-2] // FRAME_STEP * FRAME_STEP
    shape = (*array.shape[:-2], usable // FRAME_STEP, FRAME_STEP, COEFFICIENTS)
    pooled: FloatArray = array[..., :usable, :].reshape(shape).mean(axis=-2).astype(np.float32)
    return pooled


class TakeReference:
    """One take as the second look uses it: its window's features and the slice that holds the speech."""

    def __init__(self, centred_window: npt.ArrayLike, speech_samples: int) -> None:
        frames = mfcc(np.asarray(centred_window, dtype=np.float32))
        self.window = match_features(frames)
        steps = self.window.shape[0]
        level = frames[: steps * FRAME_STEP, 0].reshape(steps, FRAME_STEP).mean(axis=1)
        hop = DEFAULT_CONFIG.hop_samples * FRAME_STEP
        speech = min(steps, max(MIN_SPEECH_STEPS, round(speech_samples / hop)))
        start = (steps - speech) // 2  # the centred window holds the speech in its middle
        loud = np.flatnonzero(
            level[start : start + speech] >= level[start : start + speech].max() - CORE_DB * _C0_PER_DB
        )
        first, last = start + int(loud[0]), start + int(loud[-1]) + 1
        while last - first < MIN_SPEECH_STEPS:  # widen a very short core on both sides, within the window
            first, last = max(0, first - 1), min(steps, last + 1)
        self.speech = self.window[first:last]


def _subsequence_cost(take: FloatArray, windows: FloatArray) -> FloatArray:
    """Mean frame distance along the best path of `take` [m, c] through each window [n, f, c]; the path starts
    and ends anywhere in the window, steps (1,1), (1,2), (2,1): the take spoken up to twice as fast or slow."""
    if windows.shape[0] > CHUNK:
        return np.concatenate(
            [_subsequence_cost(take, windows[i : i + CHUNK]) for i in range(0, windows.shape[0], CHUNK)]
        )
    diff = windows[:, None, :, :] - take[None, :, None, :]
    cost = np.sqrt(np.einsum("nmfc,nmfc->nmf", diff, diff))  # [n, m, f]
    n, m, f = cost.shape
    previous2 = np.full((n, f), np.inf, dtype=np.float32)
    previous = cost[:, 0].astype(np.float32)
    for i in range(1, m):
        best = np.full((n, f), np.inf, dtype=np.float32)
        best[:, 1:] = previous[:, :-1]
        best[:, 2:] = np.minimum(best[:, 2:], previous[:, :-2])
        best[:, 1:] = np.minimum(best[:, 1:], previous2[:, :-1] + cost[:, i - 1, 1:])
        previous2, previous = previous, cost[:, i] + best
    out: FloatArray = (previous.min(axis=1) / m).astype(np.float32)
    return out


def best_distance(speech: Sequence[FloatArray], windows: npt.ArrayLike) -> FloatArray:
    """[n] distance of each window's features [n, f, 13] (or one window [f, 13]) to its closest take."""
    array = np.asarray(windows, dtype=np.float32)
    batch = array[None] if array.ndim == 2 else array
    distances = np.min(np.stack([_subsequence_cost(take, batch) for take in speech]), axis=0)
    out: FloatArray = distances.astype(np.float32)
    return out


def checked_take_features(takes: Any, spread: Any) -> tuple[tuple[FloatArray, ...], float | None]:
    """A keyword file's take features and spread as the second look needs them; ValueError naming the field."""
    checked = []
    for take in takes if isinstance(takes, list | tuple) else [None]:
        try:
            array = np.asarray(take, dtype=np.float32)
        except (TypeError, ValueError):
            array = np.zeros(0, dtype=np.float32)
        if (
            array.ndim != 2
            or array.shape[0] < 1
            or array.shape[1] != COEFFICIENTS
            or not np.isfinite(array).all()
        ):
            raise ValueError(
                f"take_speech must hold one [steps, {COEFFICIENTS}] array of finite numbers per take"
            )
        checked.append(array)
    if spread is not None and (
        isinstance(spread, bool) or not isinstance(spread, int | float) or not 0 <= spread < 1e6
    ):
        raise ValueError(f"take_spread must be a distance >= 0, got {spread!r}")
    return tuple(checked), None if spread is None else float(spread)


def looks_again(take_speech: Sequence[FloatArray], spread: float | None, max_spread: float) -> bool:
    """Whether a keyword gets the second look: a word whose takes agree within `max_spread` (0: never)."""
    return bool(take_speech) and spread is not None and max_spread > 0.0 and spread <= max_spread


def look_distance(
    take_speech: Sequence[FloatArray], spread: float | None, max_spread: float, floor: float
) -> float | None:
    """How closely a vetoed window must follow one of the keyword's takes to be given back: the takes' spread, or
    `floor` when they agree more closely than that (takes said in one sitting agree more closely than the word
    said another time). None for a keyword without the second look (looks_again)."""
    if not looks_again(take_speech, spread, max_spread):
        return None
    return max(float(spread or 0.0), floor)


def take_spread(references: Sequence[TakeReference]) -> float | None:
    """How far the takes are from each other: the largest over takes of its distance to the closest other
    take's window. None with fewer than two takes."""
    if len(references) < 2:
        return None
    farthest = 0.0
    for i, reference in enumerate(references):
        others = np.stack([r.window for j, r in enumerate(references) if j != i])
        farthest = max(farthest, float(np.min(_subsequence_cost(reference.speech, others))))
    return farthest
