"""Angular prototypical plus softmax with configurable weights (the paper's best pre-training loss);
accuracy is the angular prototypical one, the figure that matches few-shot use."""

from __future__ import annotations

import torch
from torch import nn

from training.losses.angular_prototypical import AngularPrototypicalLoss
from training.losses.softmax import SoftmaxLoss

__all__ = ["AngularPrototypicalSoftmaxLoss"]


class AngularPrototypicalSoftmaxLoss(nn.Module):
    def __init__(
        self, embedding_dim: int, num_classes: int, ap_weight: float = 1.0, softmax_weight: float = 1.0
    ) -> None:
        super().__init__()
        if ap_weight < 0 or softmax_weight < 0 or ap_weight + softmax_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got {ap_weight}, {softmax_weight}")
        self.ap_weight = ap_weight
        self.softmax_weight = softmax_weight
        self.angular = AngularPrototypicalLoss()
        self.softmax = SoftmaxLoss(embedding_dim, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ap_loss, ap_accuracy = self.angular(embeddings, labels)
        softmax_loss, _ = self.softmax(embeddings, labels)
        return self.ap_weight * ap_loss + self.softmax_weight * softmax_loss, ap_accuracy
