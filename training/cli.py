"""`kws-train`: train encoders (`train`), strip a checkpoint for shipping (`ship`), inspect data (`data`).

Examples:
  kws-train train --config training/configs/pretrain.toml
  kws-train train --config training/configs/finetune.toml --set train.epochs=3 --name ft-short
  torchrun --nproc_per_node=2 -m training.cli train --config training/configs/edge.toml
  kws-train targets --config training/configs/edge.toml     # teacher targets only (cached), no training
  kws-train ship runs/edge/best.pt training/shipped/udkws_edge.pt
  kws-train data stats
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _overrides(args: argparse.Namespace) -> list[str]:
    explicit = {
        "run.name": args.name,
        "run.out_dir": args.out_dir,
        "run.resume": args.resume,
        "run.init_from": args.init_from,
        "run.device": args.device,
        "run.seed": args.seed,
        "train.epochs": args.epochs,
        "train.max_minutes": args.max_minutes,
        "data.data_dir": args.data_dir,
    }
    flags = [f"{key}={json.dumps(value)}" for key, value in explicit.items() if value is not None]
    return list(args.set) + flags  # explicit flags win over --set


def _run_train(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.train import train

    config = load_config(args.config, _overrides(args))
    result = train(config)
    if result.best_path is not None:
        print(f"best checkpoint: {result.best_path}")
    print(f"last checkpoint: {result.last_path}")
    shown = {k: v for k, v in result.best_metrics.items() if k != "train"}
    if shown:
        print("best validation (held-out speakers): " + json.dumps(shown))
    return 0


def _run_targets(args: argparse.Namespace) -> int:
    """Build every teacher target (and room copy) a config's run needs, without training: the slow part
    that `kws-train train` would otherwise do first, cached for it (and resumable when interrupted)."""
    from training.config import load_config
    from training.data.room_copies import with_room_copies
    from training.distributed import setup_distributed
    from training.models import build_model
    from training.objective import build_distillation
    from training.prepare import prepare_data

    config = load_config(args.config, _overrides(args))
    ctx = setup_distributed("cpu")
    data = prepare_data(config.data, config.run.seed, None, config.run.progress)
    data = with_room_copies(config.data, config.run.seed, data, config.run.progress)
    built = build_distillation(config, data, ctx, build_model(config.model.name, dict(config.model.params)))
    for name, targets in (("first teacher", built.targets), ("second teacher", built.second_targets)):
        if targets is not None:
            print(f"{name}: {len(targets)} targets in {targets.directory}")
    return 0


def _run_ship(args: argparse.Namespace) -> int:
    from training.checkpoint import ship_checkpoint

    ship_checkpoint(args.checkpoint, args.out)
    print(f"{args.out}: {Path(args.out).stat().st_size} bytes (training state removed)")
    return 0


def _config_keys_help() -> str:
    """Every config key with its default, for `kws-train train --help`."""
    from training.config import TrainingConfig, dumps_toml

    return (
        "config keys (set in the TOML file or with --set SECTION.KEY=VALUE), with their defaults; "
        "docs/training.md explains them:\n\n" + dumps_toml(TrainingConfig())
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (default: warnings)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,targets,ship,data}")

    train = commands.add_parser(
        "train",
        help="train an encoder from a TOML config",
        epilog=_config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", type=Path, default=None, help="TOML config (training/configs/*.toml)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (TOML syntax, e.g. train.epochs=3, data.datasets=['fsdd']); repeatable",
    )
    train.add_argument("--name", default=None, help="run name: the run folder is <out-dir>/<name>")
    train.add_argument("--out-dir", default=None, help="folder of run folders (default: runs)")
    train.add_argument("--epochs", type=int, default=None, help="number of epochs")
    train.add_argument(
        "--max-minutes", type=float, default=None, help="stop after the epoch that passes this"
    )
    train.add_argument("--resume", default=None, help="continue from a checkpoint (optimizer, epoch, losses)")
    train.add_argument(
        "--init-from", default=None, help="start from a checkpoint's encoder weights (fine-tuning)"
    )
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where to train")
    train.add_argument("--seed", type=int, default=None, help="random seed of the run")
    train.add_argument(
        "--data-dir", default=None, help="speech data (default: $KWS_DATA_DIR or ../shared/data)"
    )
    train.set_defaults(func=_run_train)

    targets = commands.add_parser(
        "targets",
        help="build a config's teacher targets and room copies (cached) without training",
    )
    targets.add_argument("--config", type=Path, default=None, help="TOML config (training/configs/*.toml)")
    targets.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as for train"
    )
    for flag in ("--name", "--out-dir", "--resume", "--init-from", "--device", "--data-dir"):
        targets.add_argument(flag, default=None, help=argparse.SUPPRESS)
    for flag in ("--epochs", "--seed"):
        targets.add_argument(flag, type=int, default=None, help=argparse.SUPPRESS)
    targets.add_argument("--max-minutes", type=float, default=None, help=argparse.SUPPRESS)
    targets.set_defaults(func=_run_targets)

    ship = commands.add_parser(
        "ship", help="copy a checkpoint without its training state (small, for release)"
    )
    ship.add_argument("checkpoint", help="checkpoint to copy")
    ship.add_argument("out", help="where to write the stripped checkpoint")
    ship.set_defaults(func=_run_ship)

    from training.data.cli import add_data_commands

    add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from training.data.cli import run_builder, split_builder_argv

    builder = split_builder_argv(sys.argv[1:] if argv is None else argv)
    if builder is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_builder(*builder)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"kws-train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
