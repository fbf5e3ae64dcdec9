"""The benchmark's conditions, end to end: build (once) their streams, enroll their keywords, cache every window's
embedding, write the index that `training.bench.experiments` reads, and evaluate today's detector over them.

Conditions (docs/bench.md): own voice; household enrolled by one person (household-1, the household stream of
`streams.py`) or by three (household-3); the household stream's 20 / 10 / 5 dB utterances; reverberation. False
accepts are counted on the long-form negatives (speechocean762 test speakers' read speech, the reserved music
package) and on each condition stream's own distractors.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge.audio import load_audio
from edge.config import Config
from edge.detector import Detector
from edge.fileio import atomic_write_json
from edge.model import Encoder
from training.bench.condition_streams import (
    ConditionsConfig,
    ensure_own_voice_stream,
    ensure_reverb_stream,
    eval_rooms,
    household3_enrollment,
)
from training.bench.embedcache import Enrollment, StreamWindows, ensure_enrollment, ensure_windows
from training.bench.experiments import INDEX, BaselineRule, ShippedRule, evaluate_rule, rule_events
from training.bench.longform import MUSIC_PACKAGE, ensure_music_stream, ensure_speech_stream
from training.bench.streaming import EncoderPass
from training.bench.streams import BenchStream, manifest_rows

__all__ = ["QUICK_CONDITIONS", "run_conditions"]

log = logging.getLogger(__name__)

QUICK_CONDITIONS = ConditionsConfig(
    own_voice_max_pairs=40,
    distractor_unknown_clips=40,
    distractor_silence_clips=20,
    reverb_keyword_clips=4,
    reverb_unknown_clips=40,
    reverb_rooms=64,
    speech_max_seconds=600.0,
    music_max_seconds=300.0,
)


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _stream_info(stream: BenchStream) -> dict[str, Any]:
    kinds = Counter(e["kind"] for e in stream.truth["events"])
    info = {"directory": stream.directory.name, "hours": stream.seconds / 3600, "items": dict(kinds)}
    for key in ("speakers", "speech_seconds", "utterances_left_out", "rooms", "package"):
        if key in stream.truth:
            info[key] = stream.truth[key]
    return info


def _false_accept_examples(
    events: list[tuple[str, float, float]], stream: BenchStream, count: int = 12
) -> list[str]:
    """What the long-form speech said where keywords fired: 'keyword (score): text'."""
    items = stream.truth["events"]
    examples = []
    for keyword, time_s, score in sorted(events, key=lambda e: -e[2])[:count]:
        said = next((e for e in items if e["clip_start_s"] < time_s <= e["clip_end_s"] + 1.5), None)
        examples.append(f"{keyword} ({score:.2f}): {said['text'] if said else '(gap)'}")
    return examples


def _check_shipped_rule(
    rule: ShippedRule,
    encoder: Encoder,
    stream: BenchStream,
    windows: StreamWindows,
    enrollment: Enrollment,
    minutes: float = 10.0,
) -> None:
    """The rule over cached embeddings must give the real detector's detections, resolved templates and all: the
    first `minutes` of the household stream through `edge.detector.Detector` with the resolver's templates."""
    resolved = [r.template for r in rule.resolver.resolve(rule.templates(enrollment))]
    audio = load_audio(stream.audio_path)[: int(minutes * 60 * 16000)]
    detector = Detector(encoder, resolved, rule.settings)
    found = []
    for start in range(0, audio.shape[0], 1600):
        found += [(d.keyword, round(d.time_s, 3)) for d in detector.push(audio[start : start + 1600])]
    last_end = detector.samples_seen
    replayed = [
        (k, round(t, 3)) for k, t, _ in rule_events(rule, windows, enrollment) if t * 16000 <= last_end
    ]
    if replayed != found:
        raise RuntimeError(
            f"the shipped rule over cached embeddings disagrees with the detector: {replayed[:5]} vs {found[:5]}"
        )


def run_conditions(
    data_dir: Path,
    speechocean: Path,
    music: Path,
    encoder: Encoder,
    edge_config: Config,
    household: BenchStream,
    household_pass: EncoderPass,
    root: Path,
    config: ConditionsConfig,
    progress: bool = True,
) -> dict[str, Any]:
    """Build, cache and evaluate every condition; returns the results' `conditions` section.

    Two rules are evaluated: the shipped configuration as the daemon runs it (`ShippedRule`: per-keyword
    thresholds from the false-alarm budget, cohort look-alikes as negatives) and the baseline of one cosine
    threshold for every keyword (`BaselineRule`), for comparison."""
    settings = edge_config.detector
    started = time.perf_counter()
    streams_root = root / "streams"
    streams = {
        "household": household,
        "own_voice": ensure_own_voice_stream(data_dir, config, streams_root),
        "reverb": ensure_reverb_stream(
            data_dir, household, config, streams_root, eval_rooms(config.reverb_rooms)
        ),
        "speech": ensure_speech_stream(speechocean, config, streams_root),
        "music": ensure_music_stream(music, config, streams_root),
    }
    built_s = time.perf_counter() - started
    embed_cpu_s, index_streams = 0.0, {}
    for name, stream in streams.items():
        computed = None
        if name == "household":
            w = household_pass.windows
            computed = (w.ends, w.gated, household_pass.embeddings)
        windows, path, cpu_s = ensure_windows(stream, encoder, settings, root, progress, computed)
        embed_cpu_s += cpu_s
        index_streams[name] = {"stream": _shown(stream.directory, root), "windows": _shown(path, root)}
        log.info("%s: %d windows (%.2f h)", name, windows.ends.shape[0], windows.hours)
    own = streams["own_voice"].truth
    specs = {
        "household-1": (
            household.truth["enrollment"],
            {w: w for w in household.keywords},
            [household.keywords],
        ),
        "household-3": (
            household3_enrollment(manifest_rows(data_dir), household, config),
            {w: w for w in household.keywords},
            [household.keywords],
        ),
        "own voice": (own["enrollment"], own["words"], own["groups"]),
    }
    enrollments, index_enrollments = {}, {}
    for name, (spec, words, groups) in specs.items():
        enrollment, path = ensure_enrollment(name, spec, words, groups, data_dir, encoder, root)
        enrollments[name] = enrollment
        index_enrollments[name] = _shown(path, root)
    atomic_write_json(
        root / INDEX,
        {
            "model": encoder.sha256,
            "settings": asdict(settings),
            "streams": index_streams,
            "enrollments": index_enrollments,
        },
    )
    prepared_s = time.perf_counter() - started
    rule = BaselineRule(settings)
    household_windows = ensure_windows(household, encoder, settings, root, False)[0]
    replayed = rule_events(rule, household_windows, enrollments["household-1"])
    detected = [(d.keyword, round(d.time_s, 3)) for d in household_pass.detections]
    if [(k, round(t, 3)) for k, t, _ in replayed] != detected:
        raise RuntimeError(
            "the cached embeddings with the baseline rule disagree with the detector's detections"
        )
    evaluated = time.perf_counter()
    baseline = evaluate_rule(rule, root=root)
    evaluate_s = time.perf_counter() - evaluated
    shipped_rule = ShippedRule.for_model(
        edge_config, encoder.model_path, encoder.sha256, encoder.frontend_fingerprint
    )
    _check_shipped_rule(shipped_rule, encoder, household, household_windows, enrollments["household-1"])
    table = evaluate_rule(shipped_rule, root=root)
    speech_windows = ensure_windows(streams["speech"], encoder, settings, root, False)[0]
    examples = _false_accept_examples(
        rule_events(shipped_rule, speech_windows, enrollments["household-1"]), streams["speech"]
    )
    return {
        "config": asdict(config),
        "streams": {name: _stream_info(s) for name, s in streams.items()},
        "enrollments": {
            name: {"keywords": len(e.keywords), "groups": len(e.groups), "notes": e.notes}
            for name, e in enrollments.items()
        },
        "music_package": MUSIC_PACKAGE,
        "speechocean762": str(speechocean),
        "index": _shown(root / INDEX, root),
        "table": table.to_dict(),
        "baseline_table": baseline.to_dict(),
        "replay_matches_detector": True,
        "speech_false_accept_examples": examples,
        "embed_cpu_s": embed_cpu_s,
        "wall_s": {"streams": built_s, "prepare": prepared_s - built_s, "evaluate_rule": evaluate_s},
    }
