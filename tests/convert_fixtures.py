"""Shared pieces of the conversion tests: a tiny random edge_tcn checkpoint with realistic feature statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conversion.calibration import CALIBRATION_DIR, load_calibration_set
from edge.frontend import FrontendConfig, mfcc
from training.checkpoint import save_checkpoint
from training.models.edge_tcn import EdgeTcn, EdgeTcnConfig

TINY_CONFIG = EdgeTcnConfig(stem_channels=16, blocks=((16, 1), (24, 2)), embedding_dim=16)


def feature_statistics() -> tuple[list[float], list[float]]:
    """Per-coefficient MFCC mean/std of the committed calibration windows (stands in for training data)."""
    windows = load_calibration_set(CALIBRATION_DIR).windows[::10]
    features = np.concatenate([mfcc(window) for window in windows])
    return features.mean(axis=0).tolist(), (features.std(axis=0) + 1e-3).tolist()


def make_tiny_checkpoint(path: Path, seed: int = 0, frontend: FrontendConfig | None = None) -> Path:
    """A random edge_tcn (Conv1d, depthwise, BatchNorm, ReLU, add, mean pool, Linear) saved as a checkpoint."""
    torch.manual_seed(seed)
    model = EdgeTcn(TINY_CONFIG).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            # Non-trivial statistics, so folding BatchNorm at export is exercised.
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    mean, std = feature_statistics()
    return save_checkpoint(
        path,
        model=model,
        model_name="edge_tcn",
        window_seconds=1.5,
        feature_mean=mean,
        feature_std=std,
        vocabulary={"arabic_sc": ["ar:zero"], "gsc_v1_words": ["bed", "cat"]},
        train_config={"purpose": "conversion test"},
        metrics={},
        frontend=frontend or FrontendConfig(),
        commit="test",
    )
