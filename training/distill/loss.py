"""The distillation term: how far the student's embeddings are from the teacher's.

`kind="cosine"`: 1 - cos(W s + b, t) per window, averaged, where s is the student embedding `[B, D]`, t the
teacher's `[B, T]` and W a linear projection D -> T. The projection lives in this module, not in the encoder:
it is trained alongside the encoder but never saved in its checkpoint nor exported (the trainer should put
this module's parameters in the optimizer and keep it out of the model it saves).

`kind="relational"`: mean squared difference between the `[B, B]` cosine-similarity matrices of the student
and of the teacher within the batch (off-diagonal entries). It has no parameters: it asks the student to
arrange the batch as the teacher does, whatever the embedding sizes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as functional
from torch import nn

__all__ = ["DISTILLATION_KINDS", "DistillationTerm", "pairwise_cosine", "relational_distance"]

DISTILLATION_KINDS = ("cosine", "relational")


def pairwise_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    normalised = functional.normalize(embeddings, dim=1)
    return normalised @ normalised.T


def relational_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the off-diagonal in-batch cosine similarities (0 when B < 2)."""
    batch = student.shape[0]
    if batch < 2:
        return student.sum() * 0.0
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student.device)
    difference = pairwise_cosine(student) - pairwise_cosine(teacher.to(student.dtype))
    return difference[off_diagonal].square().mean()


class DistillationTerm(nn.Module):
    """Distillation loss between student `[B, student_dim]` and teacher `[B, teacher_dim]` embeddings."""

    def __init__(
        self, student_dim: int, teacher_dim: int, kind: Literal["cosine", "relational"] | str = "cosine"
    ) -> None:
        super().__init__()
        if kind not in DISTILLATION_KINDS:
            raise ValueError(f"distillation kind must be one of {DISTILLATION_KINDS}, got {kind!r}")
        if student_dim <= 0 or teacher_dim <= 0:
            raise ValueError(
                f"embedding sizes must be positive, got student {student_dim}, teacher {teacher_dim}"
            )
        self.kind = kind
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        # Training-only head: never part of the encoder or its export.
        self.projection: nn.Linear | None = nn.Linear(student_dim, teacher_dim) if kind == "cosine" else None

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim != 2 or student.shape[1] != self.student_dim:
            raise ValueError(
                f"student embeddings: expected [B, {self.student_dim}], got {tuple(student.shape)}"
            )
        if teacher.shape != (student.shape[0], self.teacher_dim):
            raise ValueError(
                f"teacher embeddings: expected [{student.shape[0]}, {self.teacher_dim}], got {tuple(teacher.shape)}"
            )
        teacher = teacher.to(device=student.device, dtype=student.dtype)
        if self.projection is None:
            return relational_distance(student, teacher)
        projected = self.projection(student)
        return (1.0 - functional.cosine_similarity(projected, teacher, dim=1)).mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind}, student_dim={self.student_dim}, teacher_dim={self.teacher_dim}"
