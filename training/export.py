"""ONNX export of a trained encoder: a fixed input `[1, frames, n_mfcc]`, one self-contained file.

The torch side of `kws-convert`. `ModelSource` bundles the float model with everything the converted model's
sidecar needs (front end, window, feature statistics, vocabulary, teacher); `load_model_source` builds it from
a checkpoint file via `training.checkpoint.load_checkpoint`, after checks that give a clear error for a missing,
unreadable or foreign file and for a front end that differs from `edge/frontend.py`.

The legacy TorchScript exporter (`dynamo=False`, opset 17) is used on purpose: measured with torch 2.13 and
onnx2tf 1.29.24, the dynamo exporter's graph of a small conv encoder fails in onnx2tf at its `Linear` layer
(`node_linear`: "Exception encountered when calling layer tf.linalg.matmul"), the legacy graph converts cleanly.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.fileio import atomic_write_bytes, file_sha256
from edge.frontend import FrontendConfig, num_frames

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "CheckpointError",
    "ModelSource",
    "export_onnx",
    "file_sha256",
    "load_model_source",
]

log = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "embedding"
ONNX_OPSET = 17


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, foreign, or built for another front end."""


@dataclass(frozen=True)
class ModelSource:
    """A float encoder and the facts about it that conversion and the sidecar need."""

    model: torch.nn.Module
    model_name: str
    window_seconds: float
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]
    embedding_dim: int
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    teacher: dict[str, Any] | None = None
    checkpoint_path: str = ""
    checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        n_mfcc = self.frontend.n_mfcc
        for name in ("feature_mean", "feature_std"):
            values = np.asarray(getattr(self, name), dtype=np.float64)
            if values.shape != (n_mfcc,) or not np.all(np.isfinite(values)):
                raise CheckpointError(f"{name}: expected {n_mfcc} finite floats, got shape {values.shape}")
        if min(self.feature_std) <= 0.0:
            raise CheckpointError("feature_std: every value must be > 0")
        if self.window_seconds <= 0 or self.frames < 1:
            raise CheckpointError(f"window_seconds: {self.window_seconds} gives no MFCC frame")
        if self.embedding_dim < 1:
            raise CheckpointError(f"embedding_dim: expected a positive int, got {self.embedding_dim}")

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.frontend.sample_rate)

    @property
    def frames(self) -> int:
        return num_frames(self.window_samples, self.frontend)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.frames, self.frontend.n_mfcc)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """MFCC frames `[..., frames, n_mfcc]` to the encoder's input, float32."""
        mean = np.asarray(self.feature_mean, dtype=np.float32)
        std = np.asarray(self.feature_std, dtype=np.float32)
        normalised: np.ndarray = ((features - mean) / std).astype(np.float32)
        return normalised

    @torch.no_grad()
    def embed_features(self, normalised: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Float embeddings (not normalised) of normalised features `[N, frames, n_mfcc]`."""
        self.model.eval()
        chunks = [
            self.model(torch.from_numpy(np.ascontiguousarray(normalised[start : start + batch_size]))).numpy()
            for start in range(0, normalised.shape[0], batch_size)
        ]
        return np.concatenate(chunks).astype(np.float32)


def check_frontend(recorded: dict[str, Any], fingerprint: str | None, where: str) -> FrontendConfig:
    """The recorded front end must be exactly the one in `edge/frontend.py` (the board computes that one)."""
    try:
        config = FrontendConfig.from_dict(dict(recorded))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: field 'frontend' is not a valid FrontendConfig ({error})") from error
    current = FrontendConfig().fingerprint
    if fingerprint is not None and fingerprint != config.fingerprint:
        raise CheckpointError(
            f"{where}: 'frontend_fingerprint' {fingerprint} does not match its own 'frontend' ({config.fingerprint})"
        )
    if config.fingerprint != current:
        raise CheckpointError(
            f"{where}: trained with front end {config.fingerprint}, but edge/frontend.py is now {current}; "
            "the board would compute different features. Retrain, or restore the front end it was trained with."
        )
    return config


def load_model_source(path: str | Path) -> ModelSource:
    """The float encoder of a udkws checkpoint file, with its metadata; clear errors for bad files."""
    from training.checkpoint import load_checkpoint

    path = Path(path)
    try:
        checkpoint = load_checkpoint(path)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(str(error)) from error
    frontend = check_frontend(checkpoint.frontend.to_dict(), checkpoint.frontend_fingerprint, str(path))
    try:
        model = checkpoint.build_model()
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: cannot rebuild model {checkpoint.model_name!r} ({error})") from error
    return ModelSource(
        model=model.eval(),
        model_name=checkpoint.model_name,
        window_seconds=checkpoint.window_seconds,
        feature_mean=tuple(checkpoint.feature_mean),
        feature_std=tuple(checkpoint.feature_std),
        embedding_dim=checkpoint.embedding_dim,
        frontend=frontend,
        vocabulary=dict(checkpoint.vocabulary),
        teacher=checkpoint.teacher,
        checkpoint_path=str(path),
        checkpoint_sha256=file_sha256(path),
    )


def export_onnx(source: ModelSource, target: str | Path, check_tolerance: float = 1e-4) -> Path:
    """Write `source.model` as ONNX with the fixed input `[1, frames, n_mfcc]`; check it with onnxruntime.

    The file is self-contained (no external weights) and replaced atomically.
    """
    import onnx
    import onnxruntime

    target = Path(target)
    model = source.model.eval()
    example = torch.from_numpy(
        np.random.default_rng(0).standard_normal(source.input_shape).astype(np.float32)
    )
    with tempfile.TemporaryDirectory(prefix="udkws-onnx-") as scratch:
        scratch_file = Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(scratch_file),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
        proto = onnx.load(str(scratch_file))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
    with torch.no_grad():
        torch_out = model(example).numpy()
    if onnx_out.shape != (1, source.embedding_dim):
        raise ValueError(
            f"ONNX export: output shape {onnx_out.shape}, expected (1, {source.embedding_dim}) (embedding_dim)"
        )
    error = float(np.max(np.abs(onnx_out - torch_out)))
    scale = float(np.max(np.abs(torch_out))) or 1.0
    if error > check_tolerance * max(1.0, scale):
        raise ValueError(
            f"ONNX export: onnxruntime differs from torch by {error:.3g} (tolerance {check_tolerance})"
        )
    atomic_write_bytes(target, data)
    log.info("ONNX %s: input %s, max |onnx - torch| = %.2g", target, source.input_shape, error)
    return target
