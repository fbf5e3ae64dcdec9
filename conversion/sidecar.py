"""The converted model's sidecar JSON (docs/ARCHITECTURE.md, "Converted model") and atomic file output.

`build_sidecar` fills every field of the contract that `edge.model.load_model` reads (written, like every file
here, with `edge.fileio`'s atomic writes: temporary file, fsync, rename); `publish_pair` moves a verified
model and its sidecar into the output folder, keeping the previous pair as `*.prev`.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.fileio import atomic_write_bytes, atomic_write_json
from edge.model import SIDECAR_FORMAT, sidecar_path_for
from training.export import ModelSource

__all__ = [
    "SIDECAR_FIELDS",
    "SIDECAR_FORMAT",
    "build_sidecar",
    "publish_pair",
    "read_sidecar",
    "sidecar_path_for",
]

SIDECAR_FIELDS = (
    "format",
    "model_file",
    "model_sha256",
    "checkpoint_sha256",
    "model_name",
    "frontend",
    "frontend_fingerprint",
    "window_seconds",
    "window_samples",
    "frames",
    "n_mfcc",
    "embedding_dim",
    "feature_mean",
    "feature_std",
    "input_quantization",
    "output_quantization",
    "vocabulary",
    "teacher",
    "verification",
    "created",
)


def build_sidecar(
    source: ModelSource,
    model_file: str,
    model_bytes: bytes,
    input_quantization: dict[str, Any],
    output_quantization: dict[str, Any],
    verification: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "model_file": model_file,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "checkpoint_sha256": source.checkpoint_sha256,
        "model_name": source.model_name,
        "frontend": source.frontend.to_dict(),
        "frontend_fingerprint": source.frontend.fingerprint,
        "window_seconds": source.window_seconds,
        "window_samples": source.window_samples,
        "frames": source.frames,
        "n_mfcc": source.frontend.n_mfcc,
        "embedding_dim": source.embedding_dim,
        "feature_mean": [float(v) for v in source.feature_mean],
        "feature_std": [float(v) for v in source.feature_std],
        "input_quantization": {
            "scale": float(input_quantization["scale"]),
            "zero_point": int(input_quantization["zero_point"]),
        },
        "output_quantization": {
            "scale": float(output_quantization["scale"]),
            "zero_point": int(output_quantization["zero_point"]),
        },
        "vocabulary": {corpus: list(words) for corpus, words in source.vocabulary.items()},
        "teacher": source.teacher,
        "verification": verification,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra:
        sidecar["conversion"] = extra
    return sidecar


def read_sidecar(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sidecar JSON beside the model")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    missing = [name for name in SIDECAR_FIELDS if not isinstance(raw, dict) or name not in raw]
    if missing:
        raise ValueError(f"{path}: missing sidecar field(s) {missing}")
    if raw["format"] != SIDECAR_FORMAT:
        raise ValueError(f"{path}: format {raw['format']!r}, expected {SIDECAR_FORMAT!r}")
    return dict(raw)


def publish_pair(model_path: Path, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Copy a verified model and its sidecar to `<out_dir>/<name>.tflite|.json`, keeping the previous pair.

    Each file goes through a temporary name and a rename; the sidecar is written last, so a reader that
    checks the sha256 (edge.model) never accepts a model whose sidecar is not yet in place.
    """
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    model_bytes = model_path.read_bytes()
    sidecar = json.loads(sidecar_path_for(model_path).read_text())
    sidecar["model_file"] = f"{name}.tflite"
    target_model = out_dir / f"{name}.tflite"
    target_sidecar = out_dir / f"{name}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    for existing in (target_model, target_sidecar):
        if existing.exists():
            os.replace(existing, existing.with_name(existing.name + ".prev"))
    atomic_write_bytes(target_model, model_bytes)
    atomic_write_json(target_sidecar, sidecar)
    return target_model, target_sidecar
