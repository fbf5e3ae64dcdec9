"""Validation on held-out speakers of the training corpora (never gsc_v2_test).

Embeddings come from the cached, un-augmented MFCC windows of the validation clips. Figures: the EER over all
clip pairs (same word vs different word) and the few-shot protocol of `training.evaluation` on the same
clips (every word with enough held-out takes is a target, the rest act as unknowns).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from training.evaluation.metrics import eer
from training.evaluation.protocol import evaluate_embeddings

__all__ = ["distillation_distance", "embed_features", "pair_eer", "validation_metrics"]

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_features(
    model: nn.Module, features: torch.Tensor, device: torch.device, batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """L2-normalised embeddings [N, D] of normalised features [N, frames, n_mfcc], in eval mode."""
    was_training = model.training
    model.eval()
    try:
        parts = [
            F.normalize(model(features[start : start + batch_size].to(device)), dim=1).cpu()
            for start in range(0, features.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy().astype(np.float32)


@torch.no_grad()
def distillation_distance(
    model: nn.Module,
    term: nn.Module,
    features: torch.Tensor,
    teacher: torch.Tensor,
    device: torch.device,
    batch_size: int = 256,
) -> float:
    """The distillation term on held-out clips: how closely the student follows the teacher on speakers it
    never heard. The teacher generalises to unseen words, so this tracks few-shot quality on new words better
    than figures on the training words do."""
    was_training = (model.training, term.training)
    model.eval()
    term.eval()
    try:
        total = 0.0
        for start in range(0, features.shape[0], batch_size):
            student = model(features[start : start + batch_size].to(device))
            part = term(student, teacher[start : start + batch_size].to(device))
            total += float(part) * student.shape[0]
    finally:
        model.train(was_training[0])
        term.train(was_training[1])
    return total / max(1, features.shape[0])


def pair_eer(embeddings: npt.NDArray[np.float32], labels: Sequence[int]) -> float:
    """EER over every pair of distinct clips: same label = positive trial, different label = negative."""
    label_array = np.asarray(labels)
    scores = embeddings @ embeddings.T
    upper = np.triu_indices(len(label_array), k=1)
    same = label_array[upper[0]] == label_array[upper[1]]
    pair_scores = scores[upper]
    if not same.any() or same.all():
        raise ValueError("pair_eer: need both same-word and different-word pairs")
    return eer(pair_scores[same], pair_scores[~same])


def validation_metrics(
    embeddings: npt.NDArray[np.float32],
    labels: Sequence[int],
    names: Sequence[str],
    shots: Sequence[int],
    seeds: Sequence[int],
) -> dict[str, Any]:
    """{"eer_pairs": ..., "eer_<k>shot": ..., "frr_at_far_10_<k>shot": ...}: fractions."""
    metrics: dict[str, Any] = {"clips": len(labels)}
    try:
        metrics["eer_pairs"] = pair_eer(embeddings, labels)
    except ValueError as error:  # e.g. one take per held-out word
        log.warning("pair EER skipped: %s", error)
    try:
        summary = evaluate_embeddings(embeddings, list(names), shots=tuple(shots), seeds=tuple(seeds))
    except ValueError as error:  # too few held-out takes per word for k-shot enrollment
        log.warning("few-shot validation skipped: %s", error)
        return metrics
    for k in shots:
        mean = summary["shots"][str(k)]["mean"]
        metrics[f"eer_{k}shot"] = mean["eer"]
        metrics[f"frr_at_far_10_{k}shot"] = mean.get("frr_at_far_10")
    metrics["fewshot_targets"] = len(summary.get("targets", []))
    return metrics
