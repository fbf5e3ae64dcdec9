"""The k-shot protocol on synthetic embedders and eval sets whose answers are known."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from tests.eval_fixtures import TARGETS, RecordingScorer, one_hot_embeddings, synthetic_set
from training.evaluation.protocol import (
    EmbeddingScorer,
    EvalSet,
    draw_enrollment,
    evaluate_embeddings,
    evaluate_groups,
    run_protocol,
)


def test_one_hot_embeddings_give_near_zero_eer() -> None:
    eval_set = synthetic_set()
    result = run_protocol(
        RecordingScorer(one_hot_embeddings(eval_set, 0.05)), eval_set, (1, 5), (0, 1, 2), progress=False
    )
    summary = result.summary()
    for k in ("1", "5"):
        mean = summary["shots"][k]["mean"]
        assert mean["eer"] < 0.01
        assert mean["closed_set_accuracy"] == 1.0
        assert mean["macro_f1"] == 1.0
        assert mean["open_set_accuracy"] > 0.95
        assert len(summary["shots"][k]["per_seed"]) == 3


def test_random_embeddings_give_chance_eer() -> None:
    eval_set = synthetic_set(per_target=60, per_unknown=20, silence=40)
    rng = np.random.default_rng(1)
    random = rng.normal(size=(len(eval_set.keys), 64)).astype(np.float32)
    summary = run_protocol(RecordingScorer(random), eval_set, (1, 5), (0, 1), progress=False).summary()
    for k in ("1", "5"):
        assert summary["shots"][k]["mean"]["eer"] == pytest.approx(0.5, abs=0.06)
        assert summary["shots"][k]["mean"]["closed_set_accuracy"] == pytest.approx(1 / len(TARGETS), abs=0.12)


def test_enrollment_and_test_are_disjoint_and_seeds_differ() -> None:
    eval_set = synthetic_set()
    draws = {seed: draw_enrollment(eval_set.labels, len(TARGETS), (1, 5, 10), seed) for seed in (0, 1, 2)}
    for draw in draws.values():
        for k, takes in draw.items():
            assert [len(take) for take in takes] == [k] * len(TARGETS)
            for target, take in enumerate(takes):
                assert np.all(eval_set.labels[take] == target)  # a keyword is enrolled from its own clips
                assert len(set(take.tolist())) == k
        assert set(draw[1][0].tolist()) <= set(draw[5][0].tolist())  # nested within one seed
    assert draws[0][5][0].tolist() != draws[1][5][0].tolist()
    # The protocol tests on exactly the clips that were not enrolled.
    scorer = RecordingScorer(one_hot_embeddings(eval_set, 0.1))
    result = run_protocol(scorer, eval_set, (5,), (0, 1, 2), progress=False)
    for enrollment, row in zip(scorer.seen, result.per_seed[5], strict=True):
        enrolled = np.concatenate(enrollment)
        assert row["test_target_clips"] == 4 * 30 - enrolled.size
        positives = row["positive_trials"]
        assert positives == 4 * 30 - enrolled.size


def test_unknowns_and_silence_are_counted_as_negatives() -> None:
    eval_set = synthetic_set(per_target=30, per_unknown=8, silence=12)
    assert eval_set.counts() == {"target": 120, "unknown": 24, "silence": 12}
    result = run_protocol(
        RecordingScorer(one_hot_embeddings(eval_set, 0.1)), eval_set, (1,), (0,), progress=False
    )
    row = result.per_seed[1][0]
    assert row["test_unknown_clips"] == 24
    assert row["test_silence_clips"] == 12
    test_targets = 120 - 4
    assert row["negative_trials"] == test_targets * 3 + (24 + 12) * 4
    _, negatives = result.trials(1)
    assert negatives["unknown"].size == 24 * 4
    assert negatives["silence"].size == 12 * 4
    assert negatives["other target"].size == test_targets * 3


def test_too_few_clips_for_k_is_an_error() -> None:
    eval_set = synthetic_set(per_target=5)
    with pytest.raises(ValueError, match="10-shot"):
        run_protocol(
            RecordingScorer(one_hot_embeddings(eval_set, 0.1)), eval_set, (10,), (0,), progress=False
        )


def test_validation_helper_on_embeddings() -> None:
    labels = [f"w{i}" for i in range(6) for _ in range(12)] + ["rare"] * 3
    eval_set = EvalSet.from_words([str(i) for i in range(len(labels))], labels, sorted(set(labels)))
    embeddings = one_hot_embeddings(eval_set, 0.05)
    summary = evaluate_embeddings(embeddings, labels, shots=(1, 5), seeds=(0, 1))
    assert summary["targets"] == [f"w{i}" for i in range(6)]  # "rare" has too few clips: it is an unknown
    assert summary["counts"]["unknown"] == 3
    assert summary["shots"]["5"]["mean"]["eer"] < 0.01
    with pytest.raises(ValueError, match="embeddings"):
        evaluate_embeddings(embeddings[:-1], labels)


@dataclass(frozen=True)
class ToneEmbedder:
    """Magnitude spectrum of the window in 32 bands: tones of different pitch are far apart."""

    name: str = "tone spectrum"
    window_seconds: float = 0.25

    def embed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        spectrum = np.abs(np.fft.rfft(audio, axis=1))[:, :1984]
        return spectrum.reshape(audio.shape[0], 32, -1).sum(axis=2).astype(np.float32)


def test_validation_helper_on_audio_groups() -> None:
    rng = np.random.default_rng(3)
    samples = np.arange(4000) / 16000.0
    groups = {
        f"tone{hz}": np.stack(
            [
                np.sin(2 * np.pi * (hz + rng.normal(0, 5)) * samples) + 0.1 * rng.normal(size=4000)
                for _ in range(8)
            ]
        ).astype(np.float32)
        for hz in (300, 900, 1800, 3000)
    }
    summary = evaluate_groups(ToneEmbedder(), groups, shots=(1, 3), seeds=(0,))
    assert summary["shots"]["3"]["mean"]["eer"] < 0.05
    assert summary["shots"]["3"]["mean"]["closed_set_accuracy"] == 1.0
    scorer = EmbeddingScorer(ToneEmbedder(), batch_size=5, progress=False)
    embeddings = scorer.embed_all(np.concatenate(list(groups.values())))
    assert embeddings.shape == (32, 32)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_as_scorer_accepts_embedders_and_scorers_only() -> None:
    from training.evaluation.dtw import MfccDtwScorer
    from training.evaluation.embedders import as_scorer

    dtw = MfccDtwScorer(progress=False)
    assert as_scorer(dtw) is dtw
    wrapped = as_scorer(ToneEmbedder())
    assert isinstance(wrapped, EmbeddingScorer)
    assert wrapped.window_seconds == 0.25
    with pytest.raises(TypeError, match="embedder"):
        as_scorer(object())  # type: ignore[arg-type]
