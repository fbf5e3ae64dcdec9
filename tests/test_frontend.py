from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio import load_audio
from edge.frontend import DEFAULT_CONFIG, FrontendConfig, StreamingMfcc, mfcc, num_frames

RNG = np.random.default_rng(1234)


def test_frame_count_has_no_centre_padding() -> None:
    for n in (480, 481, 639, 640, 16000, 24000):
        assert mfcc(RNG.standard_normal(n).astype(np.float32) * 0.1).shape == (1 + (n - 480) // 160, 40)
    assert num_frames(479) == 0


def test_output_is_float32_and_finite_even_for_digital_silence() -> None:
    features = mfcc(np.zeros(16000, dtype=np.float32))
    assert features.dtype == np.float32
    assert np.all(np.isfinite(features))
    # log floor: every mel band of silence sits at log(floor), so c0 = sqrt(n_mels) * log(floor)
    assert features[0, 0] == pytest.approx(np.sqrt(40) * np.log(DEFAULT_CONFIG.log_floor), rel=1e-5)
    assert np.allclose(features[:, 1:], 0.0, atol=1e-4)


def test_int16_input_matches_scaled_float() -> None:
    pcm = (RNG.standard_normal(8000) * 3000).astype(np.int16)
    assert np.allclose(mfcc(pcm), mfcc(pcm.astype(np.float32) / 32768.0), atol=1e-5)


def test_a_tone_peaks_in_the_mel_band_that_holds_its_frequency() -> None:
    t = np.arange(16000) / 16000
    low = mfcc(0.5 * np.sin(2 * np.pi * 300 * t))
    high = mfcc(0.5 * np.sin(2 * np.pi * 3000 * t))
    # c1 weighs low bands positively and high bands negatively.
    assert low[:, 1].mean() > 0 > high[:, 1].mean()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(0, dtype=np.float32), "need at least 480"),
        (np.zeros(100, dtype=np.float32), "need at least 480"),
        (np.array([0.0, np.nan] * 400, dtype=np.float32), "NaN or infinite"),
        (np.array([0.0, np.inf] * 400), "NaN or infinite"),
        (np.zeros((1000, 2), dtype=np.float32), "mono 1-D"),
        (np.zeros(1000, dtype=np.int32), "dtype int32"),
        (np.zeros(1000, dtype=np.uint8), "dtype uint8"),
        ([[0.0]], "mono 1-D"),
    ],
)
def test_bad_input_is_a_clear_value_error(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mfcc(bad)


def test_wrong_sample_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="44100 Hz, but the front end expects 16000 Hz"):
        mfcc(np.zeros(16000, dtype=np.float32), sample_rate=44100)
    with pytest.raises(ValueError, match="8000 Hz"):
        StreamingMfcc().push(np.zeros(100, dtype=np.float32), sample_rate=8000)


def test_streaming_rejects_bad_chunks_without_losing_state() -> None:
    stream = StreamingMfcc()
    stream.push(np.zeros(300, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.full(10, np.nan, dtype=np.float32))
    assert stream.push(np.zeros(180, dtype=np.float32)).shape == (1, 40)


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert FrontendConfig().fingerprint == FrontendConfig().fingerprint
    assert len(DEFAULT_CONFIG.fingerprint) == 16
    # Pinned: changing any default changes what every model and template recorded.
    assert DEFAULT_CONFIG.fingerprint == "0a7aa6b892d8a6c0"
    for name, value in [("n_mels", 64), ("hop_samples", 161), ("log_floor", 1e-5), ("f_min_hz", 0.0)]:
        changed = dataclasses.replace(DEFAULT_CONFIG, **{name: value})
        assert changed.fingerprint != DEFAULT_CONFIG.fingerprint, name
    assert FrontendConfig.from_dict(DEFAULT_CONFIG.to_dict()) == DEFAULT_CONFIG


def test_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="n_mfcc"):
        FrontendConfig(n_mfcc=41)
    with pytest.raises(ValueError, match="unknown field"):
        FrontendConfig.from_dict({"n_mel": 40})
    with pytest.raises(ValueError, match="f_max_hz"):
        FrontendConfig(f_max_hz=9000.0)


@st.composite
def signal_and_cuts(draw: st.DrawFn) -> tuple[np.ndarray, list[int]]:
    n = draw(st.integers(min_value=0, max_value=4000))
    seed = draw(st.integers(min_value=0, max_value=2**31 - 1))
    signal = (np.random.default_rng(seed).standard_normal(n) * 0.3).astype(np.float32)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=n), max_size=12)))
    return signal, cuts


@settings(max_examples=150, deadline=None)
@given(signal_and_cuts())
def test_streaming_equals_batch_for_any_chunking(case: tuple[np.ndarray, list[int]]) -> None:
    signal, cuts = case
    stream = StreamingMfcc()
    bounds = [0, *cuts, signal.shape[0]]
    pieces = [stream.push(signal[a:b]) for a, b in itertools.pairwise(bounds)]
    streamed = np.concatenate(pieces)
    expected_frames = num_frames(signal.shape[0])
    assert streamed.shape == (expected_frames, 40)
    if expected_frames:
        assert np.max(np.abs(streamed - mfcc(signal))) <= 1e-5
    assert stream.frames_emitted == expected_frames


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([1, 7, 160, 479, 480, 1601, 16000, 48000]))
def test_streaming_equals_batch_on_real_speech(chunk: int) -> None:
    from tests.conftest import data_dir

    root = data_dir()
    signal = (
        load_audio(root / "gsc_v1_words/happy" / sorted((root / "gsc_v1_words/happy").iterdir())[0].name)
        if root is not None
        else (RNG.standard_normal(16000) * 0.1).astype(np.float32)
    )
    signal = np.concatenate([signal, signal[::-1]])
    stream = StreamingMfcc()
    out = np.concatenate([stream.push(signal[i : i + chunk]) for i in range(0, signal.shape[0], chunk)])
    assert np.max(np.abs(out - mfcc(signal))) <= 1e-5


def test_agrees_with_librosa_on_real_clips(real_clips: list) -> None:
    """Independent check: librosa's STFT and HTK mel filterbank, our log floor and scipy's DCT."""
    librosa = pytest.importorskip("librosa")
    from scipy.fft import dct

    cfg = DEFAULT_CONFIG
    for path in real_clips:
        audio = load_audio(path)
        ours = mfcc(audio)
        mel = librosa.feature.melspectrogram(
            y=audio.astype(np.float64),
            sr=16000,
            n_fft=480,
            hop_length=160,
            win_length=480,
            window="hann",
            center=False,
            power=2.0,
            n_mels=40,
            fmin=cfg.f_min_hz,
            fmax=cfg.f_max_hz,
            htk=True,
            norm=None,
        )
        theirs = dct(np.log(np.maximum(mel, cfg.log_floor)), type=2, norm="ortho", axis=0)[:40].T
        assert theirs.shape == ours.shape, path
        # Tolerance: float32 output of coefficients whose magnitude reaches ~100.
        assert np.max(np.abs(ours - theirs)) < 2e-3, path
        assert np.max(np.abs(ours - theirs) / (np.abs(theirs) + 1.0)) < 1e-4, path
