"""A frame-sequence teacher's targets at the student's frame rate, and the training-only head that learns them.

The second teacher (Whisper tiny.en's encoder, `WhisperTinyTeacher.frames`: 384-d every 20 ms, 75 frames for a
1.5 s window) carries what EfficientWord-Net lacks (docs/distillation.md, "Second teacher"): order in time.
`edge_tcn` halves time twice, so its last block has one frame every 40 ms (37 for 148 MFCC frames).
`FrameTargetTeacher` averages the teacher's frames in pairs to that rate, normalises each frame, and hands the
sequence to the existing target cache (`TeacherTargets`) as one flat row (`frames x dim`, unit norm), so it is
cached, resumed and built in parallel like any teacher's embedding. `FrameSequenceTerm` is the loss: a
training-only 1x1 convolution maps the student's last-block frames to the teacher's dimension and each frame
is compared by cosine; a pooled form of the same targets (`pool_target_frames`: the mean and the three thirds'
means, as `WhisperTinyTeacher.embed`) serves the pooled variant without a second teacher pass.

When the student's window is shifted by `s` MFCC frames against the clean, centred window the targets come
from, the target sequence is shifted by `round(s / 4)` frames (edge frames repeated), so that frame `k` of the
student still faces the teacher's view of the same stretch of audio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as functional
from torch import nn

from training.distill.teachers import Teacher

__all__ = [
    "FrameSequenceTerm",
    "FrameTargetTeacher",
    "PooledFrameTerm",
    "pool_target_frames",
    "shift_frames",
]

FloatArray = npt.NDArray[np.float32]


class FrameTargetTeacher:
    """A teacher with `frames(audio) -> [N, T, D]`, seen as a flat `[N, frames * D]` embedding at 1 / `pool`
    of its frame rate (each frame L2-normalised, the row scaled to unit norm)."""

    def __init__(self, base: Any, frames: int = 37, pool: int = 2) -> None:
        if frames < 1 or pool < 1:
            raise ValueError(f"FrameTargetTeacher: frames and pool must be >= 1, got {frames}, {pool}")
        self.base = base
        self.frames, self.pool = frames, pool
        self.frame_dim = int(base.frame_dim)
        self.name = f"{base.name}-frames{frames}x{pool}"
        self.sha256 = base.sha256  # provenance: the teacher's own file; the cache folder adds the layout
        self.licence = base.licence
        self.sample_rate = base.sample_rate
        self.window_samples = base.window_samples
        self.embedding_dim = frames * self.frame_dim
        if frames * pool > base.frames_per_window:
            raise ValueError(
                f"FrameTargetTeacher: {frames} frames x {pool} needs {frames * pool} teacher frames, "
                f"the teacher gives {base.frames_per_window}"
            )

    @property
    def cache_subdir(self) -> str:
        return f"frames{self.frames}x{self.pool}"

    def embed(self, audio: npt.NDArray[Any]) -> FloatArray:
        sequence = np.asarray(self.base.frames(audio), dtype=np.float32)
        count = sequence.shape[0]
        used = sequence[:, : self.frames * self.pool].reshape(count, self.frames, self.pool, self.frame_dim)
        pooled = used.mean(axis=2)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=2, keepdims=True), 1e-12)
        return (pooled / np.sqrt(self.frames)).reshape(count, -1).astype(np.float32)


def frames_of(rows: torch.Tensor, frame_dim: int) -> torch.Tensor:
    """Flat target rows `[B, T * D]` -> `[B, T, D]`, each frame L2-normalised."""
    sequence = rows.reshape(rows.shape[0], -1, frame_dim)
    return functional.normalize(sequence, dim=2)


def shift_frames(sequence: torch.Tensor, shifts: torch.Tensor, ratio: int = 4) -> torch.Tensor:
    """Shift each `[T, D]` sequence of `[B, T, D]` by `round(shift / ratio)` frames (positive: later in time),
    repeating the edge frame, as the student's input was shifted by `shift` MFCC frames."""
    out = sequence.clone()
    length = sequence.shape[1]
    for row, shift in enumerate(shifts.tolist()):
        steps = round(shift / ratio)
        if steps == 0:
            continue
        steps = max(-length + 1, min(length - 1, steps))
        if steps > 0:
            out[row, steps:] = sequence[row, :-steps]
            out[row, :steps] = sequence[row, 0]
        else:
            out[row, :steps] = sequence[row, -steps:]
            out[row, steps:] = sequence[row, -1]
    return out


def pool_target_frames(sequence: torch.Tensor) -> torch.Tensor:
    """`[B, T, D]` -> `[B, 4 D]`: the mean and the three thirds' means, each normalised, then normalised again."""
    thirds = torch.tensor_split(sequence, 3, dim=1)
    parts = [sequence.mean(dim=1)] + [part.mean(dim=1) for part in thirds]
    pooled = torch.cat([functional.normalize(part, dim=1) for part in parts], dim=1)
    return functional.normalize(pooled, dim=1)


class FrameSequenceTerm(nn.Module):
    """Mean over frames of `1 - cos(head(student_frames), teacher_frame - mean_frame)`.

    `head` is a training-only 1x1 convolution (student channels -> teacher dim), never saved with the encoder.
    The teacher's frames share a large common direction (silence and the encoder's bias); the cosine is taken
    after removing `mean_frame`, a fixed estimate of it from the training targets, so that the loss rewards
    what distinguishes frames rather than what they share.
    """

    def __init__(
        self,
        student_channels: int,
        frame_dim: int,
        mean_frame: torch.Tensor | None = None,
        shift_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.frame_dim = frame_dim
        self.shift_ratio = shift_ratio  # MFCC frames per student frame (4 for edge_tcn's two strides of 2)
        self.head = nn.Conv1d(student_channels, frame_dim, 1)
        self.register_buffer(
            "mean_frame", torch.zeros(frame_dim) if mean_frame is None else mean_frame.clone()
        )

    def targets(self, rows: torch.Tensor, shifts: torch.Tensor | None) -> torch.Tensor:
        sequence = frames_of(rows, self.frame_dim)
        if shifts is not None:
            sequence = shift_frames(sequence, shifts, self.shift_ratio)
        return sequence

    def forward(
        self, student_frames: torch.Tensor, rows: torch.Tensor, shifts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`student_frames` `[B, C, T']` (the encoder's last block), `rows` the cached flat targets."""
        target = self.targets(rows.to(student_frames.device, student_frames.dtype), shifts)
        predicted = self.head(student_frames).transpose(1, 2)  # [B, T', D]
        length = min(predicted.shape[1], target.shape[1])
        centred = target[:, :length] - self.mean_frame
        cosine = functional.cosine_similarity(predicted[:, :length], centred, dim=2)
        return (1.0 - cosine).mean()


class PooledFrameTerm(nn.Module):
    """The pooled variant: `1 - cos(W s + b, pool_target_frames(teacher frames))` on the student embedding."""

    def __init__(self, student_dim: int, frame_dim: int) -> None:
        super().__init__()
        self.frame_dim = frame_dim
        self.projection = nn.Linear(student_dim, 4 * frame_dim)

    def forward(self, embeddings: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        target = pool_target_frames(frames_of(rows.to(embeddings.device, embeddings.dtype), self.frame_dim))
        return (1.0 - functional.cosine_similarity(self.projection(embeddings), target, dim=1)).mean()


def mean_frame_of(rows: torch.Tensor, frame_dim: int) -> torch.Tensor:
    """The mean normalised frame of a sample of flat target rows (the common direction to remove)."""
    return frames_of(rows, frame_dim).reshape(-1, frame_dim).mean(dim=0)


def check_teacher(teacher: Teacher) -> None:
    if not hasattr(teacher, "frames"):
        raise ValueError(
            f"teacher {teacher.name!r} has no frame sequence (frames()): it cannot be a frame teacher"
        )
