"""The MFCC + DTW baseline: DTW on small known sequences, the batched recursion, the scorer."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.dtw import (
    DtwConfig,
    MfccDtwScorer,
    batch_dtw,
    dtw_distance,
    euclidean_cost,
    mfcc_sequences,
)


def column(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)[:, None]


def test_dtw_hand_computed_cases() -> None:
    # A time-stretched copy aligns at no cost.
    assert dtw_distance(column([0, 1, 2]), column([0, 1, 1, 2])) == 0.0
    # Both frames of [0, 0] must match the single frame [1].
    assert dtw_distance(column([0, 0]), column([1])) == 2.0
    # Cost |a_i - b_j|: [[0, 2], [1, 1], [2, 0]]; the best path 0 -> 1 -> 0 costs 1.
    assert dtw_distance(column([1, 2, 3]), column([1, 3])) == 1.0
    assert dtw_distance(column([1, 2, 3]), column([1, 3])) == dtw_distance(column([1, 3]), column([1, 2, 3]))


def test_batched_dtw_matches_the_reference() -> None:
    rng = np.random.default_rng(0)
    query = rng.normal(size=(7, 3)).astype(np.float32)
    for length in (1, 4, 7, 11):
        references = rng.normal(size=(5, length, 3)).astype(np.float32)
        batched = batch_dtw(euclidean_cost(query, references))
        expected = [dtw_distance(query, reference) for reference in references]
        assert batched == pytest.approx(expected, rel=1e-4)


def test_euclidean_cost_is_the_frame_distance() -> None:
    rng = np.random.default_rng(1)
    query = rng.normal(size=(4, 6)).astype(np.float32)
    references = rng.normal(size=(3, 5, 6)).astype(np.float32)
    cost = euclidean_cost(query, references)
    assert cost.shape == (3, 4, 5)
    expected = np.linalg.norm(query[None, :, None, :] - references[:, None, :, :], axis=-1)
    assert cost == pytest.approx(expected, abs=1e-4)


def test_scorer_ranks_a_copy_of_the_enrollment_take_first() -> None:
    rng = np.random.default_rng(2)
    seconds = np.arange(16000) / 16000.0
    tones = [np.sin(2 * np.pi * hz * seconds * (1 + 0.3 * seconds)) for hz in (200, 700, 1500, 3100)]
    audio = np.stack([0.3 * tone + 0.01 * rng.normal(size=16000) for tone in tones + tones]).astype(
        np.float32
    )
    prepared = MfccDtwScorer(DtwConfig(n_coefficients=13), progress=False).prepare(audio)
    scores = prepared.scores([np.array([0]), np.array([1]), np.array([2, 3])])
    assert scores.shape == (8, 3)
    assert np.all(scores <= 0.0)
    assert scores[0, 0] == pytest.approx(0.0, abs=1e-3)  # the take against itself (float32 rounding)
    assert int(np.argmax(scores[4])) == 0  # another take of tone 0 is nearest to keyword 0
    assert int(np.argmax(scores[5])) == 1
    # "min" over takes: keyword 2 enrolled from clips 2 and 3 scores clip 7 (a take of tone 3) by the best one.
    distances = prepared.distances_to(3)
    assert scores[7, 2] == pytest.approx(-min(distances[7], prepared.distances_to(2)[7]))
    mean_scores = (
        MfccDtwScorer(DtwConfig(aggregate="mean"), progress=False).prepare(audio).scores([np.array([2, 3])])
    )
    assert mean_scores[7, 0] == pytest.approx(-(distances[7] + prepared.distances_to(2)[7]) / 2, rel=1e-5)


def test_dtw_config_and_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        DtwConfig(aggregate="median")
    with pytest.raises(ValueError, match="n_coefficients"):
        DtwConfig(n_coefficients=0)
    with pytest.raises(ValueError, match="windows"):
        mfcc_sequences(np.zeros(16000, dtype=np.float32))
    with pytest.raises(ValueError, match="dtw_distance"):
        dtw_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    features = mfcc_sequences(np.zeros((2, 16000), dtype=np.float32) + 0.01, DtwConfig(n_coefficients=5))
    assert features.shape == (2, 98, 5)
    assert features.mean(axis=1) == pytest.approx(np.zeros((2, 5)), abs=1e-4)
