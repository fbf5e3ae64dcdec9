"""The engine of the experiment harness (`training.bench.experiments`): a rule's scores over a condition stream
and the long-form negatives, swept over a common threshold offset with the detector's own decision rule
(`training.bench.decisions`), matched against the truth.

A sweep visits offsets from the highest (no detection) down; offset 0 is the rule's own thresholds. Each source
(the condition stream, speech, music) keeps, per keyword, only the windows whose trigger margin reaches the lowest
offset, so each offset costs about as much as the detections it makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.config import DetectorConfig
from training.bench.decisions import fire_windows, match_detections, one_per_window, trigger_margins
from training.bench.embedcache import Enrollment, StreamWindows
from training.bench.streaming import target_of

__all__ = ["Rule", "RuleScores", "RuleSource", "Sweep", "Targets", "curve_points", "run_sweep"]

FloatArray = npt.NDArray[np.float32]
RATE = 16000
NEGATIVES = ("speech", "music")
NEAR_RULE = np.arange(-0.1, 0.1 + 1e-9, 0.005)  # threshold offsets always swept (cosine)


@dataclass(frozen=True)
class RuleScores:
    scores: FloatArray  # [W, K]; -inf where no decision is made (gated windows)
    thresholds: FloatArray  # [K]


class Rule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> DetectorConfig: ...  # its trigger_level, trigger_window and refractory_ms decide

    def score(self, windows: StreamWindows, enrollment: Enrollment) -> RuleScores: ...


@dataclass
class RuleSource:
    """One stream under one rule: margins, trigger margins and candidate windows per keyword."""

    windows: StreamWindows
    scores: FloatArray
    thresholds: FloatArray
    margins: FloatArray
    candidates: list[npt.NDArray[np.int64]] = field(default_factory=list)
    candidate_values: list[FloatArray] = field(default_factory=list)
    ends_list: list[int] | None = None

    @classmethod
    def make(cls, rule: Rule, windows: StreamWindows, enrollment: Enrollment) -> RuleSource:
        scored = rule.score(windows, enrollment)
        margins = (scored.scores - scored.thresholds.astype(np.float32)).astype(np.float32)
        return cls(windows, scored.scores, scored.thresholds, margins)

    def trigger(self, settings: DetectorConfig) -> FloatArray:
        return trigger_margins(self.margins, settings.trigger_level, settings.trigger_window)

    def keep_candidates(self, trigger: FloatArray, lowest: float) -> None:
        for k in range(trigger.shape[1]):
            found = np.flatnonzero(trigger[:, k] >= lowest)
            self.candidates.append(found)
            self.candidate_values.append(trigger[found, k])

    def fired(
        self, offset: float, settings: DetectorConfig, groups: list[list[int]]
    ) -> list[npt.NDArray[np.int64]]:
        """Each keyword's firing windows at `offset` (keep_candidates first, at an offset no higher)."""
        refractory = settings.refractory_ms * RATE // 1000
        if self.ends_list is None:
            self.ends_list = self.windows.ends.tolist()
        fired = [
            fire_windows(
                self.margins[:, k],
                self.candidates[k][self.candidate_values[k] >= offset],
                self.ends_list,
                offset,
                settings.trigger_level,
                settings.trigger_window,
                refractory,
            )
            for k in range(self.margins.shape[1])
        ]
        for group in groups:
            kept = one_per_window([fired[k] for k in group], group, self.scores, self.thresholds)
            for k, windows in zip(group, kept, strict=True):
                fired[k] = windows
        return fired


def _offsets(triggers: Sequence[FloatArray], points: int) -> list[float]:
    """Offsets spread over the upper tail of every (window, keyword) trigger margin, and 0 (the rule itself)."""
    finite = [t[np.isfinite(t)] for t in triggers]
    total = sum(f.size for f in finite)
    if total == 0:
        return [0.0]
    top = max(1, int(np.ceil(0.01 * total)))
    tail = np.sort(
        np.concatenate(
            [
                np.partition(f, f.size - min(top, f.size))[f.size - min(top, f.size) :]
                for f in finite
                if f.size
            ]
        )
    )
    counts = np.unique(np.round(np.logspace(np.log10(tail.size), 0, points)).astype(np.int64))
    values = {float(v) for v in tail[tail.size - counts]}
    # And a fine grid around the rule's own thresholds: the tail's points can leave a gap there as wide as 0.2, so
    # that a rule just over a false-alarm level read as the next point far above it.
    values |= {round(float(v), 4) for v in NEAR_RULE}
    return sorted(values | {0.0, float(tail[-1]) + 1e-3}, reverse=True)


@dataclass(frozen=True)
class Targets:
    """The stream's utterances per keyword, and the same word said for another keyword (neutral)."""

    labels: list[str]  # SNR label of every utterance
    per_keyword: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]]
    neutral: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]

    @classmethod
    def make(cls, truth: list[dict[str, Any]], enrollment: Enrollment) -> Targets:
        spoken = sorted((e for e in truth if e["kind"] == "keyword"), key=lambda e: e["start_s"])
        labels = ["clean" if e.get("snr_db") is None else f"{e['snr_db']:g} dB" for e in spoken]
        per_keyword, neutral = [], []
        for keyword, word in zip(enrollment.keywords, enrollment.words, strict=True):
            own = np.array([i for i, e in enumerate(spoken) if target_of(e) == keyword], dtype=np.int64)
            other = [e for e in spoken if e["word"] == word and target_of(e) != keyword]
            per_keyword.append(
                (
                    own,
                    np.array([spoken[i]["start_s"] for i in own]),
                    np.array([spoken[i]["end_s"] for i in own]),
                )
            )
            neutral.append((np.array([e["start_s"] for e in other]), np.array([e["end_s"] for e in other])))
        return cls(labels, per_keyword, neutral)


@dataclass
class Sweep:
    offsets: list[float]
    matched: list[npt.NDArray[np.bool_]]  # per offset, [utterances]
    false_accepts: dict[str, list[int]]  # per source, per offset
    hours: dict[str, float]
    keywords: int


def run_sweep(
    rule: Rule,
    windows: StreamWindows,
    enrollment: Enrollment,
    truth: list[dict[str, Any]],
    negatives: dict[str, StreamWindows],
    points: int,
    max_fa: float,
    tolerance_s: float,
) -> tuple[Sweep, Targets]:
    """The rule over one stream and the negatives: per offset, which utterances were found and the false accepts
    of each source. Offsets below 0 stop once the pooled false accepts per hour per keyword pass `max_fa`."""
    settings = rule.settings
    sources = {"stream": RuleSource.make(rule, windows, enrollment)}
    sources |= {name: RuleSource.make(rule, w, enrollment) for name, w in negatives.items()}
    triggers = {name: source.trigger(settings) for name, source in sources.items()}
    offsets = _offsets(list(triggers.values()), points)
    for name, source in sources.items():
        source.keep_candidates(triggers[name], min(offsets))
    del triggers
    targets = Targets.make(truth, enrollment)
    hours = {name: s.windows.hours for name, s in sources.items()}
    sweep = Sweep([], [], {name: [] for name in sources}, hours, len(enrollment.keywords))
    for offset in offsets:
        if offset < 0 and sweep.offsets and pooled(sweep, -1) > max_fa:
            continue  # past the plotted range; offset 0 (the rule itself) is always evaluated
        matched = np.zeros(len(targets.labels), dtype=bool)
        for name, source in sources.items():
            fired = source.fired(offset, settings, enrollment.groups)
            if name != "stream":
                sweep.false_accepts[name].append(sum(f.shape[0] for f in fired))
                continue
            false_accepts = 0
            for k, windows in enumerate(fired):
                own, starts, ends = targets.per_keyword[k]
                hit, neutral = match_detections(
                    source.windows.ends[windows] / RATE, starts, ends, tolerance_s, targets.neutral[k]
                )
                matched[own[hit[hit >= 0]]] = True
                false_accepts += int(np.count_nonzero((hit < 0) & ~neutral))
            sweep.false_accepts[name].append(false_accepts)
        sweep.offsets.append(offset)
        sweep.matched.append(matched)
    return sweep, targets


def pooled(sweep: Sweep, i: int, sources: Sequence[str] | None = None) -> float:
    names = list(sweep.hours) if sources is None else list(sources)
    return sum(sweep.false_accepts[n][i] for n in names) / (
        sweep.keywords * sum(sweep.hours[n] for n in names)
    )


def curve_points(
    sweep: Sweep, targets: Targets, snr: tuple[str, ...] | None
) -> tuple[list[dict[str, float]], int]:
    """FRR over the utterances of the given SNR labels (None: all) and false accepts per hour per keyword (pooled,
    long-form only, per source) at each offset of the sweep; and how many utterances were scored."""
    scored = np.array([snr is None or label in snr for label in targets.labels], dtype=bool)
    curve = []
    for i, offset in enumerate(sweep.offsets):
        misses = int(np.count_nonzero(~sweep.matched[i][scored]))
        point = {
            "offset": offset,
            "frr": misses / max(1, int(scored.sum())),
            "fa_per_hour": pooled(sweep, i),
            "fa_longform": pooled(sweep, i, NEGATIVES),
        }
        point |= {f"fa_{name}": pooled(sweep, i, [name]) for name in sweep.hours}
        curve.append(point)
    return curve, int(scored.sum())
