"""The scoring interface of the protocol, and the embedders that plug into it.

An `Embedder` maps audio windows float32 [N, L] to embeddings [N, D]; a `Scorer` is anything that, having seen
every clip once (`prepare`), scores clips against enrollment sets. `EmbeddingScorer` turns an embedder into a
scorer (cosine to the mean of the L2-normalised enrollment embeddings). Embedders:
- `CheckpointEmbedder`: a float checkpoint through torch (front end `edge.frontend.mfcc`, the checkpoint's
  feature mean/std, the model, L2), i.e. what training produced.
- `TfliteEmbedder`: the int8 TFLite model through `edge.model.load_model`, the very code the board runs.
The MFCC + DTW baseline is a scorer, not an embedder: see `training.evaluation.dtw`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import TARGET_RATE
from edge.frontend import mfcc

__all__ = [
    "CheckpointEmbedder",
    "Embedder",
    "EmbeddingScorer",
    "PreparedEmbeddings",
    "PreparedScorer",
    "Scorer",
    "TfliteEmbedder",
    "as_scorer",
    "check_windows",
    "l2_normalise",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

EMBED_BATCH = 64


@runtime_checkable
class Embedder(Protocol):
    """Audio windows float32 [N, L] (16 kHz, L = window_seconds * 16000) -> embeddings [N, D]."""

    @property
    def name(self) -> str: ...

    @property
    def window_seconds(self) -> float: ...

    def embed(self, audio: FloatArray) -> FloatArray: ...


class PreparedScorer(Protocol):
    """A scorer that has seen every clip of an evaluation set once."""

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        """Scores [n_clips, n_targets] of every clip against each target enrolled from the clip indices given."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores clips against enrollment sets (an embedding model, or DTW)."""

    @property
    def name(self) -> str: ...

    @property
    def window_seconds(self) -> float: ...

    def prepare(self, audio: FloatArray) -> PreparedScorer: ...


@dataclass(frozen=True)
class PreparedEmbeddings:
    embeddings: FloatArray  # [N, D], L2-normalised

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        templates = np.stack([self.embeddings[np.asarray(take)].mean(axis=0) for take in enrollment])
        templates /= np.maximum(np.linalg.norm(templates, axis=1, keepdims=True), 1e-12)
        return (self.embeddings.astype(np.float64) @ templates.T.astype(np.float64)).astype(np.float64)


def l2_normalise(vectors: npt.ArrayLike) -> FloatArray:
    array = np.asarray(vectors, dtype=np.float32)
    unit: FloatArray = (array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    return unit


@dataclass(frozen=True)
class EmbeddingScorer:
    """Score = cosine between a clip's embedding and the mean of the L2-normalised enrollment embeddings."""

    embedder: Embedder
    batch_size: int = EMBED_BATCH
    progress: bool = True

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def window_seconds(self) -> float:
        return self.embedder.window_seconds

    def prepare(self, audio: FloatArray) -> PreparedScorer:
        return PreparedEmbeddings(self.embed_all(audio))

    def embed_all(self, audio: FloatArray) -> FloatArray:
        if audio.shape[0] == 0:
            raise ValueError(f"{self.name}: no windows to embed")
        chunks = []
        starts = range(0, audio.shape[0], self.batch_size)
        for start in tqdm(starts, desc=f"embedding ({self.name})", unit="batch", disable=not self.progress):
            batch = audio[start : start + self.batch_size]
            chunk = np.asarray(self.embedder.embed(batch), dtype=np.float32)
            if chunk.ndim != 2 or chunk.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"{self.name}: embed() returned shape {chunk.shape} for {batch.shape[0]} windows"
                )
            chunks.append(chunk)
        embeddings = np.concatenate(chunks)
        if not np.all(np.isfinite(embeddings)):
            raise ValueError(f"{self.name}: embed() returned NaN or infinite values")
        return l2_normalise(embeddings)


def as_scorer(scorer_or_embedder: Scorer | Embedder, progress: bool = True) -> Scorer:
    """A scorer as is; an embedder wrapped in `EmbeddingScorer`."""
    if isinstance(scorer_or_embedder, Scorer):
        return scorer_or_embedder
    if isinstance(scorer_or_embedder, Embedder):
        return EmbeddingScorer(scorer_or_embedder, progress=progress)
    raise TypeError(
        "expected an embedder (.name, .window_seconds, .embed(audio)) or a scorer (.name, .window_seconds, "
        f".prepare(audio)), got {type(scorer_or_embedder).__name__}"
    )


def check_windows(audio: npt.ArrayLike, window_samples: int, who: str) -> FloatArray:
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != window_samples:
        raise ValueError(
            f"{who}: expected audio windows [N, {window_samples}] at 16 kHz, got shape {array.shape}"
        )
    return array


@dataclass
class CheckpointEmbedder:
    """A training checkpoint (`training.checkpoint.load_checkpoint`) run in float32 with torch on the CPU."""

    checkpoint_path: Path
    num_threads: int | None = None
    _model: Any = field(init=False, repr=False)
    _mean: FloatArray = field(init=False, repr=False)
    _std: FloatArray = field(init=False, repr=False)
    window_seconds: float = field(init=False)
    window_samples: int = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        import torch

        from training.checkpoint import load_checkpoint

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        checkpoint = load_checkpoint(self.checkpoint_path)
        self._model = checkpoint.build_model()
        self._mean = np.asarray(checkpoint.feature_mean, dtype=np.float32)
        self._std = np.asarray(checkpoint.feature_std, dtype=np.float32)
        self.window_seconds = checkpoint.window_seconds
        self.window_samples = checkpoint.window_samples
        self.name = f"checkpoint {Path(self.checkpoint_path).name} ({checkpoint.model_name}, float32)"

    def features(self, audio: npt.ArrayLike) -> FloatArray:
        """Normalised encoder inputs [N, frames, 40] of windows [N, L]."""
        windows = check_windows(audio, self.window_samples, self.name)
        stacked = np.stack([mfcc(window) for window in windows])
        return ((stacked - self._mean) / self._std).astype(np.float32)

    def embed(self, audio: npt.ArrayLike) -> FloatArray:
        import torch

        inputs = torch.from_numpy(self.features(audio))
        with torch.inference_mode():
            outputs = self._model(inputs)
        return l2_normalise(outputs.detach().cpu().numpy().astype(np.float32))


@dataclass
class TfliteEmbedder:
    """The int8 TFLite encoder and its sidecar, loaded by `edge.model.load_model` (the board's code path)."""

    tflite_path: Path
    num_threads: int = 1
    _encoder: Any = field(init=False, repr=False)
    window_seconds: float = field(init=False)
    window_samples: int = field(init=False)
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from edge.model import load_model

        self._encoder = load_model(self.tflite_path, num_threads=self.num_threads)
        self.window_samples = int(self._encoder.window_samples)
        self.window_seconds = self.window_samples / TARGET_RATE
        model_name = self._encoder.info().get("model_name", "?")
        self.name = f"tflite {Path(self.tflite_path).name} ({model_name}, int8)"

    def embed(self, audio: npt.ArrayLike) -> FloatArray:
        windows = check_windows(audio, self.window_samples, self.name)
        return l2_normalise(np.asarray(self._encoder.embed_windows(windows), dtype=np.float32))
