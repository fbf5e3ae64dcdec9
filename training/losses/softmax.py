"""Softmax cross-entropy over the training words, through a linear classifier on the embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SoftmaxLoss"]


class SoftmaxLoss(nn.Module):
    def __init__(self, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(embeddings)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, accuracy
