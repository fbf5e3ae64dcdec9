"""Angular prototypical loss (Chung et al. 2020), the loss of Jung et al.: logits are w * cos(query,
prototype) + b with a learnable scale w (kept positive by clamping) and bias b, initialised to 10 and -5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.losses.grouping import group_by_label

__all__ = ["AngularPrototypicalLoss"]

_MIN_SCALE = 1e-6


class AngularPrototypicalLoss(nn.Module):
    def __init__(
        self, embedding_dim: int = 0, num_classes: int = 0, init_scale: float = 10.0, init_bias: float = -5.0
    ) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_scale)))
        self.b = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def scale(self) -> torch.Tensor:
        """The scale actually applied: w clamped to stay positive, so a large step cannot flip the logits."""
        return self.w.clamp(min=_MIN_SCALE)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grouped = group_by_label(embeddings, labels)
        prototypes = grouped[:, :-1].mean(dim=1)
        queries = grouped[:, -1]
        cosine = F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).T
        logits = cosine * self.scale + self.b
        targets = torch.arange(grouped.shape[0], device=embeddings.device)
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, accuracy
