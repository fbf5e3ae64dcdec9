"""List the clips of a checkpoint's held-out (validation) speakers, for `kws-edge threshold --clips FILE`.

The training run splits its clips by speaker (`training.prepare.select_clips` + `speaker_split`, with the
run's own data config, which the checkpoint stores). The default threshold must be measured on the speakers
that split held out, so this tool rebuilds exactly that split and prints the manifest paths of its validation
clips, one per line. Never lists gsc_v2_test (the training data layer refuses it).

    .venv/bin/python tests/tools/held_out_clips.py runs/c1/edge/best.pt > build/held_out_clips.txt
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import DataConfig  # noqa: E402
from training.data.dataset import speaker_split  # noqa: E402
from training.data.paths import kws_data_dir  # noqa: E402
from training.prepare import select_clips  # noqa: E402


def held_out_paths(checkpoint_path: Path) -> list[str]:
    checkpoint = load_checkpoint(checkpoint_path)
    stored = checkpoint.train_config.get("data", {})
    known = {f.name for f in fields(DataConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known}
    config = DataConfig(**values)
    _, validation = speaker_split(select_clips(config), config.val_fraction, config.split_seed)
    # Recorded speech only: generated corpora (corpora/synthetic) are not speakers a threshold is measured on,
    # and their paths do not resolve under the data directory that `kws-edge threshold` reads.
    data_root = kws_data_dir(config.data_dir or None).resolve()
    recorded = [clip for clip in validation if clip.root.resolve() == data_root]
    return sorted(str(clip.path.relative_to(clip.root)) for clip in recorded)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: held_out_clips.py CHECKPOINT.pt > held_out_clips.txt")
    print("\n".join(held_out_paths(Path(sys.argv[1]))))
