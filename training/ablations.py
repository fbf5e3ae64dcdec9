"""The paper's ablations on our data, short schedules: loss choice, one- vs two-stage, data filtering on/off.

Every run is the paper's encoder (`res15`) on 1 s windows from `training/configs/pretrain.toml` (stage 1) or
`finetune.toml` (stage 2), read from a feature pack (`kws-train data pack`) so the set runs unchanged on a
remote GPU that cannot read the audio; a pack has no audio, so there is no augmentation, only random time
shifts of the cached features. Each run is shipped (training state stripped) to `<out>/<name>/model.pt`,
which `kws-eval --checkpoint` scores on the benchmark afterwards (docs/RESULTS.md).

    python -m training.ablations --pack packs/real_1s.npz --exclude-clips packs/real.filtered.report.json \\
        --device cuda --epochs 25 --out runs/ablations
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

__all__ = ["ABLATIONS", "Ablation", "AblationSettings", "ablation_config", "main", "run_ablations"]

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
ENGLISH = '["gsc_v1_words","fsdd","dspspeech20"]'


@dataclass(frozen=True)
class Ablation:
    name: str
    question: str
    config: str  # a file of training/configs
    overrides: tuple[str, ...] = ()
    init_from: str = ""  # another ablation's name: start from its model (stage 2)
    filtered: bool = False  # leave out the clips of --exclude-clips


ABLATIONS: tuple[Ablation, ...] = (
    Ablation("loss_softmax", "loss", "pretrain.toml", ('loss.name="softmax"', "loss.params={}")),
    Ablation("loss_amsoftmax", "loss", "pretrain.toml", ('loss.name="amsoftmax"', "loss.params={}")),
    Ablation("loss_proto", "loss", "pretrain.toml", ('loss.name="proto"', "loss.params={}")),
    Ablation("loss_angleproto", "loss", "pretrain.toml", ('loss.name="angleproto"', "loss.params={}")),
    Ablation("loss_ap_softmax", "loss; stage 1", "pretrain.toml", ('loss.name="angleproto_softmax"',)),
    Ablation("one_stage_english", "stages", "pretrain.toml", (f"data.datasets={ENGLISH}", "data.english_only=true", "train.words_per_batch=16")),
    Ablation("two_stage", "stages", "finetune.toml", (), init_from="loss_ap_softmax"),
    Ablation("filtered_ap_softmax", "filtering", "pretrain.toml", ('loss.name="angleproto_softmax"',), filtered=True),
    Ablation("filtered_two_stage", "filtering", "finetune.toml", (), init_from="filtered_ap_softmax", filtered=True),
)  # fmt: skip


@dataclass(frozen=True)
class AblationSettings:
    """What every run of one ablation set shares."""

    pack: str  # feature pack of 1 s windows
    out: Path = Path("runs/ablations")
    device: str = "auto"
    epochs: int = 25  # stage-1 and one-stage runs
    finetune_epochs: int = 10  # stage-2 runs
    exclude_clips: str = ""  # the filter report of the filtering runs
    extra_overrides: tuple[str, ...] = ()  # for every run
    configs_dir: Path = CONFIGS_DIR


def ablation_config(ablation: Ablation, settings: AblationSettings) -> TrainingConfig:
    """The resolved training config of one ablation run."""
    overrides = [
        f"data.pack={json.dumps(settings.pack)}", "data.augment=false", "data.random_placement=false",
        "data.optional_roots=[]", "data.num_workers=0", f"run.device={json.dumps(settings.device)}",
        f"run.name={json.dumps(ablation.name)}", f"run.out_dir={json.dumps(str(settings.out))}",
        "run.progress=false", "run.threads=0",
        f"train.epochs={settings.finetune_epochs if ablation.init_from else settings.epochs}",
        *ablation.overrides, *settings.extra_overrides,
    ]  # fmt: skip
    if ablation.filtered:
        overrides.append(f"data.exclude_clips={json.dumps(settings.exclude_clips)}")
    if ablation.init_from:
        start = settings.out / ablation.init_from / "model.pt"
        overrides.append(f"run.init_from={json.dumps(str(start))}")
    return load_config(settings.configs_dir / ablation.config, overrides)


def run_ablations(settings: AblationSettings, only: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    """Train the chosen ablations in table order; `<out>/ablations.json` gathers their times and metrics."""
    from training.checkpoint import ship_checkpoint
    from training.train import train

    chosen = [a for a in ABLATIONS if not only or a.name in only]
    unknown = sorted(set(only) - {a.name for a in ABLATIONS})
    if unknown:
        raise ValueError(f"--only: no ablation named {unknown}; names: {[a.name for a in ABLATIONS]}")
    if any(a.filtered for a in chosen) and not settings.exclude_clips:
        raise ValueError("the filtering runs need --exclude-clips (a `kws-train data filter` report)")
    out = settings.out
    summary_path = out / "ablations.json"  # runs of earlier calls (e.g. `--only`) are kept
    summary: dict[str, dict[str, object]] = (
        json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    )
    for ablation in chosen:
        config = ablation_config(ablation, settings)
        began = time.monotonic()
        result = train(config)
        seconds = round(time.monotonic() - began, 1)
        source = result.best_path or result.last_path
        ship_checkpoint(source, out / ablation.name / "model.pt")
        summary[ablation.name] = {
            "question": ablation.question, "config": ablation.config, "overrides": list(ablation.overrides),
            "init_from": ablation.init_from, "filtered": ablation.filtered, "seconds": seconds,
            "best": str(source), "best_metrics": result.best_metrics,
        }  # fmt: skip
        log.info("%s: %.0f s, best %s", ablation.name, seconds, result.best_metrics)
        summary_path.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ablations", description=__doc__.splitlines()[0])
    parser.add_argument("--pack", required=True, help="feature pack of 1 s windows (kws-train data pack)")
    parser.add_argument("--exclude-clips", default="", help="the filter report for the filtering runs")
    parser.add_argument("--out", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--epochs", type=int, default=25, help="stage-1 and one-stage epochs")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="stage-2 epochs")
    parser.add_argument(
        "--only", nargs="*", default=[], help="run only these (names in training/ablations.py)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = AblationSettings(
        args.pack,
        args.out,
        args.device,
        args.epochs,
        args.finetune_epochs,
        args.exclude_clips,
        tuple(args.set),
    )
    run_ablations(settings, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
