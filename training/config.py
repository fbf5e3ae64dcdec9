"""Training configuration: frozen dataclasses, read from TOML, overridden from the command line.

Precedence: command-line overrides (`--set section.key=value`) over the TOML file over the defaults below.
Unknown sections or keys are errors that name them. `to_dict()` gives the resolved config (saved in every
checkpoint and as `config.toml` in the run folder); `dumps_toml` writes it back as TOML.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from edge.tomlconfig import ConfigError, coerce_sections, read_toml

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "LossConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingConfig",
    "ValidateConfig",
    "dumps_toml",
    "load_config",
    "parse_override",
]


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    out_dir: str = "runs"
    seed: int = 0
    resume: str = ""  # a checkpoint to continue from (its optimizer, epoch and loss state)
    init_from: str = ""  # a checkpoint whose encoder weights start this run (the fine-tuning stage)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 1  # torch intra-op threads per process (1: the CPU is shared); 0 = torch default
    progress: bool = True


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = ""  # "" = $KWS_DATA_DIR or ../shared/data
    # Generated corpora (same manifest format): a path, or a name of training.data.corpora ("kokoro").
    extra_roots: tuple[str, ...] = ()  # missing ones are an error
    optional_roots: tuple[str, ...] = ()  # used when present (e.g. corpora/synthetic, "speechocean762")
    datasets: tuple[str, ...] = ()  # () = every word corpus found
    exclude_words: tuple[str, ...] = ()  # labels never trained on (e.g. "zh:yi")
    english_only: bool = False  # keep only labels without a language prefix (the fine-tuning stage)
    window_seconds: float = 1.5
    val_fraction: float = 0.1
    split_seed: int = 0
    augment: bool = True
    augment_params: Mapping[str, Any] = field(default_factory=dict)  # fields of training.data.AugmentConfig
    random_placement: bool = True
    shift_frames: int = 10  # random time shift of cached features when augment and random_placement are off
    num_workers: int = 1
    max_clips: int = 0  # > 0: a deterministic subset of that many clips (tests, smoke runs)
    exclude_clips: str = (
        ""  # clips never trained on: a file of clip keys, or a `kws-train data filter` report
    )
    pack: str = ""  # a feature pack (`kws-train data pack`) read instead of the manifests and audio
    # Rooms, noise and misaligned windows for the student (training/data/room_copies.py): > 0 cached copies
    # per clip, served instead of the clean window with probability room_share; teacher targets stay clean.
    room_copies: int = 0
    room_share: float = 0.5
    rooms: str = "rooms"  # the rooms corpus (its `train` rows only): a registered name or a path
    room_params: Mapping[str, Any] = field(default_factory=dict)  # fields of RoomAugmentConfig
    room_jobs: int = 1  # processes that compute missing copies


@dataclass(frozen=True)
class ModelConfig:
    name: str = "edge_tcn"
    params: Mapping[str, Any] = field(default_factory=dict)  # the model's own config fields


@dataclass(frozen=True)
class LossConfig:
    name: str = "angleproto_softmax"
    weight: float = 1.0  # 0 = labels unused (distillation only)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    words_per_batch: int = 32
    takes_per_word: int = 3
    learning_rate: float = 2e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    sampler: str = "balanced"  # balanced: N words x M takes | shuffle: any clips (distillation only)
    max_steps_per_epoch: int = 0  # > 0: cut epochs short (tests, smoke runs)
    max_minutes: float = 0.0  # > 0: stop after the epoch that passes this wall time
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed (e.g. "stem", "blocks.0")
    # The first n steps update only the heads (distillation projections, loss classifiers), the encoder and
    # its batch-norm statistics stay as loaded: a stage that starts from a checkpoint without its heads
    # (a shipped file) would otherwise be pushed about by a random head before the head has learnt anything.
    head_warmup_steps: int = 0
    grad_clip: float = 5.0


@dataclass(frozen=True)
class ValidateConfig:
    every_epochs: int = 1
    shots: tuple[int, ...] = (1, 5)
    seeds: tuple[int, ...] = (0, 1, 2)
    # The metric (lower is better) that picks best.pt: eer_pairs | eer_1shot | eer_5shot | distill_val.
    select_on: str = "eer_5shot"


@dataclass(frozen=True)
class DistillConfig:
    weight: float = 0.0  # 0 = off
    teacher: str = "efficientword-net"
    teacher_model: str = ""  # path of the teacher's model file; "" = find it in the installed package
    cache_dir: str = ""  # "" = cache/teacher
    kind: str = "cosine"
    jobs: int = 1  # processes that compute missing teacher targets (one teacher each)
    augmented_copies: int = 0  # > 0: also targets of that many augmented copies per clip, trained on in turn
    # A second teacher with a frame sequence (training/distill/frames.py), e.g. "whisper-tiny.en"; "" = off.
    second_teacher: str = ""
    second_weight: float = 0.0
    second_kind: str = (
        "frames"  # frames: a head on the student's last-block frames | pooled: on the embedding
    )


@dataclass(frozen=True)
class TrainingConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        checks = {
            "data.window_seconds": self.data.window_seconds > 0,
            "data.val_fraction": 0.0 <= self.data.val_fraction < 1.0,
            "data.num_workers": self.data.num_workers >= 0,
            "train.epochs": self.train.epochs >= 1,
            "train.words_per_batch": self.train.words_per_batch >= 2,
            "train.takes_per_word": self.train.takes_per_word >= 2,
            "train.learning_rate": self.train.learning_rate > 0,
            "train.head_warmup_steps": self.train.head_warmup_steps >= 0,
            "loss.weight": self.loss.weight >= 0,
            "distill.weight": self.distill.weight >= 0,
            "validate.every_epochs": self.validate.every_epochs >= 1,
            "train.sampler": self.train.sampler in ("balanced", "shuffle"),
            "validate.select_on": self.validate.select_on
            in ("eer_pairs", "eer_1shot", "eer_5shot", "distill_val"),
            "run.device": self.run.device in ("auto", "cpu", "cuda"),
            "distill.jobs": self.distill.jobs >= 1,
            "distill.augmented_copies": self.distill.augmented_copies >= 0,
            "distill.second_weight": self.distill.second_weight >= 0,
            "distill.second_kind": self.distill.second_kind in ("frames", "pooled"),
            "data.room_copies": self.data.room_copies >= 0,
            "data.room_share": 0.0 <= self.data.room_share <= 1.0,
            "data.room_jobs": self.data.room_jobs >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid value for {', '.join(bad)}")
        if self.loss.weight == 0 and self.distill.weight == 0 and self.distill.second_weight == 0:
            raise ConfigError("loss.weight and distill.weight are both 0: nothing to train on")
        if self.data.pack and self.distill.weight > 0:
            raise ConfigError(
                "data.pack holds no audio for the teacher: distillation needs the clips themselves"
            )
        if (
            self.train.sampler == "shuffle"
            and self.loss.weight > 0
            and self.loss.name not in CLASSIFIER_LOSSES
        ):
            raise ConfigError(
                f"train.sampler = 'shuffle' needs loss.weight = 0 or a classifier loss {CLASSIFIER_LOSSES}: "
                f"{self.loss.name!r} needs N x M batches"
            )
        if self.distill.second_weight > 0 and not self.distill.second_teacher:
            raise ConfigError(
                "distill.second_weight > 0 needs distill.second_teacher (e.g. 'whisper-tiny.en')"
            )
        if self.data.room_copies > 0 and (self.data.pack or self.data.augment or self.data.random_placement):
            raise ConfigError(
                "data.room_copies works on the cached-feature path: data.augment and data.random_placement "
                "false, and no data.pack"
            )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_plain))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not serialisable: {value!r}")


_SECTION_CLASSES: dict[str, type[Any]] = get_type_hints(TrainingConfig)
# Losses that classify each embedding on its own, so any batch works (no N words x M takes structure).
CLASSIFIER_LOSSES = ("softmax", "amsoftmax")


def _merge(base: dict[str, dict[str, Any]], updates: Mapping[str, Any], where: str) -> None:
    for section, values in coerce_sections(TrainingConfig, updates, where).items():
        base[section].update(values)


def parse_override(text: str) -> dict[str, Any]:
    """`section.key=value` (value in TOML syntax; a bare word is a string) -> {section: {key: value}}.

    `model.params.channels=64` sets one field of a table-valued key; `loss.params={}` empties the table.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    nested: Any = value
    for part in reversed(parts[2:]):
        nested = {part: nested}
    return {parts[0]: {parts[1]: nested}}


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """Defaults, then the TOML file at `path` (if any), then each `section.key=value` override."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_CLASSES}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        _merge(merged, read_toml(path), str(path))
    for text in overrides:
        override = parse_override(text)
        section, values = next(iter(override.items()))
        key, value = next(iter(values.items()))
        current = merged.get(section, {}).get(key)
        if isinstance(value, dict) and value and section in _SECTION_CLASSES:  # `{}` clears the table
            known_default = getattr(_SECTION_CLASSES[section](), key, None)
            if isinstance(known_default, Mapping):
                value = {**dict(current or {}), **value}
        _merge(merged, {section: {key: value}}, f"override {text!r}")
    sections = {name: cls(**merged[name]) for name, cls in _SECTION_CLASSES.items()}
    return TrainingConfig(**sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_toml(config: TrainingConfig) -> str:
    """The resolved config as TOML that `load_config` reads back to an equal config."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
