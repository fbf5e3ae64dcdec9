"""`kws-edge`: the board-side command line. Each subcommand lives in its own small function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import load_audio
from edge.commands import (
    describe_keywords,
    embed_files,
    enroll_from_audio,
    enrollment_report,
    open_model,
    record_takes,
    reject,
    replay,
    score_against_truth,
)
from edge.config import Config, load_config
from edge.frontend import DEFAULT_CONFIG, mfcc
from edge.model import load_model
from edge.resolver import KeywordResolver
from edge.templates import TemplateStore

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


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    overrides = {
        "model.path": getattr(args, "model", None),
        "state.dir": getattr(args, "state_dir", None),
        "model.num_threads": getattr(args, "threads", None),
        **extra,
    }
    return load_config(args.config, {k: v for k, v in overrides.items() if v is not None})


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.daemon import Daemon, make_source

    extra: dict[str, Any] = {
        "detector.threshold": args.threshold,
        "detector.hop_ms": args.hop_ms,
        "audio.device": args.device,
    }
    if args.no_gate:
        extra["detector.gate"] = False
    if args.no_gpio:
        extra["gpio.enabled"] = False
    if args.stdin:
        extra["audio.source"] = "stdin"
    if args.file:
        extra.update({"audio.source": "file", "audio.file": str(args.file)})
    config = _config(args, **extra)
    if not args.verbose:
        logging.getLogger().setLevel(config.service.log_level)
    encoder = open_model(config)
    daemon = Daemon(config, encoder, make_source(config))
    daemon.install_signal_handlers()
    return daemon.run()


def _cmd_replay(args: argparse.Namespace) -> int:
    extra: dict[str, Any] = {"detector.threshold": args.threshold}
    if args.no_gate:
        extra["detector.gate"] = False
    config = _config(args, **extra)
    encoder = open_model(config)
    templates = TemplateStore(config.state.dir).load_for_model(
        encoder.sha256, encoder.frontend_fingerprint, encoder.embedding_dim
    )
    if not templates:
        raise ValueError(
            f"{config.state.dir}: no keyword enrolled for this model (kws-edge enroll NAME a.wav ...)"
        )
    resolver = KeywordResolver.for_model(config, encoder.model_path, encoder.sha256)
    templates = [r.template for r in resolver.resolve(templates)]
    audio = load_audio(args.file)
    started = time.process_time()
    result = replay(audio, encoder, templates, config.detector)
    cpu_s = time.process_time() - started
    for detection in result.detections:
        event = detection.to_event()
        print(
            json.dumps(event)
            if args.json
            else f"{event['time_s']:9.3f} s  {detection.keyword}  score {detection.score:.3f}"
        )
    summary: dict[str, Any] = {
        "event": "summary",
        "audio_s": round(result.seconds, 3),
        "detections": len(result.detections),
        "windows": result.windows,
        "windows_gated": result.windows_gated,
        "cpu_percent_of_real_time": round(100 * cpu_s / max(result.seconds, 1e-9), 2),
    }
    if args.truth:
        summary["truth"] = score_against_truth(
            [d.time_s for d in result.detections], args.truth, encoder.window_samples / 16000
        )
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=1))
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


def _cmd_enroll(args: argparse.Namespace) -> int:
    config = _config(args)
    encoder = open_model(config)
    store = TemplateStore(config.state.dir)
    if args.files:
        takes = [(str(path), load_audio(path)) for path in args.files]
    else:
        takes = record_takes(args.takes, args.name, config, encoder.window_samples)
    template = enroll_from_audio(
        args.name, takes, encoder, store, args.threshold, args.pin, args.hook, check=not args.no_checks
    )
    print(f"enrolled {template.name!r} from {template.takes} takes into {store.path_for(template.name)}")
    resolver = KeywordResolver.for_model(config, encoder.model_path, encoder.sha256)
    print(enrollment_report(resolver.resolve_one(template)))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    store = TemplateStore(config.state.dir)
    templates = store.list()
    resolved = None
    if templates and Path(config.model.path).is_file():  # thresholds in force need the model and its cohort
        encoder = open_model(config)
        usable = store.load_for_model(encoder.sha256, encoder.frontend_fingerprint, encoder.embedding_dim)
        resolved = KeywordResolver.for_model(config, encoder.model_path, encoder.sha256).resolve(usable)
    print(describe_keywords(templates, args.json, resolved) or f"no keywords in {store.state_dir}")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    TemplateStore(_config(args).state.dir).remove(args.name)
    print(f"removed {args.name!r} (previous version kept as .bak)")
    return 0


def _cmd_reject(args: argparse.Namespace) -> int:
    config = _config(args)
    count = reject(
        args.name, args.files, open_model(config), TemplateStore(config.state.dir), config.state.dir
    )
    print(
        f"{args.name}: {count} negative template(s) added; the daemon picks them up within {config.state.reload_s} s"
    )
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


def _common(parser: argparse.ArgumentParser, model: bool = True) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML configuration (default /etc/udkws/config.toml if present)"
    )
    if model:
        parser.add_argument(
            "--model", help="int8 TFLite model (its .json sidecar beside it); overrides model.path"
        )
        parser.add_argument("--threads", type=int, help="interpreter threads; overrides model.num_threads")
    parser.add_argument("--state-dir", help="keyword state directory; overrides state.dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-edge",
        description="udkws on the board: the detection daemon, keyword enrollment and tools.",
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

    run = sub.add_parser("run", help="the detection daemon (systemd Type=notify; SIGTERM stops it)")
    _common(run)
    source = run.add_mutually_exclusive_group()
    source.add_argument("--stdin", action="store_true", help="read raw 16 kHz mono S16_LE PCM from stdin")
    source.add_argument("--file", type=Path, help="replay a WAV/FLAC file through the daemon, then exit")
    run.add_argument("--device", help="capture device: index or part of its name (see `kws-edge devices`)")
    run.add_argument("--threshold", type=float, help="default cosine threshold; overrides detector.threshold")
    run.add_argument(
        "--hop-ms", type=int, help="evaluate a window every this many ms; overrides detector.hop_ms"
    )
    run.add_argument("--no-gate", action="store_true", help="run the encoder on silent windows too")
    run.add_argument("--no-gpio", action="store_true", help="no LED or button (gpio.enabled = false)")
    run.set_defaults(func=_cmd_run)

    replay_cmd = sub.add_parser("replay", help="print the detections in an audio file, with timestamps")
    _common(replay_cmd)
    replay_cmd.add_argument("file", type=Path, help="WAV or FLAC file (any rate; resampled to 16 kHz)")
    replay_cmd.add_argument(
        "--threshold", type=float, help="default cosine threshold; overrides detector.threshold"
    )
    replay_cmd.add_argument("--no-gate", action="store_true", help="run the encoder on silent windows too")
    replay_cmd.add_argument("--truth", type=Path, help="ground-truth JSON: add hits, misses, false alarms")
    replay_cmd.add_argument("--json", action="store_true", help="JSON lines instead of text")
    replay_cmd.set_defaults(func=_cmd_replay)

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

    enroll = sub.add_parser("enroll", help="enroll a keyword from recordings (or from the microphone)")
    _common(enroll)
    enroll.add_argument("name", help="keyword name (letters, digits, _ - .)")
    enroll.add_argument(
        "files", nargs="*", type=Path, help="takes (WAV/FLAC); none: record from the microphone"
    )
    enroll.add_argument(
        "--takes", type=int, default=3, help="takes to record when no files are given (default 3)"
    )
    enroll.add_argument(
        "--threshold", type=float, help="this keyword's threshold (default: detector.threshold)"
    )
    enroll.add_argument("--pin", type=int, help="GPIO (BCM) pin of an LED lit on this keyword")
    enroll.add_argument("--hook", help="shell command run on each detection (env UDKWS_KEYWORD, UDKWS_SCORE)")
    enroll.add_argument("--no-checks", action="store_true", help="skip the take checks (quiet, clipped, ...)")
    enroll.set_defaults(func=_cmd_enroll)

    listing = sub.add_parser("list", help="list the enrolled keywords")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_cmd_list)

    remove = sub.add_parser("remove", help="remove a keyword (kept as .bak)")
    _common(remove, model=False)
    remove.add_argument("name", help="keyword name")
    remove.set_defaults(func=_cmd_remove)

    reject_cmd = sub.add_parser(
        "reject", help="mark a false trigger: its audio then vetoes similar detections"
    )
    _common(reject_cmd)
    reject_cmd.add_argument("name", help="the keyword that fired wrongly")
    reject_cmd.add_argument(
        "files", nargs="*", type=Path, help="audio of false triggers (default: its last detection)"
    )
    reject_cmd.set_defaults(func=_cmd_reject)

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

    from edge.network_cli import add_network_commands

    add_network_commands(sub, _common, _config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except (ValueError, OSError, RuntimeError) as error:
        log.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
