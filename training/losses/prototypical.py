"""Prototypical loss (Snell et al. 2017): takes 0..M-2 of each word form its prototype, the last take is the
query, logits are negative squared Euclidean distances from each query to every prototype in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.losses.grouping import group_by_label

__all__ = ["PrototypicalLoss"]


class PrototypicalLoss(nn.Module):
    def __init__(self, embedding_dim: int = 0, num_classes: int = 0) -> None:
        super().__init__()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grouped = group_by_label(embeddings, labels)
        prototypes = grouped[:, :-1].mean(dim=1)
        queries = grouped[:, -1]
        logits = -torch.cdist(queries, prototypes).pow(2)
        targets = torch.arange(grouped.shape[0], device=embeddings.device)
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, accuracy
