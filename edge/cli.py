"""`kws-edge`: the board-side command line. Each subcommand lives in its own small function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.audio import load_audio
from edge.commands import (
    describe_keywords,
    enroll_from_audio,
    enrollment_report,
    open_model,
    record_takes,
    reject,
    replay,
    score_against_truth,
)
from edge.config import Config, load_config
from edge.resolver import KeywordResolver
from edge.templates import TemplateStore

log = logging.getLogger("kws-edge")


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

    from edge.network_cli import add_network_commands
    from edge.tools_cli import add_tool_commands

    add_tool_commands(sub)
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
