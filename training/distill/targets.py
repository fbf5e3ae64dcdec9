"""Teacher targets computed once and cached on disk, keyed by (teacher model sha256, clip key).

Layout under `<cache_dir>/<teacher sha256>/` (cache_dir defaults to `<repo>/cache/teacher`):
- `teacher.json`: the teacher's name, sha256, licence, embedding size and window length;
- `shard-<time ns>-<pid>.npy`: float16 `[rows, embedding_dim]` L2-normalised embeddings;
- `shard-<time ns>-<pid>.keys.json`: the clip keys of those rows, in order. It is written (atomically) after its shard,
  so it marks the shard as complete: a build that is interrupted keeps every complete shard (and flushes the
  one it was filling), and the next build computes only the keys that are missing. Shard names are unique per
process, so two runs filling one cache at once never overwrite each other (at worst both compute a key).

Keys: a real or synthetic clip's key is `Clip.key` (`<dataset>/<relative path>`), its target being the teacher's
embedding of the clip's deterministic (centred, unaugmented) window, `WindowDataset.window(index)`; see
`dataset_items`. The student may see randomly placed and augmented versions of that window: the target stays
the clean one (the teacher is close to shift-invariant; see docs/distillation.md). A precomputed augmented copy
is `augmented_key(key, i)` = `key#aug<i>`; `window_items` makes those copies reproducibly from the key.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tqdm import tqdm

from training.data.corpus_io import atomic_write_bytes, write_json_atomic
from training.data.paths import cache_dir as default_cache_root
from training.distill.teachers import Teacher, check_windows

__all__ = [
    "TARGETS_FORMAT",
    "TeacherTargets",
    "augmented_key",
    "base_key",
    "dataset_items",
    "default_targets_dir",
    "window_items",
]

log = logging.getLogger(__name__)

TARGETS_FORMAT = "udkws-teacher-targets/1"
AUGMENT_SEPARATOR = "#aug"

AudioSource = npt.NDArray[Any] | Callable[[], npt.NDArray[Any]]
Item = tuple[str, AudioSource]


def default_targets_dir() -> Path:
    return default_cache_root() / "teacher"


def augmented_key(key: str, copy: int) -> str:
    return f"{key}{AUGMENT_SEPARATOR}{copy}"


def base_key(key: str) -> str:
    """The clip key an (augmented) target key was made from."""
    return key.split(AUGMENT_SEPARATOR, 1)[0]


def copy_rng(key: str, copy: int, seed: int) -> np.random.Generator:
    """The generator that makes augmented copy `copy` of clip `key`: the same for the targets and the loader."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def dataset_items(dataset: Any) -> list[Item]:
    """(key, lazy centred window) of every clip of a `training.data.dataset.WindowDataset`."""
    return [(clip.key, partial(dataset.window, index)) for index, clip in enumerate(dataset.clips)]


def window_items(
    keyed_loaders: Iterable[tuple[str, Callable[[], npt.NDArray[Any]]]],
    copies: int = 0,
    augment: Callable[[npt.NDArray[np.float32], np.random.Generator], npt.NDArray[Any]] | None = None,
    seed: int = 0,
) -> Iterator[Item]:
    """(key, lazy window) items for `TeacherTargets.build`: each clean window, then `copies` augmented ones.

    Copy `i` of `key` is `augment(window, rng)` with an rng derived from (seed, key, i), so a data loader can
    rebuild exactly the audio whose target is cached under `augmented_key(key, i)`.
    """
    if copies and augment is None:
        raise ValueError("window_items: copies > 0 needs an augment function")
    for key, load in keyed_loaders:
        if AUGMENT_SEPARATOR in key:
            raise ValueError(f"window_items: clip key {key!r} must not contain {AUGMENT_SEPARATOR!r}")
        yield key, load
        for copy in range(copies):

            def make(load: Callable[[], npt.NDArray[Any]] = load, key: str = key, copy: int = copy) -> Any:
                assert augment is not None
                return augment(np.asarray(load(), dtype=np.float32), copy_rng(key, copy, seed))

            yield augmented_key(key, copy), make


def _shard_name() -> str:
    """A new shard's name: time-ordered, and unique across processes that fill the same cache at once."""
    return f"shard-{time.time_ns():020d}-{os.getpid()}"


def _npy_bytes(array: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class TeacherTargets:
    """The cached teacher embeddings of one teacher; `lookup(keys)` returns them as a float32 tensor."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.meta = meta
        self.embedding_dim = int(meta["embedding_dim"])
        self._shards: list[npt.NDArray[np.float16]] = []
        self._where: dict[str, tuple[int, int]] = {}
        self.hits = 0  # keys found in the cache by the last build
        self.computed = 0  # keys the last build ran the teacher on
        self._load_shards()

    # ---- opening ----

    @classmethod
    def open(cls, teacher_sha256: str, cache_dir: str | Path | None = None) -> TeacherTargets:
        """The cache of the teacher with this model sha256 (read-only use; it must exist)."""
        directory = Path(cache_dir) if cache_dir is not None else default_targets_dir()
        directory = directory / teacher_sha256
        meta_path = directory / "teacher.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no teacher targets at {directory} (missing teacher.json); build them first"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != TARGETS_FORMAT or meta.get("sha256") != teacher_sha256:
            raise ValueError(
                f"{meta_path}: expected format {TARGETS_FORMAT} for teacher sha256 {teacher_sha256}, "
                f"got format {meta.get('format')!r} and sha256 {meta.get('sha256')!r}"
            )
        return cls(directory, meta)

    @classmethod
    def _open_or_create(cls, teacher: Teacher, cache_dir: str | Path | None) -> TeacherTargets:
        root = Path(cache_dir) if cache_dir is not None else default_targets_dir()
        meta = {
            "format": TARGETS_FORMAT,
            "name": teacher.name,
            "sha256": teacher.sha256,
            "licence": teacher.licence,
            "embedding_dim": int(teacher.embedding_dim),
            "window_samples": int(teacher.window_samples),
            "sample_rate": int(teacher.sample_rate),
        }
        if not (root / teacher.sha256 / "teacher.json").is_file():
            write_json_atomic(root / teacher.sha256 / "teacher.json", meta)
        targets = cls.open(teacher.sha256, root)
        for field in ("embedding_dim", "window_samples"):
            if targets.meta.get(field) != meta[field]:
                raise ValueError(
                    f"{targets.directory / 'teacher.json'}: {field} is {targets.meta.get(field)}, "
                    f"but teacher {teacher.name} has {meta[field]}"
                )
        return targets

    def _load_shards(self) -> None:
        for keys_path in sorted(self.directory.glob("shard-*.keys.json")):
            array_path = keys_path.with_name(keys_path.name.replace(".keys.json", ".npy"))
            keys = json.loads(keys_path.read_text())
            if not array_path.is_file():
                raise FileNotFoundError(f"{keys_path} lists {len(keys)} keys but {array_path} is missing")
            array = np.load(array_path, mmap_mode="r", allow_pickle=False)
            if array.ndim != 2 or array.shape != (len(keys), self.embedding_dim):
                raise ValueError(
                    f"{array_path}: expected shape ({len(keys)}, {self.embedding_dim}) to match "
                    f"{keys_path.name}, got {array.shape}"
                )
            shard = len(self._shards)
            self._shards.append(array)
            for row, key in enumerate(keys):
                self._where.setdefault(key, (shard, row))

    # ---- building ----

    @classmethod
    def build(
        cls,
        teacher: Teacher,
        items: Iterable[Item],
        cache_dir: str | Path | None = None,
        shard_size: int = 1024,
        batch_size: int = 32,
        progress: bool = True,
    ) -> TeacherTargets:
        """Targets for every (key, window) item, running the teacher only on keys not cached yet.

        A window is a float32 `[window_samples]` array, or a function returning one (called only on a miss, so
        cached clips are never decoded). Repeated keys are computed once.
        """
        targets = cls._open_or_create(teacher, cache_dir)
        targets.hits = targets.computed = 0
        total = len(items) if isinstance(items, Sequence) else None
        pending_keys: list[str] = []
        pending_audio: list[npt.NDArray[np.float32]] = []
        shard_keys: list[str] = []
        shard_rows: list[npt.NDArray[np.float32]] = []
        seen: set[str] = set()

        def run_teacher() -> None:
            if pending_keys:
                embeddings = np.asarray(teacher.embed(np.stack(pending_audio)), dtype=np.float32)
                if embeddings.shape != (len(pending_keys), targets.embedding_dim):
                    raise ValueError(
                        f"teacher {teacher.name} returned shape {embeddings.shape} for {len(pending_keys)} windows"
                    )
                shard_keys.extend(pending_keys)
                shard_rows.append(embeddings)
                targets.computed += len(pending_keys)
                pending_keys.clear()
                pending_audio.clear()

        def flush_shard() -> None:
            run_teacher()
            if shard_keys:
                targets._write_shard(shard_keys, np.concatenate(shard_rows, axis=0))
                shard_keys.clear()
                shard_rows.clear()

        bar = tqdm(
            items, total=total, desc=f"teacher targets ({teacher.name})", unit="clip", disable=not progress
        )
        try:
            for key, source in bar:
                if not isinstance(key, str) or not key:
                    raise ValueError(f"teacher target keys must be non-empty strings, got {key!r}")
                if key in seen:
                    continue
                seen.add(key)
                if key in targets._where:
                    targets.hits += 1
                    continue
                audio = source() if callable(source) else source
                window = check_windows(np.asarray(audio), teacher.window_samples, f"audio of {key!r}")[0]
                pending_keys.append(key)
                pending_audio.append(window)
                if len(pending_keys) >= batch_size:
                    run_teacher()
                if len(shard_keys) >= shard_size:
                    flush_shard()
        finally:
            # Keep what was computed when interrupted: the next build resumes after it.
            flush_shard()
            bar.close()
        log.info(
            "teacher targets %s: %d cached, %d computed, %d in %s",
            teacher.name,
            targets.hits,
            targets.computed,
            len(targets),
            targets.directory,
        )
        return targets

    @classmethod
    def build_parallel(
        cls,
        teacher: Teacher,
        items: Sequence[Item],
        cache_dir: str | Path | None = None,
        jobs: int = 1,
        progress: bool = True,
        load_teacher: Callable[[], Teacher] | None = None,
    ) -> TeacherTargets:
        """`build` with the missing keys split over `jobs` forked processes, each with its own teacher from
        `load_teacher` (a ResNet-50 teacher is single-thread bound: two processes fill the cache twice as
        fast on two cores). Shard names are unique per process, so the parts never collide."""
        if jobs <= 1:
            return cls.build(teacher, items, cache_dir, progress=progress)
        if load_teacher is None:
            raise ValueError(
                "build_parallel: jobs > 1 needs load_teacher, to build each process's own teacher"
            )
        cached = cls._open_or_create(teacher, cache_dir)
        seen: set[str] = set()
        missing: list[Item] = []
        for key, source in items:
            if key not in seen and key not in cached:
                missing.append((key, source))
            seen.add(key)
        if len(missing) >= 2 * jobs:
            log.info("teacher targets: %d missing, over %d processes", len(missing), jobs)
            context = multiprocessing.get_context("fork")  # the parts inherit the lazy window loaders
            workers = [
                context.Process(
                    target=_build_part,
                    args=(load_teacher, missing[part::jobs], cache_dir, progress and part == 0),
                    name=f"teacher-targets-{part}",
                )
                for part in range(jobs)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            failed = [worker.name for worker in workers if worker.exitcode != 0]
            if failed:
                raise RuntimeError(
                    f"teacher targets: process(es) {failed} failed (see their log above); the shards they "
                    "finished are kept and the next build resumes after them"
                )
        return cls.build(teacher, items, cache_dir, progress=False)  # reopens; computes anything left

    def _write_shard(self, keys: list[str], embeddings: npt.NDArray[np.float32]) -> None:
        name = _shard_name()
        array_path = self.directory / f"{name}.npy"
        atomic_write_bytes(array_path, _npy_bytes(embeddings.astype(np.float16)), keep_previous=False)
        atomic_write_bytes(
            self.directory / f"{name}.keys.json", json.dumps(keys).encode(), keep_previous=False
        )
        shard = len(self._shards)
        self._shards.append(np.load(array_path, mmap_mode="r", allow_pickle=False))
        for row, key in enumerate(keys):
            self._where[key] = (shard, row)

    # ---- reading ----

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def keys(self) -> list[str]:
        return list(self._where)

    def lookup(self, keys: Sequence[str]) -> torch.Tensor:
        """Targets `[len(keys), embedding_dim]` (float32, L2-normalised) in the order of `keys`."""
        missing = [key for key in keys if key not in self._where]
        if missing:
            shown = ", ".join(repr(k) for k in missing[:5])
            raise KeyError(
                f"{len(missing)} key(s) have no teacher target in {self.directory} (e.g. {shown}); "
                "build the targets for every training input first"
            )
        rows = np.empty((len(keys), self.embedding_dim), dtype=np.float32)
        for position, key in enumerate(keys):
            shard, row = self._where[key]
            rows[position] = self._shards[shard][row]
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return torch.from_numpy(rows)


def _build_part(
    load_teacher: Callable[[], Teacher], items: Sequence[Item], cache_dir: str | Path | None, progress: bool
) -> None:
    TeacherTargets.build(load_teacher(), items, cache_dir, progress=progress)
