"""The development condition: pick the detector's decision constants on training data, never on the benchmark.

`kws-bench`'s conditions measure; nothing may be tuned on them (their speech negatives are speechocean762's
TEST speakers, their keywords `gsc_v2_test` clips). This condition has the same shape, built only from what
training and the cohort may use (`training/bench/dev_streams.py`): own voice, household-1 and household-3 on
FSDD digits, false accepts on speechocean762 train speakers and training music, a cohort of the shipped recipe.

    kws-bench dev --speechocean ../sources/speechocean762 --triggers 2/3 4/5 --hard-negatives 100 200

prints, per setting and condition, FRR at the rule's thresholds (each keyword's budget recomputed under the
setting's own rule) with the false accepts per hour per keyword there, and for own voice FRR read off the curve
at <= 0.5 / 1 false accepts per hour per keyword (docs/bench.md). `make bench-dev` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.cohort import COHORT_MUSIC_PACK
from edge.cohort import Cohort
from edge.config import DetectorConfig, load_config
from edge.model import Encoder, load_model
from edge.resolver import KeywordResolver
from training.bench.condition_streams import ConditionsConfig
from training.bench.dev_streams import (
    DEV_MUSIC_PACKAGE,
    DEV_ROOT,
    DIGITS,
    DevConfig,
    ensure_cohort,
    ensure_own_voice,
    ensure_speech,
    household_spec,
    own_voice_picks,
    training_music_dir,
)
from training.bench.embedcache import Enrollment, StreamWindows, ensure_enrollment, ensure_windows
from training.bench.experiments import ShippedRule, frr_at
from training.bench.longform import ensure_music_stream
from training.bench.streaming import DEFAULT_EDGE_CONFIG, REPO
from training.bench.sweep import Rule, curve_points, run_sweep

__all__ = [
    "DEV_ROOT",
    "DIGITS",
    "DevConfig",
    "DevData",
    "DevSetting",
    "dev_main",
    "evaluate_rule_on",
    "evaluate_settings",
    "household_spec",
    "own_voice_picks",
    "prepare",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevSetting:
    """One candidate for the detector's decision constants (edge.config.DetectorConfig fields)."""

    veto_margin: float
    hard_negatives: int
    trigger_level: int = 2
    trigger_window: int = 3
    lookalike_prune_floor: float = 1.0
    take_match_spread: float = 0.0  # the second look at vetoed windows (edge.takematch); 0: off
    take_match_floor: float = 0.0  # the distance it accepts at least

    @property
    def name(self) -> str:
        return (
            f"veto_margin {self.veto_margin:g}, {self.hard_negatives} look-alikes, "
            f"{self.trigger_level} of {self.trigger_window} windows, prune floor {self.lookalike_prune_floor:g}, "
            f"second look {self.take_match_spread:g}"
            + (f" (floor {self.take_match_floor:g})" if self.take_match_floor else "")
        )


@dataclass(frozen=True)
class DevCondition:
    """One enrollment scored on the own-voice stream; a condition may pool several (household-1's rotations)."""

    enrollment: Enrollment
    truth: list[dict[str, Any]]


@dataclass(frozen=True)
class DevData:
    """Everything a setting is evaluated on: embeddings cached, the dev cohort in memory."""

    encoder: Encoder
    settings: DetectorConfig
    cohort: Cohort
    windows: StreamWindows  # the own-voice stream's (both conditions score it)
    speech: StreamWindows
    music: StreamWindows
    conditions: dict[str, list[DevCondition]]


def prepare(
    data_dir: Path,
    speechocean: Path,
    model: Path,
    config: DevConfig,
    root: Path,
    progress: bool = True,
    music_dir: Path | None = None,
    cohort_music_pack: Path = COHORT_MUSIC_PACK,
) -> DevData:
    """Build (or read from `root`) the dev streams, cohort, embeddings and enrollments; `music_dir`: the training
    music (default the Debian package's folder); `cohort_music_pack`: the cohort's music (ufoai-music's)."""
    encoder = load_model(model)
    settings = load_config(DEFAULT_EDGE_CONFIG).detector
    cohort, held = ensure_cohort(encoder, settings, speechocean, config, root, cohort_music_pack)
    own = ensure_own_voice(data_dir, config, root)
    speech = ensure_speech(speechocean, held, config, root)
    music = ensure_music_stream(
        music_dir or training_music_dir(),
        ConditionsConfig(music_max_seconds=config.music_seconds, seed=config.seed),
        root / "streams",
    )
    own_windows = ensure_windows(own, encoder, settings, root, progress)[0]
    speech_windows = ensure_windows(speech, encoder, settings, root, progress)[0]
    music_windows = ensure_windows(music, encoder, settings, root, progress)[0]
    truth = own.truth
    enrolled = ensure_enrollment(
        "dev own voice", truth["enrollment"], truth["words"], truth["groups"], data_dir, encoder, root
    )[0]
    households: dict[str, list[DevCondition]] = {}
    for name, enrollers in (("household-1", 1), ("household-3", 3)):
        households[name] = []
        for rotation in range(len(truth["groups"])):  # every speaker enrolls each digit once: 60 keywords
            spec, words, events = household_spec(truth, rotation, enrollers)
            enrollment = ensure_enrollment(f"dev {name}", spec, words, [list(spec)], data_dir, encoder, root)
            households[name].append(DevCondition(enrollment[0], events))
    log.info(
        "dev: cohort %.2f h (%d speakers), speech %.2f h, music %.2f h, own voice %d keywords, %d utterances",
        cohort.hours,
        len(held),
        speech_windows.hours,
        music_windows.hours,
        len(enrolled.keywords),
        len(own.events("keyword")),
    )
    conditions = {"own voice": [DevCondition(enrolled, truth["events"])], **households}
    return DevData(encoder, settings, cohort, own_windows, speech_windows, music_windows, conditions)


def evaluate_rule_on(
    rule: Rule, data: DevData, parts: Sequence[DevCondition], levels: Sequence[float] = (0.5, 1.0)
) -> dict[str, Any]:
    """One condition under any rule: pooled over its parts at the rule's thresholds; off the curve when it has one
    part (the parts' curves have different threshold offsets)."""
    misses = utterances = keywords = 0
    false_accepts = {"speech": 0, "music": 0, "stream": 0}
    keyword_hours = {"speech": 0.0, "music": 0.0, "stream": 0.0}
    curve = None
    for part in parts:
        sweep, targets = run_sweep(
            rule,
            data.windows,
            part.enrollment,
            part.truth,
            {"speech": data.speech, "music": data.music},
            60,
            50.0,
            1.0,
        )
        curve = curve_points(sweep, targets, None)[0]
        at = sweep.offsets.index(0.0)
        # Only utterances some enrolled keyword targets (the household enroller's own are neutral, not misses).
        aimed = np.concatenate([own for own, _, _ in targets.per_keyword])
        misses += int(np.count_nonzero(~sweep.matched[at][aimed]))
        utterances += int(aimed.shape[0])
        keywords += sweep.keywords
        for source in false_accepts:
            false_accepts[source] += sweep.false_accepts[source][at]
            keyword_hours[source] += sweep.keywords * sweep.hours[source]
    return {
        "keywords": keywords,
        "utterances": utterances,
        "frr": misses / max(1, utterances),
        "fa_longform": (false_accepts["speech"] + false_accepts["music"])
        / (keyword_hours["speech"] + keyword_hours["music"]),
        "fa_speech": false_accepts["speech"] / keyword_hours["speech"],
        "fa_music": false_accepts["music"] / keyword_hours["music"],
        "fa_stream": false_accepts["stream"] / keyword_hours["stream"],
        "frr_at_longform": {
            f"{v:g}": frr_at(curve, v, "fa_longform") if len(parts) == 1 and curve else None for v in levels
        },
    }


def _threshold_spread(rule: ShippedRule, parts: Sequence[DevCondition]) -> list[float]:
    """Min / median / max of the condition's keyword thresholds as the rule resolves them (cached there)."""
    thresholds = [
        float(r.template.threshold or 0.0)
        for part in parts
        for r in rule.resolver.resolve(rule.templates(part.enrollment))
    ]
    return [float(np.min(thresholds)), float(np.median(thresholds)), float(np.max(thresholds))]


def evaluate_settings(
    data: DevData, settings: Sequence[DevSetting], levels: Sequence[float] = (0.5, 1.0)
) -> list[dict[str, Any]]:
    """Per setting and condition: FRR and long-form false accepts per hour per keyword at the rule's thresholds
    (and off its curve), each keyword's budget recomputed under the setting's own rule (as the daemon would)."""
    rows = []
    for setting in settings:
        detector = dataclasses.replace(
            data.settings,
            veto_margin=setting.veto_margin,
            hard_negatives=setting.hard_negatives,
            trigger_level=setting.trigger_level,
            trigger_window=setting.trigger_window,
            lookalike_prune_floor=setting.lookalike_prune_floor,
            take_match_spread=setting.take_match_spread,
            take_match_floor=setting.take_match_floor,
        )
        rule = ShippedRule(
            detector,
            KeywordResolver(detector, data.cohort),
            data.encoder.sha256,
            data.encoder.frontend_fingerprint,
            setting.name,
        )
        for name, parts in data.conditions.items():
            row = {"condition": name} | asdict(setting) | evaluate_rule_on(rule, data, parts, levels)
            row["thresholds"] = _threshold_spread(rule, parts)
            rows.append(row)
            log.info(
                "%s, %s: FRR %.1f %% at %.2f FA/h", name, setting.name, 100 * row["frr"], row["fa_longform"]
            )
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    levels = list(rows[0]["frr_at_longform"]) if rows else []
    head = (
        "| condition | trigger | veto margin | look-alikes | prune floor | second look | FRR at the rule's thresholds | FA/h/kw there (speech / music / stream) | "
        + " | ".join(f"FRR at <= {v} FA/h/kw" for v in levels)
        + " | thresholds min / median / max |"
    )
    lines = [head, "|" + "---|" * (9 + len(levels))]
    for r in rows:
        at = " | ".join("-" if v is None else f"{100 * v:.1f} %" for v in r["frr_at_longform"].values())
        low, mid, high = r["thresholds"]
        lines.append(
            f"| {r['condition']} | {r['trigger_level']}/{r['trigger_window']} | {r['veto_margin']:g} | {r['hard_negatives']} | {r['lookalike_prune_floor']:g} | {_look(r)} | {100 * r['frr']:.1f} % | "
            f"{r['fa_longform']:.2f} ({r['fa_speech']:.2f} / {r['fa_music']:.2f} / {r['fa_stream']:.2f}) | {at} | {low:.3f} / {mid:.3f} / {high:.3f} |"
        )
    return "\n".join(lines)


def _look(row: dict[str, Any]) -> str:
    floor = row.get("take_match_floor", 0.0)
    return f"{row['take_match_spread']:g}" + (f", floor {floor:g}" if floor else "")


def _trigger(text: str) -> tuple[int, int]:
    try:
        level, window = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LEVEL/WINDOW such as 2/3, got {text!r}") from None
    if not 1 <= level <= window <= 50:
        raise argparse.ArgumentTypeError(f"expected 1 <= LEVEL <= WINDOW <= 50, got {text!r}")
    return level, window


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-bench dev",
        description="The development condition (training data only): own-voice FRR and false accepts per hour "
        "for each veto setting, to pick the shipped one without looking at the benchmark.",
    )
    parser.add_argument(
        "--speechocean",
        type=Path,
        default=REPO.parent / "sources" / "speechocean762",
        help="speechocean762 checkout (its train speakers only are read)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data", help="the speech data folder"
    )
    parser.add_argument("--model", type=Path, default=REPO / "build" / "udkws_int8.tflite")
    parser.add_argument("--veto-margins", type=float, nargs="+", default=[0.0])
    parser.add_argument("--hard-negatives", type=int, nargs="+", default=[100])
    for flag, off, meaning in (
        ("--prune-floors", 1.0, "detector.lookalike_prune_floor values (1: never prune; default 1)"),
        (
            "--take-match-spreads",
            0.0,
            "detector.take_match_spread values (the second look; 0: off, the default)",
        ),
        (
            "--take-match-floors",
            0.0,
            "detector.take_match_floor values (the distance it accepts at least; default 0)",
        ),
    ):
        parser.add_argument(flag, type=float, nargs="+", default=[off], help=meaning)
    parser.add_argument(
        "--triggers",
        type=_trigger,
        nargs="+",
        default=[(2, 3)],
        help="trigger rules LEVEL/WINDOW: fire when LEVEL of the last WINDOW windows pass (default 2/3)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEV_ROOT, help="cache and results folder (default build/bench-dev)"
    )
    parser.add_argument(
        "--cohort-hours",
        type=float,
        default=DevConfig.cohort_hours,
        help="train speakers' hours for the dev cohort; the rest are the long-form negatives",
    )
    parser.add_argument(
        "--cohort-music-hours",
        type=float,
        default=DevConfig.cohort_music_hours,
        help="hours of the shippable cohort music (ufoai-music's CC BY tracks) in the dev cohort",
    )
    parser.add_argument(
        "--cohort-music-pack",
        type=Path,
        default=COHORT_MUSIC_PACK,
        help="the cohort music's pack (ufoai-music)",
    )
    parser.add_argument("--music", type=Path, help=f"training music folder (default: {DEV_MUSIC_PACKAGE}'s)")
    parser.add_argument(
        "--max-pairs", type=int, help="at most this many (speaker, digit) keywords (default all 60)"
    )
    parser.add_argument(
        "--distractors", type=int, default=DevConfig.distractor_clips, help="unknown-word clips in the stream"
    )
    parser.add_argument("--no-progress", action="store_true")
    return parser


def dev_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge.templates").setLevel(logging.WARNING)
    bad = (
        [m for m in [*args.veto_margins, *args.prune_floors] if not 0.0 <= m <= 1.0]
        + [n for n in args.hard_negatives if not 0 <= n <= 1000]
        + [v for v in args.take_match_spreads if not 0.0 <= v <= 100.0]
        + [v for v in args.take_match_floors if not 0.0 <= v <= 100.0]
    )
    if bad:
        log.error(
            "--veto-margins and --prune-floors must be in [0, 1], --hard-negatives 0-1000, --take-match-spreads "
            "and --take-match-floors 0-100, got %s",
            bad,
        )
        return 2
    config = DevConfig(
        cohort_music_hours=args.cohort_music_hours,
        cohort_hours=args.cohort_hours,
        max_pairs=args.max_pairs,
        distractor_clips=args.distractors,
    )
    try:
        data = prepare(
            args.data_dir,
            args.speechocean,
            args.model,
            config,
            args.out,
            not args.no_progress,
            args.music,
            args.cohort_music_pack,
        )
    except (ValueError, OSError) as error:
        log.error("%s", error)
        return 2
    settings = [
        DevSetting(margin, count, level, window, floor, spread, distance)
        for level, window in args.triggers
        for count in args.hard_negatives
        for margin in args.veto_margins
        for floor in args.prune_floors
        for spread in args.take_match_spreads
        for distance in args.take_match_floors
    ]
    rows = evaluate_settings(data, settings)
    result = {
        "model": data.encoder.sha256,
        "config": asdict(config),
        "cohort_hours": data.cohort.hours,
        "speech_hours": data.speech.hours,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dev.json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    print(f"\nwrote {args.out / 'dev.json'}")
    return 0
