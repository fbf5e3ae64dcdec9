"""The impostor cohort file: hours of ordinary audio as the model sees a stream, shipped beside the model.

`<model>.cohort.npz` holds unit window embeddings (int8, one every `hop_ms`, as the daemon's detector computes
them: the energy gate's skipped windows are zero vectors) of contiguous streams, where each stream begins, and
a JSON `meta` with the format, the hop, the model's sha256 and where the audio came from. `kws-convert cohort`
builds it; a cohort is never applied to embeddings of another model. `edge.budget` turns it into thresholds.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.fileio import atomic_write_bytes

__all__ = ["COHORT_FORMAT", "Cohort", "CohortError", "cohort_path_for"]

FloatArray = npt.NDArray[np.float32]

COHORT_FORMAT = "udkws-cohort/1"
_INT8_SCALE = 127.0  # unit vectors are stored as round(127 * x): cosine error ~0.002, a quarter of the size


class CohortError(ValueError):
    """The cohort file is missing, unreadable, malformed or made with another model."""


def cohort_path_for(model_path: str | Path) -> Path:
    """`build/udkws_int8.tflite` -> `build/udkws_int8.cohort.npz`."""
    path = Path(model_path)
    return path.with_name(path.stem + ".cohort.npz")


@dataclass(frozen=True)
class Cohort:
    """Unit window embeddings [N, D] of contiguous streams; `segment_starts` marks where each stream begins."""

    embeddings: npt.NDArray[np.int8]
    segment_starts: npt.NDArray[np.int64]
    hop_ms: int
    model_sha256: str
    meta: dict[str, Any]

    @property
    def hours(self) -> float:
        return float(self.embeddings.shape[0] * self.hop_ms / 3.6e6)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def from_float(
        cls,
        unit_embeddings: npt.ArrayLike,
        segment_starts: npt.ArrayLike,
        hop_ms: int,
        model_sha256: str,
        meta: dict[str, Any] | None = None,
    ) -> Cohort:
        values = np.asarray(unit_embeddings, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] == 0:
            raise CohortError(f"cohort: expected embeddings [N, D] with N >= 1, got shape {values.shape}")
        quantized = np.clip(np.rint(values * _INT8_SCALE), -127, 127).astype(np.int8)
        return cls(
            quantized,
            _check_segments(segment_starts, values.shape[0], "cohort"),
            hop_ms,
            model_sha256,
            dict(meta or {}),
        )

    def scores(self, template: npt.ArrayLike, block: int = 8192) -> FloatArray:
        """Cosine of every cohort window with a unit template, in blocks (memory stays ~block x D floats)."""
        unit = np.asarray(template, dtype=np.float32).reshape(-1)
        if unit.shape[0] != self.dim:
            raise CohortError(f"cohort: template has {unit.shape[0]} dimensions, the cohort {self.dim}")
        out = np.empty(self.embeddings.shape[0], dtype=np.float32)
        for start in range(0, out.shape[0], block):
            rows = self.embeddings[start : start + block].astype(np.float32)
            out[start : start + block] = rows @ unit / _INT8_SCALE
        return out

    def rows(self, indices: npt.ArrayLike) -> FloatArray:
        """The unit embeddings of the given windows, as float32 [len(indices), D]."""
        chosen = self.embeddings[np.asarray(indices, dtype=np.int64)].astype(np.float32) / _INT8_SCALE
        norms = np.maximum(np.linalg.norm(chosen, axis=1, keepdims=True), 1e-6)
        units: FloatArray = (chosen / norms).astype(np.float32)
        return units

    def halves(self) -> tuple[Cohort, Cohort]:
        """Even-numbered streams and odd-numbered ones: hard negatives are taken from the first half and
        thresholds calibrated on the second, so that a negative never vetoes the very window it came from."""
        bounds = [*self.segment_starts.tolist(), self.embeddings.shape[0]]
        parts: list[Cohort] = []
        for parity in (0, 1):
            spans = [(a, b) for i, (a, b) in enumerate(itertools.pairwise(bounds)) if i % 2 == parity]
            if not spans:
                spans = list(itertools.pairwise(bounds))  # one stream only: both halves are all of it
            lengths = [b - a for a, b in spans]
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            embeddings = np.concatenate([self.embeddings[a:b] for a, b in spans])
            parts.append(Cohort(embeddings, starts, self.hop_ms, self.model_sha256, self.meta))
        return parts[0], parts[1]

    def save(self, path: str | Path) -> None:
        meta = {
            **self.meta,
            "format": COHORT_FORMAT,
            "hop_ms": self.hop_ms,
            "model_sha256": self.model_sha256,
        }
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            embeddings=self.embeddings,
            segment_starts=self.segment_starts,
            meta=np.array(json.dumps(meta, sort_keys=True)),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, model_sha256: str | None = None) -> Cohort:
        """Read and check a cohort file; with `model_sha256`, refuse a cohort made with another model."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                embeddings = np.asarray(data["embeddings"])
                segments = np.asarray(data["segment_starts"])
                meta = json.loads(str(data["meta"]))
        except FileNotFoundError as error:
            raise CohortError(f"{path}: no such cohort file") from error
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as error:
            raise CohortError(f"{path}: unreadable cohort file ({error})") from error
        if not isinstance(meta, dict) or meta.get("format") != COHORT_FORMAT:
            raise CohortError(
                f"{path}: format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                f"expected {COHORT_FORMAT!r}"
            )
        if embeddings.dtype != np.int8 or embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise CohortError(
                f"{path}: embeddings must be int8 [N, D], got {embeddings.dtype} {embeddings.shape}"
            )
        hop_ms = meta.get("hop_ms")
        if not isinstance(hop_ms, int) or not 10 <= hop_ms <= 1000:
            raise CohortError(f"{path}: hop_ms must be an integer 10-1000, got {hop_ms!r}")
        sha = meta.get("model_sha256")
        if not isinstance(sha, str) or not sha:
            raise CohortError(f"{path}: model_sha256 missing")
        if model_sha256 is not None and sha != model_sha256:
            raise CohortError(
                f"{path}: made with model {sha[:12]}..., the running model is {model_sha256[:12]}...; "
                "rebuild it with `kws-convert cohort`"
            )
        return cls(embeddings, _check_segments(segments, embeddings.shape[0], str(path)), hop_ms, sha, meta)


def _check_segments(starts: npt.ArrayLike, count: int, where: str) -> npt.NDArray[np.int64]:
    array = np.asarray(starts)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise CohortError(f"{where}: segment_starts must be a non-empty 1-D integer array")
    array = array.astype(np.int64)
    if array[0] != 0 or np.any(np.diff(array) <= 0) or array[-1] >= count:
        raise CohortError(f"{where}: segment_starts must start at 0 and increase within [0, {count})")
    return array
