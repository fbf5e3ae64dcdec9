"""The augmenter: changes the audio, keeps its shape, repeats exactly for the same rng, rejects bad config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import write_wav
from training.data.augment import AugmentConfig, build_augmenter, synthetic_rir
from training.data.dataset import load_window

CLIP = "gsc_v1_words/cat/004ae714_nohash_0.flac"


@pytest.fixture()
def speech(kws_data_dir: Path) -> np.ndarray:
    return load_window(kws_data_dir / CLIP, 1.5)


def test_every_stage_on_changes_audio_and_repeats_by_seed(kws_data_dir: Path, speech: np.ndarray) -> None:
    other = load_window(kws_data_dir / "arabic_sc/zero/00000001_01.flac", 1.5)
    cfg = AugmentConfig(
        shift_p=1,
        reverb_p=1,
        background_speech_p=1,
        noise_p=1,
        gain_p=1,
        data_dir=str(kws_data_dir),
        reverb_bank_size=4,
    )
    augment = build_augmenter(cfg, background_speech=lambda rng: other)
    out = augment(speech, np.random.default_rng(11))
    assert out.shape == speech.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    assert np.max(np.abs(out - speech)) > 1e-3
    assert np.array_equal(out, augment(speech, np.random.default_rng(11)))
    assert not np.array_equal(out, augment(speech, np.random.default_rng(12)))
    # The input is never modified in place.
    assert np.array_equal(speech, load_window(kws_data_dir / CLIP, 1.5))


def test_noise_from_a_user_folder_at_the_snr_asked(tmp_path: Path, speech: np.ndarray) -> None:
    write_wav(tmp_path / "hum.wav", 0.1 * np.sin(np.arange(32000) * 2 * np.pi * 120 / 16000))
    cfg = AugmentConfig(
        shift_p=0,
        reverb_p=0,
        background_speech_p=0,
        gain_p=0,
        noise_p=1,
        use_gsc_noise=False,
        noise_paths=(str(tmp_path),),
        noise_snr_db=(10.0, 10.0),
    )
    out = build_augmenter(cfg)(speech, np.random.default_rng(0))
    added = out - speech
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)


def test_all_off_is_identity(speech: np.ndarray) -> None:
    cfg = AugmentConfig(shift_p=0, reverb_p=0, background_speech_p=0, noise_p=0, gain_p=0)
    assert np.array_equal(build_augmenter(cfg)(speech, np.random.default_rng(0)), speech)


def test_impulse_response_shape() -> None:
    response = synthetic_rir(np.random.default_rng(0), rt60=0.4, direct_to_reverb_db=3.0)
    assert response.shape == (6400,) and response[0] == 1.0
    tail_db = 10 * np.log10(np.sum(response[1:].astype(np.float64) ** 2))
    assert tail_db == pytest.approx(-3.0, abs=0.1)
    late = np.abs(response[5000:]).max()
    early = np.abs(response[100:1500]).max()
    assert late < 0.1 * early


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['noise_probability'\]"):
        AugmentConfig.from_dict({"noise_probability": 0.5})
    with pytest.raises(ValueError, match="noise_p: a probability"):
        AugmentConfig(noise_p=1.5)
    with pytest.raises(ValueError, match="gain_db"):
        AugmentConfig.from_dict({"gain_db": [6, -6]})
    assert AugmentConfig.from_dict({"gain_db": [-3, 3]}).gain_db == (-3, 3)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        build_augmenter(AugmentConfig(use_gsc_noise=False, noise_paths=("/nonexistent/noise",)))
