"""What the trainer optimises: the encoder, the label loss, the distillation term and the second teacher's term.

`TrainingObjective` is the one module DDP wraps, so that every training-only part (AP scale and bias, the
classifier, the projection heads) is synchronised too; `build_distillation` builds the teachers' cached
targets and their terms from the config (docs/distillation.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import TrainingConfig
from training.distributed import DistributedContext
from training.models import embedding_dim_of
from training.prepare import PreparedData

__all__ = ["Distillation", "TrainingObjective", "build_distillation", "student_frame_shape"]

log = logging.getLogger(__name__)

MEAN_FRAME_SAMPLE = 2048  # training targets averaged for the frame term's common direction


class TrainingObjective(nn.Module):
    """Encoder + label loss + optional distillation term + optional second-teacher term."""

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module | None,
        loss_weight: float,
        distill: nn.Module | None,
        distill_weight: float,
        second: nn.Module | None = None,
        second_weight: float = 0.0,
        second_kind: str = "frames",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.distill = distill
        self.second = second
        self.loss_weight = loss_weight
        self.distill_weight = distill_weight
        self.second_weight = second_weight
        self.second_kind = second_kind

    def _embed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.second is not None and self.second_kind == "frames":
            frames = self.encoder.frames(features)
            return self.encoder.pool(frames), frames
        return self.encoder(features), None

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        teacher: torch.Tensor | None = None,
        second: torch.Tensor | None = None,
        shifts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        embeddings, frames = self._embed(features)
        total = embeddings.new_zeros(())
        parts: dict[str, float] = {}
        if self.loss is not None:
            loss, accuracy = self.loss(embeddings, labels)
            total = total + self.loss_weight * loss
            parts["loss"], parts["accuracy"] = float(loss.detach()), float(accuracy)
        if self.distill is not None:
            if teacher is None:
                raise ValueError("distillation is on but no teacher targets were given")
            distill = self.distill(embeddings, teacher)
            total = total + self.distill_weight * distill
            parts["distill"] = float(distill.detach())
        if self.second is not None:
            if second is None:
                raise ValueError("the second teacher is on but no second-teacher targets were given")
            if frames is not None:
                term = self.second(frames, second, shifts)
            else:
                term = self.second(embeddings, second)
            total = total + self.second_weight * term
            parts["second"] = float(term.detach())
        return total, parts


@dataclass(frozen=True)
class Distillation:
    """The teachers' cached targets and terms; all None (and `source` the data's) when distillation is off."""

    targets: Any = None
    term: nn.Module | None = None
    teacher: dict[str, str] | None = None
    source: Any = None
    second_targets: Any = None
    second_term: nn.Module | None = None
    second_teacher: dict[str, str] | None = None

    def lookup(
        self, keys: list[str], device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(first teacher's targets, second teacher's) of a batch; copies' keys map to their clean clip."""
        from training.distill.targets import base_key

        first = self.targets.lookup(keys).to(device) if self.targets is not None else None
        second = None
        if self.second_targets is not None:
            second = self.second_targets.lookup([base_key(key) for key in keys]).to(device)
        return first, second


def student_frame_shape(encoder: nn.Module, frames: int, n_mfcc: int) -> tuple[int, int]:
    """(channels, frames) of the encoder's last block for a window of `frames` MFCC frames."""
    if not hasattr(encoder, "frames"):
        raise ValueError(f"{type(encoder).__name__} has no frames(): a second teacher needs edge_tcn")
    was_training = encoder.training
    encoder.eval()  # a probe input must not move the batch-norm statistics
    with torch.no_grad():
        shape = encoder.frames(torch.zeros(1, frames, n_mfcc)).shape
    encoder.train(was_training)
    return int(shape[1]), int(shape[2])


def _items(data: PreparedData) -> list[Any]:
    from training.distill.targets import dataset_items

    return dataset_items(data.train) + (dataset_items(data.val) if data.val is not None else [])


def _first_teacher(
    config: TrainingConfig, data: PreparedData, ctx: DistributedContext, student_dim: int
) -> Any:
    from training.distill.loss import DistillationTerm
    from training.distill.targets import TeacherTargets, dataset_items, window_items
    from training.distill.teachers import load_teacher, teacher_record

    load = partial(load_teacher, config.distill.teacher, config.distill.teacher_model or None)
    teacher = load()
    train_items = dataset_items(data.train)
    source: Any = data.train_source
    copies = config.distill.augmented_copies
    if copies > 0:
        from training.data.augment import AugmentConfig, build_augmenter
        from training.data.dataset import WindowDataset
        from training.distill.copies import AugmentedCopies

        if not isinstance(data.train, WindowDataset):
            raise ValueError("distill.augmented_copies needs the clips' audio (not a data.pack)")
        augment_config = AugmentConfig.from_dict(dict(config.data.augment_params))
        if config.data.data_dir and augment_config.data_dir is None:
            augment_config = replace(augment_config, data_dir=config.data.data_dir)
        augment = build_augmenter(augment_config, data.train.background_speech)
        train_items = list(window_items(train_items, copies, augment, config.run.seed))
        source = AugmentedCopies(data.train_source, data.train, copies, augment, config.run.seed)
    items = train_items + (dataset_items(data.val) if data.val is not None else [])
    cache_dir = config.distill.cache_dir or None
    targets = None
    if ctx.is_main:
        targets = TeacherTargets.build_parallel(
            teacher, items, cache_dir, config.distill.jobs, config.run.progress, load_teacher=load
        )
    ctx.barrier()
    if targets is None:
        targets = TeacherTargets.build(teacher, items, cache_dir, progress=False)
    term = DistillationTerm(student_dim, targets.embedding_dim, config.distill.kind)
    return targets, term, teacher_record(teacher), source


def second_teacher_cache(config: TrainingConfig, subdir: str) -> Path:
    from training.distill.targets import default_targets_dir

    return (Path(config.distill.cache_dir) if config.distill.cache_dir else default_targets_dir()) / subdir


def load_frame_teacher(name: str, student_frames: int) -> Any:
    """The teacher `name`'s frames averaged in groups to about the student's frame rate (pairs for edge_tcn's
    37 frames per 1.5 s against Whisper's 75)."""
    from training.distill.frames import FrameTargetTeacher, check_teacher
    from training.distill.teachers import load_teacher

    base = load_teacher(name)
    check_teacher(base)
    pool = max(1, int(base.frames_per_window) // student_frames)
    return FrameTargetTeacher(
        base, frames=min(student_frames, int(base.frames_per_window) // pool), pool=pool
    )


def _second_teacher(
    config: TrainingConfig, data: PreparedData, ctx: DistributedContext, encoder: nn.Module
) -> tuple[Any, nn.Module, dict[str, str]]:
    from training.distill.frames import FrameSequenceTerm, PooledFrameTerm, mean_frame_of
    from training.distill.targets import TeacherTargets
    from training.distill.teachers import teacher_record

    channels, frames = student_frame_shape(encoder, _window_frames(data), len(data.feature_mean))
    load = partial(load_frame_teacher, config.distill.second_teacher, frames)
    teacher = load()
    cache = second_teacher_cache(config, teacher.cache_subdir)
    items = _items(data)
    targets = None
    if ctx.is_main:
        targets = TeacherTargets.build_parallel(
            teacher, items, cache, config.distill.jobs, config.run.progress, load_teacher=load
        )
    ctx.barrier()
    if targets is None:
        targets = TeacherTargets.build(teacher, items, cache, progress=False)
    term: nn.Module
    if config.distill.second_kind == "pooled":
        term = PooledFrameTerm(embedding_dim_of(encoder), teacher.frame_dim)
    else:
        keys = [clip.key for clip in data.train.clips]
        chosen = np.random.default_rng(config.run.seed).permutation(len(keys))[:MEAN_FRAME_SAMPLE]
        mean = mean_frame_of(targets.lookup([keys[i] for i in sorted(chosen)]), teacher.frame_dim)
        ratio = max(1, round(_window_frames(data) / frames))  # MFCC frames per student frame
        term = FrameSequenceTerm(channels, teacher.frame_dim, mean, shift_ratio=ratio)
    return targets, term, teacher_record(teacher)


def _window_frames(data: PreparedData) -> int:
    if data.val_features is not None:
        return int(data.val_features.shape[1])
    item = data.train_source[0]
    return int(item["features"].shape[0]) if "features" in item else 1 + (item["audio"].shape[0] - 480) // 160


def build_distillation(
    config: TrainingConfig, data: PreparedData, ctx: DistributedContext, encoder: nn.Module
) -> Distillation:
    """The first teacher's targets and term (`distill.weight > 0`) and the second's (`distill.second_weight`)."""
    result = Distillation(source=data.train_source)
    if config.distill.weight > 0:
        targets, term, record, source = _first_teacher(config, data, ctx, embedding_dim_of(encoder))
        result = replace(result, targets=targets, term=term, teacher=record, source=source)
    if config.distill.second_weight > 0:
        second, second_term, second_record = _second_teacher(config, data, ctx, encoder)
        result = replace(result, second_targets=second, second_term=second_term, second_teacher=second_record)
    return result
