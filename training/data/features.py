"""MFCC windows computed once with `edge.frontend.mfcc` and cached as memory-mapped float16 .npy.

Layout: `cache/features/<frontend fingerprint>/<window samples>/<clip-set hash>/` holding `features.npy`
[clips, frames, n_mfcc] (float16), `index.json` (clip keys) and `stats.json` (per-coefficient mean and std).
A front-end change gives a new fingerprint and so a new folder: stale features are never read. Windows are
the deterministic ones of `WindowDataset.window` (centred padding, crop around the speech, no augmentation).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from edge.frontend import DEFAULT_CONFIG, FrontendConfig, mfcc
from training.data.clipcache import clip_store_key
from training.data.dataset import WindowDataset
from training.data.paths import cache_dir

__all__ = ["CachedFeatures", "FeatureCache", "feature_statistics"]

log = logging.getLogger(__name__)

STD_FLOOR = 1e-5  # a constant coefficient must not divide by zero when normalised


@dataclass(frozen=True)
class CachedFeatures:
    directory: Path
    keys: tuple[str, ...]
    features: npt.NDArray[np.float16]  # [clips, frames, n_mfcc], memory-mapped
    feature_mean: list[float]
    feature_std: list[float]
    hit: bool  # True when read from the cache, False when just computed


def feature_statistics(
    features: npt.NDArray[np.floating], chunk: int = 512
) -> tuple[list[float], list[float]]:
    """Per-coefficient mean and std over every frame of `features` [clips, frames, n] (float64 sums)."""
    if features.ndim != 3 or features.shape[0] == 0:
        raise ValueError(f"feature_statistics: expected non-empty [clips, frames, n], got {features.shape}")
    total = np.zeros(features.shape[2])
    total_sq = np.zeros(features.shape[2])
    for start in range(0, features.shape[0], chunk):
        block = np.asarray(features[start : start + chunk], dtype=np.float64).reshape(-1, features.shape[2])
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
    count = features.shape[0] * features.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.tolist(), np.maximum(std, STD_FLOOR).tolist()


def _write_json(path: Path, payload: object) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


class FeatureCache:
    """MFCC features of a `WindowDataset`'s clips, computed once per front end, window and clip set."""

    def __init__(
        self, cache_root: Path | str | None = None, frontend: FrontendConfig = DEFAULT_CONFIG
    ) -> None:
        self.root = Path(cache_root) if cache_root is not None else cache_dir()
        self.frontend = frontend

    def directory(self, window_samples: int, clips_key: str) -> Path:
        return self.root / "features" / self.frontend.fingerprint / str(window_samples) / clips_key

    def load_or_build(self, dataset: WindowDataset, progress: bool = True) -> CachedFeatures:
        keys = tuple(clip.key for clip in dataset.clips)
        clips_key = clip_store_key(dataset.clips, dataset.window_samples, 0)
        directory = self.directory(dataset.window_samples, clips_key)
        if (directory / "stats.json").is_file():
            log.info("feature cache hit: %s", directory)
            return self._load(directory, hit=True)
        log.info("feature cache miss: computing %s", directory)
        self._build(dataset, directory, keys, progress)
        return self._load(directory, hit=False)

    def _build(self, dataset: WindowDataset, directory: Path, keys: tuple[str, ...], progress: bool) -> None:
        frames = self.frontend.num_frames(dataset.window_samples)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shape = (len(dataset), frames, self.frontend.n_mfcc)
        out = np.lib.format.open_memmap(staging / "features.npy", mode="w+", dtype=np.float16, shape=shape)
        # One small matrix product per clip: BLAS threads only spin (7x the CPU time on 2 busy cores).
        with threadpool_limits(limits=1):
            for index in tqdm(
                range(len(dataset)), desc="MFCC", unit="clip", disable=not progress, mininterval=2.0
            ):
                out[index] = mfcc(dataset.window(index), config=self.frontend)
        out.flush()
        mean, std = feature_statistics(out)
        del out
        with open(staging / "features.npy", "rb+") as handle:
            os.fsync(handle.fileno())
        _write_json(staging / "index.json", {"keys": list(keys), "frontend": self.frontend.to_dict()})
        _write_json(staging / "stats.json", {"feature_mean": mean, "feature_std": std, "clips": len(keys)})
        try:
            os.rename(staging, directory)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _load(directory: Path, hit: bool) -> CachedFeatures:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        stats = json.loads((directory / "stats.json").read_text(encoding="utf-8"))
        return CachedFeatures(
            directory=directory,
            keys=tuple(index["keys"]),
            features=np.load(directory / "features.npy", mmap_mode="r"),
            feature_mean=list(stats["feature_mean"]),
            feature_std=list(stats["feature_std"]),
            hit=hit,
        )
