"""The distillation term: it trains, its head stays out of the student, the relational form on known values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.distill.loss import DistillationTerm, pairwise_cosine, relational_distance


def test_cosine_term_decreases_and_head_is_not_in_the_student() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 16))
    term = DistillationTerm(student_dim=16, teacher_dim=96, kind="cosine")
    inputs = torch.randn(64, 40)
    teacher = nn.functional.normalize(torch.tanh(inputs @ torch.randn(40, 96)), dim=1)
    optimizer = torch.optim.SGD(list(student.parameters()) + list(term.parameters()), lr=0.5)
    losses = []
    for _ in range(30):
        loss = term(student(inputs), teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert 0.0 <= losses[-1] < 0.6 * losses[0]
    assert not any(key.startswith("projection") for key in student.state_dict())
    assert set(term.state_dict()) == {"projection.weight", "projection.bias"}
    assert term.projection is not None and term.projection.weight.shape == (96, 16)


def test_cosine_term_is_zero_when_the_projection_hits_the_teacher() -> None:
    term = DistillationTerm(3, 3, kind="cosine")
    assert term.projection is not None
    with torch.no_grad():
        term.projection.weight.copy_(torch.eye(3))
        term.projection.bias.zero_()
    student = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        assert float(term(student, student)) == pytest.approx(0.0, abs=1e-6)
        assert float(term(student, teacher)) == pytest.approx(0.5)  # (0 + 1) / 2


def test_relational_term_on_known_matrices() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    expected_student = torch.tensor(
        [
            [1.0, 0.0, 1 / math.sqrt(2)],
            [0.0, 1.0, 1 / math.sqrt(2)],
            [1 / math.sqrt(2), 1 / math.sqrt(2), 1.0],
        ]
    )
    torch.testing.assert_close(pairwise_cosine(student), expected_student)
    # teacher similarities off the diagonal: (0,1)=1, (0,2)=0, (1,2)=0
    differences = torch.tensor([0.0 - 1.0, 1 / math.sqrt(2) - 0.0, 1 / math.sqrt(2) - 0.0])
    expected = float(differences.square().mean())  # each pair appears twice; the mean is the same
    term = DistillationTerm(2, 3, kind="relational")
    assert term.projection is None and len(list(term.parameters())) == 0
    assert float(term(student, teacher)) == pytest.approx(expected)
    assert float(relational_distance(student, teacher)) == pytest.approx(expected)
    # Rotating and scaling the student's arrangement, then embedding it in 3-d, leaves nothing to learn.
    rotated_in_3d = (student @ torch.tensor([[0.0, -1.0], [1.0, 0.0]]) * 3.0) @ torch.eye(2, 3)
    assert float(term(student, rotated_in_3d)) == pytest.approx(0.0, abs=1e-6)
    assert float(term(student[:1], teacher[:1])) == 0.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="one of"):
        DistillationTerm(8, 8, kind="l2")
    term = DistillationTerm(8, 4)
    with pytest.raises(ValueError, match=r"student embeddings: expected \[B, 8\]"):
        term(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"teacher embeddings: expected \[2, 4\]"):
        term(torch.zeros(2, 8), torch.zeros(3, 4))
