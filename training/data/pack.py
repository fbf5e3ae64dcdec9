"""Feature packs: the MFCC windows of a clip selection in one compressed file, to train where the audio is not.

A pack holds, for every clip, its manifest row and the MFCC of its centred window (`edge.frontend`, the same
features the trainer's cache holds), quantised to uint8 with one affine step per coefficient. It exists so a
remote machine (a GPU box that cannot read `../shared/data`, or whose upload is small) can run the trainer
unchanged: `data.pack = "packs/real_1s.npz"` replaces the manifests and the audio, and every selection rule
(`data.datasets`, `english_only`, `exclude_words`, `exclude_clips`, the speaker split, the command-word and
benchmark refusals) still applies to the clips inside. The trade-off: no audio, so no augmentation, no
random placement and no distillation targets from a pack; random time shifts of the cached features remain.

Quantisation error is at most half a step per coefficient, about 0.2 % of each coefficient's range
(`tests/test_data_pack.py` checks it).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.fileio import atomic_write_bytes
from edge.frontend import FrontendConfig
from training.data.dataset import WindowDataset, check_trainable
from training.data.features import FeatureCache
from training.data.manifest import Clip

__all__ = ["PACK_FORMAT", "FeaturePack", "load_pack", "write_pack"]

log = logging.getLogger(__name__)

PACK_FORMAT = "udkws-feature-pack/1"
_CLIP_FIELDS = ("dataset", "word", "label", "speaker", "take", "split", "sample_rate", "seconds", "license")


@dataclass(frozen=True)
class FeaturePack:
    clips: list[Clip]  # paths under a virtual root named after the pack, so `clip.key` is the original key
    features: npt.NDArray[np.float16]  # [N, frames, n_mfcc], dequantised
    window_seconds: float
    frontend_fingerprint: str
    path: Path

    def rows_of(self, clips: Sequence[Clip]) -> npt.NDArray[np.int64]:
        """Row index of each clip (by key) in `features`."""
        index = {clip.key: row for row, clip in enumerate(self.clips)}
        return np.asarray([index[clip.key] for clip in clips], dtype=np.int64)


def _quantise(
    features: npt.NDArray[Any],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    data = np.asarray(features, dtype=np.float32)
    low = data.min(axis=(0, 1))
    high = data.max(axis=(0, 1))
    step = np.maximum(high - low, 1e-6) / 255.0
    codes = np.clip(np.rint((data - low) / step), 0, 255).astype(np.uint8)
    return codes, low.astype(np.float32), step.astype(np.float32)


def write_pack(clips: Sequence[Clip], window_seconds: float, path: Path, progress: bool = True) -> Path:
    """Pack the centred-window MFCC of `clips` (via the feature cache) into `path` (.npz), atomically."""
    check_trainable(clips)
    dataset = WindowDataset(clips, window_seconds, progress=progress)
    if dataset.skipped:
        log.warning("pack: %d unreadable clip(s) left out", len(dataset.skipped))
    features = FeatureCache().load_or_build(dataset, progress=progress).features
    codes, low, step = _quantise(features)
    rows = [
        {"key": clip.key, **{name: getattr(clip, name) for name in _CLIP_FIELDS}} for clip in dataset.clips
    ]
    meta = {
        "format": PACK_FORMAT,
        "window_seconds": float(window_seconds),
        "frontend": asdict(FrontendConfig()),
        "frontend_fingerprint": FrontendConfig().fingerprint,
        "clips": rows,
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, features=codes, low=low, step=step, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("pack: %d clips, %d bytes -> %s", len(rows), path.stat().st_size, path)
    return path


def load_pack(path: str | Path) -> FeaturePack:
    """Read a pack written by `write_pack`; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.pack: {path} does not exist (build it with `kws-train data pack`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(bytes(archive["meta"]).decode())
            codes, low, step = archive["features"], archive["low"], archive["step"]
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"data.pack: {path} is not a feature pack ({error})") from error
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"data.pack: {path} has format {meta.get('format')!r}, expected {PACK_FORMAT!r}")
    rows = meta["clips"]
    if codes.ndim != 3 or codes.shape[0] != len(rows):
        raise ValueError(f"data.pack: {path} holds {codes.shape} features for {len(rows)} clips")
    root = path.with_suffix("")
    clips = [
        Clip(path=root / row["key"], root=root, **{name: row[name] for name in _CLIP_FIELDS}) for row in rows
    ]
    features = (codes.astype(np.float32) * step + low).astype(np.float16)
    return FeaturePack(
        clips, features, float(meta["window_seconds"]), str(meta["frontend_fingerprint"]), path
    )
