"""Encoders by registry name. Each takes normalised MFCC [B, frames, 40] and returns the embedding [B, D]
before L2 normalisation; each has a frozen config dataclass (`model.config`) that rebuilds it alone."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from torch import nn

from training.models.edge_tcn import EdgeTcn, EdgeTcnConfig
from training.models.macs import count_params_and_macs
from training.models.res15 import Res15, Res15Config

__all__ = ["MODELS", "build_model", "count_params_and_macs", "embedding_dim_of", "model_config_dict"]

# name -> (config dataclass, module class)
MODELS: dict[str, tuple[type[Any], type[nn.Module]]] = {
    "res15": (Res15Config, Res15),
    "edge_tcn": (EdgeTcnConfig, EdgeTcn),
}


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A fresh model from its registry name and a dict of its config fields (unknown fields are errors)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    config_class, model_class = MODELS[name]
    values = dict(config or {})
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"model {name!r}: unknown config field(s) {unknown}; known: {sorted(known)}")
    return model_class(config_class(**values))


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config as plain data (tuples become lists) for checkpoints and TOML."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return {key: plain(value) for key, value in asdict(model.config).items()}  # type: ignore[call-overload]


def embedding_dim_of(model: nn.Module) -> int:
    """The size of a registry model's embedding (DDP wrappers are looked through)."""
    encoder: Any = getattr(model, "module", model)
    return int(encoder.config.embedding_dim)
