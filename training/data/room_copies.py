"""MFCC of augmented copies of every training window, computed once and cached (`data.room_copies`).

On a small CPU, augmenting and re-computing MFCC in every step would cost more than the step itself. Instead,
`copies` versions of each clip's clean window are made once by the `RoomAugmenter` (rooms, noise, shifts; see
training/data/room_augment.py), copy `c` of clip `key` from an rng derived from (seed, key, c), and cached as
float16 `[copies, clips, frames, n_mfcc]` with the shift of each copy in MFCC frames `[copies, clips]`. The
trainer then serves each clip either clean or as one of its copies (`MixedFeatureDataset`), always under the
clean clip's key: the teacher's targets come from the clean clip.

Layout: `cache/room_copies/<front end fingerprint>/<window samples>/<clip-set hash>-<augment digest>-c<copies>/`
holding `features.npy`, `shifts.npy` and `index.json` (written last: it marks the folder complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits
from torch.utils.data import Dataset
from tqdm import tqdm

from edge.frontend import DEFAULT_CONFIG, mfcc
from training.data.clipcache import clip_store_key
from training.data.paths import cache_dir
from training.data.room_augment import RoomAugmenter

__all__ = ["MixedFeatureDataset", "RoomCopies", "build_room_copies", "room_copy_rng"]

log = logging.getLogger(__name__)

HOP_SAMPLES = DEFAULT_CONFIG.hop_samples


def room_copy_rng(key: str, copy: int, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"room\0{seed}\0{key}\0{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class RoomCopies:
    directory: Path
    features: npt.NDArray[np.float16]  # [copies, clips, frames, n_mfcc], memory-mapped
    shifts: npt.NDArray[np.int16]  # [copies, clips] in MFCC frames (positive: the word came later)

    @property
    def copies(self) -> int:
        return int(self.features.shape[0])


# The fork-inherited state of the worker processes (dataset and augmenter are large; never pickled).
_WORKER: dict[str, Any] = {}


def _compute(chunk: tuple[int, int]) -> tuple[int, npt.NDArray[np.float16], npt.NDArray[np.int16]]:
    dataset, augmenter, copies, seed = (_WORKER[k] for k in ("dataset", "augmenter", "copies", "seed"))
    first, last = chunk
    frames = DEFAULT_CONFIG.num_frames(dataset.window_samples)
    features = np.empty((copies, last - first, frames, DEFAULT_CONFIG.n_mfcc), dtype=np.float16)
    shifts = np.empty((copies, last - first), dtype=np.int16)
    with threadpool_limits(limits=1):
        for row, index in enumerate(range(first, last)):
            clean = dataset.window(index)
            key = dataset.clips[index].key
            for copy in range(copies):
                audio, shift = augmenter(clean, room_copy_rng(key, copy, seed))
                features[copy, row] = mfcc(audio)
                shifts[copy, row] = round(shift / HOP_SAMPLES)
    return first, features, shifts


def build_room_copies(
    dataset: Any,
    augmenter: RoomAugmenter,
    copies: int,
    seed: int,
    jobs: int = 1,
    cache_root: Path | None = None,
    progress: bool = True,
    chunk: int = 256,
) -> RoomCopies:
    """The cached copies of `dataset` (a `WindowDataset`), computing them when missing (`jobs` processes)."""
    if copies < 1:
        raise ValueError(f"build_room_copies: copies must be >= 1, got {copies}")
    tag = hashlib.sha256(
        json.dumps([augmenter.config.digest(), list(augmenter.sources), seed]).encode()
    ).hexdigest()[:12]
    clips_key = clip_store_key(dataset.clips, dataset.window_samples, 0)
    root = (cache_root or cache_dir()) / "room_copies" / DEFAULT_CONFIG.fingerprint
    directory = root / str(dataset.window_samples) / f"{clips_key}-{tag}-c{copies}"
    if not (directory / "index.json").is_file():
        _build(dataset, augmenter, copies, seed, jobs, directory, progress, chunk)
    else:
        log.info("room copies cache hit: %s", directory)
    return RoomCopies(
        directory,
        np.load(directory / "features.npy", mmap_mode="r"),
        np.load(directory / "shifts.npy", mmap_mode="r"),
    )


def _build(
    dataset: Any, augmenter: RoomAugmenter, copies: int, seed: int, jobs: int, directory: Path, progress: bool,
    chunk: int,
) -> None:  # fmt: skip
    frames = DEFAULT_CONFIG.num_frames(dataset.window_samples)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shape = (copies, len(dataset), frames, DEFAULT_CONFIG.n_mfcc)
    features = np.lib.format.open_memmap(staging / "features.npy", mode="w+", dtype=np.float16, shape=shape)
    shifts = np.zeros((copies, len(dataset)), dtype=np.int16)
    chunks = [(start, min(start + chunk, len(dataset))) for start in range(0, len(dataset), chunk)]
    _WORKER.update(dataset=dataset, augmenter=augmenter, copies=copies, seed=seed)
    bar = tqdm(total=len(dataset), desc=f"room copies (x{copies})", unit="clip", disable=not progress)
    try:
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                for first, block, block_shifts in pool.imap_unordered(_compute, chunks):
                    features[:, first : first + block.shape[1]] = block
                    shifts[:, first : first + block.shape[1]] = block_shifts
                    bar.update(block.shape[1])
        else:
            for piece in chunks:
                first, block, block_shifts = _compute(piece)
                features[:, first : first + block.shape[1]] = block
                shifts[:, first : first + block.shape[1]] = block_shifts
                bar.update(block.shape[1])
    finally:
        bar.close()
        _WORKER.clear()
    features.flush()
    del features
    np.save(staging / "shifts.npy", shifts)
    index = {"keys": [clip.key for clip in dataset.clips], "copies": copies, "seed": seed,
             "augment": augmenter.config.__dict__, "sources": list(augmenter.sources)}  # fmt: skip
    (staging / "index.json").write_text(json.dumps(index, default=list), encoding="utf-8")
    try:
        os.rename(staging, directory)
    except OSError:  # built concurrently by another process: keep theirs
        shutil.rmtree(staging, ignore_errors=True)


class MixedFeatureDataset(Dataset[dict[str, Any]]):
    """Each clip, per epoch, clean (probability 1 - `share`) or as one of its cached room copies; then the
    cached-feature path's random shift of up to `shift_frames`. Items: `features`, `label`, `key` (always the
    clean clip's: its teacher targets), `shift` (MFCC frames the word moved, for frame-sequence targets)."""

    def __init__(self, base: Any, copies: RoomCopies, share: float) -> None:
        if copies.features.shape[1] != len(base):
            raise ValueError(f"room copies hold {copies.features.shape[1]} clips, the dataset {len(base)}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"data.room_share must be in [0, 1], got {share}")
        self.base, self.copies, self.share = base, copies, share
        self.labels = base.labels
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.base.seed, self.epoch, index, 7])
        if rng.random() >= self.share:
            return self.base[index]
        copy = int(rng.integers(0, self.copies.copies))
        window = np.asarray(self.copies.features[copy, index], dtype=np.float32)
        item = self.base.shifted(window, index)
        item["shift"] = int(item.get("shift", 0)) + int(self.copies.shifts[copy, index])
        return item


def with_room_copies(config: Any, seed: int, data: Any, progress: bool = True) -> Any:
    """`data` (a `PreparedData`) whose training source serves room copies when `config.room_copies` > 0."""
    if config.room_copies <= 0:
        return data
    from dataclasses import replace

    from training.data.corpora import resolve_root
    from training.data.room_augment import RoomAugmentConfig, load_room_augmenter

    augmenter = load_room_augmenter(
        resolve_root(config.rooms), RoomAugmentConfig.from_dict(config.room_params)
    )
    copies = build_room_copies(
        data.train, augmenter, config.room_copies, seed, config.room_jobs, progress=progress
    )
    return replace(data, train_source=MixedFeatureDataset(data.train_source, copies, config.room_share))
