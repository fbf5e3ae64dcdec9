"""The user-defined keyword protocol: k-shot enrollment draws, pooled trials, metrics over seeds.

On `gsc_v2_test` (`evaluate`): the ten command words are the user's keywords (targets), the 25 other words
are unknowns and `_silence_` clips are silence. For every seed and every target a random permutation of that
word's clips is drawn; the k-shot enrollment set is its first k clips (so the draws of one seed are nested:
the 1-shot take is one of the 5 takes), and every other clip of the benchmark is a test clip.

Each clip is embedded (or prepared, for a non-embedding scorer) ONCE; every k and seed reuses it. A scorer
turns enrollment sets into a score matrix [clips, targets]; the protocol removes the enrollment clips and
hands the rest to `metrics.score_matrix_metrics`. The same machinery validates on the training corpora
(`evaluate_embeddings`, `evaluate_groups`) so that validation never reads the benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from training.data.manifest import COMMAND_WORDS_ORDERED
from training.evaluation.embedders import (
    Embedder,
    EmbeddingScorer,
    PreparedEmbeddings,
    PreparedScorer,
    Scorer,
    as_scorer,
    l2_normalise,
)
from training.evaluation.metrics import score_matrix_metrics

__all__ = [
    "BENCHMARK_DATASET",
    "SILENCE_WORD",
    "TARGET_WORDS",
    "Embedder",
    "EmbeddingScorer",
    "EvalSet",
    "PreparedScorer",
    "ProtocolResult",
    "Scorer",
    "as_scorer",
    "draw_enrollment",
    "evaluate",
    "evaluate_embeddings",
    "evaluate_groups",
    "load_benchmark",
    "load_windows",
    "run_protocol",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

BENCHMARK_DATASET = "gsc_v2_test"
TARGET_WORDS = COMMAND_WORDS_ORDERED
SILENCE_WORD = "_silence_"
DEFAULT_SHOTS = (1, 5, 10)
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class EvalSet:
    """Items of an evaluation: `labels[i]` is the target index of item i, or -1 for a non-target."""

    keys: tuple[str, ...]
    words: tuple[str, ...]
    target_words: tuple[str, ...]
    labels: IndexArray
    kinds: tuple[str, ...]  # "target", "unknown" or "silence"

    def __post_init__(self) -> None:
        n = len(self.keys)
        if not (len(self.words) == len(self.kinds) == self.labels.shape[0] == n):
            raise ValueError("EvalSet: keys, words, labels and kinds differ in length")

    def counts(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in ("target", "unknown", "silence")}

    @classmethod
    def from_words(
        cls,
        keys: Sequence[str],
        words: Sequence[str],
        target_words: Sequence[str],
        silence: str = SILENCE_WORD,
    ) -> EvalSet:
        index = {word: position for position, word in enumerate(target_words)}
        labels = np.array([index.get(word, -1) for word in words], dtype=np.int64)
        kinds = tuple(
            "target" if word in index else "silence" if word == silence else "unknown" for word in words
        )
        return cls(tuple(keys), tuple(words), tuple(target_words), labels, kinds)


def load_benchmark(
    data_dir: str | Path | None = None,
    max_clips_per_word: int | None = None,
    subsample_seed: int = 0,
) -> tuple[EvalSet, list[Path]]:
    """The `gsc_v2_test` rows of the manifest as an EvalSet and their files.

    `max_clips_per_word` keeps a random subset of each word (for quick checks only: NOT the benchmark).
    """
    from training.data.manifest import read_manifest
    from training.data.paths import kws_data_dir

    root = kws_data_dir(data_dir)
    clips = sorted(
        (clip for clip in read_manifest(root) if clip.dataset == BENCHMARK_DATASET), key=lambda clip: clip.key
    )
    if not clips:
        raise ValueError(f"{root}/manifest.csv: no {BENCHMARK_DATASET} rows; the benchmark cannot run")
    missing = sorted(set(TARGET_WORDS) - {clip.word for clip in clips})
    if missing:
        raise ValueError(f"{root}/manifest.csv: {BENCHMARK_DATASET} lacks the target word(s) {missing}")
    if max_clips_per_word is not None:
        rng = np.random.default_rng(subsample_seed)
        kept: list[Any] = []
        for word in sorted({clip.word for clip in clips}):
            of_word = [clip for clip in clips if clip.word == word]
            chosen = rng.permutation(len(of_word))[:max_clips_per_word]
            kept.extend(of_word[i] for i in sorted(chosen))
        clips = kept
        log.warning("subsampled %s to at most %d clips per word: not the benchmark", root, max_clips_per_word)
    eval_set = EvalSet.from_words([c.key for c in clips], [c.word for c in clips], TARGET_WORDS)
    return eval_set, [clip.path for clip in clips]


def load_windows(paths: Sequence[Path], window_seconds: float, progress: bool = True) -> FloatArray:
    """Every clip as a `window_seconds` window [N, L]: shorter clips are zero-padded, centred."""
    from training.data.windows import load_window

    windows = [
        load_window(path, window_seconds)
        for path in tqdm(paths, desc="loading clips", unit="clip", disable=not progress, mininterval=2.0)
    ]
    return np.stack(windows).astype(np.float32)


@dataclass
class ProtocolResult:
    """Per-k and per-seed metrics (JSON-ready `summary()`), plus pooled trial scores per k for the plots."""

    name: str
    counts: dict[str, int]
    target_words: tuple[str, ...]
    per_seed: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    positive_scores: dict[int, list[npt.NDArray[np.float64]]] = field(default_factory=dict)
    negative_scores: dict[int, dict[str, list[npt.NDArray[np.float64]]]] = field(default_factory=dict)

    def trials(self, shots: int) -> tuple[npt.NDArray[np.float64], dict[str, npt.NDArray[np.float64]]]:
        """Pooled over seeds: positive scores and negative scores by kind (other target, unknown, silence)."""
        negatives = {
            kind: np.concatenate(parts) for kind, parts in self.negative_scores[shots].items() if parts
        }
        return np.concatenate(self.positive_scores[shots]), negatives

    def summary(self) -> dict[str, Any]:
        by_shots: dict[str, Any] = {}
        for shots, rows in self.per_seed.items():
            names = [key for key in rows[0] if key != "seed"]
            values = {name: np.array([row[name] for row in rows], dtype=np.float64) for name in names}
            by_shots[str(shots)] = {
                "mean": {name: float(v.mean()) for name, v in values.items()},
                "std": {name: float(v.std(ddof=1)) if v.size > 1 else 0.0 for name, v in values.items()},
                "per_seed": rows,
            }
        return {
            "scorer": self.name,
            "targets": list(self.target_words),
            "counts": self.counts,
            "seeds": [int(row["seed"]) for row in next(iter(self.per_seed.values()), [])],
            "shots": by_shots,
        }


def draw_enrollment(
    labels: IndexArray, n_targets: int, shots: Sequence[int], seed: int
) -> dict[int, list[IndexArray]]:
    """For one seed: {k: [clip indices enrolling target t, for t in targets]}, nested over k."""
    rng = np.random.default_rng(seed)
    needed = max(shots) + 1
    permutations = []
    for target in range(n_targets):
        members = np.flatnonzero(labels == target)
        if members.size < needed:
            raise ValueError(
                f"target {target} has {members.size} clip(s); {max(shots)}-shot enrollment needs at least {needed}"
            )
        permutations.append(rng.permutation(members))
    return {k: [permutation[:k].astype(np.int64) for permutation in permutations] for k in shots}


def run_protocol(
    prepared: PreparedScorer,
    eval_set: EvalSet,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    name: str = "scorer",
    progress: bool = True,
) -> ProtocolResult:
    """Every (k, seed) draw: enroll, score the remaining clips against every target, compute the metrics."""
    if not shots or min(shots) < 1:
        raise ValueError(f"shots: expected positive integers, got {list(shots)}")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    n_targets = len(eval_set.target_words)
    kinds = np.array(eval_set.kinds)
    result = ProtocolResult(name=name, counts=eval_set.counts(), target_words=eval_set.target_words)
    draws = [(seed, draw_enrollment(eval_set.labels, n_targets, shots, seed)) for seed in seeds]
    jobs = [(seed, k, draw[k]) for seed, draw in draws for k in shots]
    for seed, k, enrollment in tqdm(jobs, desc=f"protocol ({name})", unit="draw", disable=not progress):
        test = np.ones(len(eval_set.keys), dtype=bool)
        test[np.concatenate(enrollment)] = False
        matrix = np.asarray(prepared.scores(enrollment), dtype=np.float64)
        if matrix.shape != (len(eval_set.keys), n_targets):
            raise ValueError(
                f"{name}: scores() returned {matrix.shape}, expected {(len(eval_set.keys), n_targets)}"
            )
        test_scores, test_labels, test_kinds = matrix[test], eval_set.labels[test], kinds[test]
        metrics = score_matrix_metrics(test_scores, test_labels)
        row: dict[str, float] = {"seed": float(seed), **metrics}
        for kind in ("target", "unknown", "silence"):
            row[f"test_{kind}_clips"] = float(np.count_nonzero(test_kinds == kind))
        result.per_seed.setdefault(k, []).append(row)
        own = np.zeros(test_scores.shape, dtype=bool)
        is_target = test_labels >= 0
        own[np.flatnonzero(is_target), test_labels[is_target]] = True
        result.positive_scores.setdefault(k, []).append(test_scores[own])
        negatives = result.negative_scores.setdefault(k, {"other target": [], "unknown": [], "silence": []})
        negatives["other target"].append(test_scores[is_target][~own[is_target]])
        for kind in ("unknown", "silence"):
            negatives[kind].append(test_scores[test_kinds == kind].reshape(-1))
    return result


def evaluate(
    scorer_or_embedder: Scorer | Embedder,
    data_dir: str | Path | None = None,
    window_seconds: float | None = None,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    max_clips_per_word: int | None = None,
    progress: bool = True,
    return_result: bool = False,
    condition: str = "clean",
    condition_options: Mapping[str, Any] | None = None,
) -> Any:
    """The benchmark protocol on `gsc_v2_test`; returns the summary dict (or the ProtocolResult).

    `window_seconds` defaults to the scorer's own; 1 s clips are zero-padded, centred, to that window.
    `condition` ("clean", "noise10", "reverb"; `training.evaluation.conditions`) corrupts the test clips;
    `condition_options` go to `condition_scoring.prepare_condition` (config, corrupt_enrollment, model_id,
    cache_dir). Clean without options is the benchmark exactly as before.
    """
    scorer = as_scorer(scorer_or_embedder, progress)
    window = float(window_seconds if window_seconds is not None else scorer.window_seconds)
    eval_set, paths = load_benchmark(data_dir, max_clips_per_word)
    if condition == "clean" and not condition_options:
        prepared = scorer.prepare(load_windows(paths, window, progress))
    else:
        from training.evaluation.condition_scoring import prepare_condition

        if window != scorer.window_seconds:
            raise ValueError(
                f"condition {condition}: window_seconds must be the scorer's own ({scorer.window_seconds})"
            )
        options = dict(condition_options or {})
        prepared = prepare_condition(scorer, paths, eval_set.keys, condition, progress=progress, **options)
    result = run_protocol(prepared, eval_set, shots, seeds, scorer.name, progress)
    if return_result:
        return result
    summary = result.summary()
    summary["window_seconds"] = window
    summary["benchmark"] = (
        BENCHMARK_DATASET if max_clips_per_word is None else f"{BENCHMARK_DATASET} (subsampled)"
    )
    if condition != "clean":
        summary["condition"] = condition
    return summary


def _groups_to_eval_set(
    labels: Sequence[str], shots: Sequence[int], nontarget_labels: Sequence[str]
) -> EvalSet:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    needed = max(shots) + 1
    excluded = set(nontarget_labels)
    targets = tuple(sorted(label for label, n in counts.items() if n >= needed and label not in excluded))
    demoted = sorted(label for label, n in counts.items() if n < needed and label not in excluded)
    if demoted:
        log.info(
            "validation: %d label(s) with fewer than %d clips act as unknowns: %s",
            len(demoted),
            needed,
            demoted[:10],
        )
    if not targets:
        raise ValueError(
            f"validation: no label has the {needed} clips that {max(shots)}-shot enrollment needs"
        )
    keys = [f"item{i}" for i in range(len(labels))]
    eval_set = EvalSet.from_words(keys, labels, targets, silence="")
    return eval_set


def evaluate_embeddings(
    embeddings: npt.ArrayLike,
    labels: Sequence[str],
    shots: Sequence[int] = (1, 5),
    seeds: Sequence[int] = (0,),
    nontarget_labels: Sequence[str] = (),
) -> dict[str, Any]:
    """The protocol on embeddings already computed (e.g. held-out speakers of the training corpora).

    Every label with at least max(shots) + 1 items is a target; the others, and `nontarget_labels`, are
    unknowns. Returns the summary dict (metrics as fractions; `summary["shots"]["5"]["mean"]["eer"]`).
    """
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != len(labels):
        raise ValueError(
            f"embeddings: expected [{len(labels)}, D] for {len(labels)} labels, got {array.shape}"
        )
    eval_set = _groups_to_eval_set(labels, shots, nontarget_labels)
    prepared = PreparedEmbeddings(l2_normalise(array))
    return run_protocol(prepared, eval_set, shots, seeds, "validation", progress=False).summary()


def evaluate_groups(
    scorer_or_embedder: Scorer | Embedder,
    audio_by_label: Mapping[str, FloatArray],
    shots: Sequence[int] = (1, 5),
    seeds: Sequence[int] = (0,),
    nontarget_labels: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """The protocol on windows grouped by label {label: float32 [n, L]} (validation on training corpora)."""
    labels: list[str] = []
    windows = []
    for label, audio in audio_by_label.items():
        array = np.asarray(audio, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"audio_by_label[{label!r}]: expected windows [n, L], got shape {array.shape}")
        labels.extend([label] * array.shape[0])
        windows.append(array)
    eval_set = _groups_to_eval_set(labels, shots, nontarget_labels)
    scorer = as_scorer(scorer_or_embedder, progress)
    prepared = scorer.prepare(np.concatenate(windows))
    return run_protocol(prepared, eval_set, shots, seeds, scorer.name, progress).summary()
