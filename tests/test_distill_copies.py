"""Augmented copies with cached teacher targets: the loader rebuilds each copy bit for bit, and a
distillation run with `distill.augmented_copies` trains on clean clips and copies alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.test_train_run import tiny_overrides
from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.config import load_config
from training.data.augment import AugmentConfig, build_augmenter
from training.data.dataset import WindowDataset
from training.distill import teachers
from training.distill.copies import AugmentedCopies
from training.distill.targets import AUGMENT_SEPARATOR, TeacherTargets, dataset_items, window_items
from training.prepare import select_clips
from training.train import train


class ProjectionTeacher:
    """A deterministic stand-in teacher for 1 s windows: a fixed random projection, L2-normalised."""

    name = "projection"
    sha256 = "cd" * 32
    licence = "MIT"
    sample_rate = 16000
    window_samples = 16000
    embedding_dim = 24

    def __init__(self, model_path: Any = None) -> None:
        self.matrix = np.random.default_rng(7).standard_normal((16000, 24)).astype(np.float32)

    def embed(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = np.asarray(audio, np.float32) @ self.matrix
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def test_copies_are_rebuilt_exactly_and_all_served(
    kws_data_dir: Path,
    tmp_path: Path,
    isolated_cache: Path,
) -> None:
    overrides = tiny_overrides(kws_data_dir, tmp_path, "copies")
    clips = select_clips(load_config(None, [*overrides, "data.max_clips=12"]).data)
    windows = WindowDataset(clips, 1.0, progress=False)
    augment = build_augmenter(AugmentConfig(data_dir=str(kws_data_dir)), windows.background_speech)
    teacher = ProjectionTeacher()
    items = list(window_items(dataset_items(windows), copies=2, augment=augment, seed=3))
    targets = TeacherTargets.build(teacher, items, tmp_path / "teacher", progress=False)
    assert len(targets) == 3 * len(windows)
    copies = AugmentedCopies(windows, windows, copies=2, augment=augment, seed=3)
    served: set[str] = set()
    for epoch in range(6):
        copies.set_epoch(epoch)
        for index in range(len(copies)):
            item = copies[index]
            served.add(item["key"])
            expected = targets.lookup([item["key"]]).numpy()
            np.testing.assert_allclose(teacher.embed(item["audio"].numpy()[None]), expected, atol=2e-3)
            assert item["label"] == windows.labels[index]
    assert any(AUGMENT_SEPARATOR in key for key in served) and any(
        AUGMENT_SEPARATOR not in key for key in served
    )
    with pytest.raises(ValueError, match="copies"):
        AugmentedCopies(windows, windows, copies=0, augment=augment, seed=3)


def test_distillation_run_with_augmented_copies(
    kws_data_dir: Path,
    tmp_path: Path,
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(teachers.TEACHERS, "projection", ProjectionTeacher)
    overrides = [
        *tiny_overrides(kws_data_dir, tmp_path / "runs", "distil-copies"),
        "loss.weight=0",
        "distill.weight=1",
        "distill.teacher='projection'",
        f"distill.cache_dir='{tmp_path / 'teacher'}'",
        "distill.augmented_copies=1",
        "distill.jobs=2",
        "train.sampler='shuffle'",
        "train.epochs=1",
        "validate.select_on='distill_val'",
    ]
    result = train(load_config(None, overrides))
    targets = TeacherTargets.open(ProjectionTeacher.sha256, tmp_path / "teacher")
    cached = targets.keys()
    copy_keys = [key for key in cached if AUGMENT_SEPARATOR in key]
    clean_keys = [key for key in cached if AUGMENT_SEPARATOR not in key]
    assert len(copy_keys) >= 90 and len(clean_keys) == 120  # every training clip has a copy; validation none
    assert result.best_metrics["distill_val"] >= 0.0
