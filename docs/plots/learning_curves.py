"""docs/learning_curves.png: what more data of which kind buys, from the runs behind docs/RESULTS.md.

Left: benchmark EER (k = 5, mean over 3 enrollment draws) against the number of distinct words the encoder
learnt from, for label training (the paper's recipe) and for distillation. Right: the distillation term on
held-out speakers per epoch of the distillation runs. Reads the git-ignored run folders; run from the repo
root after the runs: `.venv/bin/python docs/plots/learning_curves.py`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RUNS = Path("runs")
# (label, distinct words, results.json) -- word counts from each checkpoint's vocabulary
LABELS = [
    ("res15, AP+softmax, English only", 26, "ablations/eval/abl_one_stage_english"),
    ("res15, AM-softmax, all real", 80, "ablations/eval/abl_loss_amsoftmax"),
    ("edge_tcn, AP+softmax, all real", 80, "distill/eval/L_labels"),
]
DISTILL = [
    ("real only (ZR16)", 80, "distill/eval/ZR16_distill_real_noshift_16ep"),
    ("+ 50 synthetic words (Z)", 130, "distill/eval/Z_distill_synth_noshift_12ep"),
    ("+ 1,000 synthetic words (shipped)", 1080, "s11/eval-last"),
]
CURVES = [
    ("real only, 80 words (ZR16)", "distill/ZR16_distill_real_noshift_16ep/log.csv"),
    ("+ 50 synthetic words (Z)", "distill/Z_distill_synth_noshift_12ep/log.csv"),
    ("+ 1,000 synthetic words (shipped)", "s11/edge_synth16/log.csv"),
]


def eer5(folder: str) -> float:
    data = json.loads((RUNS / folder / "results.json").read_text())
    return 100 * float(data["shots"]["5"]["mean"]["eer"])


def main() -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points, style in (("labels (paper recipe)", LABELS, "s"), ("distillation", DISTILL, "o-")):
        present = [(w, eer5(f), label) for label, w, f in points if (RUNS / f / "results.json").is_file()]
        left.plot([p[0] for p in present], [p[1] for p in present], style, label=name)
        for words, eer, label in present:
            offset = (-150, -12) if words > 500 else (4, 4)
            left.annotate(label, (words, eer), fontsize=7, xytext=offset, textcoords="offset points")
    left.axhline(8.9, color="grey", linestyle="--", linewidth=1)
    left.annotate("teacher (EfficientWord-Net, MSWC)", (30, 8.9), fontsize=7, xytext=(0, 3), textcoords="offset points")
    left.axhline(4.0, color="grey", linestyle=":", linewidth=1)
    left.annotate("goal", (30, 4.0), fontsize=7, xytext=(0, 3), textcoords="offset points")
    left.set_xscale("log")
    left.set_xlabel("distinct training words (log)")
    left.set_ylabel("benchmark EER, k = 5 (%)")
    left.set_ylim(0, 35)
    left.legend(fontsize=8)
    for label, path in CURVES:
        log_path = RUNS / path
        if not log_path.is_file():
            continue
        with open(log_path, newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("distill_val")]
        right.plot([int(r["epoch"]) + 1 for r in rows], [float(r["distill_val"]) for r in rows], label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("distillation term on the run's own held-out clips")
    right.set_title("slopes, not levels, compare: the held-out sets differ", fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig("docs/learning_curves.png", dpi=120)


if __name__ == "__main__":
    main()
