"""Arrange an N words x M takes batch as [N, M, D] by label, whatever order the sampler emitted."""

from __future__ import annotations

import torch

__all__ = ["group_by_label"]


def group_by_label(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N*M, D] + labels [N*M] -> [N, M, D]; every label must occur the same number M >= 2 of times."""
    if embeddings.ndim != 2 or labels.ndim != 1 or embeddings.shape[0] != labels.shape[0]:
        raise ValueError(
            f"expected embeddings [N*M, D] and labels [N*M], got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    takes = int(counts[0])
    if takes < 2 or bool((counts != takes).any()):
        raise ValueError(
            "prototypical losses need N words x M takes with M >= 2 and the same M for every word; "
            f"got takes per word {counts.tolist()}"
        )
    return embeddings[order].reshape(counts.numel(), takes, embeddings.shape[1])
