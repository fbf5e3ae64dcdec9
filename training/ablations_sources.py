"""Issue 13's ablation: each new source on and off at an equal number of steps, from the shipped recipe.

Every run is `training/configs/<base>` (default the pre-issue-13 recipe, `edge_s11.toml`: edge_tcn, 1.5 s
windows, distillation-only cosine to EfficientWord-Net, real speech + `corpora/synthetic`) with one change,
trained for exactly `epochs x steps_per_epoch` steps (`train.max_steps_per_epoch` caps the epochs of the
larger data sets, so every run takes the same steps on the same learning-rate schedule), validated once at
the end, and shipped from its last epoch to `<out>/<name>/model.pt` for `kws-eval`. One seed (0) each.

    python -m training.ablations_sources --out runs/i13/abl --epochs 6 --steps-per-epoch 400
    python -m training.ablations_sources --out runs/i13/abl --only base rooms --set data.room_jobs=2
    kws-eval --checkpoint runs/i13/abl/<name>/model.pt --condition clean noise10 reverb --out runs/i13/eval/<name>
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.config import TrainingConfig, load_config

__all__ = ["SOURCE_ABLATIONS", "SourceAblation", "main", "source_ablation_config"]

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
WHISPER = 'distill.second_teacher="whisper-tiny.en"'


@dataclass(frozen=True)
class SourceAblation:
    name: str
    question: str
    overrides: tuple[str, ...] = ()


SOURCE_ABLATIONS: tuple[SourceAblation, ...] = (
    SourceAblation("base", "today's recipe: real + synthetic, EfficientWord-Net only"),
    SourceAblation("speechocean", "+ speechocean762 train speakers' words",
                   ('data.optional_roots=["synthetic","speechocean762"]',)),
    SourceAblation("kokoro", "+ Kokoro voices (the finished shards)", ('data.optional_roots=["synthetic","kokoro"]',)),
    SourceAblation("rooms", "+ rooms/noise/shift copies of the student's input (targets from the clean clip)",
                   ("data.room_copies=2", "data.room_share=0.5")),
    SourceAblation("second_frames", "+ Whisper tiny.en frame sequence (head on the last block's frames)",
                   (WHISPER, "distill.second_weight=1.0", 'distill.second_kind="frames"')),
    SourceAblation("second_pooled", "+ Whisper tiny.en pooled (mean and thirds, on the embedding)",
                   (WHISPER, "distill.second_weight=1.0", 'distill.second_kind="pooled"')),
    SourceAblation("amsoftmax", "+ AM-softmax on the labelled words (weight 0.1)",
                   ('loss.name="amsoftmax"', "loss.params={}", "loss.weight=0.1")),
)  # fmt: skip


def source_ablation_config(
    ablation: SourceAblation,
    out: Path,
    epochs: int,
    steps_per_epoch: int,
    extra: Sequence[str] = (),
    base: str = "edge_s11.toml",
) -> TrainingConfig:
    overrides = [
        f"run.name={json.dumps(ablation.name)}", f"run.out_dir={json.dumps(str(out))}", "run.progress=false",
        f"train.epochs={epochs}", f"train.max_steps_per_epoch={steps_per_epoch}",
        f"validate.every_epochs={epochs}", "train.max_minutes=0", *ablation.overrides, *extra,
    ]  # fmt: skip
    return load_config(CONFIGS_DIR / base, overrides)


def run_source_ablations(
    out: Path, epochs: int, steps_per_epoch: int, only: Sequence[str] = (), extra: Sequence[str] = (),
    base: str = "edge_s11.toml",
) -> dict[str, dict[str, object]]:  # fmt: skip
    from training.checkpoint import ship_checkpoint
    from training.train import train

    known = {a.name: a for a in SOURCE_ABLATIONS}
    unknown = sorted(set(only) - set(known))
    if unknown:
        raise ValueError(f"--only: no ablation named {unknown}; names: {list(known)}")
    summary_path = out / "ablations.json"  # earlier calls' runs are kept
    summary: dict[str, dict[str, object]] = (
        json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    )
    for ablation in [a for a in SOURCE_ABLATIONS if not only or a.name in only]:
        config = source_ablation_config(ablation, out, epochs, steps_per_epoch, extra, base)
        began = time.monotonic()
        result = train(config)
        seconds = round(time.monotonic() - began, 1)
        ship_checkpoint(result.last_path, out / ablation.name / "model.pt")
        summary[ablation.name] = {
            "question": ablation.question, "base": base, "overrides": [*ablation.overrides, *extra],
            "steps": epochs * steps_per_epoch, "seconds": seconds, "validation": result.best_metrics,
        }  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
        log.info("%s: %.0f s", ablation.name, seconds)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.ablations_sources", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ablations-sources"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps-per-epoch", type=int, default=400)
    parser.add_argument(
        "--base", default="edge_s11.toml", help="the config every run changes (training/configs)"
    )
    parser.add_argument("--only", nargs="*", default=[], help=f"names: {[a.name for a in SOURCE_ABLATIONS]}")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_source_ablations(args.out, args.epochs, args.steps_per_epoch, args.only, args.set, args.base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
