"""The trainer: one script for both stages (pre-training, fine-tuning), one process or `torchrun` DDP.

Per epoch: N words x M takes batches from `ClassBalancedSampler`, augmented audio through the one front end
(`edge.frontend.mfcc`) in DataLoader workers, the metric-learning loss (plus an optional distillation term),
then validation on held-out speakers (rank 0), `last.pt` and (when validation improves) `best.pt` in the run
folder, and one row of `log.csv`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.checkpoint import Checkpoint, git_commit, load_checkpoint, save_checkpoint
from training.config import TrainingConfig, dumps_toml
from training.data.sampler import ClassBalancedSampler
from training.distributed import DistributedContext, setup_distributed
from training.losses import build_loss
from training.models import build_model, embedding_dim_of
from training.prepare import MfccCollate, PreparedData, prepare_data
from training.validate import distillation_distance, embed_features, validation_metrics

__all__ = ["TrainResult", "TrainingObjective", "train"]

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "epoch", "steps", "seconds", "learning_rate", "loss", "accuracy", "distill", "distill_val",
    "eer_pairs", "eer_1shot", "eer_5shot", "frr_at_far_10_5shot", "best",
)  # fmt: skip


class TrainingObjective(nn.Module):
    """Encoder + label loss + optional distillation term: the one module DDP wraps, so that the loss
    parameters (AP scale and bias, classifier, projection head) are synchronised too."""

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module | None,
        loss_weight: float,
        distill: nn.Module | None,
        distill_weight: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.loss = loss
        self.distill = distill
        self.loss_weight = loss_weight
        self.distill_weight = distill_weight

    def forward(
        self, features: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        embeddings = self.encoder(features)
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
        return total, parts


class ShuffledBatches:
    """Every clip once per epoch in random batches, whatever its word: for distillation-only runs
    (`loss.weight = 0`), where labels play no part and word-balanced batches would leave clips unused.
    Deterministic by (seed, epoch); rank r of n takes every n-th batch."""

    def __init__(self, size: int, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (self.size // self.batch_size) // self.num_replicas

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        )
        batches = [
            order[i : i + self.batch_size].tolist()
            for i in range(0, len(self) * self.num_replicas * self.batch_size, self.batch_size)
        ]
        yield from batches[self.rank :: self.num_replicas]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_path: Path | None
    last_path: Path
    best_metrics: dict[str, Any]
    model: nn.Module  # the encoder after the last epoch (on every rank)


def _lr_factor(config: TrainingConfig, total_steps: int) -> Any:
    warmup = max(1, config.train.warmup_steps)
    floor = config.train.min_learning_rate / config.train.learning_rate

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _freeze(encoder: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Module]:
    """Fix the parameters under `prefixes`; returns the frozen modules (kept in eval mode: BN stats fixed)."""
    if not prefixes:
        return []
    names = [name for name, _ in encoder.named_modules()]
    for prefix in prefixes:
        if prefix not in names:
            raise ValueError(f"train.freeze: the model has no layer {prefix!r}; layers: {names[1:40]}")
    for name, parameter in encoder.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            parameter.requires_grad_(False)
    return [module for name, module in encoder.named_modules() if name in prefixes]


def _start_checkpoint(config: TrainingConfig) -> Checkpoint | None:
    source = config.run.resume or config.run.init_from
    if not source:
        return None
    checkpoint = load_checkpoint(source)
    if checkpoint.model_name != config.model.name:
        raise ValueError(
            f"{source}: holds a {checkpoint.model_name!r} model but model.name is {config.model.name!r}"
        )
    if config.run.resume and checkpoint.training_state is None:
        raise ValueError(f"{source}: has no training_state to resume from (use run.init_from instead)")
    return checkpoint


def _build_distillation(
    config: TrainingConfig, data: PreparedData, ctx: DistributedContext, student_dim: int
) -> tuple[Any, Any, Any, Any]:
    """(targets, term, teacher record, training source) or Nones and `data.train_source` when it is off."""
    if config.distill.weight <= 0:
        return None, None, None, data.train_source
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


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in LOG_COLUMNS})


def train(config: TrainingConfig) -> TrainResult:
    """Run the training described by `config` (see training/configs/*.toml); returns where it wrote."""
    ctx = setup_distributed(config.run.device)
    if config.run.threads > 0:
        torch.set_num_threads(config.run.threads)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed window shapes: let cuDNN pick its fastest kernels
    progress = config.run.progress and ctx.is_main
    run_dir = Path(config.run.out_dir) / config.run.name
    commit = git_commit()  # the code this run started with, whatever HEAD is when a later epoch is saved
    start = _start_checkpoint(config)
    stats = (start.feature_mean, start.feature_std) if start is not None else None
    if ctx.is_main:  # build the caches once; the other ranks then read them
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(dumps_toml(config), encoding="utf-8")
        data = prepare_data(config.data, config.run.seed, stats, progress)
    ctx.barrier()
    if not ctx.is_main:
        data = prepare_data(config.data, config.run.seed, stats, progress=False)

    torch.manual_seed(config.run.seed)
    model_params = start.model_config if start is not None else dict(config.model.params)
    encoder = build_model(config.model.name, model_params)
    if start is not None:
        encoder.load_state_dict(start.state_dict)
    frozen = _freeze(encoder, config.train.freeze)
    loss = None
    if config.loss.weight > 0:
        loss = build_loss(
            config.loss.name,
            embedding_dim_of(encoder),
            len(data.label_to_index),
            **dict(config.loss.params),
        )
    targets, distill_term, teacher, train_source = _build_distillation(
        config, data, ctx, embedding_dim_of(encoder)
    )
    objective = TrainingObjective(encoder, loss, config.loss.weight, distill_term, config.distill.weight)
    objective.to(ctx.device)
    wrapped: nn.Module = objective
    if ctx.enabled:
        wrapped = DistributedDataParallel(
            objective, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )

    sampler: ClassBalancedSampler | ShuffledBatches
    if config.train.sampler == "shuffle":
        sampler = ShuffledBatches(
            len(data.train.labels), config.train.words_per_batch * config.train.takes_per_word,
            config.run.seed, ctx.world_size, ctx.rank,
        )  # fmt: skip
    else:
        sampler = ClassBalancedSampler(
            data.train.labels, config.train.words_per_batch, config.train.takes_per_word, config.run.seed,
            num_replicas=ctx.world_size, rank=ctx.rank,
        )  # fmt: skip
    steps_per_epoch = len(sampler)
    if config.train.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, config.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError("an epoch has no batch: too few words with enough takes for the batch shape")
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config, steps_per_epoch * config.train.epochs)
    )

    first_epoch, best_score, best_metrics = 0, math.inf, {}
    if config.run.resume and start is not None and start.training_state is not None:
        state = start.training_state
        if state["label_to_index"] != data.label_to_index:
            raise ValueError(f"{config.run.resume}: its training words differ from this config's data")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if loss is not None and state.get("loss") is not None:
            loss.load_state_dict(state["loss"])
        if distill_term is not None and state.get("distill") is not None:
            distill_term.load_state_dict(state["distill"])
        first_epoch = int(state["epoch"]) + 1
        best_score, best_metrics = float(state["best_score"]), dict(state.get("best_metrics", {}))
        log.info("resuming %s after epoch %d", config.run.resume, first_epoch - 1)

    collate = MfccCollate(data.feature_mean, data.feature_std)
    began = time.monotonic()
    best_path: Path | None = run_dir / "best.pt" if (run_dir / "best.pt").exists() else None
    last_path = run_dir / "last.pt"
    for epoch in range(first_epoch, config.train.epochs):
        sampler.set_epoch(epoch)
        train_source.set_epoch(epoch)
        loader = DataLoader(
            train_source, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers
        )
        objective.train()
        for module in frozen:
            module.eval()
        sums: dict[str, float] = {}
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.train.epochs}",
            disable=not progress,
        )
        steps = 0
        for features, labels, keys in bar:
            teacher_batch = targets.lookup(keys).to(ctx.device) if targets is not None else None
            total, parts = wrapped(features.to(ctx.device), labels.to(ctx.device), teacher_batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, config.train.grad_clip)
            optimizer.step()
            scheduler.step()
            steps += 1
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.set_postfix({key: f"{value / steps:.3f}" for key, value in sums.items()})
            if steps >= steps_per_epoch:
                break
        bar.close()
        ctx.sync_buffers(encoder)
        row: dict[str, Any] = {
            "epoch": epoch,
            "steps": steps,
            "seconds": round(time.monotonic() - began, 1),
            "learning_rate": scheduler.get_last_lr()[0],
            **{key: value / max(1, steps) for key, value in sums.items()},
        }
        if ctx.is_main:
            metrics: dict[str, Any] = {"epoch": epoch}
            validate_now = (epoch + 1) % config.validate.every_epochs == 0 or epoch + 1 == config.train.epochs
            if validate_now and data.val_features is not None and data.val is not None:
                if targets is not None and distill_term is not None:
                    metrics["distill_val"] = distillation_distance(
                        encoder,
                        distill_term,
                        data.val_features,
                        targets.lookup([c.key for c in data.val.clips]),
                        ctx.device,
                    )
                embeddings = embed_features(encoder, data.val_features, ctx.device)
                metrics.update(
                    validation_metrics(
                        embeddings,
                        data.val_labels,
                        data.val_names,
                        config.validate.shots,
                        config.validate.seeds,
                    )
                )
            metrics["train"] = {key: row[key] for key in ("loss", "accuracy", "distill") if key in row}
            score = metrics.get(config.validate.select_on, metrics.get("eer_pairs"))
            improved = score is not None and float(score) < best_score
            if improved:
                best_score, best_metrics = float(score or 0.0), metrics
            common: dict[str, Any] = {
                "model": encoder, "model_name": config.model.name, "window_seconds": config.data.window_seconds,
                "feature_mean": data.feature_mean, "feature_std": data.feature_std, "vocabulary": data.vocabulary,
                "train_config": config.to_dict(), "teacher": teacher, "commit": commit,
            }  # fmt: skip
            state = {
                "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loss": loss.state_dict() if loss is not None else None,
                "distill": distill_term.state_dict() if distill_term is not None else None,
                "best_score": best_score, "best_metrics": best_metrics, "label_to_index": data.label_to_index,
            }  # fmt: skip
            save_checkpoint(last_path, metrics=metrics, training_state=state, **common)
            if improved or score is None:
                best_path = save_checkpoint(
                    run_dir / "best.pt", metrics=metrics, training_state=state, **common
                )
            row.update(
                {
                    k: metrics.get(k)
                    for k in ("distill_val", "eer_pairs", "eer_1shot", "eer_5shot", "frr_at_far_10_5shot")
                }
            )
            row["best"] = int(improved)
            _append_log(run_dir / "log.csv", row)
            log.info("epoch %d: %s", epoch, {k: v for k, v in row.items() if v is not None})
        elapsed_minutes = (time.monotonic() - began) / 60
        stop = config.train.max_minutes > 0 and elapsed_minutes >= config.train.max_minutes
        ctx.barrier()
        if ctx.any_rank(stop):
            log.info("stopping after epoch %d: %.1f minutes >= train.max_minutes", epoch, elapsed_minutes)
            break
    return TrainResult(run_dir, best_path, last_path, best_metrics, encoder)
