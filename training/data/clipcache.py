"""Decoded 16 kHz clips, trimmed around their speech, cached as one memory-mapped int16 array.

A training epoch reads every clip; decoding ~11k FLAC files (and resampling the 8 kHz ones) each time would
dominate. The cache stores each clip cut to at most `window + 2 * margin` samples around its speech (enough
for random crops and shifts), keyed by the window length, the manifests' hashes and the clip list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import TARGET_RATE, load_audio
from training.data.manifest import Clip, manifest_hash
from training.data.paths import MANIFEST_NAME
from training.data.windows import speech_crop_start

__all__ = ["ClipStore", "build_clip_store", "clip_store_key"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INT16_SCALE = 32767.0


@dataclass(frozen=True)
class ClipStore:
    """Clip i is `audio[offsets[i]:offsets[i + 1]]` (int16); `skipped` lists unreadable clips and why."""

    keys: tuple[str, ...]
    audio: npt.NDArray[np.int16]
    offsets: npt.NDArray[np.int64]
    skipped: tuple[tuple[str, str], ...]

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, index: int) -> npt.NDArray[np.float32]:
        segment = self.audio[self.offsets[index] : self.offsets[index + 1]]
        return segment.astype(np.float32) / np.float32(INT16_SCALE)


def _root_hashes(clips: Sequence[Clip]) -> dict[str, str]:
    hashes = {}
    for root in sorted({clip.root for clip in clips}):
        manifest = root / MANIFEST_NAME
        hashes[str(root)] = manifest_hash(root) if manifest.is_file() else "no-manifest"
    return hashes


def clip_store_key(clips: Sequence[Clip], window_samples: int, margin_samples: int) -> str:
    payload = {
        "version": FORMAT_VERSION,
        "window_samples": window_samples,
        "margin_samples": margin_samples,
        "manifests": _root_hashes(clips),
        "clips": [clip.key for clip in clips],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _trimmed(clip: Clip, keep: int, window: int) -> npt.NDArray[np.int16]:
    audio = load_audio(clip.path, TARGET_RATE)
    if audio.shape[0] > keep:
        start = max(0, speech_crop_start(audio, window) - (keep - window) // 2)
        start = min(start, audio.shape[0] - keep)
        audio = audio[start : start + keep]
    if not np.all(np.isfinite(audio)):
        raise ValueError("non-finite samples")
    return np.clip(np.round(audio * INT16_SCALE), -32768, 32767).astype(np.int16)


def _decode_all(
    clips: Sequence[Clip], window: int, margin: int, progress: bool
) -> tuple[list[str], list[npt.NDArray[np.int16]], list[tuple[str, str]]]:
    keys: list[str] = []
    segments: list[npt.NDArray[np.int16]] = []
    skipped: list[tuple[str, str]] = []
    for clip in tqdm(clips, desc="decoding clips", unit="clip", disable=not progress, mininterval=2.0):
        try:
            segments.append(_trimmed(clip, window + 2 * margin, window))
        except (OSError, ValueError, RuntimeError) as error:
            log.warning("skipping unreadable clip %s: %s", clip.path, error)
            skipped.append((clip.key, str(error)))
            continue
        keys.append(clip.key)
    if skipped:
        log.warning("skipped %d unreadable clip(s) of %d", len(skipped), len(clips))
    return keys, segments, skipped


def _save(
    directory: Path, keys: list[str], segments: list[npt.NDArray[np.int16]], skipped: list[tuple[str, str]]
) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    offsets = np.zeros(len(segments) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([segment.shape[0] for segment in segments])
    audio = np.concatenate(segments) if segments else np.zeros(0, dtype=np.int16)
    for name, array in (("audio.npy", audio), ("offsets.npy", offsets)):
        with open(staging / name, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
    with open(staging / "index.json", "w", encoding="utf-8") as handle:
        json.dump({"version": FORMAT_VERSION, "keys": keys, "skipped": skipped}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.rename(staging, directory)
    except OSError:  # another process finished the same cache first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)


def _load(directory: Path) -> ClipStore:
    index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    return ClipStore(
        keys=tuple(index["keys"]),
        audio=np.load(directory / "audio.npy", mmap_mode="r"),
        offsets=np.load(directory / "offsets.npy"),
        skipped=tuple((key, reason) for key, reason in index["skipped"]),
    )


def build_clip_store(
    clips: Sequence[Clip],
    window_samples: int,
    margin_samples: int,
    cache_root: Path | None,
    progress: bool = True,
) -> ClipStore:
    """Decode `clips` once (or reuse the cache under `cache_root/windows/...`); None keeps it in memory only."""
    if cache_root is not None:
        key = clip_store_key(clips, window_samples, margin_samples)
        directory = Path(cache_root) / "windows" / str(window_samples) / key
        if (directory / "index.json").is_file():
            log.info("clip cache hit: %s", directory)
            return _load(directory)
        log.info("clip cache miss: building %s", directory)
    keys, segments, skipped = _decode_all(clips, window_samples, margin_samples, progress)
    if cache_root is None:
        offsets = np.zeros(len(segments) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([segment.shape[0] for segment in segments])
        audio = np.concatenate(segments) if segments else np.zeros(0, dtype=np.int16)
        return ClipStore(tuple(keys), audio, offsets, tuple(skipped))
    _save(directory, keys, segments, skipped)
    return _load(directory)
