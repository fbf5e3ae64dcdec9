"""FeatureCache: computed once, read back on a hit, recomputed when the front end changes; statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.frontend import FrontendConfig, mfcc
from tests.data_fixtures import mini_corpus  # noqa: F401  (a fixture)
from training.data.dataset import WindowDataset, training_clips
from training.data.features import FeatureCache, feature_statistics


def test_feature_cache_hit_miss_and_invalidation(mini_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    dataset = WindowDataset(training_clips([mini_corpus]), 1.0, cache_root=tmp_path, progress=False)
    first = FeatureCache(tmp_path).load_or_build(dataset, progress=False)
    assert not first.hit
    assert first.features.shape == (len(dataset), 98, 40) and first.features.dtype == np.float16
    assert first.keys == tuple(c.key for c in dataset.clips)
    assert first.directory.relative_to(tmp_path).parts[:3] == (
        "features",
        FrontendConfig().fingerprint,
        "16000",
    )
    np.testing.assert_allclose(first.features[3], mfcc(dataset.window(3)), rtol=2e-3, atol=2e-2)
    second = FeatureCache(tmp_path).load_or_build(dataset, progress=False)
    assert second.hit and second.directory == first.directory
    assert second.feature_mean == first.feature_mean
    changed = FeatureCache(tmp_path, FrontendConfig(f_min_hz=60.0)).load_or_build(dataset, progress=False)
    assert not changed.hit and changed.directory != first.directory
    assert not np.allclose(changed.features[0], first.features[0])
    assert len(first.feature_mean) == len(first.feature_std) == 40
    flat = np.asarray(first.features, dtype=np.float64).reshape(-1, 40)
    np.testing.assert_allclose(first.feature_mean, flat.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(first.feature_std, flat.std(axis=0), rtol=1e-6)


def test_statistics_in_chunks_equal_numpy() -> None:
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(37, 11, 5))
    values[:, :, 4] = 1.5  # a constant coefficient: std floored, not zero
    mean, std = feature_statistics(values, chunk=8)
    np.testing.assert_allclose(mean, values.reshape(-1, 5).mean(axis=0))
    np.testing.assert_allclose(std[:4], values.reshape(-1, 5).std(axis=0)[:4])
    assert std[4] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="expected non-empty"):
        feature_statistics(np.zeros((0, 3, 4)))
