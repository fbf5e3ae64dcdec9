"""How the shipped default threshold is chosen: measured score distributions on held-out TRAINING-corpus speakers.

Procedure (`kws-edge threshold --model M --clips held_out.txt`), never touching gsc_v2_test:
1. The clips: those of the speakers the model's training run held out (`--clips`, a list of manifest paths
   written by `tests/tools/held_out_clips.py CHECKPOINT`, which rebuilds the run's own speaker split). Without
   `--clips`, the manifest's own test parts of FSDD and Arabic Speech Commands are used, with a warning: a run
   that trained on every split has seen those speakers.
2. Templates: in a corpus where a speaker has more than `enroll_takes` (default 2) takes of a word, one template
   per (speaker, word) from the first takes (the user's case: enroll, then speak); in a corpus with one take per
   speaker (Speech Commands), one template per word from `enroll_takes` speakers. Each is made the way
   `kws-edge enroll` makes it (voice-activity cut, centred in the model window). The group's remaining takes are
   TARGET trials; every clip of the same corpus with ANOTHER word, and 200 windows of Speech Commands background
   noise at random gains, are NON-TARGET trials.
3. Rates are macro-averaged over corpora (each corpus counts once, however many trials it has). The threshold
   is the smallest cosine (0.005 grid) at which the mean false-alarm rate is at most `max_false_alarm_rate`
   (default 1 %: the device listens all day, so a window that fires wrongly costs more than one that misses
   once; the report adds the equal-error point, per-corpus rates and nearby thresholds).
The rates are per window; the daemon's trigger_level-of-trigger_window smoothing and negative templates lower
false alarms further.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import load_audio
from edge.commands import take_from_audio
from edge.model import Encoder

__all__ = ["HELD_OUT_SPLITS", "ThresholdReport", "Trials", "measure_scores", "report"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
HELD_OUT_SPLITS = {"fsdd": ("test",), "arabic_sc": ("test",)}
FORBIDDEN = "gsc_v2_test"


@dataclass(frozen=True)
class ThresholdReport:
    threshold: float
    max_false_alarm_rate: float
    false_alarm_rate: float
    miss_rate: float
    equal_error_rate: float
    equal_error_threshold: float
    target_trials: int
    nontarget_trials: int
    per_corpus: dict[str, dict[str, float]]
    table: list[dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _held_out_rows(data_dir: Path, clips: set[str] | None) -> list[dict[str, str]]:
    with open(data_dir / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] != FORBIDDEN]
    if clips is not None:
        return [r for r in rows if r["path"] in clips]
    log.warning(
        "no --clips list: using the manifest's test parts of %s; a model trained on every split has seen "
        "these speakers (write the list with tests/tools/held_out_clips.py CHECKPOINT)",
        sorted(HELD_OUT_SPLITS),
    )
    return [r for r in rows if r["split"] in HELD_OUT_SPLITS.get(r["dataset"], ())]


@dataclass(frozen=True)
class Trials:
    """Cosine scores of target and non-target trials, each with the corpus its template came from."""

    target: FloatArray
    target_corpus: npt.NDArray[np.str_]
    nontarget: FloatArray
    nontarget_corpus: npt.NDArray[np.str_]


def _template_groups(rows: list[dict[str, str]], enroll_takes: int) -> dict[tuple[str, str, str], list[int]]:
    """Same-speaker groups (speaker, word) where a corpus has them, else cross-speaker groups (word)."""
    by_speaker: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_speaker[(row["dataset"], row["speaker"], row["word"])].append(index)
    same_speaker = {key[0] for key, members in by_speaker.items() if len(members) > enroll_takes}
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        speaker = row["speaker"] if row["dataset"] in same_speaker else "*"
        groups[(row["dataset"], speaker, row["word"])].append(index)
    for key, members in groups.items():
        members.sort(
            key=lambda i: (rows[i]["take"], rows[i]["speaker"]) if key[1] != "*" else (rows[i]["speaker"],)
        )
    return groups


def measure_scores(
    encoder: Encoder,
    data_dir: Path,
    enroll_takes: int = 2,
    noise_windows: int = 200,
    clips: set[str] | None = None,
) -> Trials:
    """Target and non-target cosine scores per the procedure in the module docstring."""
    rows = _held_out_rows(data_dir, clips)
    if not rows:
        raise ValueError(f"{data_dir}: no held-out clips of {sorted(HELD_OUT_SPLITS)} in manifest.csv")
    windows = np.stack(
        [
            take_from_audio(load_audio(data_dir / r["path"]), encoder.window_samples, None, r["path"])
            for r in rows
        ]
    )
    embeddings = encoder.embed_windows(windows)
    noise = _noise_embeddings(encoder, data_dir, noise_windows)
    target: list[float] = []
    target_corpus: list[str] = []
    nontarget: list[float] = []
    nontarget_corpus: list[str] = []
    for (dataset, _, word), members in sorted(_template_groups(rows, enroll_takes).items()):
        if len(members) <= enroll_takes:
            continue
        template = embeddings[members[:enroll_takes]].mean(axis=0)
        template /= np.linalg.norm(template)
        scores = (embeddings[members[enroll_takes:]] @ template).tolist()
        target += scores
        target_corpus += [dataset] * len(scores)
        others = [i for i, r in enumerate(rows) if r["dataset"] == dataset and r["word"] != word]
        scores = (embeddings[others] @ template).tolist() + (noise @ template).tolist()
        nontarget += scores
        nontarget_corpus += [dataset] * len(scores)
    return Trials(
        np.array(target, dtype=np.float32),
        np.array(target_corpus, dtype=np.str_),
        np.array(nontarget, dtype=np.float32),
        np.array(nontarget_corpus, dtype=np.str_),
    )


def _noise_embeddings(encoder: Encoder, data_dir: Path, count: int) -> FloatArray:
    folder = data_dir / "gsc_noise"
    files = sorted(folder.glob("*.flac")) if folder.is_dir() else []
    if not files or count == 0:
        return np.zeros((0, encoder.embedding_dim), dtype=np.float32)
    rng = np.random.default_rng(0)
    per_file = max(1, count // len(files))
    windows = []
    for path in files:
        audio = load_audio(path)
        for start in rng.integers(0, audio.shape[0] - encoder.window_samples, size=per_file):
            windows.append(audio[start : start + encoder.window_samples] * rng.uniform(0.05, 1.0))
    return encoder.embed_windows(np.stack(windows).astype(np.float32))


def report(trials: Trials, max_false_alarm_rate: float, step: float = 0.005) -> ThresholdReport:
    """Macro-averaged over corpora (each corpus counts once, however many trials it has): the smallest threshold
    on a `step` grid whose mean false-alarm rate is at most the target, and the equal-error point."""
    corpora = sorted(set(trials.target_corpus.tolist()))
    if not corpora:
        raise ValueError(
            "report: no target trials (no speaker or word with more takes than the template uses)"
        )
    grid = np.round(np.arange(-1.0, 1.0 + step / 2, step), 6)
    far = np.zeros((len(corpora), grid.size))
    frr = np.zeros((len(corpora), grid.size))
    for k, corpus in enumerate(corpora):
        target = np.sort(trials.target[trials.target_corpus == corpus].astype(np.float64))
        nontarget = np.sort(trials.nontarget[trials.nontarget_corpus == corpus].astype(np.float64))
        far[k] = 1.0 - np.searchsorted(nontarget, grid, side="left") / max(nontarget.size, 1)
        frr[k] = np.searchsorted(target, grid, side="left") / target.size
    mean_far, mean_frr = far.mean(axis=0), frr.mean(axis=0)
    allowed = np.flatnonzero(mean_far <= max_false_alarm_rate + 1e-12)  # float noise of the mean
    index = int(allowed[0]) if allowed.size else grid.size - 1
    eer_index = int(np.argmin(np.abs(mean_far - mean_frr)))
    table = [
        {
            "threshold": float(grid[i]),
            "false_alarm_rate": round(float(mean_far[i]), 5),
            "miss_rate": round(float(mean_frr[i]), 5),
        }
        for i in sorted(
            {max(0, index - 20), max(0, index - 10), index, min(grid.size - 1, index + 10), eer_index}
        )
    ]
    per_corpus = {
        corpus: {
            "false_alarm_rate": round(float(far[k, index]), 5),
            "miss_rate": round(float(frr[k, index]), 5),
            "target_trials": int(np.sum(trials.target_corpus == corpus)),
            "nontarget_trials": int(np.sum(trials.nontarget_corpus == corpus)),
        }
        for k, corpus in enumerate(corpora)
    }
    return ThresholdReport(
        threshold=float(grid[index]),
        max_false_alarm_rate=max_false_alarm_rate,
        false_alarm_rate=float(mean_far[index]),
        miss_rate=float(mean_frr[index]),
        equal_error_rate=float((mean_far[eer_index] + mean_frr[eer_index]) / 2),
        equal_error_threshold=float(grid[eer_index]),
        target_trials=int(trials.target.size),
        nontarget_trials=int(trials.nontarget.size),
        per_corpus=per_corpus,
        table=table,
    )
