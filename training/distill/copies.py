"""Training on augmented copies whose teacher targets are cached (`distill.augmented_copies`).

A centred-window target asks the student to map a noisy or reverberant take to where the teacher puts the
clean one. With `n` copies, `window_items(..., copies=n)` also caches the teacher's embedding of `n`
augmented versions of every training clip (`<key>#aug<i>`), each made by the data augmenter with an rng
derived from (seed, key, i); this dataset then serves, per clip and epoch, either the clean item or one of
those copies, rebuilt bit for bit, under the key of its own target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from training.distill.targets import augmented_key, copy_rng

__all__ = ["AugmentedCopies"]

Augment = Callable[[npt.NDArray[np.float32], np.random.Generator], npt.NDArray[Any]]


class _Labelled(Protocol):
    labels: list[int]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


class _Windows(Protocol):
    clips: list[Any]

    def window(self, index: int, rng: np.random.Generator | None = None) -> npt.NDArray[np.float32]: ...


class AugmentedCopies(Dataset[dict[str, Any]]):
    """Item `index` of epoch `e`: the clean item of `base` (probability 1 / (copies + 1)) or copy `i` of the
    clip, rebuilt as `augment(windows.window(index), copy_rng(key, i, seed))` with key `key#aug<i>`."""

    def __init__(self, base: _Labelled, windows: _Windows, copies: int, augment: Augment, seed: int) -> None:
        if copies < 1:
            raise ValueError(f"AugmentedCopies: copies must be >= 1, got {copies}")
        if len(base) != len(windows.clips):
            raise ValueError("AugmentedCopies: the base dataset and the windows must hold the same clips")
        self.base, self.windows, self.copies = base, windows, copies
        self.labels: list[int] = list(base.labels)
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return len(self.windows.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def choice(self, index: int) -> int:
        """0 = the clean item, i > 0 = copy i - 1."""
        return int(np.random.default_rng([self.seed, self.epoch, index, 1]).integers(0, self.copies + 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        choice = self.choice(index)
        if choice == 0:
            return self.base[index]
        copy = choice - 1
        key = self.windows.clips[index].key
        audio = self.augment(self.windows.window(index), copy_rng(key, copy, self.seed))
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "label": self.labels[index],
            "key": augmented_key(key, copy),
        }
