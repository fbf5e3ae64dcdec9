"""A fast harness for decision rules: evaluate a rule over every benchmark condition in seconds, from the
encoder outputs `kws-bench` cached (no encoder run).

    from training.bench.experiments import BaselineRule, evaluate_rule, load_condition
    condition = load_condition("own voice")  # .windows.embeddings [W, D], .enrollment.templates [K, D], .truth
    table = evaluate_rule(BaselineRule())   # every condition; FRR and false accepts per hour per keyword
    print(table.markdown())

A rule maps window embeddings and an enrollment to per-window per-keyword scores and per-keyword thresholds
(`RuleScores`); the detector's decision rule (trigger level/window, refractory period, one keyword per window per
enrolled set) then turns them into detections, scored against the truth. The operating point is the rule's own
thresholds (offset 0); the curve shifts every threshold by a common offset. False accepts per hour per keyword
count the long-form negatives (read speech and music: `longform.py`) plus the condition stream's own
distractors; `fa_longform` counts the long-form negatives alone.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.budget import veto_mask
from edge.config import Config, DetectorConfig, load_config
from edge.resolver import KeywordResolver
from edge.templates import Template
from training.bench.embedcache import Enrollment, StreamWindows, load_enrollment, load_windows
from training.bench.second_look import REACH, given_back, may_trigger
from training.bench.streaming import DEFAULT_EDGE_CONFIG, REPO
from training.bench.streams import load_stream
from training.bench.sweep import (
    NEGATIVES,
    Rule,
    RuleScores,
    RuleSource,
    Sweep,
    Targets,
    curve_points,
    run_sweep,
)

__all__ = [
    "CONDITIONS",
    "BaselineRule",
    "Condition",
    "ConditionSpec",
    "ConditionTable",
    "Rule",
    "RuleScores",
    "ShippedRule",
    "evaluate_rule",
    "frr_at",
    "load_condition",
    "load_negatives",
    "rule_events",
]

FloatArray = npt.NDArray[np.float32]
RATE = 16000
BENCH_ROOT = REPO / "build" / "bench"
INDEX = Path("conditions") / "index.json"
FA_LEVELS = (0.5, 1.0, 5.0)


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    stream: str  # a stream of the index: household, own_voice, reverb
    enrollment: str  # an enrollment of the index: household-1, household-3, own voice
    snr: tuple[str, ...] | None  # the utterances scored, by SNR label ("clean", "20 dB"); None: all
    plotted: bool = True


CONDITIONS = (
    ConditionSpec("own voice", "own_voice", "own voice", None),
    ConditionSpec("household-1", "household", "household-1", ("clean",)),
    ConditionSpec("household-1 clean+20 dB", "household", "household-1", ("clean", "20 dB"), plotted=False),
    ConditionSpec("household-3", "household", "household-3", ("clean",)),
    ConditionSpec("household-3 clean+20 dB", "household", "household-3", ("clean", "20 dB"), plotted=False),
    ConditionSpec("20 dB", "household", "household-1", ("20 dB",)),
    ConditionSpec("10 dB", "household", "household-1", ("10 dB",)),
    ConditionSpec("5 dB", "household", "household-1", ("5 dB",)),
    ConditionSpec("reverb", "reverb", "household-1", None),
)
BY_NAME = {c.name: c for c in CONDITIONS}


@dataclass(frozen=True)
class Condition:
    spec: ConditionSpec
    windows: StreamWindows
    enrollment: Enrollment
    truth: list[dict[str, Any]]  # every item of the stream (utterances: kind "keyword"; see streams.py)


@dataclass(frozen=True)
class BaselineRule:
    """Today's detector: cosine with each template, one threshold for all (the shipped configuration's)."""

    settings: DetectorConfig = field(default_factory=lambda: load_config(DEFAULT_EDGE_CONFIG).detector)
    name: str = "baseline (cosine, shipped threshold)"

    def score(self, windows: StreamWindows, enrollment: Enrollment) -> RuleScores:
        scores = (windows.embeddings @ enrollment.templates.T).astype(np.float32)
        scores[windows.gated] = -np.inf
        thresholds = np.full(len(enrollment.keywords), self.settings.threshold, dtype=np.float32)
        return RuleScores(scores, thresholds)


@dataclass(frozen=True)
class ShippedRule:
    """What the daemon does with a configuration: each keyword resolved by `edge.resolver.KeywordResolver` (a
    threshold from the false-alarm budget and the model's cohort, the cohort's look-alikes as negatives),
    then cosine scoring where a window more like one of the keyword's negatives than the keyword (by over
    `veto_margin`) is no hit, unless the second look gives it back (training/bench/second_look.py)."""

    settings: DetectorConfig
    resolver: KeywordResolver
    model_sha256: str
    frontend_fingerprint: str
    name: str = "shipped (false-alarm budget, hard negatives)"
    # Windows scoring below this are never checked against the negatives: no threshold on the curve goes there.
    lowest_checked: float = 0.2
    window_samples: int = 24000  # the model's window: the second look's features cover the same samples

    @classmethod
    def for_model(cls, config: Config, model_path: Path, model_sha256: str, fingerprint: str) -> ShippedRule:
        resolver = KeywordResolver.for_model(config, model_path, model_sha256)
        return cls(config.detector, resolver, model_sha256, fingerprint)

    def templates(self, enrollment: Enrollment) -> list[Template]:
        return [
            Template(
                keyword,
                enrollment.templates[k],
                self.model_sha256,
                self.frontend_fingerprint,
                takes=enrollment.takes[k].shape[0],
                take_embeddings=enrollment.takes[k],
                take_speech=enrollment.take_speech[k] if enrollment.take_speech else (),
                take_spread=enrollment.take_spreads[k] if enrollment.take_spreads else None,
            )
            for k, keyword in enumerate(enrollment.keywords)
        ]

    def score(self, windows: StreamWindows, enrollment: Enrollment) -> RuleScores:
        resolved = self.resolver.resolve(self.templates(enrollment))
        matrix = np.stack([r.template.embedding for r in resolved])
        scores = (windows.embeddings @ matrix.T).astype(np.float32)
        scores[windows.gated] = -np.inf
        thresholds = np.array([r.template.threshold for r in resolved], dtype=np.float32)
        settings = self.settings
        for k, keyword in enumerate(resolved):
            template = keyword.template
            checked = np.flatnonzero(scores[:, k] >= self.lowest_checked)
            if not (template.negatives.shape[0] and checked.size):
                continue
            closest = np.max(windows.embeddings[checked] @ template.negatives.T, axis=1)
            vetoed = checked[veto_mask(closest, scores[checked, k], settings.veto_margin)]
            if keyword.second_look_within is not None:  # the resolver's, as the detector's
                reached = scores[:, k] >= thresholds[k] - REACH
                rows = vetoed[
                    reached[vetoed]
                    & may_trigger(reached, settings.trigger_level, settings.trigger_window)[vetoed]
                ]
                back = given_back(
                    windows,
                    rows,
                    template.take_speech,
                    keyword.second_look_within,
                    self.window_samples,
                )
                vetoed = np.setdiff1d(vetoed, back, assume_unique=True)
            scores[vetoed, k] = -np.inf
        return RuleScores(scores, thresholds)


def _index(root: Path) -> dict[str, Any]:
    path = root / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cached conditions (run `kws-bench` first)")
    index: dict[str, Any] = json.loads(path.read_text())
    return index


def _stream(root: Path, entry: dict[str, str]) -> tuple[StreamWindows, list[dict[str, Any]]]:
    stream = load_stream(root / entry["stream"])
    return load_windows(root / entry["windows"], stream), stream.truth["events"]


def load_condition(name: str, root: Path = BENCH_ROOT) -> Condition:
    """A condition's window embeddings, enrollment and truth, as the last `kws-bench` cached them."""
    if name not in BY_NAME:
        raise ValueError(f"condition: expected one of {', '.join(BY_NAME)}, got {name!r}")
    spec, index = BY_NAME[name], _index(root)
    windows, truth = _stream(root, index["streams"][spec.stream])
    return Condition(spec, windows, load_enrollment(root / index["enrollments"][spec.enrollment]), truth)


def load_negatives(root: Path = BENCH_ROOT) -> dict[str, StreamWindows]:
    """The long-form negatives' window embeddings: speech and music."""
    index = _index(root)
    return {name: _stream(root, index["streams"][name])[0] for name in NEGATIVES}


def frr_at(curve: list[dict[str, float]], level: float, key: str = "fa_per_hour") -> float | None:
    """The lowest FRR among the curve's points with at most `level` false accepts per hour per keyword."""
    allowed = [p["frr"] for p in curve if p[key] <= level]
    return min(allowed) if allowed else None


@dataclass(frozen=True)
class ConditionTable:
    """A rule over the conditions: a row per condition (at the rule's thresholds and read off its curve)."""

    rule: str
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    curves: dict[str, list[dict[str, float]]]

    def row(self, condition: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["condition"] == condition)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def markdown(self) -> str:
        """The table docs/BENCHMARKS.md shows: false accepts are per hour per keyword."""
        levels = self.rows[0]["frr_at"].keys() if self.rows else []
        head = (
            "| condition | keywords | utterances | FRR at the rule's thresholds | false accepts/h/kw there "
            "(speech / music / stream) | "
            + " | ".join(f"FRR at <= {float(v):g} FA/h/kw" for v in levels)
            + " | "
            + " | ".join(f"FRR at <= {float(v):g} FA/h/kw, long-form only" for v in levels)
            + " |"
        )
        lines = [head, "|" + "---|" * (5 + 2 * len(levels))]
        for r in self.rows:
            at = " | ".join(_pct(v) for v in r["frr_at"].values())
            longform = " | ".join(_pct(v) for v in r["frr_at_longform"].values())
            lines.append(
                f"| {r['condition']} | {r['keywords']} | {r['utterances']} | {_pct(r['frr'])} | "
                f"{r['fa_per_hour']:.2f} ({r['fa_speech']:.2f} / {r['fa_music']:.2f} / {r['fa_stream']:.2f}) | "
                f"{at} | {longform} |"
            )
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def evaluate_rule(
    rule: Rule,
    conditions: Sequence[str] | None = None,
    root: Path = BENCH_ROOT,
    levels: Sequence[float] = FA_LEVELS,
    points: int = 60,
    max_fa_per_hour: float = 50.0,
    tolerance_s: float = 1.0,
) -> ConditionTable:
    """FRR and false accepts per hour per keyword of `rule` over the conditions (default: all), from the cache.

    Conditions that share a stream and an enrollment are swept once. The curve stops at `max_fa_per_hour`."""
    names = list(conditions) if conditions is not None else [c.name for c in CONDITIONS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"conditions: unknown {unknown}; expected some of {', '.join(BY_NAME)}")
    negatives = load_negatives(root)
    rows, curves = [], {}
    swept: dict[tuple[str, str], tuple[Sweep, Targets]] = {}
    for name in names:
        spec = BY_NAME[name]
        key = (spec.stream, spec.enrollment)
        if key not in swept:
            condition = load_condition(name, root)
            swept[key] = run_sweep(
                rule,
                condition.windows,
                condition.enrollment,
                condition.truth,
                negatives,
                points,
                max_fa_per_hour,
                tolerance_s,
            )
        sweep, targets = swept[key]
        curve, utterances = curve_points(sweep, targets, spec.snr)
        at_rule = next(p for p in curve if p["offset"] == 0.0)
        rows.append(
            {
                "condition": name,
                "keywords": sweep.keywords,
                "utterances": utterances,
                "hours": dict(sweep.hours),
                "frr_at": {str(v): frr_at(curve, v) for v in levels},
                "frr_at_longform": {str(v): frr_at(curve, v, "fa_longform") for v in levels},
            }
            | {k: v for k, v in at_rule.items() if k != "offset"}
        )
        curves[name] = curve
    return ConditionTable(rule.name, dataclasses.asdict(rule.settings), rows, curves)


def rule_events(
    rule: Rule, windows: StreamWindows, enrollment: Enrollment, offset: float = 0.0
) -> list[tuple[str, float, float]]:
    """The detections (keyword, time_s, score) of `rule` on one stream at `offset`, in time order."""
    source = RuleSource.make(rule, windows, enrollment)
    source.keep_candidates(source.trigger(rule.settings), offset)
    fired = source.fired(offset, rule.settings, enrollment.groups)
    found = sorted((int(w), k) for k, ws in enumerate(fired) for w in ws)
    return [
        (enrollment.keywords[k], int(windows.ends[w]) / RATE, float(source.scores[w, k])) for w, k in found
    ]
