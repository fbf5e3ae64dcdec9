"""Checkpoints: one `torch.save` dict per docs/ARCHITECTURE.md, written atomically and validated on load.

Besides the documented keys a checkpoint may hold `training_state` (optimizer, scheduler, epoch, loss
parameters) so that training can resume from it; the shipped checkpoint leaves it out to stay small.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge.frontend import DEFAULT_CONFIG, FrontendConfig
from training.models import MODELS, build_model, embedding_dim_of, model_config_dict

__all__ = ["FORMAT", "Checkpoint", "git_commit", "load_checkpoint", "save_checkpoint", "ship_checkpoint"]

log = logging.getLogger(__name__)

FORMAT = "udkws-checkpoint/1"
_REQUIRED = (
    "format",
    "model_name",
    "model_config",
    "state_dict",
    "frontend",
    "frontend_fingerprint",
    "window_seconds",
    "feature_mean",
    "feature_std",
    "embedding_dim",
    "vocabulary",
    "train_config",
    "git_commit",
    "metrics",
)


def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout holding this file (with `+dirty` when it has changes), or "unknown"."""
    where = repo or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head or "unknown"


@dataclass(frozen=True)
class Checkpoint:
    """A validated checkpoint. `build_model()` returns the encoder in eval mode with its weights."""

    path: Path
    model_name: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    frontend: FrontendConfig
    frontend_fingerprint: str
    window_seconds: float
    feature_mean: list[float]
    feature_std: list[float]
    embedding_dim: int
    vocabulary: dict[str, list[str]]
    train_config: dict[str, Any]
    git_commit: str
    metrics: dict[str, Any]
    teacher: dict[str, Any] | None = None
    training_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.frontend.sample_rate)

    @property
    def frames(self) -> int:
        return self.frontend.num_frames(self.window_samples)

    def build_model(self) -> nn.Module:
        model = build_model(self.model_name, self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def _as_float_list(values: Any, name: str, length: int) -> list[float]:
    as_list = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    if len(as_list) != length:
        raise ValueError(f"{name}: expected {length} values, got {len(as_list)}")
    return as_list


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    model_name: str,
    window_seconds: float,
    feature_mean: Sequence[float] | Any,
    feature_std: Sequence[float] | Any,
    vocabulary: Mapping[str, Sequence[str]],
    train_config: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    teacher: Mapping[str, Any] | None = None,
    frontend: FrontendConfig = DEFAULT_CONFIG,
    training_state: Mapping[str, Any] | None = None,
    commit: str | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, rename); returns the path.

    An existing file at `path` is kept as `<path>.prev` until the new one is in place.
    """
    if model_name not in MODELS:
        raise KeyError(f"unknown model {model_name!r}; known models: {', '.join(sorted(MODELS))}")
    path = Path(path)
    # Unwrap DistributedDataParallel so the keys carry no "module." prefix.
    encoder: nn.Module = getattr(model, "module", model)
    state = {key: value.detach().cpu().clone() for key, value in encoder.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model_name": model_name,
        "model_config": model_config_dict(encoder),
        "state_dict": state,
        "frontend": frontend.to_dict(),
        "frontend_fingerprint": frontend.fingerprint,
        "window_seconds": float(window_seconds),
        "feature_mean": _as_float_list(feature_mean, "feature_mean", frontend.n_mfcc),
        "feature_std": _as_float_list(feature_std, "feature_std", frontend.n_mfcc),
        "embedding_dim": embedding_dim_of(encoder),
        "vocabulary": {corpus: sorted(set(words)) for corpus, words in vocabulary.items()},
        "train_config": dict(train_config),
        "git_commit": commit if commit is not None else git_commit(),
        "metrics": dict(metrics or {}),
        "teacher": dict(teacher) if teacher is not None else None,
    }
    if training_state is not None:
        payload["training_state"] = dict(training_state)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o644)  # mkstemp makes 0600; checkpoints are shared and committed
        with os.fdopen(handle, "wb") as temp:
            temp.write(buffer.getvalue())
            temp.flush()
            os.fsync(temp.fileno())
        if path.exists():
            os.replace(path, path.with_name(path.name + ".prev"))
        os.replace(temp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    log.info("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a checkpoint; a missing, foreign or malformed file raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for foreign files
        raise ValueError(
            f"{path}: not a udkws checkpoint (torch.load failed: {type(error).__name__}: {error})"
        ) from error
    if not isinstance(payload, dict) or "format" not in payload:
        raise ValueError(f"{path}: not a udkws checkpoint (expected a dict with format {FORMAT!r})")
    if payload["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload['format']!r}, this code reads {FORMAT!r}")
    missing = [key for key in _REQUIRED if key not in payload]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks required key(s) {missing}")
    if payload["model_name"] not in MODELS:
        raise ValueError(
            f"{path}: model_name {payload['model_name']!r} is not a known model ({', '.join(sorted(MODELS))})"
        )
    try:
        frontend = FrontendConfig.from_dict(payload["frontend"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad frontend config: {error}") from error
    if frontend.fingerprint != payload["frontend_fingerprint"]:
        raise ValueError(
            f"{path}: frontend_fingerprint {payload['frontend_fingerprint']} does not match its frontend "
            f"config ({frontend.fingerprint})"
        )
    try:
        mean = _as_float_list(payload["feature_mean"], "feature_mean", frontend.n_mfcc)
        std = _as_float_list(payload["feature_std"], "feature_std", frontend.n_mfcc)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if min(std) <= 0.0:
        raise ValueError(f"{path}: feature_std must be positive, got minimum {min(std)}")
    window_seconds = float(payload["window_seconds"])
    if not 0.0 < window_seconds <= 10.0:
        raise ValueError(f"{path}: window_seconds {window_seconds} outside (0, 10]")
    return Checkpoint(
        path=path,
        model_name=payload["model_name"],
        model_config=dict(payload["model_config"]),
        state_dict=payload["state_dict"],
        frontend=frontend,
        frontend_fingerprint=payload["frontend_fingerprint"],
        window_seconds=window_seconds,
        feature_mean=mean,
        feature_std=std,
        embedding_dim=int(payload["embedding_dim"]),
        vocabulary={k: list(v) for k, v in payload["vocabulary"].items()},
        train_config=dict(payload["train_config"]),
        git_commit=str(payload["git_commit"]),
        metrics=dict(payload["metrics"]),
        teacher=payload.get("teacher"),
        training_state=payload.get("training_state"),
    )


def ship_checkpoint(source: str | Path, out: str | Path) -> Path:
    """Copy a checkpoint without its training state (optimizer, scheduler, loss heads): what is committed."""
    checkpoint = load_checkpoint(source)
    return save_checkpoint(
        out,
        model=checkpoint.build_model(),
        model_name=checkpoint.model_name,
        window_seconds=checkpoint.window_seconds,
        feature_mean=checkpoint.feature_mean,
        feature_std=checkpoint.feature_std,
        vocabulary=checkpoint.vocabulary,
        train_config=checkpoint.train_config,
        metrics=checkpoint.metrics,
        teacher=checkpoint.teacher,
        frontend=checkpoint.frontend,
        commit=checkpoint.git_commit,
    )
