"""Synthetic evaluation sets and scorers whose answers are known, shared by the tests/test_eval_*.py modules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from training.evaluation.protocol import EvalSet

TARGETS = ("yes", "no", "up", "down")
UNKNOWNS = ("bed", "cat", "dog")


def synthetic_set(per_target: int = 30, per_unknown: int = 8, silence: int = 12) -> EvalSet:
    words = [w for w in TARGETS for _ in range(per_target)]
    words += [w for w in UNKNOWNS for _ in range(per_unknown)]
    words += ["_silence_"] * silence
    return EvalSet.from_words([f"clip{i}" for i in range(len(words))], words, TARGETS)


def one_hot_embeddings(eval_set: EvalSet, noise: float, seed: int = 0) -> npt.NDArray[np.float32]:
    """Each word gets its own axis (silence too), plus Gaussian noise."""
    vocabulary = sorted(set(eval_set.words))
    rng = np.random.default_rng(seed)
    base = np.zeros((len(eval_set.words), len(vocabulary)), dtype=np.float32)
    base[np.arange(len(eval_set.words)), [vocabulary.index(w) for w in eval_set.words]] = 1.0
    return base + noise * rng.normal(size=base.shape).astype(np.float32)


@dataclass
class RecordingScorer:
    """A prepared scorer over fixed embeddings that records every enrollment set it is given."""

    embeddings: npt.NDArray[np.float32]
    seen: list[list[npt.NDArray[np.int64]]] = field(default_factory=list)

    def scores(self, enrollment: Sequence[npt.NDArray[np.int64]]) -> npt.NDArray[np.float64]:
        self.seen.append([np.asarray(take) for take in enrollment])
        unit = self.embeddings / np.linalg.norm(self.embeddings, axis=1, keepdims=True)
        templates = np.stack([unit[take].mean(axis=0) for take in enrollment])
        templates /= np.linalg.norm(templates, axis=1, keepdims=True)
        return (unit @ templates.T).astype(np.float64)
