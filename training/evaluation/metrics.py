"""Detection and classification metrics of the user-defined keyword protocol (numpy only).

Convention everywhere: a higher score means "more like the keyword", and a trial is accepted when its score
is at least the threshold. FAR = accepted negatives / negatives, FRR = rejected positives / positives.
Rates are fractions in [0, 1]; the CLI and reports print percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DetCurve",
    "closed_set_accuracy",
    "det_curve",
    "eer",
    "eer_with_threshold",
    "frr_at_far",
    "macro_f1",
    "open_set_accuracy",
    "score_matrix_metrics",
    "threshold_at_far",
]

FloatArray = npt.NDArray[np.float64]


def _scores(values: Any, what: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{what}: expected at least one score, got none")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: {int(np.count_nonzero(~np.isfinite(array)))} score(s) are NaN or infinite")
    return array


@dataclass(frozen=True)
class DetCurve:
    """Operating points, one per distinct score used as threshold, strictest first.

    `thresholds[i]` accepts scores >= it; the first point (threshold +inf) accepts nothing.
    """

    thresholds: FloatArray
    far: FloatArray  # non-decreasing
    frr: FloatArray  # non-increasing


def det_curve(positive: Any, negative: Any) -> DetCurve:
    """FAR and FRR at every distinct score as threshold (plus the accept-nothing point)."""
    pos = _scores(positive, "positive scores")
    neg = _scores(negative, "negative scores")
    thresholds = np.unique(np.concatenate((pos, neg)))[::-1]
    pos_sorted = np.sort(pos)
    neg_sorted = np.sort(neg)
    # Count of scores >= t is n - (number of scores < t).
    accepted_pos = pos.size - np.searchsorted(pos_sorted, thresholds, side="left")
    accepted_neg = neg.size - np.searchsorted(neg_sorted, thresholds, side="left")
    far = np.concatenate(([0.0], accepted_neg / neg.size))
    frr = np.concatenate(([1.0], 1.0 - accepted_pos / pos.size))
    return DetCurve(thresholds=np.concatenate(([np.inf], thresholds)), far=far, frr=frr)


def eer_with_threshold(positive: Any, negative: Any) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached.

    FAR and FRR are step functions of the threshold; the EER is where the straight line between the two
    neighbouring operating points that bracket FRR = FAR crosses it (the usual ROC-convex interpolation).
    Separable scores give 0; identical distributions give 0.5.
    """
    curve = det_curve(positive, negative)
    gap = curve.frr - curve.far  # starts at 1 (accept nothing), ends <= 0 (accept everything)
    after = int(np.argmax(gap <= 0.0))
    before = after - 1
    span = gap[before] - gap[after]
    fraction = gap[before] / span if span > 0 else 1.0
    rate = curve.far[before] + fraction * (curve.far[after] - curve.far[before])
    low = curve.thresholds[after]
    high = curve.thresholds[before]
    threshold = low if not np.isfinite(high) else high + fraction * (low - high)
    return float(rate), float(threshold)


def eer(positive: Any, negative: Any) -> float:
    """Equal error rate (fraction) of positive-trial and negative-trial scores."""
    return eer_with_threshold(positive, negative)[0]


def threshold_at_far(negative: Any, far: float) -> float:
    """The lowest threshold whose FAR (share of `negative` scoring >= it) does not exceed `far`.

    Returned as the next float above the (m+1)-th highest negative, m = floor(far * n), so that ties with that
    negative are rejected; `-inf` when `far` >= 1 allows accepting everything.
    """
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far: expected a fraction in [0, 1], got {far}")
    neg = np.sort(_scores(negative, "negative scores"))[::-1]
    allowed = int(np.floor(far * neg.size + 1e-9))
    if allowed >= neg.size:
        return float("-inf")
    return float(np.nextafter(neg[allowed], np.inf))


def frr_at_far(positive: Any, negative: Any, far: float) -> float:
    """FRR (fraction) at the lowest threshold whose FAR is at most `far`."""
    pos = _scores(positive, "positive scores")
    threshold = threshold_at_far(negative, far)
    return float(np.mean(pos < threshold))


def _labels(values: Any, what: str) -> npt.NDArray[np.int64]:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: expected integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def closed_set_accuracy(true_labels: Any, predicted_labels: Any) -> float:
    """Share of items whose predicted class equals the true one."""
    true = _labels(true_labels, "true labels")
    predicted = _labels(predicted_labels, "predicted labels")
    if true.shape != predicted.shape or true.size == 0:
        raise ValueError(
            f"accuracy: need equal, non-empty label arrays, got {true.shape} and {predicted.shape}"
        )
    return float(np.mean(true == predicted))


def macro_f1(true_labels: Any, predicted_labels: Any, classes: Sequence[int] | None = None) -> float:
    """Unweighted mean over `classes` (default: those in `true_labels`) of F1 = 2TP / (2TP + FP + FN).

    A class with no true item and no prediction scores 0 (as scikit-learn's zero_division=0 does).
    """
    true = _labels(true_labels, "true labels")
    predicted = _labels(predicted_labels, "predicted labels")
    if true.shape != predicted.shape or true.size == 0:
        raise ValueError(
            f"macro_f1: need equal, non-empty label arrays, got {true.shape} and {predicted.shape}"
        )
    chosen = np.unique(true) if classes is None else np.asarray(classes, dtype=np.int64)
    scores = []
    for label in chosen:
        tp = np.count_nonzero((true == label) & (predicted == label))
        fp = np.count_nonzero((true != label) & (predicted == label))
        fn = np.count_nonzero((true == label) & (predicted != label))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def open_set_accuracy(
    true_labels: Any, predicted_labels: Any, best_scores: Any, nontarget_best_scores: Any, far: float = 0.05
) -> tuple[float, float]:
    """Open-set accuracy of target items and the threshold used.

    The threshold accepts at most `far` of the non-target items (unknown words, silence) by their best score
    over the targets; a target item counts as correct only when its argmax target is right AND its best score
    passes that threshold.
    """
    true = _labels(true_labels, "true labels")
    predicted = _labels(predicted_labels, "predicted labels")
    best = _scores(best_scores, "target best scores")
    if not (true.shape == predicted.shape == best.shape):
        raise ValueError(
            f"open_set_accuracy: labels and scores differ in shape: {true.shape}, {predicted.shape}, {best.shape}"
        )
    threshold = threshold_at_far(nontarget_best_scores, far)
    return float(np.mean((true == predicted) & (best >= threshold))), threshold


def score_matrix_metrics(
    scores: Any,
    labels: Any,
    far_points: Sequence[float] = (0.025, 0.10),
    open_set_far: float = 0.05,
) -> dict[str, float]:
    """All metrics of one enrollment draw from its score matrix.

    `scores` is [n_test, n_targets] (score of each test item against each target template); `labels[i]` is
    the target index of test item i, or -1 for a non-target item (unknown word or silence). Pooled trials:
    positives are (target item, its own template); negatives are (target item, every other template) and
    (non-target item, every template). Closed-set figures cover target items only (argmax over targets).
    Returns fractions: `eer`, `eer_threshold`, `frr_at_far_<p>` (p in percent, e.g. `frr_at_far_2.5`),
    `closed_set_accuracy`, `macro_f1`, `open_set_accuracy`, `open_set_threshold`, and trial counts.
    """
    matrix = np.asarray(scores, dtype=np.float64)
    label_array = _labels(labels, "labels")
    if matrix.ndim != 2 or matrix.shape[0] != label_array.size:
        raise ValueError(
            f"scores: expected [n_test, n_targets] with n_test = {label_array.size} labels, got {matrix.shape}"
        )
    n_targets = matrix.shape[1]
    if label_array.size and (label_array.min() < -1 or label_array.max() >= n_targets):
        raise ValueError(f"labels: expected -1 (non-target) or 0..{n_targets - 1}, got values outside that")
    is_target = label_array >= 0
    if not is_target.any():
        raise ValueError("labels: no target items; the metrics need at least one")
    own = np.zeros(matrix.shape, dtype=bool)
    own[np.flatnonzero(is_target), label_array[is_target]] = True
    positive = matrix[own]
    negative = matrix[~own]
    rate, threshold = eer_with_threshold(positive, negative)
    result: dict[str, float] = {"eer": rate, "eer_threshold": threshold}
    for point in far_points:
        result[f"frr_at_far_{100 * point:g}"] = frr_at_far(positive, negative, point)
    target_scores = matrix[is_target]
    true = label_array[is_target]
    predicted = np.argmax(target_scores, axis=1)
    result["closed_set_accuracy"] = closed_set_accuracy(true, predicted)
    result["macro_f1"] = macro_f1(true, predicted, classes=range(n_targets))
    if (~is_target).any():
        accuracy, open_threshold = open_set_accuracy(
            true, predicted, target_scores.max(axis=1), matrix[~is_target].max(axis=1), open_set_far
        )
        result["open_set_accuracy"] = accuracy
        result["open_set_threshold"] = open_threshold
    result["positive_trials"] = float(positive.size)
    result["negative_trials"] = float(negative.size)
    return result
