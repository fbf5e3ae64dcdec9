"""Everything the trainer needs from the data layer: clips, the speaker split, datasets, feature statistics,
validation features and the collate step that turns (augmented) audio into normalised MFCC batches."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from edge.frontend import FrontendConfig, mfcc
from training.config import DataConfig
from training.data.dataset import WindowDataset, select_trainable, speaker_split, training_clips
from training.data.features import FeatureCache, feature_statistics
from training.data.manifest import Clip
from training.data.paths import MANIFEST_NAME, REPO_ROOT, kws_data_dir

__all__ = [
    "CachedFeatureDataset",
    "MfccCollate",
    "PreparedData",
    "corpus_roots",
    "prepare_data",
    "select_clips",
]

log = logging.getLogger(__name__)


def corpus_roots(config: DataConfig) -> list[Path]:
    """The shared data directory, every `extra_roots` corpus, and the `optional_roots` that exist. Each entry is
    a registered corpus name (`training.data.corpora`: "kokoro", "speechocean762", ...) or a path."""
    from training.data.corpora import resolve_root

    roots = [kws_data_dir(config.data_dir or None)]
    for extra in config.extra_roots:
        path = resolve_root(extra)
        if not (path / MANIFEST_NAME).is_file():
            raise FileNotFoundError(f"data.extra_roots: {path} holds no {MANIFEST_NAME}")
        roots.append(path)
    for optional in config.optional_roots:
        path = resolve_root(optional)
        if (path / MANIFEST_NAME).is_file():
            roots.append(path)
        else:
            log.info("optional corpus %s not found; training without it", path)
    return roots


def _repo_path(text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def excluded_clip_keys(source: str) -> set[str]:
    """Clip keys from `data.exclude_clips`: a text file (one key per line, `#` comments) or the JSON report of
    `kws-train data filter` (its `dropped_clips`)."""
    path = _repo_path(source)
    if not path.is_file():
        raise FileNotFoundError(f"data.exclude_clips: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            dropped = json.loads(text)["dropped_clips"]
            return {str(entry["key"]) for entry in dropped}
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"data.exclude_clips: {path} is not a filter report with dropped_clips[].key ({error})"
            ) from error
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def select_clips(config: DataConfig, available: Sequence[Clip] | None = None) -> list[Clip]:
    """The training clips `config` selects, from the manifests of its roots or from `available` (a pack)."""
    datasets = list(config.datasets) or None
    if available is None:
        clips = training_clips(corpus_roots(config), datasets, config.exclude_words)
    else:
        clips = select_trainable(available, datasets, config.exclude_words, source=f"data.pack {config.pack}")
    if config.exclude_clips:
        excluded = excluded_clip_keys(config.exclude_clips)
        before = len(clips)
        clips = [clip for clip in clips if clip.key not in excluded]
        log.info("data.exclude_clips: %d of %d clips left out", before - len(clips), before)
    if config.english_only:
        clips = [clip for clip in clips if ":" not in clip.label]
    if config.max_clips > 0 and len(clips) > config.max_clips:
        # Round-robin over labels so a small subset keeps many words with several takes.
        by_label: dict[str, list[Clip]] = defaultdict(list)
        for clip in sorted(clips, key=lambda c: c.key):
            by_label[clip.label].append(clip)
        for label, group in by_label.items():  # alternate speakers, so held-out speakers remain possible
            rank_in_speaker: dict[str, int] = defaultdict(int)
            order = []
            for clip in group:
                order.append((rank_in_speaker[clip.speaker], clip.key, clip))
                rank_in_speaker[clip.speaker] += 1
            by_label[label] = [clip for _, _, clip in sorted(order, key=lambda item: item[:2])]
        subset: list[Clip] = []
        depth = 0
        while len(subset) < config.max_clips:
            layer = [group[depth] for _, group in sorted(by_label.items()) if depth < len(group)]
            if not layer:
                break
            subset.extend(layer[: config.max_clips - len(subset)])
            depth += 1
        clips = subset
    if not clips:
        raise ValueError(f"no training clips selected by {config}")
    return clips


class PackedWindows:
    """The clips of a feature pack in `WindowDataset`'s shape (clips, labels, label_to_index), without audio."""

    def __init__(self, clips: Sequence[Clip], label_to_index: dict[str, int] | None = None) -> None:
        self.clips = list(clips)
        if label_to_index is None:
            label_to_index = {label: i for i, label in enumerate(sorted({c.label for c in self.clips}))}
        self.label_to_index = dict(label_to_index)
        self.labels = [self.label_to_index[clip.label] for clip in self.clips]

    def __len__(self) -> int:
        return len(self.clips)


class CachedFeatureDataset(Dataset[dict[str, Any]]):
    """Un-augmented training windows from the feature cache: items `{"features", "label", "key"}`.

    The fast path when `data.augment` and `data.random_placement` are off (no MFCC per step): the only
    variation is a random time shift of up to `shift_frames` frames (zero-filled, like padding the audio).
    """

    def __init__(
        self, windows: WindowDataset | PackedWindows, features: npt.NDArray[Any], shift_frames: int, seed: int
    ) -> None:
        if features.shape[0] != len(windows):
            raise ValueError(f"feature cache holds {features.shape[0]} windows for {len(windows)} clips")
        self.features = np.asarray(features, dtype=np.float16)  # ~0.12 GB for all of ../shared/data
        self.labels = windows.labels
        self.keys = [clip.key for clip in windows.clips]
        self.shift_frames = shift_frames
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.shifted(self.features[index].astype(np.float32), index)

    def shifted(self, window: npt.NDArray[np.float32], index: int) -> dict[str, Any]:
        """The item of clip `index` with `window` (its clean features, or a room copy's) randomly shifted;
        `shift` is the shift in frames (positive: later), which frame-sequence targets follow."""
        shift = 0
        if self.shift_frames > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            shift = int(rng.integers(-self.shift_frames, self.shift_frames + 1))
            if shift:
                # Silence in MFCC terms is the log floor, not zero: repeat the edge frame instead.
                window = np.roll(window, shift, axis=0)
                if shift > 0:
                    window[:shift] = window[shift]
                else:
                    window[shift:] = window[shift - 1]
        return {
            "features": torch.from_numpy(window),
            "label": self.labels[index],
            "key": self.keys[index],
            "shift": shift,
        }


class MfccCollate:
    """Batch of items -> (features [B, frames, n_mfcc] normalised, labels [B], keys, shifts [B]).

    Items carry either `audio` (augmented on the fly: MFCC computed here, in the DataLoader workers) or
    cached `features`; `shift` (frames the window moved against the clean one the targets come from) is 0
    where an item has none.
    """

    def __init__(self, feature_mean: Sequence[float], feature_std: Sequence[float]) -> None:
        self.mean = np.asarray(feature_mean, dtype=np.float32)
        self.std = np.asarray(feature_std, dtype=np.float32)

    def __call__(
        self, items: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
        raw = [
            item["features"].numpy() if "features" in item else mfcc(item["audio"].numpy()) for item in items
        ]
        features = np.stack([(window - self.mean) / self.std for window in raw])
        labels = torch.tensor([item["label"] for item in items], dtype=torch.long)
        shifts = torch.tensor([int(item.get("shift", 0)) for item in items], dtype=torch.long)
        return torch.from_numpy(features.astype(np.float32)), labels, [item["key"] for item in items], shifts


@dataclass(frozen=True)
class PreparedData:
    train: WindowDataset | PackedWindows
    train_source: WindowDataset | CachedFeatureDataset  # what the DataLoader reads
    val: WindowDataset | PackedWindows | None  # held-out speakers' clips of the training words
    val_features: torch.Tensor | None  # normalised [N, frames, n_mfcc]
    val_labels: list[int]
    val_names: list[str]
    label_to_index: dict[str, int]
    vocabulary: dict[str, list[str]]
    feature_mean: list[float]
    feature_std: list[float]


def prepare_data(
    config: DataConfig,
    seed: int,
    feature_stats: tuple[list[float], list[float]] | None = None,
    progress: bool = True,
) -> PreparedData:
    """Select, split and load the clips; `feature_stats` (mean, std) overrides the training-set statistics
    (fine-tuning keeps those of the checkpoint it starts from)."""
    if config.pack:
        return _prepare_from_pack(config, seed, feature_stats)
    from training.data.augment import AugmentConfig, build_augmenter  # audio only: not needed with a pack

    clips = select_clips(config)
    train_clips, val_clips = speaker_split(clips, config.val_fraction, config.split_seed)
    log.info("clips: %d training, %d validation (held-out speakers)", len(train_clips), len(val_clips))
    train = WindowDataset(
        train_clips,
        config.window_seconds,
        random_placement=config.random_placement,
        seed=seed,
        progress=progress,
    )
    cache = FeatureCache()
    cached_train = cache.load_or_build(train, progress=progress)
    if feature_stats is None:
        feature_mean, feature_std = cached_train.feature_mean, cached_train.feature_std
    else:
        feature_mean, feature_std = feature_stats
    train_source: WindowDataset | CachedFeatureDataset = train
    if not config.augment and not config.random_placement:
        train_source = CachedFeatureDataset(train, cached_train.features, config.shift_frames, seed)
    if config.augment:
        augment_config = AugmentConfig.from_dict(dict(config.augment_params))
        if config.data_dir and augment_config.data_dir is None:
            augment_config = replace(augment_config, data_dir=config.data_dir)
        train.augment = build_augmenter(augment_config, train.background_speech)
    known_val = [clip for clip in val_clips if clip.label in train.label_to_index]
    val: WindowDataset | None = None
    val_raw = None
    if known_val:
        val = WindowDataset(known_val, config.window_seconds, progress=progress)
        val_raw = cache.load_or_build(val, progress=progress).features
    return _assemble(train, train_source, val, val_raw, feature_mean, feature_std)


def _assemble(
    train: WindowDataset | PackedWindows,
    train_source: WindowDataset | CachedFeatureDataset,
    val: WindowDataset | PackedWindows | None,
    val_raw: npt.NDArray[Any] | None,
    feature_mean: Sequence[float],
    feature_std: Sequence[float],
) -> PreparedData:
    """`PreparedData` from the chosen clips; `val_raw` is the validation clips' un-normalised MFCC."""
    val_features = None
    val_names: list[str] = []
    val_labels: list[int] = []
    if val is not None and val_raw is not None:
        mean = np.asarray(feature_mean, dtype=np.float32)
        std = np.asarray(feature_std, dtype=np.float32)
        val_features = torch.from_numpy((np.asarray(val_raw, dtype=np.float32) - mean) / std)
        val_names = [clip.label for clip in val.clips]
        val_labels = [train.label_to_index[name] for name in val_names]
    vocabulary: dict[str, set[str]] = defaultdict(set)
    for clip in train.clips:
        vocabulary[clip.dataset].add(clip.word)
    return PreparedData(
        train=train,
        train_source=train_source,
        val=val,
        val_features=val_features,
        val_labels=val_labels,
        val_names=val_names,
        label_to_index=train.label_to_index,
        vocabulary={corpus: sorted(words) for corpus, words in sorted(vocabulary.items())},
        feature_mean=[float(v) for v in feature_mean],
        feature_std=[float(v) for v in feature_std],
    )


def _prepare_from_pack(
    config: DataConfig, seed: int, feature_stats: tuple[list[float], list[float]] | None
) -> PreparedData:
    from training.data.pack import load_pack

    pack = load_pack(_repo_path(config.pack))
    if abs(pack.window_seconds - config.window_seconds) > 1e-9:
        raise ValueError(
            f"data.pack {pack.path} holds {pack.window_seconds} s windows but data.window_seconds is "
            f"{config.window_seconds}"
        )
    if config.augment or config.random_placement:
        raise ValueError(
            f"data.pack {pack.path} holds fixed MFCC windows, no audio: set data.augment = false and "
            "data.random_placement = false (data.shift_frames still applies)"
        )
    if pack.frontend_fingerprint != FrontendConfig().fingerprint:
        raise ValueError(
            f"data.pack {pack.path} was made with front end {pack.frontend_fingerprint}, this one is "
            f"{FrontendConfig().fingerprint}: rebuild the pack"
        )
    clips = select_clips(config, pack.clips)
    train_clips, val_clips = speaker_split(clips, config.val_fraction, config.split_seed)
    log.info("pack clips: %d training, %d validation (held-out speakers)", len(train_clips), len(val_clips))
    train = PackedWindows(train_clips)
    train_features = pack.features[pack.rows_of(train.clips)]
    if feature_stats is None:
        feature_mean, feature_std = feature_statistics(train_features)
    else:
        feature_mean, feature_std = feature_stats
    train_source = CachedFeatureDataset(train, train_features, config.shift_frames, seed)
    known_val = [clip for clip in val_clips if clip.label in train.label_to_index]
    val = PackedWindows(known_val, train.label_to_index) if known_val else None
    val_raw = pack.features[pack.rows_of(val.clips)] if val is not None else None
    return _assemble(train, train_source, val, val_raw, feature_mean, feature_std)
