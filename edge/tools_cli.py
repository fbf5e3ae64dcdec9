"""The `kws-edge` commands that measure and inspect rather than run: `features`, `bench`, `embed`, `info`,
`threshold`, `bench-daemon` and `devices` (the daemon and the keyword commands are in edge/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import load_audio
from edge.commands import embed_files
from edge.frontend import DEFAULT_CONFIG, mfcc
from edge.model import load_model

__all__ = ["add_tool_commands"]


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


def _cmd_embed(args: argparse.Namespace) -> int:
    encoder = load_model(args.model, num_threads=args.threads or 1)
    if args.input is not None:
        if args.files or args.output is None:
            raise ValueError("embed --input W.npy needs --output E.npy and no audio files")
        try:
            windows = np.load(args.input)
        except (OSError, ValueError, EOFError) as error:  # np.load's words for an empty or foreign file
            raise ValueError(f"{args.input}: not a .npy array of windows ({error})") from error
        if not isinstance(windows, np.ndarray) or windows.dtype != np.float32:
            # A .npz file loads as a mapping, not an array.
            got = windows.dtype if isinstance(windows, np.ndarray) else type(windows).__name__
            raise ValueError(
                f"{args.input}: expected float32 windows [N, {encoder.window_samples}], got {got}"
            )
        embeddings = encoder.embed_windows(windows)
        np.save(args.output, embeddings)
        print(f"{args.output}: {embeddings.shape[0]} embeddings of {embeddings.shape[1]} dimensions")
        return 0
    if not args.files or args.out is None:
        raise ValueError("embed needs audio FILEs and --out F.npz (or --input W.npy --output E.npy)")
    result = embed_files(args.files, encoder, args.hop_ms)
    np.savez(args.out, **result)
    print(f"{args.out}: {result['embeddings'].shape[0]} windows from {len(args.files)} file(s)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    print(json.dumps(load_model(args.model).info(), indent=1))
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    from edge.sources import list_devices

    for device in list_devices():
        print(
            f"{device['index']:3d}  {device['name']}  ({device['channels']} ch, {device['default_rate']} Hz)"
        )
    return 0


def _cmd_threshold(args: argparse.Namespace) -> int:
    from edge.threshold import measure_scores, report

    encoder = load_model(args.model, num_threads=args.threads or 1)
    data = args.data or Path(os.environ.get("KWS_DATA_DIR", "../shared/data"))
    clips = set(args.clips.read_text().split()) if args.clips else None
    scores = measure_scores(encoder, data, args.enroll_takes, clips=clips)
    result = report(scores, args.far).as_dict() | {"model": encoder.sha256}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


def _cmd_bench_daemon(args: argparse.Namespace) -> int:
    from edge.daemon_bench import run_daemon_bench

    result = run_daemon_bench(args.model, args.file, args.threads or 1, wyoming_repeats=args.wyoming_repeats)
    print(json.dumps(result, indent=1))
    return 0


def add_tool_commands(sub: Any) -> None:
    """Add the measuring and inspecting commands to `kws-edge`'s subparsers."""
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

    embed = sub.add_parser("embed", help="embeddings exactly as the daemon computes them")
    embed.add_argument("--model", required=True, help="int8 TFLite model (with its .json sidecar)")
    embed.add_argument("--threads", type=int, help="interpreter threads (default 1)")
    embed.add_argument("files", nargs="*", type=Path, help="audio files: every window of each (gate off)")
    embed.add_argument("--out", type=Path, help="NPZ: embeddings [N, D], start_s, file_index, files")
    embed.add_argument("--hop-ms", type=int, default=100, help="window hop for FILEs (default 100)")
    embed.add_argument("--input", type=Path, help="NPY float32 windows [N, L] instead of files")
    embed.add_argument("--output", type=Path, help="NPY float32 embeddings [N, D] for --input")
    embed.set_defaults(func=_cmd_embed)

    info = sub.add_parser("info", help="print a model's sidecar (window samples, quantisation, ...)")
    info.add_argument("--model", required=True, help="int8 TFLite model (with its .json sidecar)")
    info.set_defaults(func=_cmd_info)

    threshold = sub.add_parser(
        "threshold",
        help="choose the default threshold on held-out training-corpus speakers (never gsc_v2_test)",
    )
    threshold.add_argument("--model", required=True, help="int8 TFLite model (with its .json sidecar)")
    threshold.add_argument("--threads", type=int, help="interpreter threads (default 1)")
    threshold.add_argument(
        "--data", type=Path, help="speech data folder (default $KWS_DATA_DIR or ../shared/data)"
    )
    threshold.add_argument(
        "--clips", type=Path, help="held-out clips, one manifest path a line (docs/edge.md)"
    )
    threshold.add_argument(
        "--far", type=float, default=0.01, help="allowed false-alarm rate per window (0.01)"
    )
    threshold.add_argument("--enroll-takes", type=int, default=2, help="takes per template (default 2)")
    threshold.add_argument("--out", type=Path, help="also write the report (JSON) here")
    threshold.set_defaults(func=_cmd_threshold)

    bench_daemon = sub.add_parser("bench-daemon", help="CPU, latency and memory of the detection loop")
    bench_daemon.add_argument(
        "--model", type=Path, required=True, help="int8 TFLite model (with its sidecar)"
    )
    bench_daemon.add_argument(
        "--file",
        type=Path,
        default=Path(__file__).parent / "demo" / "stream.flac",
        help="recording to replay (default: the demo stream)",
    )
    bench_daemon.add_argument("--threads", type=int, help="interpreter threads (default 1)")
    bench_daemon.add_argument(
        "--wyoming-repeats",
        type=int,
        default=3,
        help="live plays of the recording for the Wyoming service's cost (default 3, a minute each; 0: skip)",
    )
    bench_daemon.set_defaults(func=_cmd_bench_daemon)

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=_cmd_devices)
