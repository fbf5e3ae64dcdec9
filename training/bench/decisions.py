"""The detector's decision rule replayed over stored window scores, fast enough to sweep thresholds over hours
of audio and hundreds of keywords, and the matching of detections to the truth.

The daemon's rule (`edge.detector`): a keyword's window is a hit when its score reaches its threshold; the
keyword fires when `trigger_level` of its last `trigger_window` recorded windows are hits; its history is then
cleared and it is silent for the refractory period (windows inside it are not recorded). Keywords keep
independent state, and when several keywords of one enrolled set fire on the same window only the one with the
best margin (score - threshold) is reported: one sound, one keyword.

Everything here works on margins (score - threshold) and an offset: a hit is margin >= offset, so offset 0 is
the rule itself and a sweep of offsets is a sweep of thresholds. `trigger_margins` gives, per window, the
largest offset at which it could fire (ignoring refractory periods); the replay then visits only those
candidate windows per keyword, which makes a sweep cost about as much as the detections it finds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["fire_windows", "match_detections", "one_per_window", "trigger_margins"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def trigger_margins(margins: FloatArray, level: int, window: int) -> FloatArray:
    """[W, K]: min(margin[w], the (level-1)-th largest margin of the window-1 windows before w).

    Window w of a keyword can fire at offset d (refractory periods aside) exactly when this value is >= d: it is
    a hit itself and at least level-1 of the windows before it in the trigger window are hits.
    """
    values = np.asarray(margins, dtype=np.float32)
    if not 1 <= level <= window:
        raise ValueError(f"trigger_margins: need 1 <= level <= window, got {level}, {window}")
    if level == 1:
        return values.copy()
    if level in (2, window):  # the largest (or the smallest) of the windows before: no sort needed
        combine = np.maximum if level == 2 else np.minimum
        kth = np.full(values.shape, -np.inf, dtype=np.float32)
        kth[1:] = values[:-1]
        for shift in range(2, window):
            combine(kth[shift:], values[:-shift], out=kth[shift:])
        if level == window:
            kth[: window - 1] = -np.inf  # fewer than window-1 windows before: never `level` hits
        out: FloatArray = np.minimum(values, kth)
        return out
    before = np.full((window - 1, *values.shape), -np.inf, dtype=np.float32)
    for shift in range(1, window):
        before[shift - 1, shift:] = values[:-shift]
    kth_largest = np.sort(before, axis=0)[window - level]
    sorted_out: FloatArray = np.minimum(values, kth_largest)
    return sorted_out


def fire_windows(
    margin: FloatArray,
    candidates: IntArray,
    ends: Sequence[int],
    offset: float,
    level: int,
    window: int,
    refractory_samples: int,
) -> IntArray:
    """Indices of the windows at which one keyword fires, as `edge.detector.TriggerSmoother` decides.

    `margin` [W] is the keyword's margin per window (-inf where gated), `candidates` the sorted indices whose
    trigger margin is >= offset (every firing window is one), `ends` the windows' end samples (a list is
    fastest: this loop looks up single values).
    """
    chosen = candidates.tolist()
    fired: list[int] = []
    first_recorded = 0  # the first window recorded since the last firing
    position, count = 0, len(chosen)
    while position < count:
        candidate = chosen[position]
        if candidate < first_recorded:
            position = bisect_left(chosen, first_recorded, position)
            continue
        # Hits recorded before the last firing were cleared: recount within this firing's history only.
        if (
            level > 1
            and candidate - window + 1 < first_recorded
            and np.count_nonzero(margin[first_recorded : candidate + 1] >= offset) < level
        ):
            position += 1
            continue
        fired.append(candidate)
        silent_until = int(ends[candidate]) + refractory_samples
        first_recorded = max(candidate + 1, bisect_left(ends, silent_until, candidate))
        position = bisect_left(chosen, first_recorded, position)
    return np.asarray(fired, dtype=np.int64)


def one_per_window(
    fired: Sequence[IntArray],
    columns: Sequence[int],
    scores: FloatArray,
    thresholds: npt.NDArray[np.floating],
) -> list[IntArray]:
    """Keep, where keywords of one enrolled set fire on the same window, only the best margin (the lowest index
    on a tie, as the detector's max() does); `fired[i]` are the firing windows of keyword `columns[i]` of
    scores [W, K] and thresholds [K]."""
    windows = np.concatenate(fired) if len(fired) > 1 else np.zeros(0, dtype=np.int64)
    if windows.size < 2 or np.unique(windows).size == windows.size:
        return list(fired)
    members = np.concatenate([np.full(f.shape[0], i, dtype=np.int64) for i, f in enumerate(fired)])
    keywords = np.asarray(columns, dtype=np.int64)[members]
    # The detector compares Python floats: score - threshold in double precision.
    margins = scores[windows, keywords].astype(np.float64) - np.asarray(thresholds, np.float64)[keywords]
    order = np.lexsort((members, -margins, windows))
    windows, members = windows[order], members[order]
    first = np.ones(windows.shape[0], dtype=bool)
    first[1:] = windows[1:] != windows[:-1]
    return [windows[first & (members == i)] for i in range(len(fired))]


def match_detections(
    times: npt.NDArray[np.float64],
    starts: npt.NDArray[np.float64],
    ends: npt.NDArray[np.float64],
    tolerance_s: float,
    neutral: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Match one keyword's detections (sorted times) to its utterances [starts, ends] (sorted by start).

    A detection at t hits the earliest unmatched utterance with start < t <= end + tolerance. Returns, per
    detection, the index of the utterance it hit (-1: none) and whether it is neutral: it missed its own
    utterances but fell on one in `neutral` (the same word said where it is not this keyword's target, e.g.
    another speaker's take when the keyword is one person's own), which counts as neither hit nor false accept.
    """
    hit = np.full(times.shape[0], -1, dtype=np.int64)
    if starts.size and times.size:
        # Utterances [low, high) started before t; those before `low` all closed before t.
        closes = np.maximum.accumulate(ends + tolerance_s)
        high = np.searchsorted(starts, times, side="left")
        low = np.searchsorted(closes, times, side="left")
        matched = np.zeros(starts.shape[0], dtype=bool)
        for i in np.flatnonzero(low < high):
            for j in range(int(low[i]), int(high[i])):
                if not matched[j] and times[i] <= ends[j] + tolerance_s:
                    matched[j] = True
                    hit[i] = j
                    break
    is_neutral = np.zeros(times.shape[0], dtype=bool)
    if neutral is not None and neutral[0].size and times.size:
        n_starts, n_ends = neutral
        n_closes = np.maximum.accumulate(n_ends + tolerance_s)
        # The first utterance still open at t (index `low`) closes at or after t; it is on t when it began before.
        inside = np.searchsorted(n_closes, times, side="left") < np.searchsorted(n_starts, times, side="left")
        is_neutral = inside & (hit < 0)
    return hit, is_neutral
