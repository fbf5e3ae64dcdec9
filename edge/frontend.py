"""MFCC front end: the single implementation shared by training, calibration and the board.

Numpy only. `mfcc()` computes a whole clip at once; `StreamingMfcc` computes the same frames
incrementally from chunks of any size. Both share `_frames_to_mfcc`, so a streaming run and a batch
run over the same samples agree to float rounding.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FrontendConfig", "StreamingMfcc", "as_float_waveform", "mfcc", "num_frames"]

FloatArray = npt.NDArray[np.float32]

_INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FrontendConfig:
    """Every constant of the MFCC front end. Models and templates record `fingerprint`."""

    sample_rate: int = 16000
    window_samples: int = 480  # 30 ms
    hop_samples: int = 160  # 10 ms
    n_fft: int = 480
    n_mels: int = 40
    n_mfcc: int = 40
    f_min_hz: float = 20.0
    f_max_hz: float = 8000.0
    log_floor: float = 1e-6
    # Periodic Hann, as librosa/torch use for spectral analysis.
    window: str = "hann-periodic"
    mel_scale: str = "htk"
    dct: str = "dct2-ortho"

    def __post_init__(self) -> None:
        checks = {
            "sample_rate": self.sample_rate > 0,
            "window_samples": 0 < self.window_samples <= self.n_fft,
            "hop_samples": 0 < self.hop_samples <= self.window_samples,
            "n_mels": self.n_mels > 0,
            "n_mfcc": 0 < self.n_mfcc <= self.n_mels,
            "f_min_hz": 0.0 <= self.f_min_hz < self.f_max_hz,
            "f_max_hz": self.f_max_hz <= self.sample_rate / 2,
            "log_floor": self.log_floor > 0.0,
            "window": self.window == "hann-periodic",
            "mel_scale": self.mel_scale == "htk",
            "dct": self.dct == "dct2-ortho",
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"FrontendConfig: invalid value for {', '.join(bad)}: {self}")

    @property
    def fingerprint(self) -> str:
        """A stable hash of every field; equal configs give equal fingerprints across runs and machines."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FrontendConfig:
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"FrontendConfig: unknown field(s) {sorted(unknown)}")
        return cls(**values)

    def num_frames(self, n_samples: int) -> int:
        return num_frames(n_samples, self)


DEFAULT_CONFIG = FrontendConfig()


def num_frames(n_samples: int, config: FrontendConfig = DEFAULT_CONFIG) -> int:
    """Frames in a clip of `n_samples` (no centre padding): 1 + (N - window) // hop, or 0 when too short."""
    if n_samples < config.window_samples:
        return 0
    return 1 + (n_samples - config.window_samples) // config.hop_samples


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(config: FrontendConfig = DEFAULT_CONFIG) -> npt.NDArray[np.float64]:
    """Triangular HTK-mel filters, [n_mels, n_fft // 2 + 1], unit peak, evaluated at the exact bin frequencies."""
    bin_hz = np.arange(config.n_fft // 2 + 1) * config.sample_rate / config.n_fft
    edges_mel = np.linspace(
        _hz_to_mel(np.array(config.f_min_hz)), _hz_to_mel(np.array(config.f_max_hz)), config.n_mels + 2
    )
    edges_hz = _mel_to_hz(edges_mel)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bin_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bin_hz[None, :]) / (upper - centre)
    filters: npt.NDArray[np.float64] = np.maximum(0.0, np.minimum(rising, falling))
    return filters


def dct2_ortho_matrix(n_out: int, n_in: int) -> npt.NDArray[np.float64]:
    """Orthonormal DCT-II as a matrix [n_out, n_in] (the first n_out rows)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix: npt.NDArray[np.float64] = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def hann_periodic(length: int) -> npt.NDArray[np.float64]:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


@dataclass(frozen=True)
class _Tables:
    window: npt.NDArray[np.float64]
    mel_fb_t: npt.NDArray[np.float64]  # [bins, n_mels]
    dct_t: npt.NDArray[np.float64]  # [n_mels, n_mfcc]


class _TableCache:
    """Per-config constant tables, built once."""

    def __init__(self) -> None:
        self._tables: dict[FrontendConfig, _Tables] = {}

    def get(self, config: FrontendConfig) -> _Tables:
        tables = self._tables.get(config)
        if tables is None:
            tables = _Tables(
                window=hann_periodic(config.window_samples),
                mel_fb_t=np.ascontiguousarray(mel_filterbank(config).T),
                dct_t=np.ascontiguousarray(dct2_ortho_matrix(config.n_mfcc, config.n_mels).T),
            )
            self._tables[config] = tables
        return tables


_TABLES = _TableCache()


def as_float_waveform(samples: Any, what: str = "waveform") -> npt.NDArray[np.float64]:
    """Validate a mono waveform and return it as float64 in [-1, 1] units.

    Accepts float32/float64 (taken as is) and int16 (divided by 32768). Anything else, more than
    one dimension, or non-finite values raise ValueError naming what was received.
    """
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError(
            f"{what}: expected a mono 1-D array of samples, got shape {array.shape}; "
            "mix multi-channel audio to mono first (edge.audio.to_mono)"
        )
    if array.dtype == np.int16:
        return array.astype(np.float64) / _INT16_SCALE
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"{what}: expected float32, float64 or int16 samples, got dtype {array.dtype}")
    as_float = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(as_float)):
        bad = int(np.count_nonzero(~np.isfinite(as_float)))
        raise ValueError(f"{what}: {bad} sample(s) are NaN or infinite; expected finite values")
    return as_float


def _check_rate(sample_rate: int | None, config: FrontendConfig, what: str) -> None:
    if sample_rate is not None and sample_rate != config.sample_rate:
        raise ValueError(
            f"{what}: sample rate {sample_rate} Hz, but the front end expects {config.sample_rate} Hz; "
            "resample first (edge.audio.resample)"
        )


def _frames_to_mfcc(frames: npt.NDArray[np.float64], config: FrontendConfig) -> FloatArray:
    tables = _TABLES.get(config)
    spectrum = np.fft.rfft(frames * tables.window, n=config.n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    log_mel = np.log(np.maximum(power @ tables.mel_fb_t, config.log_floor))
    return (log_mel @ tables.dct_t).astype(np.float32)


def _frame_view(
    samples: npt.NDArray[np.float64], count: int, config: FrontendConfig
) -> npt.NDArray[np.float64]:
    view = np.lib.stride_tricks.sliding_window_view(samples, config.window_samples)
    return view[: (count - 1) * config.hop_samples + 1 : config.hop_samples]


def mfcc(
    waveform: Any, sample_rate: int | None = None, config: FrontendConfig = DEFAULT_CONFIG
) -> FloatArray:
    """MFCCs of a mono clip: float32 [1 + (N - window) // hop, n_mfcc].

    `sample_rate`, when given, must equal the config's rate; the clip must hold at least one window.
    """
    _check_rate(sample_rate, config, "mfcc")
    samples = as_float_waveform(waveform)
    count = num_frames(samples.shape[0], config)
    if count == 0:
        raise ValueError(
            f"mfcc: got {samples.shape[0]} sample(s), need at least {config.window_samples} "
            f"({1000 * config.window_samples / config.sample_rate:.0f} ms) for one frame"
        )
    return _frames_to_mfcc(_frame_view(samples, count, config), config)


@dataclass
class StreamingMfcc:
    """Incremental MFCC: `push(chunk)` returns the frames completed by that chunk.

    For any split of a signal into chunks, the concatenated outputs equal `mfcc()` of the whole signal.
    """

    config: FrontendConfig = field(default_factory=FrontendConfig)
    _pending: npt.NDArray[np.float64] = field(init=False, repr=False)
    samples_seen: int = field(init=False, default=0)
    frames_emitted: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)

    @cached_property
    def _empty(self) -> FloatArray:
        return np.zeros((0, self.config.n_mfcc), dtype=np.float32)

    def push(self, chunk: Any, sample_rate: int | None = None) -> FloatArray:
        _check_rate(sample_rate, self.config, "StreamingMfcc.push")
        samples = as_float_waveform(chunk, what="StreamingMfcc.push chunk")
        self.samples_seen += samples.shape[0]
        pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        count = num_frames(pending.shape[0], self.config)
        if count == 0:
            self._pending = pending.copy()
            return self._empty
        out = _frames_to_mfcc(_frame_view(pending, count, self.config), self.config)
        self._pending = pending[count * self.config.hop_samples :].copy()
        self.frames_emitted += count
        return out

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)
        self.samples_seen = 0
        self.frames_emitted = 0
