"""`kws-edge`: the board-side command line. Each subcommand lives in its own small function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge.audio import load_audio
from edge.frontend import DEFAULT_CONFIG, mfcc

log = logging.getLogger("kws-edge")


def _cmd_features(args: argparse.Namespace) -> int:
    """Compute the MFCCs of one file and report their shape and the front end's cost."""
    audio = load_audio(args.file)
    started = time.process_time()
    features = mfcc(audio)
    cpu_ms = 1000 * (time.process_time() - started)
    report = {
        "file": str(args.file),
        "seconds": round(audio.shape[0] / DEFAULT_CONFIG.sample_rate, 3),
        "frames": features.shape[0],
        "coefficients": features.shape[1],
        "cpu_ms": round(cpu_ms, 3),
        "frontend_fingerprint": DEFAULT_CONFIG.fingerprint,
    }
    if args.save:
        import numpy as np

        np.save(args.save, features)
        report["saved"] = str(args.save)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['file']}: {report['seconds']} s of audio -> MFCC {features.shape[0]} frames x "
            f"{features.shape[1]} coefficients in {cpu_ms:.2f} ms of CPU "
            f"(front end {DEFAULT_CONFIG.fingerprint})"
        )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import run_frontend_bench

    result = run_frontend_bench(seconds=args.seconds, repeats=args.repeats)
    print(json.dumps(result) if args.json else result["table"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-edge",
        description="udkws on the board: features, benchmarks (more commands land with the daemon).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    features = sub.add_parser("features", help="compute the MFCC features of a WAV or FLAC file")
    features.add_argument(
        "file", type=Path, help="audio file (any rate, mono or stereo; resampled to 16 kHz)"
    )
    features.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    features.add_argument(
        "--save", type=Path, metavar="NPY", help="also write the features [frames, 40] here"
    )
    features.set_defaults(func=_cmd_features)

    bench = sub.add_parser("bench", help="time the front end on this machine (1 thread, CPU time)")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of the test signal (default 10)")
    bench.add_argument("--repeats", type=int, default=15, help="timed repetitions; the median is reported")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
