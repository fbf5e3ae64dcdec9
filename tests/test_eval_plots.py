"""DET and score-histogram plots are written as real, non-empty PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.eval_fixtures import RecordingScorer, one_hot_embeddings, synthetic_set
from training.evaluation.plots import plot_det, plot_score_histograms
from training.evaluation.protocol import run_protocol

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path: Path) -> None:
    eval_set = synthetic_set()
    embeddings = one_hot_embeddings(eval_set, 0.6)
    result = run_protocol(
        RecordingScorer(embeddings), eval_set, (1, 5), (0, 1), name="noisy one-hot", progress=False
    )
    for plot, name in ((plot_det, "det.png"), (plot_score_histograms, "scores.png")):
        path = plot(result, tmp_path / "out" / name)
        assert path == tmp_path / "out" / name
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000  # axes, curves and legend, not a blank canvas
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "out" / "det.png")
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert float(np.std(image[..., :3])) > 0.01
    assert not list((tmp_path / "out").glob(".*tmp*"))  # no temporary file left behind
