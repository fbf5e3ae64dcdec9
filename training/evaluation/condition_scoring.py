"""Prepare a scorer for the benchmark under an acoustic condition, with embeddings cached per model.

By default the user enrolled in a quiet moment and the keyword is then spoken in noise or in a room: the
enrollment takes stay clean and only the test clips are corrupted. `corrupt_enrollment=True` corrupts every
clip (each with its own noise segment or room), the harder case of enrolling in the same conditions.

The protocol asks for scores of all N clips against templates made from clip indices. Clean enrollment is
served by preparing 2N items, [clean; corrupted]: enrollment indices (< N) then pick clean items, and the
scores of the corrupted copies (rows N..2N) are returned. That works for any scorer (DTW too); embedding
models are embedded once per (model, condition) and cached under `cache/eval/embeddings/`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from training.data.corpus_io import atomic_write_bytes
from training.data.paths import cache_dir as cache_root
from training.evaluation.conditions import (
    DEFAULT_CONDITION_CONFIG,
    REPO_ROOT,
    ConditionConfig,
    condition_fingerprint,
    condition_windows,
)
from training.evaluation.embedders import EmbeddingScorer, PreparedEmbeddings, PreparedScorer, Scorer

__all__ = [
    "EnrolledCleanScorer",
    "cached_embeddings",
    "code_fingerprint",
    "embedding_cache_path",
    "prepare_condition",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EnrolledCleanScorer:
    """Scores of the corrupted copies (items n..2n) against templates of the clean ones (items 0..n)."""

    inner: PreparedScorer
    n: int

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        full = np.asarray(self.inner.scores(enrollment), dtype=np.float64)
        if full.shape[0] != 2 * self.n:
            raise ValueError(f"expected scores for {2 * self.n} items, got {full.shape[0]}")
        return full[self.n :]


# The code between a model file and its embeddings: a change to any of these makes new cache entries.
EMBEDDING_CODE = (
    "edge/audio.py",
    "edge/frontend.py",
    "edge/model.py",
    "training/data/windows.py",
    "training/evaluation/embedders.py",
    "training/evaluation/conditions.py",
    "training/distill/teachers.py",
    "training/models",
)


def code_fingerprint(model_sha256: str) -> str:
    """The cache identity of a model: its file's sha256 and the sha256 of the code that embeds with it."""
    digest = hashlib.sha256(model_sha256.encode())
    for relative in EMBEDDING_CODE:
        path = REPO_ROOT / relative
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def embedding_cache_path(
    cache_dir: Path, model_id: str, window_samples: int, fingerprint: str, keys: Sequence[str]
) -> Path:
    """cache/eval/embeddings/<model sha256[:16]>/<condition fingerprint>-w<window>-<clip list hash>.npy"""
    keys_hash = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    return cache_dir / "embeddings" / model_id[:16] / f"{fingerprint}-w{window_samples}-{keys_hash}.npy"


def cached_embeddings(
    scorer: EmbeddingScorer,
    paths: Sequence[Path],
    keys: Sequence[str],
    condition: str,
    config: ConditionConfig,
    model_id: str | None,
    cache_dir: Path | None,
    progress: bool,
) -> FloatArray:
    """L2-normalised embeddings of every clip under `condition`, from the cache when `model_id` is known."""
    from training.data.windows import window_samples

    window = window_samples(scorer.window_seconds)
    path = None
    if model_id is not None:
        root = cache_dir if cache_dir is not None else cache_root() / "eval"
        path = embedding_cache_path(root, model_id, window, condition_fingerprint(condition, config), keys)
        if path.is_file():
            stored = np.load(path)
            if stored.shape[0] == len(keys):
                log.info("%s (%s): embeddings from %s", scorer.name, condition, path)
                return np.asarray(stored, dtype=np.float32)
            log.warning("%s: %d rows for %d clips; embedding again", path, stored.shape[0], len(keys))
    audio = condition_windows(paths, keys, scorer.window_seconds, condition, config, progress)
    embeddings = scorer.embed_all(audio)
    if path is not None:
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue(), keep_previous=False)
    return embeddings


def prepare_condition(
    scorer: Scorer,
    paths: Sequence[Path],
    keys: Sequence[str],
    condition: str,
    config: ConditionConfig = DEFAULT_CONDITION_CONFIG,
    corrupt_enrollment: bool = False,
    model_id: str | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> PreparedScorer:
    """The prepared scorer of the benchmark clips under `condition` (see the module doc for enrollment)."""
    if isinstance(scorer, EmbeddingScorer):

        def embed(name: str) -> FloatArray:
            return cached_embeddings(scorer, paths, keys, name, config, model_id, cache_dir, progress)

        test = embed(condition)
        if condition == "clean" or corrupt_enrollment:
            return PreparedEmbeddings(test)
        return EnrolledCleanScorer(PreparedEmbeddings(np.concatenate([embed("clean"), test])), len(keys))
    test_audio = condition_windows(paths, keys, scorer.window_seconds, condition, config, progress)
    if condition == "clean" or corrupt_enrollment:
        return scorer.prepare(test_audio)
    clean_audio = condition_windows(paths, keys, scorer.window_seconds, "clean", config, progress)
    return EnrolledCleanScorer(scorer.prepare(np.concatenate([clean_audio, test_audio])), len(keys))
