"""PNG plots of a protocol run: DET curves (one per k) and score histograms (target vs non-target)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.evaluation.metrics import det_curve, eer_with_threshold
from training.evaluation.protocol import ProtocolResult
from training.figures import save_figure

__all__ = ["plot_det", "plot_score_histograms"]

# Normal-deviate axis ticks (in %), as DET plots usually show them.
DET_TICKS = (0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95)
RATE_FLOOR = 1e-4


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _probit(rates: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    from scipy.stats import norm

    return np.asarray(norm.ppf(np.clip(rates, RATE_FLOOR, 1.0 - RATE_FLOOR)), dtype=np.float64)


def _save(figure: Any, path: Path) -> Path:
    return save_figure(figure, path, dpi=120)


def plot_det(result: ProtocolResult, path: Path) -> Path:
    """FRR against FAR on normal-deviate axes, one curve per k (trials pooled over seeds), EER marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.0, 6.0))
    for shots in sorted(result.positive_scores):
        positive, negatives = result.trials(shots)
        negative = np.concatenate(list(negatives.values()))
        curve = det_curve(positive, negative)
        rate, _ = eer_with_threshold(positive, negative)
        axes.plot(_probit(curve.far), _probit(curve.frr), label=f"k = {shots} (EER {100 * rate:.1f} %)")
    ticks = _probit(np.array(DET_TICKS) / 100.0)
    labels = [f"{tick:g}" for tick in DET_TICKS]
    axes.set_xticks(ticks, labels)
    axes.set_yticks(ticks, labels)
    limits = (float(ticks[0]), float(ticks[-1]))
    axes.set_xlim(*limits)
    axes.set_ylim(*limits)
    axes.plot(limits, limits, color="grey", linewidth=0.8, linestyle=":", label="FAR = FRR")
    axes.set_xlabel("false acceptance rate (%)")
    axes.set_ylabel("false rejection rate (%)")
    axes.set_title(f"DET: {result.name}", fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)


def plot_score_histograms(result: ProtocolResult, path: Path) -> Path:
    """Per k: densities of target-trial scores and of non-target scores (other targets, unknowns, silence)."""
    plt = _pyplot()
    shots_list = sorted(result.positive_scores)
    figure, axes_list = plt.subplots(1, len(shots_list), figsize=(4.5 * len(shots_list), 3.6), squeeze=False)
    for axes, shots in zip(axes_list[0], shots_list, strict=True):
        positive, negatives = result.trials(shots)
        every = np.concatenate([positive, *negatives.values()])
        bins = np.linspace(float(every.min()), float(every.max()), 60)
        axes.hist(positive, bins=bins, density=True, alpha=0.55, label="target (own keyword)")
        for kind, scores in negatives.items():
            axes.hist(
                scores, bins=bins, density=True, histtype="step", linewidth=1.4, label=f"non-target: {kind}"
            )
        _, threshold = eer_with_threshold(positive, np.concatenate(list(negatives.values())))
        axes.axvline(threshold, color="black", linestyle="--", linewidth=0.8, label="EER threshold")
        axes.set_title(f"k = {shots}", fontsize=9)
        axes.set_xlabel("score")
        axes.set_ylabel("density")
    axes_list[0][0].legend(fontsize=7)
    figure.suptitle(f"score distributions: {result.name}", fontsize=9)
    figure.tight_layout()
    try:
        return _save(figure, Path(path))
    finally:
        plt.close(figure)
