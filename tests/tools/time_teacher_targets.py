"""Time the teacher targets of the real training clips from an empty cache, in N processes.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python tests/tools/time_teacher_targets.py --jobs 2

Measured 110 s for the 11,031 real clips with 2 processes on the free 2-core development machine (the
synthetic corpus's 52,000 clips run at the same rate per clip); `make train`'s time in the model card uses it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from training.data.dataset import WindowDataset, training_clips  # noqa: E402
from training.data.paths import kws_data_dir  # noqa: E402
from training.distill.targets import TeacherTargets, dataset_items  # noqa: E402
from training.distill.teachers import load_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    clips = training_clips([kws_data_dir()])
    windows = WindowDataset(clips, 1.5, progress=False)
    with tempfile.TemporaryDirectory() as empty_cache:
        began = time.monotonic()
        load = partial(load_teacher, "efficientword-net")
        targets = TeacherTargets.build_parallel(
            load(), dataset_items(windows), empty_cache, args.jobs, False, load_teacher=load
        )
        seconds = time.monotonic() - began
    print(f"{len(clips)} clips, {len(targets)} targets, {seconds:.1f} s with {args.jobs} process(es)")


if __name__ == "__main__":
    main()
