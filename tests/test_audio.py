from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio, read_audio, resample, to_mono, write_wav

RNG = np.random.default_rng(7)


@pytest.mark.parametrize(("orig", "target"), [(48000, 16000), (44100, 16000), (8000, 16000), (22050, 16000)])
def test_resample_matches_scipy_resample_poly(orig: int, target: int) -> None:
    from math import gcd

    from scipy.signal import resample_poly

    signal = RNG.standard_normal(orig // 2 + 37)
    ours = resample(signal, orig, target)
    g = gcd(orig, target)
    theirs = resample_poly(signal, target // g, orig // g)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) < 1e-5


def test_resample_removes_content_above_the_new_nyquist() -> None:
    t = np.arange(48000) / 48000
    alias = resample(np.sin(2 * np.pi * 12000 * t), 48000, 16000)  # 12 kHz folds to 4 kHz without a filter
    kept = resample(np.sin(2 * np.pi * 1000 * t), 48000, 16000)
    assert np.sqrt(np.mean(alias[200:-200] ** 2)) < 1e-3
    assert np.sqrt(np.mean(kept[200:-200] ** 2)) == pytest.approx(np.sqrt(0.5), rel=1e-2)


def test_wav_round_trip_and_int_widths(tmp_path: Path) -> None:
    signal = (RNG.standard_normal(1000) * 0.2).astype(np.float32)
    write_wav(tmp_path / "a.wav", signal, 16000)
    read, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000 and read.dtype == np.float32
    assert np.max(np.abs(read - signal)) <= 1 / 32768 + 1e-7
    # 24-bit stereo at 48 kHz: read, mixed to mono and resampled by load_audio.
    pcm = (np.clip(RNG.standard_normal((4800, 2)) * 0.1, -1, 1) * (1 << 23)).astype(np.int32)
    raw = np.stack([pcm & 0xFF, (pcm >> 8) & 0xFF, (pcm >> 16) & 0xFF], axis=-1).astype(np.uint8).tobytes()
    with wave.open(str(tmp_path / "b.wav"), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(3)
        writer.setframerate(48000)
        writer.writeframes(raw)
    stereo, rate = read_audio(tmp_path / "b.wav")
    assert rate == 48000 and stereo.shape == (4800, 2)
    assert np.allclose(stereo, pcm / float(1 << 23), atol=1e-6)
    mono = load_audio(tmp_path / "b.wav")
    assert mono.shape == (1600,)
    assert np.allclose(to_mono(stereo), stereo.mean(axis=1))


def test_flac_from_the_data_set_loads_at_16k(real_clips: list[Path]) -> None:
    eight_k = [p for p in real_clips if "fsdd" in p.parts]
    audio8, rate = read_audio(eight_k[0])
    assert rate == 8000
    audio16 = load_audio(eight_k[0])
    assert audio16.dtype == np.float32
    assert audio16.shape[0] == 2 * audio8.shape[0]


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.wav"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match=r"junk\.wav"):
        read_audio(tmp_path / "junk.wav")
    (tmp_path / "junk.flac").write_bytes(b"fLaC broken")
    with pytest.raises(ValueError, match=r"junk\.flac"):
        read_audio(tmp_path / "junk.flac")
    (tmp_path / "x.mp3").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported audio format"):
        read_audio(tmp_path / "x.mp3")
    write_wav(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(ValueError, match="no samples"):
        load_audio(tmp_path / "empty.wav")
