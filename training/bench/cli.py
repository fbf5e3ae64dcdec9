"""`kws-bench` / `python -m training.bench.cli`: streaming accuracy and cost of the daemon, with a DTW baseline.

Builds (once) the household test stream, enrolls the ten keywords, runs the daemon's detector over the stream,
scores it against the truth at the shipped threshold and over thresholds; then the conditions (own voice,
household-1/-3, noise, reverberation, with false accepts on long-form speech and music: `conditions.py`), from
cached window embeddings; runs the MFCC+DTW baseline on the household windows, measures the daemon process's CPU
and memory, and writes build/bench/results.json, docs/BENCHMARKS.md, docs/bench_det.png and
docs/bench_conditions.png. `--quick` uses small streams (a smoke run; its figures are not the benchmark's).
"""

from __future__ import annotations

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # one BLAS thread: the board runs one, and threads only spin here

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edge.audio import load_audio  # noqa: E402
from edge.bench import run_frontend_bench  # noqa: E402
from edge.config import Config, DetectorConfig, load_config  # noqa: E402
from edge.model import Encoder, load_model  # noqa: E402
from edge.resolver import KeywordResolver  # noqa: E402
from edge.templates import Template  # noqa: E402
from training.bench.condition_streams import ConditionsConfig  # noqa: E402
from training.bench.conditions import QUICK_CONDITIONS, run_conditions  # noqa: E402
from training.bench.costs import (  # noqa: E402
    daemon_costs,
    encoder_ms_per_window,
    machine_info,
    model_info,
    same_events,
    shown,
)
from training.bench.longform import MUSIC_DIR, check_sources  # noqa: E402
from training.bench.report import frr_at_fa, render_table, write_report  # noqa: E402
from training.bench.streaming import (  # noqa: E402
    DEFAULT_EDGE_CONFIG,
    REPO,
    decide,
    default_thresholds,
    enroll_keywords,
    run_encoder_pass,
    score_events,
    threshold_curve,
)
from training.bench.streams import BenchStream, StreamConfig, ensure_stream  # noqa: E402

log = logging.getLogger("kws-bench")

QUICK_STREAM = StreamConfig(occurrences_per_level=1, unknown_clips=50, silence_clips=25, target_seconds=300.0)
FA_LEVELS = (1.0, 10.0)
TOLERANCE_S = 1.0


class _Stages:
    """Wall seconds of each stage of a run (to project the run time on other machines)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self._last, 1)
        self._last = now


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every stage of a run shares: the model, the stream and its truth, the daemon's configuration."""

    encoder: Encoder
    stream: BenchStream
    edge_config: Config
    config_path: Path
    state_dir: Path
    templates: list[Template]
    audio: np.ndarray
    truth: list[dict[str, Any]]

    @property
    def seconds(self) -> float:
        return float(self.audio.shape[0] / 16000)

    @property
    def settings(self) -> DetectorConfig:
        return self.edge_config.detector


def _prepare_run(args: argparse.Namespace, stream_config: StreamConfig, notes: list[str]) -> _Run:
    """Load the model, build (once) the stream, snapshot the daemon's configuration, enroll the keywords."""
    encoder = load_model(args.model, num_threads=args.threads)
    if not args.no_conditions:
        check_sources(args.speechocean, args.music)
    stream: BenchStream = ensure_stream(args.data, stream_config, args.out / "streams")
    # One snapshot of the daemon's configuration serves the in-process pass and every daemon run.
    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.out / "edge_config.toml"
    shutil.copyfile(args.edge_config, config_path)
    state_dir = args.out / "state" / encoder.sha256[:12]
    shutil.rmtree(state_dir, ignore_errors=True)
    templates, enroll_notes = enroll_keywords(stream, args.data, encoder, state_dir)
    notes += enroll_notes
    audio = load_audio(stream.audio_path)
    return _Run(encoder, stream, load_config(config_path), config_path, state_dir, templates, audio,
                stream.events())  # fmt: skip


def _household_accuracy(args: argparse.Namespace, run: _Run) -> tuple[dict[str, Any], Any, Any]:
    """The household stream at the shipped threshold, over thresholds, and under the daemon's own rule.

    Returns the accuracy section and the two passes (the plain encoder's and the rule's)."""
    settings, progress = run.settings, not args.no_progress
    encoder_pass = run_encoder_pass(run.encoder, run.audio, run.templates, settings, progress=progress)
    replayed = decide(encoder_pass.windows, settings.threshold, settings)
    if replayed != encoder_pass.detections:
        raise RuntimeError("the threshold replay disagrees with the detector at the shipped threshold")
    shipped = score_events(encoder_pass.detections, run.truth, run.stream.keywords, run.seconds, TOLERANCE_S)
    thresholds = sorted(set(default_thresholds(encoder_pass.windows)) | {settings.threshold})
    encoder_curve = threshold_curve(
        encoder_pass.windows, settings, run.truth, run.seconds, thresholds, TOLERANCE_S, progress=progress
    )
    # The daemon's own rule: each keyword's budget threshold and look-alike negatives from the model's cohort.
    resolver = KeywordResolver.for_model(run.edge_config, args.model, run.encoder.sha256)
    resolved = resolver.resolve(run.templates)
    rule_pass = run_encoder_pass(
        run.encoder, run.audio, [r.template for r in resolved], settings, progress=progress
    )
    rule = score_events(rule_pass.detections, run.truth, run.stream.keywords, run.seconds, TOLERANCE_S)
    accuracy: dict[str, Any] = {
        "shipped_rule": rule.summary()
        | {
            "false_alarms_per_hour_budget": settings.false_alarms_per_hour,
            "hard_negatives": settings.hard_negatives,
            "cohort_hours": resolver.cohort_hours,
            "thresholds": {r.template.name: float(r.template.threshold or 0.0) for r in resolved},
            "threshold_sources": sorted({r.threshold_source for r in resolved}),
        },
        "threshold": settings.threshold,
        "hours": run.seconds / 3600,
        "tolerance_s": TOLERANCE_S,
        "frr_at_fa_levels": list(FA_LEVELS),
        "encoder": shipped.summary() | {"curve": encoder_curve},
        "dtw": None,
    }
    return accuracy, encoder_pass, rule_pass


def _dtw_baseline(args: argparse.Namespace, run: _Run, encoder_pass: Any) -> tuple[dict[str, Any], float]:
    """The MFCC+DTW baseline on the household windows: its curve, and its CPU seconds per hour of audio."""
    from training.bench.dtw_baseline import run_dtw_pass

    takes = {
        word: [load_audio(args.data / t["path"]) for t in run.stream.truth["enrollment"][word]]
        for word in run.stream.keywords
    }
    progress = not args.no_progress
    window = run.encoder.window_samples
    dtw_pass = run_dtw_pass(run.audio, takes, encoder_pass.windows, window, progress=progress)
    dtw_curve = threshold_curve(dtw_pass.windows, run.settings, run.truth, run.seconds,
                                default_thresholds(dtw_pass.windows), TOLERANCE_S, progress=progress)  # fmt: skip
    section = {"curve": dtw_curve, "windows_scored": dtw_pass.windows_scored}
    return section, 3600 * dtw_pass.cpu_s / run.seconds


def _daemon_cost(args: argparse.Namespace, run: _Run, rule_pass: Any, notes: list[str]) -> dict[str, Any]:
    """The daemon process on an excerpt of the stream: its costs, and whether it decides as in-process."""
    excerpt = min(args.cost_seconds, run.seconds)
    daemon, daemon_events = daemon_costs(args.model, run.state_dir, run.config_path, run.audio, excerpt, args)
    in_excerpt = [e for e in rule_pass.detections if e.time_s <= excerpt]
    agree = "identical" if same_events(daemon_events, in_excerpt) else "DIFFERENT"
    if agree != "identical":
        notes.append(
            f"the daemon process detected {len(daemon_events)} events on the excerpt, in-process {len(in_excerpt)}"
        )
    return {"daemon": daemon, "excerpt_s": excerpt, "daemon_matches_in_process": agree}


def _stream_summary(args: argparse.Namespace, run: _Run, stream_config: StreamConfig) -> dict[str, Any]:
    events_by_kind = [e["kind"] for e in run.truth]
    enrollment = run.stream.truth["enrollment"]
    return {
        "directory": shown(run.stream.directory),
        "hours": run.seconds / 3600,
        "keyword_utterances": events_by_kind.count("keyword"),
        "per_keyword": stream_config.occurrences_per_level * len(stream_config.levels),
        "unknown": events_by_kind.count("unknown"),
        "silence": events_by_kind.count("silence"),
        "speech_dbfs": stream_config.speech_dbfs,
        "enrollment_speakers": {w: takes[0]["speaker"] for w, takes in enrollment.items()},
        "quick": args.quick,
    }


def run_bench(
    args: argparse.Namespace,
    stream_config: StreamConfig | None = None,
    conditions_config: ConditionsConfig | None = None,
) -> dict[str, Any]:
    """Everything `kws-bench` measures, as one JSON-ready dictionary (the configs: tests pass tiny ones)."""
    notes: list[str] = []
    if stream_config is None:
        stream_config = QUICK_STREAM if args.quick else StreamConfig()
    if conditions_config is None:
        conditions_config = QUICK_CONDITIONS if args.quick else ConditionsConfig()
    clock = _Stages()
    run = _prepare_run(args, stream_config, notes)
    clock.mark("stream and enrollment")
    accuracy, encoder_pass, rule_pass = _household_accuracy(args, run)
    cost: dict[str, Any] = {
        "encoder_pass_cpu_s_per_hour": 3600 * encoder_pass.cpu_s / run.seconds,
        "chunk_ms_median": 1000 * float(np.median(encoder_pass.chunk_wall_s)),
        "chunk_ms_p95": 1000 * float(np.percentile(encoder_pass.chunk_wall_s, 95)),
    }
    clock.mark("encoder pass and threshold curve")
    conditions = None
    if not args.no_conditions:
        conditions = run_conditions(args.data, args.speechocean, args.music, run.encoder, run.edge_config,
                                    run.stream, encoder_pass, args.out, conditions_config,
                                    progress=not args.no_progress)  # fmt: skip
    clock.mark("conditions")
    if not args.no_dtw:
        accuracy["dtw"], cost["dtw_pass_cpu_s_per_hour"] = _dtw_baseline(args, run, encoder_pass)
    clock.mark("DTW baseline")
    cost |= _daemon_cost(args, run, rule_pass, notes)
    clock.mark("daemon process runs")
    cost["encoder_ms_per_window"] = encoder_ms_per_window(run.encoder, run.audio, args.repeats)
    cost["frontend"] = {k: v for k, v in run_frontend_bench(repeats=5 * args.repeats).items() if k != "table"}
    clock.mark("encoder and front-end timing")
    return {
        "command": " ".join(["kws-bench", *sys.argv[1:]]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "machine": machine_info(),
        "model": model_info(args.model, run.encoder, args.checkpoint),
        "settings": dataclasses.asdict(run.settings),
        "stream": _stream_summary(args, run, stream_config),
        "accuracy": accuracy,
        "conditions": conditions,
        "cost": cost,
        "notes": notes,
        "stage_wall_s": clock.stages,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kws-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "build" / "udkws_int8.tflite",
        help="int8 TFLite model with its sidecar (default build/udkws_int8.tflite)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=REPO / "training" / "shipped" / "udkws_edge.pt",
        help="checkpoint for parameter and MAC counts",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("KWS_DATA_DIR", REPO.parent / "shared" / "data")),
        help="speech data folder (default $KWS_DATA_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "build" / "bench",
        help="streams, state and results.json (default build/bench)",
    )
    parser.add_argument(
        "--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md", help="markdown report to write"
    )
    parser.add_argument(
        "--png", type=Path, default=REPO / "docs" / "bench_det.png", help="threshold-curve plot to write"
    )
    parser.add_argument(
        "--edge-config",
        type=Path,
        default=DEFAULT_EDGE_CONFIG,
        help="the daemon configuration whose detector settings are measured (default edge/default_config.toml)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of each cost measurement (median reported)"
    )
    parser.add_argument(
        "--cost-seconds", type=float, default=600.0, help="audio fed to the daemon process per cost run"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="interpreter threads (default 1, as on the board)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 5-minute stream: a smoke run, not the benchmark"
    )
    parser.add_argument(
        "--speechocean",
        type=Path,
        default=Path(os.environ.get("KWS_SPEECHOCEAN_DIR", REPO.parent / "sources" / "speechocean762")),
        help="speechocean762 (Kaldi folders; its test speakers are the long-form speech negatives; default "
        "$KWS_SPEECHOCEAN_DIR or ../sources/speechocean762)",
    )
    parser.add_argument(
        "--music",
        type=Path,
        default=MUSIC_DIR,
        help=f"the music reserved for false-alarm measurement (default {MUSIC_DIR}, Debian singularity-music)",
    )
    parser.add_argument(
        "--no-conditions",
        action="store_true",
        help="only the household stream (no own voice, reverb, long-form)",
    )
    parser.add_argument("--no-dtw", action="store_true", help="skip the MFCC+DTW baseline")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dev"]:  # the development condition (training data only): training/bench/dev.py
        from training.bench.dev import dev_main

        return dev_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge.templates").setLevel(logging.WARNING)  # one line per enrolled keyword: hundreds
    if args.repeats < 1 or args.threads < 1 or args.cost_seconds <= 0:
        log.error("--repeats and --threads must be >= 1 and --cost-seconds > 0")
        return 2
    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    try:
        results = run_bench(args)
    except (ValueError, OSError, RuntimeError) as error:
        log.error("%s", error)
        return 2
    results["wall_s"] = time.perf_counter() - started
    results["machine"]["load_before"] = load_before
    results["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.docs, args.png)
    print(json.dumps(results, indent=1) if args.json else render_table(results))
    enc, dtw = results["accuracy"]["encoder"], results["accuracy"]["dtw"]
    if not args.json and dtw:
        for level in FA_LEVELS:
            print(
                f"FRR at <= {level:g} FA/h: encoder {frr_at_fa(enc['curve'], level)}, DTW {frr_at_fa(dtw['curve'], level)}"
            )
    print(f"\nwrote {args.docs}, {args.png} and {args.out / 'results.json'} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
