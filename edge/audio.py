"""Audio loading and resampling, numpy and the standard library only.

WAV (8/16/24/32-bit PCM) is read with the `wave` module; FLAC and float WAV need `soundfile`, which the
training and development extras install and the board may add. Resampling is polyphase with a
Kaiser-windowed sinc anti-aliasing filter (the same design as scipy.signal.resample_poly).
"""

from __future__ import annotations

import logging
import math
import wave
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["decode_pcm", "load_audio", "read_audio", "resample", "to_mono", "write_wav"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

TARGET_RATE = 16000
# Rates a file may declare: anything outside is a corrupt header, and resampling from it would need gigabytes.
MIN_FILE_RATE, MAX_FILE_RATE = 1000, 384000
_RESAMPLE_BLOCK = 4096  # outputs computed at once by `resample`


def read_audio(path: str | Path) -> tuple[FloatArray, int]:
    """Read a WAV or FLAC file: float32 samples in [-1, 1], shape [n] or [n, channels], and its rate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    suffix = path.suffix.lower()
    if suffix == ".wav":
        try:
            return _checked_rate(path, *_read_wav_pcm(path))
        except wave.Error as error:
            if "unknown format" not in str(error):
                raise ValueError(f"{path}: not a readable WAV file ({error})") from error
            # Float or extensible WAV: the `wave` module handles PCM only.
        except (EOFError, RuntimeError) as error:  # the `wave` module's words for a cut or lying chunk
            raise ValueError(f"{path}: not a readable WAV file (truncated or corrupt chunk)") from error
    elif suffix not in (".flac", ".ogg"):
        raise ValueError(f"{path}: unsupported audio format {suffix!r}; expected .wav or .flac")
    return _checked_rate(path, *_read_with_soundfile(path))


def _checked_rate(path: Path, data: FloatArray, rate: int) -> tuple[FloatArray, int]:
    if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
        raise ValueError(
            f"{path}: sample rate {rate} Hz in the header; expected {MIN_FILE_RATE}-{MAX_FILE_RATE} Hz "
            "(a corrupt file?)"
        )
    return data, rate


def _read_wav_pcm(path: Path) -> tuple[FloatArray, int]:
    with wave.open(str(path), "rb") as reader:
        channels = reader.getnchannels()
        width = reader.getsampwidth()
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    if width not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unsupported WAV sample width of {width} bytes")
    # A file cut off mid-frame (or a header that lies about the channels) ends with a partial frame: drop it.
    data = decode_pcm(raw[: len(raw) - len(raw) % (width * channels)], width)
    if channels > 1:
        data = data.reshape(-1, channels)
    return data, rate


def decode_pcm(raw: bytes, width: int) -> FloatArray:
    """Little-endian integer PCM as WAV stores it (8-bit unsigned, 16/24/32-bit signed) to float32 in [-1, 1].

    `raw` must hold whole samples (a multiple of `width` bytes).
    """
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        return ints.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise ValueError(f"PCM sample width must be 1, 2, 3 or 4 bytes, got {width}")


def _read_with_soundfile(path: Path) -> tuple[FloatArray, int]:
    try:
        import soundfile
    except ImportError as error:
        raise RuntimeError(
            f"{path}: reading {path.suffix} needs the 'soundfile' package (pip install soundfile); "
            "16-bit PCM WAV files need nothing extra"
        ) from error
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    except Exception as error:  # soundfile raises its own LibsndfileError and RuntimeError
        raise ValueError(f"{path}: not a readable audio file ({error})") from error
    return np.asarray(data, dtype=np.float32), int(rate)


def to_mono(samples: npt.NDArray[Any]) -> FloatArray:
    """Average the channels of [n, channels] audio; 1-D input is returned as float32."""
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 1:
        return array
    if array.ndim == 2:
        mono: FloatArray = array.mean(axis=1, dtype=np.float32)
        return mono
    raise ValueError(f"to_mono: expected [n] or [n, channels] samples, got shape {array.shape}")


def load_audio(path: str | Path, sample_rate: int = TARGET_RATE) -> FloatArray:
    """Read a file, mix to mono and resample to `sample_rate`: float32 [n]."""
    data, rate = read_audio(path)
    mono = to_mono(data)
    if mono.size == 0:
        raise ValueError(f"{path}: the file holds no samples")
    return resample(mono, rate, sample_rate) if rate != sample_rate else mono


def write_wav(path: str | Path, samples: npt.NDArray[Any], sample_rate: int = TARGET_RATE) -> None:
    """Write mono float samples in [-1, 1] as 16-bit PCM WAV (clipped)."""
    array = np.asarray(samples, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"write_wav {path}: expected mono 1-D samples, got shape {array.shape}")
    pcm = np.clip(np.round(array * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm.tobytes())


@lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int) -> tuple[npt.NDArray[np.float64], int]:
    """Low-pass FIR for rational resampling (Kaiser beta 5, 10 zero crossings per side), gain `up`."""
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate  # relative to the Nyquist rate of the upsampled signal
    half_len = 10 * max_rate
    taps = np.arange(2 * half_len + 1) - half_len
    h = cutoff * np.sinc(cutoff * taps) * np.kaiser(2 * half_len + 1, 5.0)
    h = h / h.sum() * up
    return h, half_len


def resample(samples: npt.NDArray[Any], orig_rate: int, target_rate: int) -> FloatArray:
    """Resample mono audio by the rational factor target/orig with an anti-aliasing filter.

    The output holds ceil(n * target / orig) samples, aligned with the input (filter delay removed).
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"resample: rates must be positive, got {orig_rate} -> {target_rate}")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample: expected mono 1-D samples, got shape {x.shape}")
    if orig_rate == target_rate:
        return x.astype(np.float32)
    g = math.gcd(orig_rate, target_rate)
    up, down = target_rate // g, orig_rate // g
    h, half_len = _polyphase_filter(up, down)
    n_out = -(-x.shape[0] * up // down)
    taps_per_phase = -(-h.shape[0] // up)
    padded_h = np.zeros(taps_per_phase * up)
    padded_h[: h.shape[0]] = h
    out: FloatArray = np.empty(n_out, dtype=np.float32)
    # In blocks of outputs: the index arrays are [outputs, taps] int64, so a whole minute at 48 kHz at once
    # took about 2 GB; a block keeps the peak near 10 MB for any length.
    for first in range(0, n_out, _RESAMPLE_BLOCK):
        # Output m sits at upsampled position m*down + half_len; only taps k with (pos - k) % up == 0 meet a
        # real input sample, so each output needs just the taps of one phase.
        position = np.arange(first, min(first + _RESAMPLE_BLOCK, n_out), dtype=np.int64) * down + half_len
        tap_index = (position % up)[:, None] + up * np.arange(taps_per_phase)[None, :]  # k
        input_index = (position[:, None] - tap_index) // up
        valid = (input_index >= 0) & (input_index < x.shape[0])
        gathered = np.where(valid, x[np.clip(input_index, 0, x.shape[0] - 1)], 0.0)
        out[first : first + position.shape[0]] = np.einsum("ij,ij->i", gathered, padded_h[tap_index])
    return out
