"""Rooms, noise and misaligned windows for the student's input, from the `train` half of `corpora/rooms` only.

`RoomAugmenter(audio, rng) -> (audio, shift_samples)`: in order, a time shift (misaligned and, past the clip's
margin, partial words; zeros shifted in), a room (a real or simulated impulse response of the rooms corpus's
`train` split), a noise bed (Speech Commands background noise or Wesnoth music, `train` split), and a gain. The
shift is returned so that frame-sequence targets can follow it (training/distill/frames.py).

Only `train` rows of `sounds.csv` are read. The evaluation's sources are refused by name as well, whatever the
listing says: `asc-music` (kws-eval's noise10), `singularity-music` (kws-bench's false alarms), and the
pyroomacoustics rooms kws-eval simulates from its own seed (they are not in this corpus at all).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile
from scipy.signal import fftconvolve

from edge.audio import TARGET_RATE, load_audio

__all__ = ["RESERVED_SOURCES", "RoomAugmentConfig", "RoomAugmenter", "load_room_augmenter"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
RESERVED_SOURCES = ("asc-music", "singularity-music", "asc", "singularity")


@dataclass(frozen=True)
class RoomAugmentConfig:
    """Probabilities (p) and ranges (low, high); `from_dict` rejects unknown keys."""

    shift_p: float = 0.5
    shift_seconds: tuple[float, float] = (-0.4, 0.4)
    reverb_p: float = 0.5
    noise_p: float = 0.7
    music_share: float = 0.5  # of the noise draws, how many are music (the rest Speech Commands noise)
    snr_db: tuple[float, float] = (0.0, 20.0)
    gain_p: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 6.0)
    music_segments: int = 300  # random excerpts of the training music, decoded once
    music_segment_seconds: float = 6.0
    seed: int = 0  # of the music excerpts

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            is_probability = item.name.endswith("_p") or item.name == "music_share"
            if is_probability and not 0.0 <= value <= 1.0:
                raise ValueError(f"RoomAugmentConfig.{item.name}: a probability in [0, 1], got {value}")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"RoomAugmentConfig.{item.name}: expected (low, high), got {value}")
        if self.music_segments < 1 or self.music_segment_seconds <= 0:
            raise ValueError("RoomAugmentConfig: music_segments >= 1 and music_segment_seconds > 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RoomAugmentConfig:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"data.room_params: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _mix_at_snr(audio: FloatArray, noise: FloatArray, snr_db: float) -> FloatArray:
    speech_rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    noise_rms = float(np.sqrt(np.mean(np.square(noise, dtype=np.float64))))
    if speech_rms < 1e-9 or noise_rms < 1e-9:
        return audio
    scale = speech_rms / (noise_rms * 10.0 ** (snr_db / 20.0))
    return (audio + noise * np.float32(scale)).astype(np.float32)


def shift_audio(audio: FloatArray, shift: int) -> FloatArray:
    """`audio` delayed by `shift` samples (advanced when negative), zeros shifted in, same length."""
    out = np.zeros_like(audio)
    if shift >= 0:
        out[shift:] = audio[: audio.shape[0] - shift]
    else:
        out[:shift] = audio[-shift:]
    return out


class RoomAugmenter:
    """`augmenter(audio float32 [L], rng) -> (float32 [L], shift in samples)`; a function of (audio, rng)."""

    def __init__(
        self,
        config: RoomAugmentConfig,
        impulse_responses: Sequence[FloatArray],
        noises: Sequence[FloatArray],
        music: Sequence[FloatArray],
        sources: Sequence[str] = (),
    ) -> None:
        if config.reverb_p > 0 and not impulse_responses:
            raise ValueError("RoomAugmenter: reverb_p > 0 but no impulse response was loaded")
        if config.noise_p > 0 and not (noises or music):
            raise ValueError("RoomAugmenter: noise_p > 0 but no noise or music was loaded")
        self.config = config
        self.impulse_responses = list(impulse_responses)
        self.noises = list(noises)
        self.music = list(music)
        self.sources = tuple(sources)

    def _bed(self, length: int, rng: np.random.Generator) -> FloatArray:
        use_music = bool(self.music) and (not self.noises or rng.random() < self.config.music_share)
        pool = self.music if use_music else self.noises
        bed = pool[int(rng.integers(0, len(pool)))]
        if bed.shape[0] < length:
            bed = np.tile(bed, -(-length // bed.shape[0]))
        start = int(rng.integers(0, bed.shape[0] - length + 1))
        return bed[start : start + length]

    def __call__(self, audio: FloatArray, rng: np.random.Generator) -> tuple[FloatArray, int]:
        cfg = self.config
        out = np.asarray(audio, dtype=np.float32).copy()
        length = out.shape[0]
        draws = rng.random(4)  # one per stage, so one stage's p never moves another's draws
        shift = 0
        if draws[0] < cfg.shift_p:
            shift = round(rng.uniform(*cfg.shift_seconds) * TARGET_RATE)
            out = shift_audio(out, shift)
        if draws[1] < cfg.reverb_p:
            response = self.impulse_responses[int(rng.integers(0, len(self.impulse_responses)))]
            wet = fftconvolve(out, response)[:length].astype(np.float32)
            before = float(np.sqrt(np.mean(np.square(out, dtype=np.float64))))
            after = float(np.sqrt(np.mean(np.square(wet, dtype=np.float64))))
            out = wet * np.float32(before / after) if after > 1e-9 else wet
        if draws[2] < cfg.noise_p:
            out = _mix_at_snr(out, self._bed(length, rng), float(rng.uniform(*cfg.snr_db)))
        if draws[3] < cfg.gain_p:
            out = out * np.float32(10.0 ** (rng.uniform(*cfg.gain_db) / 20.0))
        return np.clip(out, -1.0, 1.0).astype(np.float32), shift


def _check_training_row(row: Mapping[str, str]) -> None:
    if row["split"] != "train":
        raise ValueError(
            f"{row['path']}: split {row['split']!r}: only the rooms corpus's train rows may train"
        )
    text = f"{row['source']} {row['path']}".lower()
    if any(reserved in text for reserved in RESERVED_SOURCES):
        raise ValueError(f"{row['path']}: source {row['source']!r} is reserved for evaluation")


def _music_excerpts(rows: Sequence[Mapping[str, str]], config: RoomAugmentConfig) -> list[FloatArray]:
    """`music_segments` seeded excerpts of the training tracks (decoding every track would take 0.5 GB)."""
    rng = np.random.default_rng([config.seed, 77])
    length = int(config.music_segment_seconds * TARGET_RATE)
    excerpts: list[FloatArray] = []
    for _ in range(config.music_segments):
        row = rows[int(rng.integers(0, len(rows)))]
        frames = soundfile.info(row["path"]).frames
        start = int(rng.integers(0, max(1, frames - length)))
        data, rate = soundfile.read(row["path"], start=start, frames=length, dtype="float32", always_2d=True)
        if rate != TARGET_RATE:
            raise ValueError(
                f"{row['path']}: {rate} Hz, expected {TARGET_RATE} (rebuild: kws-train data rooms)"
            )
        mono = data.mean(axis=1)
        if float(np.abs(mono).max(initial=0.0)) > 1e-4:  # skip silent stretches between movements
            excerpts.append(mono.astype(np.float32))
    return excerpts


def load_room_augmenter(root: Path, config: RoomAugmentConfig) -> RoomAugmenter:
    """The augmenter over the `train` rows of the rooms corpus at `root` (`sounds.csv`)."""
    from training.data.rooms import read_sounds

    rows = read_sounds(root, split="train")
    for row in rows:
        _check_training_row(row)
    by_kind: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    irs = [load_audio(Path(r["path"]), TARGET_RATE) for r in by_kind.get("ir_real", [])]
    irs += [load_audio(Path(r["path"]), TARGET_RATE) for r in by_kind.get("ir_simulated", [])]
    noises = [load_audio(Path(r["path"]), TARGET_RATE) for r in by_kind.get("noise", [])]
    music_rows = by_kind.get("music", [])
    music = _music_excerpts(music_rows, config) if music_rows and config.music_share > 0 else []
    sources = sorted({r["source"] for r in rows})
    log.info(
        "room augmenter: %d impulse responses, %d noise beds, %d music excerpts from %s",
        len(irs), len(noises), len(music), sources,
    )  # fmt: skip
    return RoomAugmenter(config, irs, noises, music, sources)
