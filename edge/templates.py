"""Enrolled keywords on disk: one JSON file per keyword in the state directory, written atomically.

Each `<name>.json` holds the keyword's template (mean of L2-normalised take embeddings, re-normalised), its
negative templates (embeddings of audio marked as false triggers), threshold, GPIO pin, hook command, creation
time, number of takes, and the sha256 of the model and the front-end fingerprint it was made with. Every write
goes to a temp file (fsync, rename) after the current file is copied to `<name>.json.bak`; a corrupt file is
replaced by its `.bak` when read (the problem is logged). `signature()` changes whenever any file changes, so
the daemon can reload without a restart.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.fileio import atomic_rename
from edge.fileio import atomic_write_bytes as write_atomically
from edge.takematch import checked_take_features

__all__ = [
    "TEMPLATE_FORMAT",
    "Template",
    "TemplateError",
    "TemplateMismatchError",
    "TemplateStore",
    "atomic_write_bytes",
    "check_keyword_name",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

TEMPLATE_FORMAT = "udkws-template/1"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SUFFIX = ".json"
_BAK = ".bak"


class TemplateError(ValueError):
    """A template file is missing, unreadable or invalid, or a name is not allowed."""


class TemplateMismatchError(TemplateError):
    """A template was made with another model or front end than the one running."""


def check_keyword_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise TemplateError(
            f"keyword name {name!r}: expected 1-64 characters of letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return name


def atomic_write_bytes(path: Path, data: bytes, keep_backup: bool = True) -> None:
    """Write `data` atomically; with `keep_backup` the current file is first kept, complete, as `path.bak`."""
    write_atomically(path, data, keep_previous_as=_BAK if keep_backup else None)


def _unit(vector: npt.ArrayLike, what: str) -> FloatArray:
    # float64: a value like 1e300 in a file is scaled below, not an overflow warning in the cast
    array = np.asarray(vector, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise TemplateError(
            f"{what}: expected a non-empty 1-D vector of finite numbers, got shape {array.shape}"
        )
    largest = float(np.max(np.abs(array)))
    if largest == 0.0:
        raise TemplateError(f"{what}: the vector is all zeros")
    scaled = array / largest  # the norm of huge values would overflow
    unit: FloatArray = (scaled / np.linalg.norm(scaled)).astype(np.float32)
    return unit


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Template:
    """One enrolled keyword. `embedding` and each row of `negatives` are L2-normalised."""

    name: str
    embedding: FloatArray
    model_sha256: str
    frontend_fingerprint: str
    threshold: float | None = None  # None: the configured default
    pin: int | None = None
    hook: str | None = None
    takes: int = 0
    created: str = field(default_factory=_now)
    negatives: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    # The unit embedding of each enrollment take: what the false-alarm budget compares the user's own voice with
    # (empty for keywords enrolled before it existed).
    take_embeddings: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    # A phrase longer than one window: the unit templates of the windows that start with it, centre on it and
    # end with it, and how long before the last one's end each one ends (ms). Empty for a single word.
    parts: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    part_offsets_ms: tuple[int, ...] = ()
    # The second look at vetoed windows (edge.takematch): each take's speech as [steps, 13] features, and how
    # far the takes are from each other. Empty / None for phrases and keywords enrolled before it existed.
    take_speech: tuple[FloatArray, ...] = ()
    take_spread: float | None = None

    def __post_init__(self) -> None:
        check_keyword_name(self.name)
        self._check_types()
        object.__setattr__(self, "embedding", _unit(self.embedding, f"template {self.name}: embedding"))
        object.__setattr__(self, "negatives", self._unit_rows(self.negatives, "negative"))
        object.__setattr__(self, "take_embeddings", self._unit_rows(self.take_embeddings, "take embedding"))
        object.__setattr__(self, "parts", self._unit_rows(self.parts, "part"))
        offsets = self.part_offsets_ms
        if not isinstance(offsets, list | tuple) or not all(
            isinstance(o, int) and not isinstance(o, bool) and 0 <= o <= 5000 for o in offsets
        ):
            raise TemplateError(
                f"template {self.name}: part_offsets_ms must be integers 0-5000 (ms), got {offsets!r}"
            )
        object.__setattr__(self, "part_offsets_ms", tuple(offsets))
        try:
            features = checked_take_features(self.take_speech, self.take_spread)
        except ValueError as error:
            raise TemplateError(f"template {self.name}: {error}") from None
        object.__setattr__(self, "take_speech", features[0])
        object.__setattr__(self, "take_spread", features[1])
        if len(self.part_offsets_ms) != self.parts.shape[0] or (offsets and min(offsets) != 0):
            raise TemplateError(
                f"template {self.name}: {self.parts.shape[0]} parts need as many part_offsets_ms, the last "
                f"part's 0; got {list(offsets)}"
            )
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise TemplateError(f"template {self.name}: threshold must be in [-1, 1], got {self.threshold}")
        if self.pin is not None and not 0 <= self.pin <= 63:
            raise TemplateError(f"template {self.name}: pin must be a GPIO number 0-63, got {self.pin}")
        if self.takes < 0:
            raise TemplateError(f"template {self.name}: takes must be >= 0, got {self.takes}")

    def _unit_rows(self, rows: npt.ArrayLike, what: str) -> FloatArray:
        """[K, D] unit rows (K may be 0) of this template's dimension D; TemplateError naming `what` otherwise."""
        array = np.asarray(rows, dtype=np.float64)
        dim = self.embedding.shape[0]
        if array.size == 0:
            return np.zeros((0, dim), dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != dim:
            raise TemplateError(f"template {self.name}: {what}s must be [K, {dim}], got {array.shape}")
        units = [_unit(row, f"template {self.name}: {what} {i}") for i, row in enumerate(array)]
        return np.stack(units).astype(np.float32)

    def _check_types(self) -> None:
        """Scalar fields as their annotations say: a hand-edited file must not reach the daemon as `pin = 0.5`."""
        for key in ("model_sha256", "frontend_fingerprint", "created"):
            if not isinstance(getattr(self, key), str):
                raise TemplateError(
                    f"template {self.name}: {key} must be a string, got {getattr(self, key)!r}"
                )
        if self.hook is not None and not isinstance(self.hook, str):
            raise TemplateError(
                f"template {self.name}: hook must be a shell command (string), got {self.hook!r}"
            )
        for key in ("pin", "takes"):
            value = getattr(self, key)
            if (value is not None or key == "takes") and (
                not isinstance(value, int) or isinstance(value, bool)
            ):
                raise TemplateError(f"template {self.name}: {key} must be an integer, got {value!r}")
        if self.threshold is not None:
            if not isinstance(self.threshold, int | float) or isinstance(self.threshold, bool):
                raise TemplateError(
                    f"template {self.name}: threshold must be a number, got {self.threshold!r}"
                )
            object.__setattr__(self, "threshold", float(self.threshold))

    @classmethod
    def from_takes(
        cls,
        name: str,
        take_embeddings: npt.ArrayLike,
        model_sha256: str,
        frontend_fingerprint: str,
        variants: npt.ArrayLike | None = None,
        parts: npt.ArrayLike | None = None,
        **extra: Any,
    ) -> Template:
        """Mean of the L2-normalised take embeddings [K, D], re-normalised (the paper's prototype).

        `variants` [M, D] (the takes sped up and slowed down, edge.takes.speed_perturbed) join the mean; the
        takes alone are kept as `take_embeddings`. For a phrase, `parts` [K, P, D] are each take's phrase windows'
        embeddings (with `part_offsets_ms` in `extra`): each part's template is their normalised mean.
        """
        takes = np.asarray(take_embeddings, dtype=np.float32)
        if takes.ndim != 2 or takes.shape[0] == 0:
            raise TemplateError(
                f"template {name}: expected take embeddings [K, D] with K >= 1, got {takes.shape}"
            )
        units = takes / np.maximum(np.linalg.norm(takes, axis=1, keepdims=True), 1e-12)
        pooled = units
        if variants is not None and np.asarray(variants).size:
            more = np.asarray(variants, dtype=np.float32).reshape(-1, takes.shape[1])
            pooled = np.concatenate(
                [units, more / np.maximum(np.linalg.norm(more, axis=1, keepdims=True), 1e-12)]
            )
        if parts is not None and np.asarray(parts).size:
            each = np.asarray(parts, dtype=np.float32)
            each = each / np.maximum(np.linalg.norm(each, axis=2, keepdims=True), 1e-12)
            extra["parts"] = each.mean(axis=0)
        return cls(
            name,
            pooled.mean(axis=0),
            model_sha256,
            frontend_fingerprint,
            takes=takes.shape[0],
            take_embeddings=units,
            **extra,
        )

    def with_negative(self, embedding: npt.ArrayLike) -> Template:
        row = _unit(embedding, f"template {self.name}: new negative")[None]
        return replace(self, negatives=np.concatenate([self.negatives, row]))

    def check_model(
        self, model_sha256: str, frontend_fingerprint: str, embedding_dim: int | None = None
    ) -> None:
        """Raise TemplateMismatchError unless this template was made with this model and front end.

        With `embedding_dim`, a vector of another length (a hand-edited file) is refused too: scoring it would
        fail inside the daemon's loop.
        """
        problems = []
        if self.model_sha256 != model_sha256:
            problems.append(f"model {self.model_sha256[:12]}... (running {model_sha256[:12]}...)")
        if self.frontend_fingerprint != frontend_fingerprint:
            problems.append(f"front end {self.frontend_fingerprint} (running {frontend_fingerprint})")
        if embedding_dim is not None and self.embedding.shape[0] != embedding_dim:
            problems.append(
                f"embedding length {self.embedding.shape[0]} (the running model's is {embedding_dim})"
            )
        if problems:
            raise TemplateMismatchError(
                f"keyword {self.name!r} was enrolled with another {' and '.join(problems)}; its template is "
                f"not valid for this model. Re-enroll it: `kws-edge remove {self.name}` then "
                f"`kws-edge enroll {self.name} take1.wav take2.wav take3.wav` (or the button)"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TEMPLATE_FORMAT,
            "name": self.name,
            "embedding": [round(float(v), 7) for v in self.embedding],
            "negatives": [[round(float(v), 7) for v in row] for row in self.negatives],
            "threshold": self.threshold,
            "pin": self.pin,
            "hook": self.hook,
            "takes": self.takes,
            "created": self.created,
            "model_sha256": self.model_sha256,
            "frontend_fingerprint": self.frontend_fingerprint,
            "take_embeddings": [[round(float(v), 7) for v in row] for row in self.take_embeddings],
            "parts": [[round(float(v), 7) for v in row] for row in self.parts],
            "part_offsets_ms": list(self.part_offsets_ms),
            "take_speech": [[[round(float(v), 4) for v in row] for row in take] for take in self.take_speech],
            "take_spread": self.take_spread,
        }

    @property
    def is_phrase(self) -> bool:
        return bool(self.parts.shape[0] > 0)

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Template:
        if not isinstance(raw, dict):
            raise TemplateError(f"{where}: expected a JSON object")
        if raw.get("format") != TEMPLATE_FORMAT:
            raise TemplateError(f"{where}: format {raw.get('format')!r}, expected {TEMPLATE_FORMAT!r}")
        known = set(cls.__dataclass_fields__) | {"format"}
        unknown = set(raw) - known
        if unknown:
            raise TemplateError(f"{where}: unknown field(s) {sorted(unknown)}")
        values = {key: value for key, value in raw.items() if key != "format"}
        missing = {"name", "embedding", "model_sha256", "frontend_fingerprint"} - set(values)
        if missing:
            raise TemplateError(f"{where}: missing field(s) {sorted(missing)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise TemplateError(f"{where}: {error}") from error


class TemplateStore:
    """The state directory's keywords. Safe against crashes mid-write; one writer at a time is assumed."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)

    def path_for(self, name: str) -> Path:
        return self.state_dir / "keywords" / f"{check_keyword_name(name)}{_SUFFIX}"

    def add(self, template: Template) -> Path:
        """Save (create or replace) a keyword; the replaced version is kept as `.bak`."""
        path = self.path_for(template.name)
        atomic_write_bytes(path, (json.dumps(template.to_json(), indent=1) + "\n").encode())
        log.info(
            "saved keyword %r (%d takes, %d negatives) to %s",
            template.name,
            template.takes,
            template.negatives.shape[0],
            path,
        )
        return path

    def remove(self, name: str) -> None:
        """Remove a keyword; its last version stays as `.bak` (not listed, not loaded)."""
        path = self.path_for(name)
        if not path.is_file():
            raise TemplateError(f"no keyword {name!r} in {path.parent} (see `kws-edge list`)")
        atomic_rename(path, path.with_name(path.name + _BAK))
        log.info("removed keyword %r", name)

    def names(self) -> builtins.list[str]:
        folder = self.state_dir / "keywords"
        if not folder.is_dir():
            return []
        return sorted(
            p.name[: -len(_SUFFIX)] for p in folder.glob(f"*{_SUFFIX}") if not p.name.startswith(".")
        )

    def get(self, name: str) -> Template:
        """Read one keyword; a corrupt file falls back to its `.bak` (logged). Raises TemplateError."""
        path = self.path_for(name)
        if not path.is_file():
            raise TemplateError(f"no keyword {name!r} in {path.parent} (see `kws-edge list`)")
        try:
            return self._read(path, name)
        except TemplateError as error:
            backup = path.with_name(path.name + _BAK)
            if not backup.is_file():
                raise TemplateError(f"{error}; and there is no backup {backup.name}") from error
            template = self._read(backup, name)
            log.error("%s; using the previous version from %s", error, backup)
            return template

    def list(self) -> list[Template]:
        """Every readable keyword; unreadable ones are logged and left out."""
        templates = []
        for name in self.names():
            try:
                templates.append(self.get(name))
            except TemplateError as error:
                log.error("keyword %r left out: %s", name, error)
        return templates

    def load_for_model(
        self, model_sha256: str, frontend_fingerprint: str, embedding_dim: int | None = None
    ) -> builtins.list[Template]:
        """The keywords valid for this model; any made with another model is refused (logged) and left out."""
        valid = []
        for template in self.list():
            try:
                template.check_model(model_sha256, frontend_fingerprint, embedding_dim)
            except TemplateMismatchError as error:
                log.error("%s", error)
                continue
            valid.append(template)
        return valid

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Changes whenever a keyword file is added, removed or rewritten (cheap: one stat per file)."""
        folder = self.state_dir / "keywords"
        if not folder.is_dir():
            return ()
        entries = []
        for path in sorted(folder.glob(f"*{_SUFFIX}")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def add_negative(self, name: str, embeddings: Sequence[npt.ArrayLike] | npt.ArrayLike) -> Template:
        """Append negative templates (false-trigger embeddings) to a keyword and save it."""
        template = self.get(name)
        for row in np.atleast_2d(np.asarray(embeddings, dtype=np.float32)):
            template = template.with_negative(row)
        self.add(template)
        return template

    @staticmethod
    def _read(path: Path, name: str) -> Template:
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TemplateError(f"{path}: corrupt or unreadable template ({error})") from error
        template = Template.from_json(raw, str(path))
        if template.name != name:  # two files claiming one keyword would share its trigger state
            raise TemplateError(f"{path}: holds keyword {template.name!r}, expected {name!r} (its file name)")
        return template
