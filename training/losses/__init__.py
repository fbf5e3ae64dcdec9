"""Metric-learning losses by registry name, voxceleb_trainer style: each is an nn.Module built as
`cls(embedding_dim, num_classes, **params)` with `forward(embeddings [N*M, D], labels [N*M]) -> (loss,
accuracy)`, the batch being N words x M takes."""

from __future__ import annotations

from typing import Any

from torch import nn

from training.losses.amsoftmax import AMSoftmaxLoss
from training.losses.angular_prototypical import AngularPrototypicalLoss
from training.losses.combined import AngularPrototypicalSoftmaxLoss
from training.losses.prototypical import PrototypicalLoss
from training.losses.softmax import SoftmaxLoss

__all__ = ["LOSSES", "build_loss"]

LOSSES: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxLoss,
    "amsoftmax": AMSoftmaxLoss,
    "proto": PrototypicalLoss,
    "angleproto": AngularPrototypicalLoss,
    "angleproto_softmax": AngularPrototypicalSoftmaxLoss,
}


def build_loss(name: str, embedding_dim: int, num_classes: int, **params: Any) -> nn.Module:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}")
    try:
        return LOSSES[name](embedding_dim, num_classes, **params)
    except TypeError as error:
        raise ValueError(f"loss {name!r}: bad parameters {sorted(params)}: {error}") from error
