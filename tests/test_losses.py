"""Losses: the shared contract, learning on a toy batch, AP's positive scale, the registry."""

from __future__ import annotations

import pytest
import torch

from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.losses import LOSSES, build_loss
from training.losses.angular_prototypical import AngularPrototypicalLoss
from training.losses.grouping import group_by_label

WORDS, TAKES, DIM = 6, 3, 16


def toy_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(WORDS, DIM, generator=generator)
    takes = 0.5 * centres[:, None, :] + torch.randn(WORDS, TAKES, DIM, generator=generator)
    labels = torch.arange(WORDS).repeat_interleave(TAKES)
    return takes.reshape(WORDS * TAKES, DIM), labels


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_decreases_under_sgd(name: str) -> None:
    start, labels = toy_batch()
    embeddings = start.clone().requires_grad_(True)
    loss_module = build_loss(name, DIM, WORDS)
    optimizer = torch.optim.SGD([embeddings, *loss_module.parameters()], lr=0.5)
    first, accuracy = loss_module(embeddings, labels)
    assert first.ndim == 0 and 0.0 <= float(accuracy) <= 1.0
    for _ in range(30):
        loss, _ = loss_module(embeddings, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last, last_accuracy = loss_module(embeddings, labels)
    assert float(last.detach()) < 0.7 * float(first.detach())
    assert float(last_accuracy) >= float(accuracy)


def test_prototypical_losses_accept_any_batch_order() -> None:
    embeddings, labels = toy_batch()
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(3))
    for name in ("proto", "angleproto"):
        module = build_loss(name, DIM, WORDS)
        grouped, _ = module(embeddings, labels)
        # Shuffled within words' takes order changes support/query, not across words: compare the shapes only.
        shuffled, _ = module(embeddings[order], labels[order])
        assert torch.isfinite(grouped) and torch.isfinite(shuffled)
    grouped = group_by_label(embeddings[order], labels[order])
    assert grouped.shape == (WORDS, TAKES, DIM)
    for word in range(WORDS):
        expected = embeddings[labels == word]
        assert torch.equal(torch.sort(grouped[word], dim=0).values, torch.sort(expected, dim=0).values)


def test_prototypical_losses_reject_ragged_or_single_take_batches() -> None:
    embeddings, labels = toy_batch()
    with pytest.raises(ValueError, match="same M for every word"):
        build_loss("angleproto", DIM, WORDS)(embeddings[:-1], labels[:-1])
    with pytest.raises(ValueError, match="M >= 2"):
        build_loss("proto", DIM, WORDS)(embeddings[::TAKES], labels[::TAKES])


def test_angular_prototypical_scale_stays_positive() -> None:
    loss_module = AngularPrototypicalLoss()
    assert float(loss_module.w.detach()) == 10.0 and float(loss_module.b.detach()) == -5.0
    embeddings, labels = toy_batch()
    with torch.no_grad():
        loss_module.w.fill_(-3.0)  # as if a large step had pushed it through zero
    assert float(loss_module.scale.detach()) > 0.0
    loss, _ = loss_module(embeddings, labels)
    assert torch.isfinite(loss)


def test_am_softmax_applies_margin_and_scale() -> None:
    module = build_loss("amsoftmax", DIM, WORDS)
    assert module.margin == 0.3 and module.scale == 15.0
    embeddings, labels = toy_batch()
    with torch.no_grad():
        module.weight.copy_(torch.stack([embeddings[labels == w].mean(0) for w in range(WORDS)]))
    with_margin, _ = module(embeddings, labels)
    module.margin = 0.0
    without_margin, _ = module(embeddings, labels)
    assert float(with_margin.detach()) > float(without_margin.detach())


def test_combined_loss_weights_its_parts() -> None:
    embeddings, labels = toy_batch()
    torch.manual_seed(0)
    combined = build_loss("angleproto_softmax", DIM, WORDS, ap_weight=0.5, softmax_weight=2.0)
    ap, _ = combined.angular(embeddings, labels)
    softmax, _ = combined.softmax(embeddings, labels)
    total, _ = combined(embeddings, labels)
    assert torch.allclose(total, 0.5 * ap + 2.0 * softmax)
    with pytest.raises(ValueError, match="not both 0"):
        build_loss("angleproto_softmax", DIM, WORDS, ap_weight=0.0, softmax_weight=0.0)


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(KeyError, match="unknown loss 'triplet'"):
        build_loss("triplet", DIM, WORDS)
    with pytest.raises(ValueError, match="bad parameters"):
        build_loss("amsoftmax", DIM, WORDS, margn=0.2)
