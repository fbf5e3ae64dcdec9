"""Waveform augmentation: time shift, room reverberation, background speech, background noise, gain.

Gain and shift are audiomentations transforms; noise and speech are mixed at a random SNR with
audiomentations' RMS helpers from recordings decoded once with `edge.audio.load_audio` (the project's one
loader and resampler). Reverberation convolves with a bank of synthetic room impulse responses (exponentially
decaying noise after a direct path and a few early reflections) generated once from `seed`: cheaper than
simulating a room per clip, and needs no extra package. Every random draw comes from the `rng` passed in, so
an augmented clip is a function of (audio, rng state) only.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from audiomentations import Gain, Shift
from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms
from scipy.signal import fftconvolve

from edge.audio import TARGET_RATE, load_audio
from training.data.dataset import noise_files
from training.data.paths import kws_data_dir

__all__ = ["AugmentConfig", "Augmenter", "build_augmenter", "synthetic_rir"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MIN_NOISE_SECONDS = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (p) and ranges (low, high) of each augmentation; `from_dict` rejects unknown keys."""

    shift_p: float = 0.5
    shift_seconds: tuple[float, float] = (-0.1, 0.1)
    reverb_p: float = 0.3
    reverb_rt60_seconds: tuple[float, float] = (0.15, 0.7)
    reverb_direct_to_reverb_db: tuple[float, float] = (-3.0, 10.0)
    reverb_bank_size: int = 64
    background_speech_p: float = 0.15
    background_speech_snr_db: tuple[float, float] = (10.0, 25.0)
    noise_p: float = 0.6
    noise_snr_db: tuple[float, float] = (0.0, 20.0)
    use_gsc_noise: bool = True
    noise_paths: tuple[str, ...] = ()  # extra files or folders of noise recordings
    data_dir: str | None = None  # where gsc_noise lives; None = kws_data_dir()
    gain_p: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 6.0)
    seed: int = 0  # of the impulse-response bank

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{item.name}: a probability in [0, 1], got {value}")
            if (
                isinstance(value, tuple)
                and item.name != "noise_paths"
                and (len(value) != 2 or value[0] > value[1])
            ):
                raise ValueError(
                    f"AugmentConfig.{item.name}: expected (low, high) with low <= high, got {value}"
                )
        if self.reverb_rt60_seconds[0] <= 0:
            raise ValueError(
                f"AugmentConfig.reverb_rt60_seconds must be positive, got {self.reverb_rt60_seconds}"
            )
        if self.reverb_bank_size < 1:
            raise ValueError(f"AugmentConfig.reverb_bank_size must be >= 1, got {self.reverb_bank_size}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentConfig:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"AugmentConfig: unknown key(s) {unknown}; known: {sorted(known)}")
        converted: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**converted)


def synthetic_rir(
    rng: np.random.Generator, rt60: float, direct_to_reverb_db: float, sample_rate: int = TARGET_RATE
) -> FloatArray:
    """An impulse response: unit direct path, sparse early reflections, exponentially decaying diffuse tail."""
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60)  # -60 dB at rt60
    onset = int(0.005 * sample_rate)
    tail[:onset] = 0.0
    for _ in range(6):
        position = int(rng.integers(onset, min(length, int(0.05 * sample_rate))))
        tail[position] += rng.uniform(-0.6, 0.6)
    tail *= 10.0 ** (-direct_to_reverb_db / 20.0) / np.sqrt(np.sum(tail**2))
    tail[0] = 1.0
    return tail.astype(np.float32)


def _audio_files(paths: Sequence[str | Path]) -> list[Path]:
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found.extend(sorted(p for p in entry.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        elif entry.is_file():
            found.append(entry)
        else:
            raise FileNotFoundError(f"noise path {entry}: no such file or folder")
    return found


def _load_noises(files: Sequence[Path]) -> tuple[list[FloatArray], list[tuple[str, str]]]:
    noises: list[FloatArray] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        try:
            audio = load_audio(path, TARGET_RATE)
            if audio.shape[0] < MIN_NOISE_SECONDS * TARGET_RATE or calculate_rms(audio) < 1e-6:
                raise ValueError("shorter than 0.1 s or silent")
            noises.append(audio)
        except (OSError, ValueError, RuntimeError) as error:
            log.warning("skipping noise file %s: %s", path, error)
            skipped.append((str(path), str(error)))
    return noises, skipped


@contextlib.contextmanager
def _global_random_from(rng: np.random.Generator) -> Iterator[None]:
    """audiomentations draws from Python's `random`: seed it from `rng`, then restore the caller's state."""
    saved = random.getstate()
    random.seed(int(rng.integers(0, 2**63)))
    try:
        yield
    finally:
        random.setstate(saved)


def _mix(audio: FloatArray, other: FloatArray, snr_db: float) -> FloatArray:
    clean_rms = calculate_rms(audio)
    other_rms = calculate_rms(other)
    if clean_rms < 1e-9 or other_rms < 1e-9:
        return audio
    scale = calculate_desired_noise_rms(clean_rms, snr_db) / other_rms
    return (audio + other * np.float32(scale)).astype(np.float32)


class Augmenter:
    """`augmenter(audio float32 [L], rng) -> float32 [L]`, in the order shift, reverb, speech, noise, gain."""

    def __init__(
        self,
        config: AugmentConfig,
        noises: Sequence[FloatArray],
        background_speech: Callable[[np.random.Generator], FloatArray] | None = None,
    ) -> None:
        self.config = config
        self.noises = list(noises)
        self.background_speech = background_speech
        bank_rng = np.random.default_rng(config.seed)
        self.impulse_responses = [
            synthetic_rir(
                bank_rng,
                float(bank_rng.uniform(*config.reverb_rt60_seconds)),
                float(bank_rng.uniform(*config.reverb_direct_to_reverb_db)),
            )
            for _ in range(config.reverb_bank_size)
        ]
        self._gain = Gain(min_gain_db=config.gain_db[0], max_gain_db=config.gain_db[1], p=1.0)
        self._shift = Shift(
            min_shift=config.shift_seconds[0],
            max_shift=config.shift_seconds[1],
            shift_unit="seconds",
            rollover=False,
            p=1.0,
        )

    def _noise_segment(self, length: int, rng: np.random.Generator) -> FloatArray:
        noise = self.noises[int(rng.integers(0, len(self.noises)))]
        if noise.shape[0] < length:
            noise = np.tile(noise, -(-length // noise.shape[0]))
        start = int(rng.integers(0, noise.shape[0] - length + 1))
        return noise[start : start + length]

    def __call__(self, audio: FloatArray, rng: np.random.Generator) -> FloatArray:
        cfg = self.config
        out = np.asarray(audio, dtype=np.float32).copy()
        if out.ndim != 1:
            raise ValueError(f"Augmenter: expected mono 1-D audio, got shape {out.shape}")
        length = out.shape[0]
        draws = rng.random(5)  # one per stage, so a stage's p never shifts the draws of the others
        if draws[0] < cfg.shift_p:
            with _global_random_from(rng):
                out = self._shift(out, TARGET_RATE)
        if draws[1] < cfg.reverb_p:
            response = self.impulse_responses[int(rng.integers(0, len(self.impulse_responses)))]
            wet = fftconvolve(out, response)[:length].astype(np.float32)
            before, after = calculate_rms(out), calculate_rms(wet)
            out = wet * np.float32(before / after) if after > 1e-9 else wet
        if draws[2] < cfg.background_speech_p and self.background_speech is not None:
            other = np.asarray(self.background_speech(rng), dtype=np.float32)[:length]
            other = np.pad(other, (0, length - other.shape[0]))
            out = _mix(out, other, float(rng.uniform(*cfg.background_speech_snr_db)))
        if draws[3] < cfg.noise_p and self.noises:
            out = _mix(out, self._noise_segment(length, rng), float(rng.uniform(*cfg.noise_snr_db)))
        if draws[4] < cfg.gain_p:
            with _global_random_from(rng):
                out = self._gain(out, TARGET_RATE)
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def build_augmenter(
    cfg: AugmentConfig | None = None,
    background_speech: Callable[[np.random.Generator], FloatArray] | None = None,
) -> Augmenter:
    """The augmenter of `cfg`: loads gsc_noise (from cfg.data_dir or kws_data_dir()) and cfg.noise_paths.

    `background_speech(rng)` returns another training clip's window (e.g. `WindowDataset.background_speech`);
    without it that stage is off. Unreadable noise files are logged and skipped.
    """
    cfg = cfg or AugmentConfig()
    files: list[Path] = []
    if cfg.use_gsc_noise and cfg.noise_p > 0:
        files.extend(noise_files(kws_data_dir(cfg.data_dir)))
    files.extend(_audio_files(cfg.noise_paths))
    noises, skipped = _load_noises(files)
    if cfg.noise_p > 0 and not noises:
        raise ValueError(
            f"AugmentConfig.noise_p is {cfg.noise_p} but no readable noise file was found in {files}"
        )
    log.info("augmenter: %d noise recording(s), %d skipped", len(noises), len(skipped))
    return Augmenter(cfg, noises, background_speech)
