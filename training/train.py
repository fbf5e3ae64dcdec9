"""The trainer: one script for both stages (pre-training, fine-tuning), one process or `torchrun` DDP.

Per epoch: N words x M takes batches from `ClassBalancedSampler` (or shuffled clips), augmented audio through
the one front end (`edge.frontend.mfcc`) in DataLoader workers or cached features (with room copies), the
objective of training/objective.py (label loss, distillation, second teacher), then validation on held-out
speakers (rank 0), `last.pt` and (when validation improves) `best.pt` in the run folder, and one row of
`log.csv`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from training.objective import Distillation, TrainingObjective, build_distillation
from training.prepare import MfccCollate, PreparedData, prepare_data
from training.validate import distillation_distance, embed_features, validation_metrics

__all__ = ["TrainResult", "TrainingObjective", "train"]

log = logging.getLogger(__name__)

LOG_COLUMNS = (
    "epoch", "steps", "seconds", "learning_rate", "loss", "accuracy", "distill", "second", "distill_val",
    "eer_pairs", "eer_1shot", "eer_5shot", "frr_at_far_10_5shot", "best",
)  # fmt: skip


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


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in LOG_COLUMNS})


@dataclass
class _Run:
    """What one training run holds between its parts."""

    config: TrainingConfig
    ctx: DistributedContext
    run_dir: Path
    commit: str | None
    start: Checkpoint | None
    data: PreparedData
    encoder: nn.Module
    frozen: list[nn.Module]
    loss: nn.Module | None
    distillation: Distillation
    objective: TrainingObjective
    wrapped: nn.Module


def _prepare(
    config: TrainingConfig, ctx: DistributedContext, progress: bool
) -> tuple[Path, Checkpoint | None, PreparedData]:
    from training.data.room_copies import with_room_copies

    run_dir = Path(config.run.out_dir) / config.run.name
    start = _start_checkpoint(config)
    stats = (start.feature_mean, start.feature_std) if start is not None else None
    if ctx.is_main:  # build the caches once; the other ranks then read them
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(dumps_toml(config), encoding="utf-8")
        data = with_room_copies(
            config.data,
            config.run.seed,
            prepare_data(config.data, config.run.seed, stats, progress),
            progress,
        )
    ctx.barrier()
    if not ctx.is_main:
        data = with_room_copies(
            config.data,
            config.run.seed,
            prepare_data(config.data, config.run.seed, stats, progress=False),
            False,
        )
    return run_dir, start, data


def _build_run(config: TrainingConfig, ctx: DistributedContext, progress: bool) -> _Run:
    commit = git_commit()  # the code this run started with, whatever HEAD is when a later epoch is saved
    run_dir, start, data = _prepare(config, ctx, progress)
    torch.manual_seed(config.run.seed)
    model_params = start.model_config if start is not None else dict(config.model.params)
    encoder = build_model(config.model.name, model_params)
    if start is not None:
        encoder.load_state_dict(start.state_dict)
    frozen = _freeze(encoder, config.train.freeze)
    loss = None
    if config.loss.weight > 0:
        loss = build_loss(
            config.loss.name, embedding_dim_of(encoder), len(data.label_to_index), **dict(config.loss.params)
        )
    distillation = build_distillation(config, data, ctx, encoder)
    objective = TrainingObjective(
        encoder, loss, config.loss.weight, distillation.term, config.distill.weight,
        distillation.second_term, config.distill.second_weight, config.distill.second_kind,
    )  # fmt: skip
    objective.to(ctx.device)
    wrapped: nn.Module = objective
    if ctx.enabled:
        wrapped = DistributedDataParallel(
            objective, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    return _Run(
        config, ctx, run_dir, commit, start, data, encoder, frozen, loss, distillation, objective, wrapped
    )


def _sampler(run: _Run) -> ClassBalancedSampler | ShuffledBatches:
    config, ctx = run.config, run.ctx
    if config.train.sampler == "shuffle":
        return ShuffledBatches(
            len(run.data.train.labels), config.train.words_per_batch * config.train.takes_per_word,
            config.run.seed, ctx.world_size, ctx.rank,
        )  # fmt: skip
    return ClassBalancedSampler(
        run.data.train.labels, config.train.words_per_batch, config.train.takes_per_word, config.run.seed,
        num_replicas=ctx.world_size, rank=ctx.rank,
    )  # fmt: skip


def _resume(run: _Run, optimizer: Any, scheduler: Any) -> tuple[int, float, dict[str, Any]]:
    """(first epoch, best score, best metrics): from the checkpoint's training state when resuming."""
    config, start = run.config, run.start
    if not (config.run.resume and start is not None and start.training_state is not None):
        return 0, math.inf, {}
    state = start.training_state
    if state["label_to_index"] != run.data.label_to_index:
        raise ValueError(f"{config.run.resume}: its training words differ from this config's data")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for module, name in (
        (run.loss, "loss"),
        (run.distillation.term, "distill"),
        (run.distillation.second_term, "second"),
    ):
        if module is not None and state.get(name) is not None:
            module.load_state_dict(state[name])
    log.info("resuming %s after epoch %d", config.run.resume, int(state["epoch"]))
    return int(state["epoch"]) + 1, float(state["best_score"]), dict(state.get("best_metrics", {}))


def _train_epoch(
    run: _Run, epoch: int, sampler: Any, steps_per_epoch: int, optimizer: Any, scheduler: Any,
    trainable: list[nn.Parameter], progress: bool,
) -> tuple[int, dict[str, float]]:  # fmt: skip
    """One epoch of steps; returns (steps, sums of the objective's parts)."""
    config, ctx = run.config, run.ctx
    sampler.set_epoch(epoch)
    source = run.distillation.source
    source.set_epoch(epoch)
    collate = MfccCollate(run.data.feature_mean, run.data.feature_std)
    loader = DataLoader(
        source, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers
    )
    run.objective.train()
    for module in run.frozen:
        module.eval()
    warmup_left = max(0, config.train.head_warmup_steps - epoch * steps_per_epoch)
    if warmup_left:
        run.encoder.eval()  # batch-norm statistics stay as loaded too
    sums: dict[str, float] = {}
    bar = tqdm(
        loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.train.epochs}", disable=not progress
    )
    steps = 0
    for features, labels, keys, shifts in bar:
        if steps == warmup_left > 0:
            run.encoder.train()
            for module in run.frozen:
                module.eval()
        first, second = run.distillation.lookup(keys, ctx.device)
        total, parts = run.wrapped(features.to(ctx.device), labels.to(ctx.device), first, second, shifts)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if steps < warmup_left:
            for parameter in run.encoder.parameters():
                parameter.grad = None  # AdamW skips a parameter without a gradient (no decay either)
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
    return steps, sums


def _validate(run: _Run, epoch: int) -> dict[str, Any]:
    config, data, encoder = run.config, run.data, run.encoder
    metrics: dict[str, Any] = {"epoch": epoch}
    validate_now = (epoch + 1) % config.validate.every_epochs == 0 or epoch + 1 == config.train.epochs
    if validate_now and data.val_features is not None and data.val is not None:
        targets, term = run.distillation.targets, run.distillation.term
        if targets is not None and term is not None:
            metrics["distill_val"] = distillation_distance(
                encoder,
                term,
                data.val_features,
                targets.lookup([c.key for c in data.val.clips]),
                run.ctx.device,
            )
        embeddings = embed_features(encoder, data.val_features, run.ctx.device)
        metrics.update(
            validation_metrics(
                embeddings, data.val_labels, data.val_names, config.validate.shots, config.validate.seeds
            )
        )
    return metrics


def _save(
    run: _Run, epoch: int, metrics: dict[str, Any], improved: bool, score: Any, optimizer: Any, scheduler: Any,
    best: tuple[float, dict[str, Any]],
) -> Path | None:  # fmt: skip
    """Write last.pt (and best.pt when `improved` or there is no score); returns best.pt's path if written."""
    config, data, dist = run.config, run.data, run.distillation
    common: dict[str, Any] = {
        "model": run.encoder, "model_name": config.model.name, "window_seconds": config.data.window_seconds,
        "feature_mean": data.feature_mean, "feature_std": data.feature_std, "vocabulary": data.vocabulary,
        "train_config": config.to_dict(), "teacher": dist.teacher, "commit": run.commit,
    }  # fmt: skip
    state = {
        "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "loss": run.loss.state_dict() if run.loss is not None else None,
        "distill": dist.term.state_dict() if dist.term is not None else None,
        "second": dist.second_term.state_dict() if dist.second_term is not None else None,
        "best_score": best[0], "best_metrics": best[1], "label_to_index": data.label_to_index,
    }  # fmt: skip
    save_checkpoint(run.run_dir / "last.pt", metrics=metrics, training_state=state, **common)
    if improved or score is None:
        return save_checkpoint(run.run_dir / "best.pt", metrics=metrics, training_state=state, **common)
    return None


def train(config: TrainingConfig) -> TrainResult:
    """Run the training described by `config` (see training/configs/*.toml); returns where it wrote."""
    ctx = setup_distributed(config.run.device)
    if config.run.threads > 0:
        torch.set_num_threads(config.run.threads)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed window shapes: let cuDNN pick its fastest kernels
    progress = config.run.progress and ctx.is_main
    run = _build_run(config, ctx, progress)
    sampler = _sampler(run)
    steps_per_epoch = len(sampler)
    if config.train.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, config.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError("an epoch has no batch: too few words with enough takes for the batch shape")
    trainable = [p for p in run.objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(config, steps_per_epoch * config.train.epochs)
    )
    first_epoch, best_score, best_metrics = _resume(run, optimizer, scheduler)
    began = time.monotonic()
    best_path: Path | None = run.run_dir / "best.pt" if (run.run_dir / "best.pt").exists() else None
    for epoch in range(first_epoch, config.train.epochs):
        steps, sums = _train_epoch(
            run, epoch, sampler, steps_per_epoch, optimizer, scheduler, trainable, progress
        )
        ctx.sync_buffers(run.encoder)
        row: dict[str, Any] = {
            "epoch": epoch, "steps": steps, "seconds": round(time.monotonic() - began, 1),
            "learning_rate": scheduler.get_last_lr()[0], **{key: value / max(1, steps) for key, value in sums.items()},
        }  # fmt: skip
        if ctx.is_main:
            metrics = _validate(run, epoch)
            metrics["train"] = {
                key: row[key] for key in ("loss", "accuracy", "distill", "second") if key in row
            }
            score = metrics.get(config.validate.select_on, metrics.get("eer_pairs"))
            improved = score is not None and float(score) < best_score
            if improved:
                best_score, best_metrics = float(score or 0.0), metrics
            written = _save(
                run, epoch, metrics, improved, score, optimizer, scheduler, (best_score, best_metrics)
            )
            best_path = written or best_path
            row.update(
                {
                    k: metrics.get(k)
                    for k in ("distill_val", "eer_pairs", "eer_1shot", "eer_5shot", "frr_at_far_10_5shot")
                }
            )
            row["best"] = int(improved)
            _append_log(run.run_dir / "log.csv", row)
            log.info("epoch %d: %s", epoch, {k: v for k, v in row.items() if v is not None})
        elapsed_minutes = (time.monotonic() - began) / 60
        stop = config.train.max_minutes > 0 and elapsed_minutes >= config.train.max_minutes
        ctx.barrier()
        if ctx.any_rank(stop):
            log.info("stopping after epoch %d: %.1f minutes >= train.max_minutes", epoch, elapsed_minutes)
            break
    return TrainResult(run.run_dir, best_path, run.run_dir / "last.pt", best_metrics, run.encoder)
