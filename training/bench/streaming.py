"""Run the board's detection path over a test stream and score what it detects against the truth.

- `enroll_keywords`: each keyword's takes go through `edge.commands.enroll_from_audio` (voice-activity cut,
  take checks, mean embedding) into a template store, exactly as `kws-edge enroll` does.
- `run_encoder_pass`: `edge.detector.Detector` in-process, fed 100 ms chunks like the daemon loop; it keeps every
  window's cosine scores (`on_window`) so that one pass gives the detections at every threshold.
- `decide`: re-applies the detector's decision logic (score >= threshold, trigger level/window and refractory
  period as `edge.detector.TriggerSmoother`, one keyword per window; `training.bench.decisions`) to stored window
  scores. At the shipped threshold it reproduces the detector's own detections exactly (checked on every run).
- `score_events`: hits within a tolerance window, false accepts, latency from the end of the spoken keyword.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import load_audio
from edge.commands import enroll_from_audio, take_from_audio
from edge.config import DetectorConfig
from edge.detector import Detector, WindowResult
from edge.model import Encoder
from edge.templates import Template, TemplateStore
from training.bench.decisions import fire_windows, match_detections, one_per_window, trigger_margins
from training.bench.streams import BenchStream

__all__ = [
    "Enrolled",
    "Event",
    "Scores",
    "WindowScores",
    "decide",
    "enroll_keywords",
    "enroll_takes",
    "run_encoder_pass",
    "score_events",
    "target_of",
    "threshold_curve",
]

RATE = 16000
CHUNK = 1600
REPO = Path(__file__).resolve().parents[2]
DEFAULT_EDGE_CONFIG = REPO / "edge" / "default_config.toml"


@dataclass(frozen=True)
class Event:
    """One detection: the keyword and when it was made (end of the window that completed it)."""

    keyword: str
    time_s: float
    score: float


@dataclass(frozen=True)
class WindowScores:
    """Every evaluated window of a pass: its end sample and each keyword's score (-inf where gated)."""

    system: str
    names: list[str]
    ends: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]  # [W, K]
    gated: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class EncoderPass:
    windows: WindowScores
    detections: list[Event]
    cpu_s: float
    chunk_wall_s: npt.NDArray[np.float64] = field(repr=False)
    embeddings: npt.NDArray[np.float32] = field(repr=False)  # [W, D], zeros where gated


def enroll_keywords(
    stream: BenchStream, data_dir: Path, encoder: Encoder, state_dir: Path
) -> tuple[list[Template], list[str]]:
    """Enroll every keyword of the stream from its takes; returns the templates and notes on refused takes.

    The take checks run as in `kws-edge enroll`; when they refuse a take (a user would re-record it), the
    keyword is enrolled without them and the refusal is reported.
    """
    spec = {word: [t["path"] for t in stream.truth["enrollment"][word]] for word in stream.keywords}
    enrolled = enroll_takes(spec, data_dir, encoder, state_dir)
    return enrolled.templates, enrolled.notes


@dataclass(frozen=True)
class Enrolled:
    """Keywords enrolled from takes: the stored templates, each take's embedding [n, D], notes on refusals."""

    templates: list[Template]
    take_embeddings: list[npt.NDArray[np.float32]]
    notes: list[str]


def enroll_takes(spec: dict[str, list[str]], data_dir: Path, encoder: Encoder, state_dir: Path) -> Enrolled:
    """Enroll each keyword (name -> take paths under data_dir) as `kws-edge enroll` does; when the take checks
    refuse a take, the keyword is enrolled without them and the refusal noted. The take embeddings are those of
    the same voice-activity cut (`edge.commands.take_from_audio`), for rules that look at takes one by one."""
    store = TemplateStore(state_dir)
    templates, embeddings, notes = [], [], []
    for name, paths in spec.items():
        takes = [(str(data_dir / path), load_audio(data_dir / path)) for path in paths]
        try:
            template = enroll_from_audio(name, takes, encoder, store, check=True)
        except ValueError as error:
            notes.append(f"{name}: {error}; enrolled without take checks")
            template = enroll_from_audio(name, takes, encoder, store, check=False)
        windows = [take_from_audio(audio, encoder.window_samples, None, label) for label, audio in takes]
        templates.append(template)
        embeddings.append(encoder.embed_windows(np.stack(windows)))
    return Enrolled(templates, embeddings, notes)


def run_encoder_pass(
    encoder: Encoder,
    audio: npt.NDArray[np.float32],
    templates: Sequence[Template],
    settings: DetectorConfig,
    progress: bool = True,
) -> EncoderPass:
    """The daemon's detector over the whole stream in 100 ms chunks, keeping each window's scores and embedding
    (zeros where the energy gate skipped the encoder)."""
    names = [t.name for t in templates]
    ends: list[int] = []
    rows: list[npt.NDArray[np.float32]] = []
    gated: list[bool] = []
    vectors: list[npt.NDArray[np.float32]] = []
    missing = np.full(len(names), -np.inf, dtype=np.float32)
    no_embedding = np.zeros(encoder.embedding_dim, dtype=np.float32)

    def keep(result: WindowResult) -> None:
        ends.append(result.end_sample)
        gated.append(result.gated)
        rows.append(missing if result.scores is None else result.scores.scores)
        vectors.append(no_embedding if result.embedding is None else result.embedding)

    detector = Detector(encoder, templates, settings, on_window=keep)
    detections: list[Event] = []
    walls = []
    started = time.process_time()
    for start in tqdm(
        range(0, audio.shape[0], CHUNK), desc="encoder pass", unit="chunk", disable=not progress
    ):
        t0 = time.perf_counter()
        found = detector.push(audio[start : start + CHUNK])
        walls.append(time.perf_counter() - t0)
        detections.extend(Event(d.keyword, d.end_sample / RATE, d.score) for d in found)
    cpu_s = time.process_time() - started
    windows = WindowScores(
        "encoder",
        names,
        np.asarray(ends, dtype=np.int64),
        np.stack(rows) if rows else np.zeros((0, len(names)), dtype=np.float32),
        np.asarray(gated, dtype=bool),
    )
    embeddings = np.stack(vectors) if vectors else np.zeros((0, encoder.embedding_dim), dtype=np.float32)
    return EncoderPass(windows, detections, cpu_s, np.asarray(walls), embeddings)


def decide(
    windows: WindowScores,
    threshold: float | npt.ArrayLike,
    settings: DetectorConfig,
    groups: Sequence[Sequence[int]] | None = None,
) -> list[Event]:
    """The detector's decisions at `threshold` (one, or one per keyword) from stored scores.

    `groups`: the keywords enrolled together (one daemon each); by default all of them. Within a group, only the
    best of the keywords that fire on one window is reported (see `training.bench.decisions`).
    """
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float32), (len(windows.names),))
    margins = (windows.scores - thresholds).astype(np.float32)
    trigger = trigger_margins(margins, settings.trigger_level, settings.trigger_window)
    refractory = settings.refractory_ms * RATE // 1000
    ends = windows.ends.tolist()
    fired = [
        fire_windows(
            margins[:, k],
            np.flatnonzero(trigger[:, k] >= 0.0),
            ends,
            0.0,
            settings.trigger_level,
            settings.trigger_window,
            refractory,
        )
        for k in range(len(windows.names))
    ]
    kept: list[npt.NDArray[np.int64]] = list(fired)
    for group in groups if groups is not None else [range(len(windows.names))]:
        members = list(group)
        for k, windows_kept in zip(
            members,
            one_per_window([fired[k] for k in members], members, windows.scores, thresholds),
            strict=True,
        ):
            kept[k] = windows_kept
    found = sorted((int(w), k) for k, ws in enumerate(kept) for w in ws)
    return [
        Event(windows.names[k], int(windows.ends[w]) / RATE, float(windows.scores[w, k])) for w, k in found
    ]


@dataclass(frozen=True)
class Scores:
    """Detections scored against the truth."""

    per_keyword: dict[str, dict[str, Any]]
    targets: int
    misses: int
    false_accepts: int
    hours: float
    latencies_s: list[float]
    false_accept_causes: dict[str, int]
    frr_by_snr: dict[str, float]
    neutral_detections: int = 0  # detections of a keyword on its word said by someone it was not enrolled for

    @property
    def frr(self) -> float:
        return self.misses / self.targets if self.targets else float("nan")

    @property
    def fa_per_hour(self) -> float:
        return self.false_accepts / self.hours

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_s)
        return {
            "targets": self.targets,
            "misses": self.misses,
            "frr": self.frr,
            "false_accepts": self.false_accepts,
            "fa_per_hour": self.fa_per_hour,
            "latency_median_s": float(np.median(lat)) if lat.size else None,
            "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else None,
            "false_accept_causes": self.false_accept_causes,
            "frr_by_snr": self.frr_by_snr,
            "per_keyword": self.per_keyword,
        }


def _snr_label(snr: float | None) -> str:
    return "clean" if snr is None else f"{snr:g} dB"


def target_of(event: dict[str, Any]) -> str:
    """The keyword an utterance of the truth is a target of: its `keyword` field, or its word."""
    return str(event.get("keyword") or event["word"])


def score_events(
    events: Sequence[Event],
    truth_events: Sequence[dict[str, Any]],
    keywords: Sequence[str],
    seconds: float,
    tolerance_s: float = 1.0,
    window_s: float = 1.5,
    words: dict[str, str] | None = None,
) -> Scores:
    """Match detections to keyword utterances: a detection of k at t hits an unmatched utterance of k with
    start_s < t <= end_s + tolerance_s (the earliest one); every other detection is a false accept, unless it falls
    on an utterance of k's word that is another keyword's target (`words`: keyword -> word, when they differ, as
    for one speaker's own keywords): that one is neutral. Latency is t - end_s (on the audio clock). A false
    accept's cause is the item whose clip overlaps its window last."""
    per_keyword: dict[str, dict[str, Any]] = {}
    latencies: list[float] = []
    causes: dict[str, int] = {}
    missed_by_snr: dict[str, list[int]] = {}
    neutral_total = 0
    clip_ends = np.array([e["clip_end_s"] for e in truth_events]) if truth_events else np.zeros(0)
    order = np.argsort(clip_ends)
    spoken = [e for e in truth_events if e["kind"] == "keyword"]
    by_target: dict[str, list[dict[str, Any]]] = {}
    by_word: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(spoken, key=lambda e: e["start_s"]):
        by_target.setdefault(target_of(e), []).append(e)
        by_word.setdefault(e["word"], []).append(e)
    by_keyword: dict[str, list[Event]] = {}
    for event in events:
        by_keyword.setdefault(event.keyword, []).append(event)
    for keyword in keywords:
        targets = by_target.get(keyword, [])
        others = [e for e in by_word.get((words or {}).get(keyword, keyword), []) if target_of(e) != keyword]
        found = sorted(by_keyword.get(keyword, []), key=lambda e: e.time_s)
        hit, neutral = match_detections(
            np.array([e.time_s for e in found], dtype=np.float64),
            np.array([t["start_s"] for t in targets], dtype=np.float64),
            np.array([t["end_s"] for t in targets], dtype=np.float64),
            tolerance_s,
            (
                np.array([t["start_s"] for t in others], dtype=np.float64),
                np.array([t["end_s"] for t in others], dtype=np.float64),
            ),
        )
        for event, target in zip(found, hit, strict=True):
            if target >= 0:
                latencies.append(event.time_s - targets[int(target)]["end_s"])
        false = (hit < 0) & ~neutral
        for i in np.flatnonzero(false):
            cause = _cause(found[int(i)].time_s, window_s, truth_events, clip_ends, order)
            causes[cause] = causes.get(cause, 0) + 1
        matched = np.zeros(len(targets), dtype=bool)
        matched[hit[hit >= 0]] = True
        for target, was_found in zip(targets, matched, strict=True):
            missed_by_snr.setdefault(_snr_label(target["snr_db"]), []).append(0 if was_found else 1)
        hits, false_accepts = int(matched.sum()), int(false.sum())
        neutral_total += int(neutral.sum())
        per_keyword[keyword] = {
            "targets": len(targets),
            "hits": hits,
            "frr": (len(targets) - hits) / len(targets) if targets else float("nan"),
            "false_accepts": false_accepts,
            "fa_per_hour": false_accepts / (seconds / 3600),
        }
    targets_total = sum(v["targets"] for v in per_keyword.values())
    return Scores(
        per_keyword,
        targets_total,
        targets_total - sum(v["hits"] for v in per_keyword.values()),
        sum(v["false_accepts"] for v in per_keyword.values()),
        seconds / 3600,
        latencies,
        causes,
        {label: float(np.mean(flags)) for label, flags in sorted(missed_by_snr.items())},
        neutral_total,
    )


def _cause(
    time_s: float, window_s: float, truth_events: Sequence[dict[str, Any]], clip_ends: Any, order: Any
) -> str:
    """What the window of a false accept held: the last item overlapping it ('keyword:<word>', 'unknown', ...)."""
    for i in order[np.searchsorted(clip_ends[order], time_s - window_s, side="right") :][::-1]:
        event = truth_events[int(i)]
        if event["clip_start_s"] < time_s:
            return f"keyword:{event['word']}" if event["kind"] == "keyword" else event["kind"]
    return "noise only"


def threshold_curve(
    windows: WindowScores,
    settings: DetectorConfig,
    truth_events: Sequence[dict[str, Any]],
    seconds: float,
    thresholds: Sequence[float],
    tolerance_s: float = 1.0,
    window_s: float = 1.5,
    progress: bool = True,
) -> list[dict[str, float]]:
    """FRR and false accepts per hour at each threshold (the detector's logic re-applied per threshold)."""
    points = []
    for threshold in tqdm(
        thresholds, desc=f"{windows.system}: thresholds", unit="thr", leave=False, disable=not progress
    ):
        scores = score_events(
            decide(windows, float(threshold), settings),
            truth_events,
            windows.names,
            seconds,
            tolerance_s,
            window_s,
        )
        points.append({"threshold": float(threshold), "frr": scores.frr, "fa_per_hour": scores.fa_per_hour})
    return points


def default_thresholds(windows: WindowScores, count: int = 60) -> list[float]:
    """Thresholds spread over the upper tail of the per-window best score (same rule for every system)."""
    best = windows.scores.max(axis=1)
    best = best[np.isfinite(best)]
    if best.size == 0:
        return []
    tail = 1.0 - np.logspace(np.log10(0.3), np.log10(0.3 / max(best.size, 10)), count)
    return sorted({float(v) for v in np.quantile(best, tail)})
