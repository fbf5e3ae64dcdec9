"""`make soak` / `python -m training.bench.soak`: a day of audio through the real daemon, faster than real time.

The daemon process (`python -m edge.cli run --stdin`, what `kws-edge run` runs) is fed a stream built block by
block (`training.bench.soak_stream`: demo speech, noise, silence, the keyword at random times) through a pipe,
as fast as it reads. At random moments of the stream a second process (`training.bench.soak_mutator`) enrolls,
removes and rejects keywords with the real command line, re-enrolls the keyword, sends SIGHUP, touches the
configuration or drops a torn keyword file; the feed waits while the previous change is not yet reloaded.
After each block (a simulated hour) the daemon's RSS, descriptors, threads and CPU are read from /proc.

It fails when RSS, descriptors or threads grow by more than 5 % after the first block or its CPU trends up by
more than 5 % (per block, over what a fresh daemon spends on the block's first ten minutes at the same time:
`training.bench.soak_run` says why), when a reload is missed (no `keywords` event with the expected set within
`reload_timeout_s`), when an occurrence of the keyword is not detected, when the watchdog goes quiet longer
than the unit's WatchdogSec, or when the daemon does not exit cleanly at the end of the stream. Results go to
`build/soak/results.json`; a full run also writes docs/soak_results.json, docs/soak.png and the soak section
of docs/BENCHMARKS.md (`training.bench.soak_report`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import write_wav
from edge.commands import score_against_truth
from edge.config import load_config
from edge.detector import Detector
from edge.model import load_model
from edge.templates import TemplateStore
from training.bench.soak_probe import ProcessSample, growth, sample_process, trend_growth
from training.bench.soak_run import FreshDaemon, SoakRun, soak_env
from training.bench.soak_stream import (
    RATE,
    Material,
    SoakStreamConfig,
    load_material,
    render_block,
    to_pcm,
)

__all__ = ["SoakSettings", "main", "run_soak"]

log = logging.getLogger("soak")
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "edge" / "demo"
WATCHDOG_LIMIT_S = 30.0  # WatchdogSec of edge/systemd/udkws.service


@dataclass(frozen=True)
class SoakSettings:
    stream: SoakStreamConfig
    model: Path
    noise_dir: Path
    work: Path
    actions_per_block: int = 6
    reload_s: float = 1.0
    tolerance: float = 0.05  # RSS, descriptors and threads after the first block
    cpu_tolerance: float = 0.05  # the per-block CPU trend after the first block
    reload_timeout_s: float = 120.0
    compare_s: float | None = None  # of each block, fed to a fresh daemon too (None: all of it)


def _prepare(settings: SoakSettings, material: Material) -> tuple[Path, list[Path], list[Path]]:
    """The daemon's configuration, the keyword enrolled from the demo takes, other words cut from the demo."""
    shutil.rmtree(settings.work, ignore_errors=True)
    state = settings.work / "state"
    settings.work.mkdir(parents=True)
    config = settings.work / "config.toml"
    config.write_text(
        f'[model]\npath = "{settings.model}"\n[state]\ndir = "{state}"\nreload_s = {settings.reload_s}\n'
        '[gpio]\nenabled = false\n[audio]\nsource = "stdin"\n'
    )
    takes = sorted(DEMO.glob(f"enroll_{material.keyword}_*.wav"))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "enroll", material.keyword, *map(str, takes), "--config", str(config)],
        capture_output=True, text=True, env=soak_env(), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"enrolling {material.keyword!r} failed: {result.stderr.strip()[-500:]}")
    truth = json.loads((DEMO / "stream_truth.json").read_text())
    others = []
    for index, event in enumerate(e for e in truth["events"] if e["word"] != material.keyword):
        first, last = round((event["start_s"] - 0.3) * RATE), round((event["end_s"] + 0.3) * RATE)
        others.append(settings.work / f"other_{index}_{event['word']}.wav")
        write_wav(others[-1], material.demo[max(first, 0) : last])
    return config, takes, others


def usable_excerpts(material: Material, config_path: Path) -> Material:
    """The keyword excerpts that the detector finds on their own (what the model finds in the demo stream)."""
    config = load_config(config_path)
    encoder = load_model(config.model.path)
    templates = TemplateStore(config.state.dir).load_for_model(encoder.sha256, encoder.frontend_fingerprint)
    kept = []
    for excerpt in material.excerpts:
        detector = Detector(encoder, templates, config.detector)
        audio = np.concatenate(
            [np.zeros(2 * RATE, np.float32), excerpt.audio, np.zeros(2 * RATE, np.float32)]
        )
        found = [
            d for start in range(0, audio.shape[0], 1600) for d in detector.push(audio[start : start + 1600])
        ]
        if any(
            2 * RATE + excerpt.word_start
            < d.end_sample
            <= 2 * RATE + excerpt.word_end + encoder.window_samples
            for d in found
        ):
            kept.append(excerpt)
        else:
            log.warning(
                "the excerpt at %.1f s of the demo stream is not detected on its own: left out",
                excerpt.source_s,
            )
    if not kept:
        raise RuntimeError(f"the model finds none of the demo stream's {material.keyword!r} utterances")
    return replace(material, excerpts=tuple(kept))


def _stream(run: SoakRun, settings: SoakSettings, material: Material) -> None:
    """Feed every block, asking for changes at random moments; sample the daemon after each block.

    Each block (or its first `compare_s` seconds) also goes to a fresh daemon: the CPU ratio of the two is the
    measure of CPU growth that the machine's changing load does not blur (over ten minutes it still varied by
    about 5 % from block to block here; over an hour it is steadier).
    """
    config = settings.stream
    rng = np.random.default_rng([config.seed, 999])
    run.samples.append(sample_process(run.daemon.pid, 0.0, run.started))
    position = 0
    block_samples = round(config.block_s * RATE)
    compared = round(min(settings.compare_s or config.block_s, config.block_s) * RATE)
    for block in range(config.blocks):
        # Keyword changes fall after a compared stretch shorter than the block, so both daemons do the same work.
        first = compared if compared < block_samples else 0
        moments = sorted(
            block * block_samples + rng.integers(first, block_samples, settings.actions_per_block)
        )
        compare_end = block * block_samples + compared
        fresh = run.fresh = FreshDaemon(run.config, settings.work)
        main_start = sample_process(run.daemon.pid, 0.0, run.started).cpu_s
        for audio, found in render_block(config, material, block):
            run.occurrences.extend(found)
            pcm, offset, end = to_pcm(audio), position, position + audio.shape[0]
            cuts = sorted([(int(m), "act") for m in moments if position <= m < end] + (
                [(compare_end, "compare")] if position < compare_end <= end else []
            ))  # fmt: skip
            for cut, kind in cuts:
                run.feed(pcm[2 * (offset - position) : 2 * (cut - position)])
                offset = cut
                if kind == "act":
                    run.act(cut / RATE)
                else:
                    main_cpu = sample_process(run.daemon.pid, 0.0, run.started).cpu_s - main_start
                    fresh_cpu = fresh.cpu_s()
                    fresh.finish()
                    run.fresh = None
                    run.cpu_ratios.append(main_cpu / max(fresh_cpu, 1e-6))
            run.feed(pcm[2 * (offset - position) :])
            position = end
        run.samples.append(sample_process(run.daemon.pid, position / RATE, run.started))
        last = run.samples[-1]
        log.info(
            "block %d/%d: RSS %.1f MB, %d fds, %d threads, CPU %.1f s (%.3f of a fresh daemon's)",
            block + 1, config.blocks, last.rss_mb, last.fds, last.threads, last.cpu_s, run.cpu_ratios[-1],
        )  # fmt: skip


def _verdict(settings: SoakSettings, run: SoakRun, keyword: str, exit_code: int) -> dict[str, Any]:
    samples, occurrences = run.samples or [ProcessSample(0.0, 0.0, 0.0, 0, 0, 0.0)], run.occurrences
    if len(samples) < 3:  # the daemon died early: nothing to compare, and the exit check fails
        samples = samples + [samples[-1]] * (3 - len(samples))
    truth = settings.work / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "keyword": keyword,
                "events": [{"word": keyword, "start_s": o.start_s, "end_s": o.end_s} for o in occurrences],
            }
        )
    )
    detections = [e for e in run.events if e.get("event") == "detection"]
    scored = score_against_truth([d["time_s"] for d in detections if d["keyword"] == keyword], truth, 1.5)
    others = [d for d in detections if d["keyword"] != keyword]
    after_first, first = samples[2:], samples[1]
    cpu_blocks = [b.cpu_s - a.cpu_s for a, b in itertools.pairwise(samples)]
    pings, longest_gap = run.notify.watchdog_gaps()
    stopped = next((e for e in run.events if e.get("event") == "stopped"), {})
    checks = {
        "rss": growth(first.rss_mb, [s.rss_mb for s in after_first]) <= settings.tolerance,
        "fds": growth(first.fds, [s.fds for s in after_first]) <= settings.tolerance,
        "threads": growth(first.threads, [s.threads for s in after_first]) <= settings.tolerance,
        "cpu": trend_growth(run.cpu_ratios[1:]) <= settings.cpu_tolerance,
        "reloads": not any(f.startswith("reload missed") for f in run.failures),
        "actions": not any(" failed: " in f for f in run.failures),
        "detections": not scored["missed_at_s"],
        "watchdog": longest_gap <= WATCHDOG_LIMIT_S and pings > 0,
        "clean_exit": exit_code == 0
        and round(stopped.get("audio_s", -1.0), 1) == round(settings.stream.seconds, 1)
        and b"Traceback" not in (settings.work / "daemon.log").read_bytes(),
    }
    kinds: dict[str, int] = {}
    for action in run.actions:
        kinds[action["action"]] = kinds.get(action["action"], 0) + 1
    latencies = [a["reload_s"] for a in run.actions if "reload_s" in a]
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "failures": run.failures,
        "samples": [s.to_json() for s in samples],
        "cpu_s_per_block": [round(c, 3) for c in cpu_blocks],
        "cpu_ratio_to_fresh": [round(r, 4) for r in run.cpu_ratios],
        "growth_after_first_block": {
            "rss": round(growth(first.rss_mb, [s.rss_mb for s in after_first]), 4),
            "fds": round(growth(first.fds, [s.fds for s in after_first]), 4),
            "threads": round(growth(first.threads, [s.threads for s in after_first]), 4),
            "cpu_trend": round(trend_growth(run.cpu_ratios[1:]), 4),
            "cpu_trend_raw": round(trend_growth(cpu_blocks[1:]), 4),
        },
        "occurrences": scored["utterances"],
        "detected": scored["detected"],
        "missed_at_s": scored["missed_at_s"],
        "false_alarms": scored["false_alarms"] + len(others),
        "actions": kinds,
        "reloads": {
            "expected": len(latencies) + sum(f.startswith("reload missed") for f in run.failures),
            "seen": len(latencies),
            "median_s": round(float(np.median(latencies)), 2) if latencies else None,
            "max_s": max(latencies, default=None),
        },
        "watchdog": {"pings": pings, "longest_gap_s": round(longest_gap, 2), "limit_s": WATCHDOG_LIMIT_S},
        "exit_code": exit_code,
        "audio_errors": sum(1 for e in run.events if e.get("event") == "audio_error"),
    }


def run_soak(settings: SoakSettings) -> dict[str, Any]:
    """One soak run; returns the results (see `_verdict`) with the settings, machine and timing."""
    settings.stream.validate()
    wall, load_before = time.monotonic(), round(os.getloadavg()[0], 2)
    material = load_material(DEMO, settings.noise_dir)
    config, takes, others = _prepare(settings, material)
    material = usable_excerpts(material, config)
    mutator_args = ["--state-dir", str(settings.work / "state"), "--keyword", material.keyword,
                    "--takes", *map(str, takes), "--others", *map(str, others), "--seed", str(settings.stream.seed)]  # fmt: skip
    run = SoakRun(settings.work, config, mutator_args, settings.reload_timeout_s)
    if not run.notify.wait_for("READY=1", 120):
        run.finish()
        raise RuntimeError(f"the daemon never became ready: see {settings.work / 'daemon.log'}")
    exit_code = -1
    try:
        _stream(run, settings, material)
    except (BrokenPipeError, FileNotFoundError, ProcessLookupError):
        run.failures.append("the daemon went away in the middle of the stream: see daemon.log")
    finally:
        exit_code = run.finish()
    results = _verdict(settings, run, material.keyword, exit_code)
    results.update(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        wall_s=round(time.monotonic() - wall, 1),
        simulated_hours=settings.stream.seconds / 3600,
        block_s=settings.stream.block_s,
        speed=round(settings.stream.seconds / max(time.monotonic() - wall, 1e-9), 1),
        settings={  # paths relative to the checkout: the results file is committed
            k: os.path.relpath(v, REPO) if isinstance(v, Path) else v
            for k, v in vars(settings).items()
            if k != "stream"
        }
        | {"stream": vars(settings.stream)},
        model_sha256=load_model(settings.model).sha256,
        excerpts=len(material.excerpts),
        machine={
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
        },
    )
    (settings.work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    parser.add_argument("--block-minutes", type=float, default=60.0, help="simulated minutes per sample (60)")
    parser.add_argument(
        "--keywords-per-block", type=int, default=30, help="keyword occurrences per block (30)"
    )
    parser.add_argument("--actions-per-block", type=int, default=6, help="keyword changes per block (6)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--model", type=Path, default=REPO / "build" / "udkws_int8.tflite")
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("KWS_DATA_DIR", REPO.parent / "shared" / "data")),
        help="speech data folder holding gsc_noise/ (default $KWS_DATA_DIR or ../shared/data)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "build" / "soak", help="work folder (build/soak)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "BENCHMARKS.md", help="report to update")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/ (a trial run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    block_s = args.block_minutes * 60
    settings = SoakSettings(
        SoakStreamConfig(args.hours * 3600, block_s, args.keywords_per_block, args.seed),
        args.model.resolve(),
        args.data / "gsc_noise",
        args.out.resolve(),
        args.actions_per_block,
    )
    try:
        results = run_soak(settings)
    except (ValueError, OSError, RuntimeError) as error:
        log.error("%s", error)
        return 2
    results["command"] = " ".join(
        ["python -m training.bench.soak", *(argv if argv is not None else sys.argv[1:])]
    )
    if not args.no_docs:
        from training.bench.soak_report import write_soak_report

        write_soak_report(results, args.docs)
    print(json.dumps({k: results[k] for k in ("passed", "checks", "growth_after_first_block", "occurrences",
                                               "detected", "false_alarms", "actions", "wall_s", "failures")}, indent=1))  # fmt: skip
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
