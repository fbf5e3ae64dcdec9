"""Metrics of the evaluation protocol against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    closed_set_accuracy,
    det_curve,
    eer,
    eer_with_threshold,
    frr_at_far,
    macro_f1,
    open_set_accuracy,
    score_matrix_metrics,
    threshold_at_far,
)


def test_eer_separable_scores_is_zero() -> None:
    rate, threshold = eer_with_threshold([0.9, 0.8, 0.7], [0.1, 0.2, 0.3, 0.4])
    assert rate == 0.0
    assert 0.4 < threshold <= 0.7


def test_eer_of_identical_distributions_is_half() -> None:
    assert eer([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(0.5)
    assert eer([1, 3], [2, 4]) == pytest.approx(0.5)


def test_eer_fully_reversed_scores_is_one() -> None:
    assert eer([0.1, 0.2], [0.8, 0.9]) == pytest.approx(1.0)


def test_eer_hand_computed_with_interpolation() -> None:
    # Thresholds (accept >= t): 4 -> FAR 0, FRR 2/3; 3 -> FAR 1/2, FRR 2/3; 2 -> FAR 1/2, FRR 1/3;
    # 1 -> FAR 1, FRR 0. FRR - FAR goes from 1/6 (at t=3) to -1/6 (at t=2): halfway, EER = (1/2 + 1/2)/2.
    positive = [4, 2, 1.5]
    negative = [3, 1]
    curve = det_curve(positive, negative)
    assert curve.far.tolist() == pytest.approx([0, 0, 0.5, 0.5, 0.5, 1.0])
    assert curve.frr.tolist() == pytest.approx([1, 2 / 3, 2 / 3, 1 / 3, 0, 0])
    # Between t=3 (gap 1/6) and t=2 (gap -1/6) only FRR moves, FAR stays 1/2: the EER is 1/2.
    assert eer(positive, negative) == pytest.approx(0.5)


def test_eer_interpolates_across_tied_scores() -> None:
    # t=3: FAR 0, FRR 2/3; t=1 (a positive tie and a negative tie): FAR 1/3, FRR 0. On the segment between
    # them FRR = FAR at 2/3 of the way: EER = 2/3 * 1/3 = 2/9.
    assert eer([1, 1, 3], [1, 0, 0]) == pytest.approx(2 / 9)


def test_eer_of_shifted_gaussians_matches_theory() -> None:
    rng = np.random.default_rng(0)
    shift = 2.0
    positive = rng.normal(shift, 1.0, 100_000)
    negative = rng.normal(0.0, 1.0, 100_000)
    expected = 0.5 * math.erfc(shift / 2 / math.sqrt(2))  # Phi(-d/2)
    assert eer(positive, negative) == pytest.approx(expected, abs=0.005)


def test_frr_at_far_hand_computed() -> None:
    negative = np.arange(1, 101) / 100.0  # 0.01 .. 1.00
    positive = np.array([0.5, 0.92, 0.95, 0.99])
    # FAR 10 %: 10 negatives (0.91..1.00) may pass; the threshold sits just above 0.90.
    assert threshold_at_far(negative, 0.10) == pytest.approx(0.90)
    assert threshold_at_far(negative, 0.10) > 0.90
    assert frr_at_far(positive, negative, 0.10) == pytest.approx(0.25)
    # FAR 2.5 %: 2 negatives pass (0.99, 1.00), threshold just above 0.98: only 0.99 passes.
    assert frr_at_far(positive, negative, 0.025) == pytest.approx(0.75)
    assert frr_at_far(positive, negative, 1.0) == 0.0
    assert frr_at_far(positive, negative, 0.0) == 1.0


def test_frr_at_far_ties_are_rejected() -> None:
    # Every negative ties at 0.5: any threshold admitting one admits all, so at FAR 10 % nothing at 0.5 passes.
    assert frr_at_far([0.5, 0.6], [0.5] * 10, 0.10) == pytest.approx(0.5)


def test_classification_metrics_hand_computed() -> None:
    true = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    assert closed_set_accuracy(true, predicted) == pytest.approx(4 / 6)
    # class 0: TP 1, FP 1, FN 1 -> 1/2; class 1: TP 2, FP 1, FN 0 -> 4/5; class 2: TP 1, FP 0, FN 1 -> 2/3.
    assert macro_f1(true, predicted) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(true, predicted, classes=[0, 1, 2, 3]) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)


def test_open_set_accuracy_needs_right_class_and_threshold() -> None:
    nontarget_best = np.arange(20) / 20.0  # 0.00 .. 0.95; at 5 % FA one passes: threshold just above 0.90
    true = [0, 1, 2, 3]
    predicted = [0, 1, 0, 3]
    best = [0.99, 0.5, 0.99, 0.93]
    accuracy, threshold = open_set_accuracy(true, predicted, best, nontarget_best, far=0.05)
    assert threshold == pytest.approx(0.90)
    assert accuracy == pytest.approx(2 / 4)  # item 1 is under the threshold, item 2 is the wrong class


def test_score_matrix_metrics_pools_every_trial() -> None:
    # 3 targets; items: two of target 0, one of target 1, one of target 2, two non-targets.
    scores = np.array(
        [
            [0.9, 0.1, 0.2],
            [0.8, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.6],
            [0.0, 0.1, 0.2],
            [0.3, 0.2, 0.1],
        ]
    )
    labels = [0, 0, 1, 2, -1, -1]
    result = score_matrix_metrics(scores, labels)
    assert result["positive_trials"] == 4  # one per target item
    assert result["negative_trials"] == 4 * 2 + 2 * 3  # target items vs other templates + non-targets vs all
    assert result["eer"] == 0.0  # every own score (>= 0.6) beats every other (<= 0.3)
    assert result["closed_set_accuracy"] == 1.0
    assert result["macro_f1"] == 1.0
    assert result["open_set_accuracy"] == 1.0
    assert set(result) >= {"frr_at_far_2.5", "frr_at_far_10", "eer_threshold", "open_set_threshold"}


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="negative scores"):
        eer([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        eer([float("nan")], [0.0])
    with pytest.raises(ValueError, match="labels"):
        score_matrix_metrics(np.zeros((2, 2)), [0, 5])
    with pytest.raises(ValueError, match="far"):
        threshold_at_far([0.1], 1.5)
