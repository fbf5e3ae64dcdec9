"""Which clips training may use, speaker splits, fixed-length windows and the torch `WindowDataset`.

The training data layer never hands out the benchmark (`gsc_v2_test`) or a clip of the ten English command
words: `training_clips` refuses the first and drops the second, and `WindowDataset` checks again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from training.data.clipcache import ClipStore, build_clip_store
from training.data.manifest import COMMAND_WORDS, Clip, read_manifest
from training.data.paths import cache_dir
from training.data.splits import speaker_split
from training.data.windows import fit_window, load_window, window_samples

__all__ = [
    "BENCHMARK_DATASETS",
    "COMMAND_WORDS",
    "NOISE_DATASETS",
    "Augment",
    "WindowDataset",
    "check_trainable",
    "load_window",
    "noise_files",
    "select_trainable",
    "speaker_split",
    "training_clips",
]

log = logging.getLogger(__name__)

BENCHMARK_DATASETS = frozenset({"gsc_v2_test"})
NOISE_DATASETS = frozenset({"gsc_noise"})
DEFAULT_MARGIN_SECONDS = 0.25

Augment = Callable[[npt.NDArray[np.float32], np.random.Generator], npt.NDArray[np.float32]]


def _is_word(label: str) -> bool:
    return not label.split(":")[-1].startswith("_")  # _silence_, _noise_, _unknown_ are not words


def check_trainable(clips: Sequence[Clip]) -> None:
    """Raise ValueError when any clip is benchmark data, an English command word or not a word."""
    benchmark = [str(c.path) for c in clips if c.dataset in BENCHMARK_DATASETS]
    commands = [str(c.path) for c in clips if c.label in COMMAND_WORDS]
    non_words = [str(c.path) for c in clips if c.dataset in NOISE_DATASETS or not _is_word(c.label)]
    for what, offenders in (
        ("benchmark (gsc_v2_test) clips", benchmark),
        ("clips of the ten English command words", commands),
        ("clips that are not words (noise, silence)", non_words),
    ):
        if offenders:
            listed = "\n  ".join(offenders[:20])
            raise ValueError(f"refusing to train on {len(offenders)} {what}:\n  {listed}")


def training_clips(
    roots: Sequence[Path],
    datasets: Sequence[str] | None = None,
    exclude_words: Sequence[str] = (),
    *,
    exclude_splits: Sequence[str] = (),
) -> list[Clip]:
    """Clips of the word corpora under `roots` that training may use.

    `datasets` None means every word corpus found except the benchmark. Asking for `gsc_v2_test` (or for a
    noise corpus, or one that no root holds) raises ValueError. Clips whose label is an English command word
    (`yes`; `ar:yes` is Arabic speech and stays) or a non-word (`_silence_`) are dropped with a warning, as are
    clips whose label is in `exclude_words` (labels, e.g. `zero` or `ar:zero`). `exclude_splits` drops clips
    by their manifest `split` (e.g. `("test",)` keeps fsdd's and arabic_sc's own test parts for evaluation).
    """
    if isinstance(roots, (str, Path)):
        roots = [Path(roots)]
    clips: list[Clip] = []
    for root in roots:
        clips.extend(read_manifest(Path(root)))
    return select_trainable(
        clips, datasets, exclude_words, exclude_splits=exclude_splits, source=str(list(map(str, roots)))
    )


def select_trainable(
    clips: Sequence[Clip],
    datasets: Sequence[str] | None = None,
    exclude_words: Sequence[str] = (),
    *,
    exclude_splits: Sequence[str] = (),
    source: str = "the given clips",
) -> list[Clip]:
    """`training_clips` on clips already read (from manifests or a feature pack); `source` names them in
    errors."""
    if datasets is not None:
        if isinstance(datasets, str):
            datasets = [datasets]
        refused = sorted(set(datasets) & BENCHMARK_DATASETS)
        if refused:
            raise ValueError(
                f"refusing {refused}: it is the benchmark; only training/evaluation reads it, never training"
            )
        noise = sorted(set(datasets) & NOISE_DATASETS)
        if noise:
            raise ValueError(f"{noise} is not a word corpus: use noise_files(root) for augmentation")
    available = sorted({clip.dataset for clip in clips})
    if datasets is not None:
        unknown = sorted(set(datasets) - set(available))
        if unknown:
            raise ValueError(f"dataset(s) {unknown} not found in {source}; found {available}")
        wanted = set(datasets)
    else:
        wanted = set(available) - BENCHMARK_DATASETS - NOISE_DATASETS
    dropped_splits = set(exclude_splits)
    selected = [clip for clip in clips if clip.dataset in wanted and clip.split not in dropped_splits]
    excluded = {word.strip().lower() for word in exclude_words}
    dropped = {
        "English command words": [c for c in selected if c.label in COMMAND_WORDS],
        "non-words": [c for c in selected if not _is_word(c.label)],
        "excluded words": [c for c in selected if c.label in excluded],
    }
    for reason, offenders in dropped.items():
        if offenders:
            log.warning("training_clips: dropped %d clip(s) of %s", len(offenders), reason)
    drop = {id(c) for offenders in dropped.values() for c in offenders}
    kept = [clip for clip in selected if id(clip) not in drop]
    keys = [clip.key for clip in kept]
    if len(set(keys)) != len(keys):
        raise ValueError("training_clips: two roots hold the same dataset/path; give each corpus once")
    check_trainable(kept)
    return kept


def noise_files(root: Path) -> list[Path]:
    """The background-noise recordings (`gsc_noise`) of a data root, for augmentation."""
    return [clip.path for clip in read_manifest(Path(root)) if clip.dataset in NOISE_DATASETS]


class WindowDataset(Dataset[dict[str, Any]]):
    """Fixed-length windows of training clips: items `{"audio": float32 [L], "label": int, "key": str}`.

    Decoded audio is cached (see `clipcache`); unreadable clips are skipped, logged and listed in `skipped`.
    With `random_placement`, short clips land at a random offset and long ones at a random crop around their
    speech; `augment(audio, rng)` then runs. Randomness comes from (seed, epoch, index), so a run is repeatable;
    call `set_epoch` each epoch (DataLoader workers must be re-created per epoch to see it).
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        window_seconds: float,
        *,
        label_to_index: Mapping[str, int] | None = None,
        augment: Augment | None = None,
        random_placement: bool = False,
        seed: int = 0,
        cache_root: Path | str | None = "default",
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        progress: bool = True,
    ) -> None:
        check_trainable(clips)
        self.window_seconds = float(window_seconds)
        self.window_samples = window_samples(window_seconds)
        root = cache_dir() if cache_root == "default" else (None if cache_root is None else Path(cache_root))
        self.store: ClipStore = build_clip_store(
            clips, self.window_samples, window_samples(margin_seconds), root, progress
        )
        by_key = {clip.key: clip for clip in clips}
        self.clips: list[Clip] = [by_key[key] for key in self.store.keys]
        self.skipped: list[tuple[str, str]] = list(self.store.skipped)
        if label_to_index is None:
            label_to_index = {label: i for i, label in enumerate(sorted({c.label for c in self.clips}))}
        unknown = sorted({c.label for c in self.clips} - set(label_to_index))
        if unknown:
            raise ValueError(f"WindowDataset: labels {unknown[:20]} are not in label_to_index")
        self.label_to_index: dict[str, int] = dict(label_to_index)
        self.labels: list[int] = [self.label_to_index[c.label] for c in self.clips]
        self.augment = augment
        self.random_placement = random_placement
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng_for(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def window(self, index: int, rng: np.random.Generator | None = None) -> npt.NDArray[np.float32]:
        """The window of clip `index` without augmentation (centred unless `rng` is given)."""
        return fit_window(self.store.get(index), self.window_samples, rng)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng_for(index)
        audio = self.window(index, rng if self.random_placement else None)
        if self.augment is not None:
            audio = np.asarray(self.augment(audio, rng), dtype=np.float32)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio)),
            "label": self.labels[index],
            "key": self.clips[index].key,
        }

    def background_speech(self, rng: np.random.Generator) -> npt.NDArray[np.float32]:
        """A random clip's window, for mixing in as background speech."""
        return self.window(int(rng.integers(0, len(self))), rng)
