"""The MFCC + DTW baseline (numpy): template matching with no learning, as a floor for the learned encoders.

Features: `edge.frontend.mfcc` of each window, its first `n_coefficients` coefficients, per-clip mean
removed (cepstral mean normalisation). Frame distance: Euclidean. DTW: steps (1,0), (0,1), (1,1), open to
no band; the accumulated cost at the end, divided by n + m. A clip's score against a keyword is minus the
minimum (or mean) of its DTW distances to the k enrollment takes.

`batch_dtw` runs the recursion along anti-diagonals: every cell of one anti-diagonal depends only on the two
before it, so a step is a few vector operations over all pairs of a batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.frontend import mfcc

__all__ = ["DtwConfig", "MfccDtwScorer", "batch_dtw", "dtw_distance", "euclidean_cost", "mfcc_sequences"]

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

BATCH_PAIRS = 512


def dtw_distance(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Plain DTW between sequences [n, d] and [m, d] (Euclidean frame cost), unnormalised: the reference."""
    first = np.atleast_2d(np.asarray(a, dtype=np.float64))
    second = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(f"dtw_distance: expected [n, d] and [m, d], got {first.shape} and {second.shape}")
    n, m = first.shape[0], second.shape[0]
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = float(np.linalg.norm(first[i - 1] - second[j - 1]))
            total[i, j] = cost + min(total[i - 1, j], total[i, j - 1], total[i - 1, j - 1])
    return float(total[n, m])


def euclidean_cost(query: FloatArray, references: FloatArray) -> FloatArray:
    """Frame distances [B, n, m] between query [n, d] and each of references [B, m, d]."""
    q = np.asarray(query, dtype=np.float32)
    refs = np.asarray(references, dtype=np.float32)
    batch, frames, dim = refs.shape
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, built in place in one [B * m, n] buffer (one BLAS call).
    squared = refs.reshape(batch * frames, dim) @ (-2.0 * q.T)
    squared += np.sum(q * q, axis=1)[None, :]
    squared += np.sum(refs * refs, axis=2).reshape(-1, 1)
    np.maximum(squared, 0.0, out=squared)
    np.sqrt(squared, out=squared)
    return squared.reshape(batch, frames, q.shape[0]).transpose(0, 2, 1)


def batch_dtw(cost: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Accumulated DTW cost [B] of local cost matrices [B, n, m] (unnormalised), by anti-diagonals."""
    matrix = np.asarray(cost, dtype=np.float32)
    if matrix.ndim != 3 or min(matrix.shape[1:]) < 1:
        raise ValueError(f"batch_dtw: expected cost matrices [B, n, m] with n, m >= 1, got {matrix.shape}")
    batch, n, m = matrix.shape
    rows = np.arange(n)
    # Diagonal arrays hold row i at position i + 1; position 0 is a permanent +inf for "row -1".
    before_last = np.full((batch, n + 1), np.inf, dtype=np.float32)
    last = np.full((batch, n + 1), np.inf, dtype=np.float32)
    for diagonal in range(n + m - 1):
        i = rows[max(0, diagonal - m + 1) : min(diagonal, n - 1) + 1]
        local = matrix[:, i, diagonal - i]
        current = np.full((batch, n + 1), np.inf, dtype=np.float32)
        if diagonal == 0:
            current[:, 1] = local[:, 0]
        else:
            # (i-1, j) and (i, j-1) lie on the previous diagonal, (i-1, j-1) on the one before.
            best = np.minimum(np.minimum(last[:, i], last[:, i + 1]), before_last[:, i])
            current[:, i + 1] = local + best
        before_last, last = last, current
    return last[:, n].astype(np.float64)


@dataclass(frozen=True)
class DtwConfig:
    n_coefficients: int = 13
    mean_normalise: bool = True
    aggregate: str = "min"  # over the k enrollment takes: "min" or "mean"

    def __post_init__(self) -> None:
        if not 1 <= self.n_coefficients <= 40:
            raise ValueError(f"DtwConfig.n_coefficients: expected 1..40, got {self.n_coefficients}")
        if self.aggregate not in ("min", "mean"):
            raise ValueError(f"DtwConfig.aggregate: expected 'min' or 'mean', got {self.aggregate!r}")


def mfcc_sequences(audio: npt.ArrayLike, config: DtwConfig = DtwConfig()) -> FloatArray:
    """The DTW features of windows [N, L]: [N, frames, n_coefficients]."""
    windows = np.asarray(audio, dtype=np.float32)
    if windows.ndim != 2:
        raise ValueError(f"mfcc_sequences: expected windows [N, L], got shape {windows.shape}")
    features = np.stack([mfcc(window)[:, : config.n_coefficients] for window in windows])
    if config.mean_normalise:
        features = features - features.mean(axis=1, keepdims=True)
    return features.astype(np.float32)


@dataclass
class _PreparedDtw:
    features: FloatArray  # [N, frames, d]
    config: DtwConfig
    progress: bool
    _distances: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)

    def distances_to(self, index: int) -> npt.NDArray[np.float64]:
        """Normalised DTW distance of every clip to clip `index`, computed once and cached."""
        cached = self._distances.get(index)
        if cached is None:
            query = self.features[index]
            total = self.features.shape[0]
            parts = [
                batch_dtw(euclidean_cost(query, self.features[start : start + BATCH_PAIRS]))
                for start in range(0, total, BATCH_PAIRS)
            ]
            cached = np.concatenate(parts) / float(query.shape[0] + self.features.shape[1])
            self._distances[index] = cached
        return cached

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        needed = sorted({int(i) for take in enrollment for i in take} - set(self._distances))
        for index in tqdm(
            needed, desc="DTW against enrollment takes", unit="take", disable=not self.progress, leave=False
        ):
            self.distances_to(index)
        columns = []
        for take in enrollment:
            stacked = np.stack([self._distances[int(i)] for i in take])
            reduced = stacked.min(axis=0) if self.config.aggregate == "min" else stacked.mean(axis=0)
            columns.append(-reduced)
        return np.stack(columns, axis=1)


@dataclass(frozen=True)
class MfccDtwScorer:
    """The MFCC + DTW baseline as a protocol scorer (not an embedding)."""

    config: DtwConfig = DtwConfig()
    window_seconds: float = 1.0
    progress: bool = True

    @property
    def name(self) -> str:
        return f"mfcc-dtw ({self.config.n_coefficients} coeff., {self.config.aggregate} over takes)"

    def prepare(self, audio: FloatArray) -> _PreparedDtw:
        return _PreparedDtw(mfcc_sequences(audio, self.config), self.config, self.progress)
