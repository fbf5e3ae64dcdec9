"""A false-alarm budget instead of a cosine: per-keyword thresholds from an impostor cohort.

The cohort is hours of ordinary audio (read speech by many speakers, music, household noise) that contains no
keyword, seen by the model exactly as the daemon sees a stream: one window embedding every `hop_ms`. It ships
beside the model (`<model>.cohort.npz`, built by `kws-convert cohort`) and carries the model's sha256, so a
cohort is never applied to embeddings of another model.

For a keyword template the cohort gives a score per window. The detector fires when `trigger_level` of the last
`trigger_window` windows reach the threshold, then keeps quiet for the refractory period; the same rule on the
cohort's scores gives the false alarms the keyword would raise per hour of such audio, at every threshold at
once: each window's "trigger score" (the level-th largest score of its trigger window, capped by its own) is
what the threshold must not exceed for that window to fire, and keeping only the highest trigger score within
each refractory period leaves one peak per false alarm. A budget (false alarms per hour) then picks the lowest
threshold whose rate of peaks stays within it. Below the cohort's resolution (fewer than a few peaks in its
hours) the rate is extrapolated from the top peaks with an exponential tail, the usual shape of the maximum of
many near-Gaussian scores.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.cohort import Cohort

__all__ = [
    "KeywordBudget",
    "TailModel",
    "budget_for_template",
    "hard_negatives",
    "phrase_scores",
    "prune_lookalikes",
    "trigger_peaks",
    "trigger_scores",
    "veto_mask",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

# Peaks used to fit the exponential tail: enough for a stable slope, few enough to stay in the tail.
_TAIL_PEAKS = 40
# The empirical rate is trusted down to this many peaks above the threshold; below it the tail model takes over.
_MIN_EMPIRICAL_PEAKS = 5
# No budget sets a threshold above this: a cosine this close to 1 misses nearly every real utterance.
MAX_THRESHOLD = 0.95
# Nor below this: audio unlike anything in the cohort (a new noise, a television) must not fire at so low a cosine.
MIN_THRESHOLD = 0.3


def trigger_scores(
    scores: FloatArray, segment_starts: npt.NDArray[np.int64], level: int, window: int
) -> FloatArray:
    """Per window, the highest threshold at which it fires: its own score capped by the `level`-th largest of
    the last `window` windows (its own included, never reaching back into another stream)."""
    trigger = np.empty_like(scores)
    bounds = [*segment_starts.tolist(), scores.shape[0]]
    for start, end in itertools.pairwise(bounds):
        part = scores[start:end]
        lagged = np.full((window, part.shape[0]), -np.inf, dtype=np.float32)
        for lag in range(window):
            lagged[lag, lag:] = part[: part.shape[0] - lag]
        trigger[start:end] = np.minimum(part, np.sort(lagged, axis=0)[window - level])
    return trigger


def trigger_peaks(
    trigger: FloatArray,
    segment_starts: npt.NDArray[np.int64],
    refractory: int,
    at_least: int = 0,
    down_to: float = -np.inf,
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """The trigger score and window of each false alarm the detector would raise, highest first.

    Within `refractory` windows of a kept peak, lower ones are the same alarm. Stops once `at_least` peaks are
    found and the next is below `down_to` (the tail is all a budget needs; the whole list costs more).
    """
    bounds = np.asarray([*segment_starts.tolist(), trigger.shape[0]])
    segment_of = np.searchsorted(bounds[1:], np.arange(trigger.shape[0]), side="right")
    taken = np.zeros(trigger.shape[0], dtype=bool)
    values: list[float] = []
    windows: list[int] = []
    for index in np.argsort(-trigger, kind="stable"):
        value = float(trigger[index])
        if not math.isfinite(value) or (len(values) >= at_least and value < down_to):
            break
        if taken[index]:
            continue
        values.append(value)
        windows.append(int(index))
        segment = segment_of[index]
        taken[max(bounds[segment], index - refractory) : min(bounds[segment + 1], index + refractory + 1)] = (
            True
        )
    return np.asarray(values, dtype=np.float32), np.asarray(windows, dtype=np.int64)


@dataclass(frozen=True)
class TailModel:
    """False alarms per hour as a function of the threshold, from a template's cohort peaks.

    `peaks` may be the top of the list only: rates are exact down to its last value."""

    peaks: FloatArray  # descending
    hours: float

    def rate(self, threshold: float) -> float:
        """Expected false alarms per hour at `threshold`: the peaks counted where there are enough of them,
        the exponential tail where there are few (never below what two or more observed peaks say)."""
        above = int(np.count_nonzero(self.peaks >= threshold))
        if above >= _MIN_EMPIRICAL_PEAKS or self.peaks.shape[0] < 2:
            return above / self.hours
        (t0, r0), slope = self._anchor()
        fitted = min(r0, r0 * math.exp(-(threshold - t0) / slope))
        return float(max(fitted, above / self.hours) if above >= 2 else fitted)

    def threshold(self, per_hour: float) -> float:
        """The lowest threshold whose expected false alarms per hour (`rate`) stay within `per_hour`."""
        allowed = per_hour * self.hours
        if allowed >= _MIN_EMPIRICAL_PEAKS and self.peaks.shape[0] > int(allowed):
            # Just above the first peak that would exceed the budget.
            return float(np.nextafter(self.peaks[int(allowed)], np.float32(np.inf)))
        if self.peaks.shape[0] < 2:
            return float(self.peaks[0]) + 0.05 if self.peaks.shape[0] else -1.0
        (t0, r0), slope = self._anchor()
        fitted = t0 + slope * math.log(r0 / per_hour) if per_hour < r0 else t0
        # No more observed peaks above it than the budget allows, one always being allowed (a single
        # exceedance in a short cohort says little; two or more are taken at their word).
        kept = max(1, int(allowed))
        observed = (
            float(np.nextafter(self.peaks[kept], np.float32(np.inf))) if self.peaks.shape[0] > kept else -1.0
        )
        return float(max(fitted, observed))

    def _anchor(self) -> tuple[tuple[float, float], float]:
        top = self.peaks[: min(_TAIL_PEAKS, self.peaks.shape[0])]
        t0 = float(top[-1])
        # Maximum-likelihood scale of exponential excesses over t0 (the k-1 peaks above the k-th).
        slope = max(float(np.mean(top[:-1] - t0)), 1e-3)
        return (t0, top.shape[0] / self.hours), slope


@dataclass(frozen=True)
class KeywordBudget:
    """What the budget made of one keyword, and what enrollment tells the user about it."""

    threshold: float
    expected_per_hour: float
    budget_per_hour: float
    take_scores: tuple[float, ...]  # each take against the mean of the others (leave one out)
    per_hour_at_takes: float  # false alarms per hour at a threshold every take still reaches
    warning: str | None

    def as_event(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 4),
            "expected_false_alarms_per_hour": round(self.expected_per_hour, 3),
            "false_alarm_budget_per_hour": self.budget_per_hour,
            "take_scores": [round(s, 3) for s in self.take_scores],
            "warning": self.warning,
        }


def _leave_one_out(take_units: FloatArray) -> tuple[float, ...]:
    if take_units.ndim != 2 or take_units.shape[0] < 2:
        return ()
    scores = []
    for i in range(take_units.shape[0]):
        others = np.delete(take_units, i, axis=0).mean(axis=0)
        scores.append(float(take_units[i] @ others / max(float(np.linalg.norm(others)), 1e-12)))
    return tuple(scores)


def phrase_scores(cohort: Cohort, parts: FloatArray, back: list[int]) -> FloatArray:
    """A phrase keyword's score at every cohort window, as the detector computes it: the lowest cosine of each
    part with the window that ended `back` windows earlier (0 where that is before the stream's start)."""
    lowest = np.full(cohort.embeddings.shape[0], np.inf, dtype=np.float32)
    starts = np.zeros(cohort.embeddings.shape[0], dtype=np.int64)
    bounds = [*cohort.segment_starts.tolist(), cohort.embeddings.shape[0]]
    for start, end in itertools.pairwise(bounds):
        starts[start:end] = start
    index = np.arange(cohort.embeddings.shape[0])
    for part, windows in zip(parts, back, strict=True):
        scores = cohort.scores(part)
        shifted = np.zeros_like(scores)
        valid = index - windows >= starts
        shifted[valid] = scores[index[valid] - windows]
        lowest = np.minimum(lowest, shifted)
    return lowest


def hard_negatives(
    template: npt.ArrayLike, pool: Cohort, count: int, level: int, window: int, refractory: int
) -> FloatArray:
    """The windows of the `count` cohort events most like `template`, one per event (its peak window).

    Used as the keyword's negatives: a window that resembles one of them more than the keyword does is not a
    hit. They are ordinary audio (look-alike words inside read speech, music), never the user's keyword.
    """
    trigger = trigger_scores(pool.scores(template), pool.segment_starts, level, window)
    _, windows = trigger_peaks(trigger, pool.segment_starts, refractory, at_least=count, down_to=np.inf)
    return pool.rows(windows[:count])


def prune_lookalikes(found: FloatArray, take_units: npt.ArrayLike, floor: float) -> FloatArray:
    """`found` look-alikes less one more like a user's take than that take is like the user's other takes (its
    leave-one-out cosine) and than `floor`: such a "look-alike" is how the user may say the word, and would veto
    them. With fewer than two takes, or `floor` >= 1, nothing is dropped."""
    takes = np.asarray(take_units, dtype=np.float32)
    if found.shape[0] == 0 or floor >= 1.0 or takes.ndim != 2 or takes.shape[0] < 2:
        return found
    bar = np.maximum(np.asarray(_leave_one_out(takes), dtype=np.float32), np.float32(floor))
    kept: FloatArray = found[~np.any(found @ takes.T > bar, axis=1)]
    return kept


def veto_mask(closest: FloatArray, scores: FloatArray, margin: float) -> npt.NDArray[np.bool_]:
    """The look-alike veto, one rule for the detector, the budget's calibration and the benchmark: a window is no hit
    where its closest negative resembles it more than the keyword does, by over `margin`."""
    return np.asarray(closest > scores + np.float32(margin))


def _vetoed(
    scores: FloatArray, calibration: Cohort, negatives: FloatArray, lowest: float, margin: float = 0.0
) -> FloatArray:
    """`scores` with -inf where a negative resembles the window more than the keyword does by over `margin`
    (the detector's rule).

    Only windows scoring `lowest` or more are checked: no lower one can fire."""
    if negatives.shape[0] == 0:
        return scores
    out = scores.copy()
    candidates = np.flatnonzero(scores >= lowest)
    for start in range(0, candidates.shape[0], 4096):
        chosen = candidates[start : start + 4096]
        closest = np.max(calibration.rows(chosen) @ negatives.T, axis=1)
        out[chosen[veto_mask(closest, scores[chosen], margin)]] = -np.inf
    return out


def budget_for_template(
    template: npt.ArrayLike,
    calibration: Cohort,
    per_hour: float,
    level: int,
    window: int,
    refractory: int,
    take_units: npt.ArrayLike | None = None,
    negatives: npt.ArrayLike | None = None,
    scores: FloatArray | None = None,
    veto_margin: float = 0.0,
) -> KeywordBudget:
    """The threshold that keeps `template` within `per_hour` false alarms on the calibration cohort.

    The cohort's windows are the detector's windows (same hop); `refractory` is in windows. `negatives` veto
    hits as they will in the detector (with `veto_margin`). `scores` replaces the template's cosine with each window (a phrase's
    score, `phrase_scores`). The threshold stays within [MIN_THRESHOLD, MAX_THRESHOLD].
    """
    if scores is None:
        scores = calibration.scores(template)
    if negatives is not None:
        scores = _vetoed(
            scores, calibration, np.asarray(negatives, dtype=np.float32), MIN_THRESHOLD, veto_margin
        )
    trigger = trigger_scores(scores, calibration.segment_starts, level, window)
    needed = max(_TAIL_PEAKS, math.ceil(per_hour * calibration.hours) + _MIN_EMPIRICAL_PEAKS + 1)
    peaks, _ = trigger_peaks(trigger, calibration.segment_starts, refractory, at_least=needed)
    tail = TailModel(peaks, calibration.hours)
    threshold = min(max(tail.threshold(per_hour), MIN_THRESHOLD), MAX_THRESHOLD)
    take_scores = _leave_one_out(np.asarray(take_units if take_units is not None else [], dtype=np.float32))
    reachable = min(take_scores) - 0.02 if take_scores else threshold
    if reachable < threshold:  # the warning quotes the rate down there: more of the peak list is needed
        peaks, _ = trigger_peaks(trigger, calibration.segment_starts, refractory, needed, down_to=reachable)
        tail = TailModel(peaks, calibration.hours)
    at_takes = tail.rate(min(reachable, threshold))
    warning = None
    # Warn when keeping the user's own takes would cost clearly more than the budget (twice it), not at every
    # hair's breadth: takes scored against their own mean are a rough guide to how the user will sound.
    if take_scores and at_takes > 2 * per_hour:
        warning = (
            f"this keyword sits close to ordinary speech: to keep false alarms within {per_hour:g} an hour its "
            f"threshold is {threshold:.2f}, above what your own takes reach ({min(take_scores):.2f}), so it will "
            f"often be missed; at a threshold your takes pass, expect about {at_takes:.1f} false alarms an hour. "
            "A longer word or a two-word phrase works better"
        )
    return KeywordBudget(threshold, tail.rate(threshold), per_hour, take_scores, at_takes, warning)
