"""The EfficientWord-Net teacher: its feature step, its ONNX run and its embeddings of real clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from training.data.windows import fit_window
from training.distill.teachers import (
    TEACHERS,
    EfficientWordNetTeacher,
    Teacher,
    check_windows,
    ewn_log_fbank,
    find_ewn_model,
    load_teacher,
    teacher_record,
)

WINDOW = 24000


@pytest.fixture(scope="module")
def teacher() -> EfficientWordNetTeacher:
    try:
        find_ewn_model()
    except FileNotFoundError as error:
        pytest.skip(f"EfficientWord-Net wheel not installed: {error}")
    return EfficientWordNetTeacher(threads=1)


@pytest.fixture(scope="module")
def windows(real_clips: list[Path]) -> np.ndarray:
    return np.stack([fit_window(load_audio(path), WINDOW) for path in real_clips])


def test_registry_and_protocol(teacher: EfficientWordNetTeacher) -> None:
    assert "efficientword-net" in TEACHERS
    assert isinstance(teacher, Teacher)
    assert len(teacher.sha256) == 64
    assert teacher_record(teacher) == {
        "name": "efficientword-net",
        "sha256": teacher.sha256,
        "licence": "Apache-2.0",
    }
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        load_teacher("nope")


def test_embeds_real_clips(teacher: EfficientWordNetTeacher, windows: np.ndarray) -> None:
    embeddings = teacher.embed(windows)
    assert embeddings.shape == (len(windows), 2048)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # Different clips give different embeddings; the batched graph equals one window at a time.
    similarity = embeddings @ embeddings.T
    assert similarity[~np.eye(len(windows), dtype=bool)].max() < 0.99
    single = np.concatenate([teacher.embed(window[None]) for window in windows[:3]])
    np.testing.assert_allclose(single, embeddings[:3], atol=1e-5)


def test_bad_windows_are_refused(teacher: EfficientWordNetTeacher) -> None:
    with pytest.raises(ValueError, match=r"\[N, 24000\].*got shape \(2, 16000\)"):
        teacher.embed(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="dtype int16"):
        check_windows(np.zeros((1, WINDOW), np.int16), WINDOW, "t")
    bad = np.zeros((1, WINDOW), np.float32)
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        teacher.embed(bad)


def test_missing_model_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"efficientword-net==1\.0\.5"):
        find_ewn_model(tmp_path / "absent.onnx")


def test_feature_step_matches_the_package(windows: np.ndarray) -> None:
    audio_utils = pytest.importorskip("eff_word_net.audio_utils", reason="efficientword-net not installed")
    for window in windows[:4]:
        theirs = audio_utils.logfbank(
            window, samplerate=16000, winlen=0.025, winstep=0.01, nfilt=64, nfft=512, preemph=0.0
        )
        ours = ewn_log_fbank(window[None])[0]
        assert ours.shape == theirs.shape == (149, 64)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_embedding_matches_the_package_engine(teacher: EfficientWordNetTeacher, windows: np.ndarray) -> None:
    processing = pytest.importorskip(
        "eff_word_net.audio_processing", reason="efficientword-net not installed"
    )
    engine = processing.Resnet50_Arc_loss()
    theirs = np.concatenate([engine.audioToVector(window) for window in windows[:3]])
    np.testing.assert_allclose(teacher.embed(windows[:3]), theirs, atol=1e-4)
