"""Additive-margin softmax (Wang et al. 2018): cosine logits, margin m on the true class, scale s."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AMSoftmaxLoss"]


class AMSoftmaxLoss(nn.Module):
    def __init__(
        self, embedding_dim: int, num_classes: int, margin: float = 0.3, scale: float = 15.0
    ) -> None:
        super().__init__()
        self.margin = margin
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))
        margins = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype) * self.margin
        loss = F.cross_entropy(self.scale * (cosine - margins), labels)
        accuracy = (cosine.argmax(dim=1) == labels).float().mean()
        return loss, accuracy
