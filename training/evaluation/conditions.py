"""Acoustic conditions of the benchmark: the test clips as users' microphones hear them.

`clean` is the benchmark as it always was. `noise10` mixes every test clip with music at 10 dB SNR (the
clip's active-speech RMS against the noise's RMS over the clip's span); `reverb` convolves it with the
impulse response of a simulated room (pyroomacoustics shoebox, image sources) and restores its active level.
Everything random is drawn from a generator seeded by (condition, seed, clip key), so every run, every model
and every subset sees exactly the same corrupted audio, whatever the window.

Sources, reserved for evaluation and never used by training (docs/evaluation.md):
- noise: the three tracks of the Debian package `asc-music` (GPL-2+), 17.6 minutes of game music;
- rooms: a bank of ROOM_BANK_SIZE rooms simulated from the fixed seed EVAL_ROOM_SEED, cached under
  `cache/eval/rooms/`; training's own reverberation is a synthetic decaying-noise bank (training/data/augment.py).

The corruption is applied to a canonical CANONICAL_SECONDS buffer with the clip centred, then cropped to the
model's window so that the clip sits exactly where `training.data.windows.fit_window` puts it: the noise
covers the whole window (no silent padding), and two models with different windows hear the same noise
around the same clip.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import fftconvolve
from tqdm import tqdm

from edge.audio import TARGET_RATE, load_audio, resample, to_mono
from edge.fileio import file_sha256
from training.data.corpus_io import atomic_write_bytes
from training.data.paths import cache_dir as cache_root

__all__ = [
    "CONDITIONS",
    "ConditionConfig",
    "active_rms",
    "condition_fingerprint",
    "condition_windows",
    "corrupt_clip",
    "room_bank",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

CONDITIONS = ("clean", "noise10", "reverb")
CANONICAL_SECONDS = 3.0
EVAL_NOISE_DIR = Path("/usr/share/games/asc/music")  # Debian package asc-music
EVAL_ROOM_SEED = 20261213
ROOM_BANK_SIZE = 64
ACTIVE_FRAME = 320  # 20 ms
ACTIVE_RANGE_DB = 30.0  # frames within this of the loudest frame are "active"
MIN_NOISE_RMS = 1e-3  # noise segments quieter than this (fades, pauses) are drawn again
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ConditionConfig:
    """How the corrupted conditions are made; every field enters the cache fingerprint."""

    snr_db: float = 10.0
    seed: int = 0
    noise_paths: tuple[str, ...] = (str(EVAL_NOISE_DIR),)
    room_seed: int = EVAL_ROOM_SEED
    room_bank_size: int = ROOM_BANK_SIZE
    rt60_seconds: tuple[float, float] = (0.25, 0.6)  # the Sabine target; the simulated rooms measure longer
    distance_m: tuple[float, float] = (1.0, 4.0)  # talker to microphone


DEFAULT_CONDITION_CONFIG = ConditionConfig()


def active_rms(audio: npt.ArrayLike) -> float:
    """RMS over the active part: 20 ms frames within ACTIVE_RANGE_DB of the loudest one (a simple P.56)."""
    samples = np.asarray(audio, dtype=np.float64).ravel()
    frames = samples[: samples.size // ACTIVE_FRAME * ACTIVE_FRAME].reshape(-1, ACTIVE_FRAME)
    if frames.size == 0:
        return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
    energy = np.mean(np.square(frames), axis=1)
    active = energy >= energy.max() * 10.0 ** (-ACTIVE_RANGE_DB / 10.0)
    return float(np.sqrt(np.mean(energy[active])))


# ---- sources ----


def _noise_files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(
                sorted(p for p in entry.iterdir() if p.suffix.lower() in (".mp3", ".ogg", ".flac", ".wav"))
            )
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(
                f"evaluation noise {entry}: no such file or folder (the default is the Debian package "
                "asc-music: `apt-get install asc-music`, or `make setup`)"
            )
    if not files:
        raise FileNotFoundError(f"evaluation noise {list(paths)}: no audio files found")
    return files


@lru_cache(maxsize=2)
def _noise_bank(paths: tuple[str, ...], cache_dir: Path | None = None) -> tuple[FloatArray, ...]:
    """Every noise file as mono 16 kHz float32 (MP3 through soundfile), decoded once into cache/eval/noise/."""
    import soundfile as sf

    identity = hashlib.sha256(json.dumps(_noise_identity(paths)).encode()).hexdigest()[:16]
    cached = (cache_dir if cache_dir is not None else cache_root() / "eval") / "noise" / f"{identity}.npz"
    if cached.is_file():
        with np.load(cached) as stored:
            return tuple(stored[f"track{i}"] for i in range(len(stored.files)))
    tracks = []
    for path in _noise_files(paths):
        if path.suffix.lower() in (".wav", ".flac", ".ogg"):
            tracks.append(load_audio(path, TARGET_RATE))
            continue
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        tracks.append(resample(to_mono(data), rate, TARGET_RATE))
    buffer = io.BytesIO()
    np.savez(buffer, **{f"track{i}": track for i, track in enumerate(tracks)})
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cached, buffer.getvalue(), keep_previous=False)
    return tuple(tracks)


def _noise_identity(paths: Sequence[str]) -> list[dict[str, str]]:
    return [{"name": path.name, "sha256": file_sha256(path)} for path in _noise_files(paths)]


def _simulate_room(rng: np.random.Generator, config: ConditionConfig) -> tuple[FloatArray, dict[str, float]]:
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.2)])
    rt60 = float(rng.uniform(*config.rt60_seconds))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(
        dims, fs=TARGET_RATE, materials=pra.Material(absorption), max_order=max_order, air_absorption=True
    )
    margin = 0.5
    for _ in range(1000):
        source = rng.uniform([margin, margin, 1.0], dims - [margin, margin, 1.0])
        mic = rng.uniform([margin, margin, 0.7], dims - [margin, margin, 1.2])
        distance = float(np.linalg.norm(source - mic))
        if config.distance_m[0] <= distance <= config.distance_m[1]:
            break
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    response = np.asarray(room.rir[0][0], dtype=np.float64)
    direct = int(np.argmax(np.abs(response)))
    # Start 2.5 ms before the direct path: the talker is not delayed, the filter's onset is kept.
    response = response[max(0, direct - 40) :]
    response /= np.abs(response).max()
    measured = float(pra.experimental.measure_rt60(response, fs=TARGET_RATE))
    return response.astype(np.float32), {"rt60_target": rt60, "rt60_measured": measured, "distance": distance}


def _room_bank_key(config: ConditionConfig) -> str:
    import pyroomacoustics as pra

    fields = {
        "seed": config.room_seed,
        "size": config.room_bank_size,
        "rt60": config.rt60_seconds,
        "distance": config.distance_m,
        "pyroomacoustics": pra.__version__,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def room_bank(config: ConditionConfig, cache_dir: Path | None = None) -> list[FloatArray]:
    """The evaluation rooms' impulse responses (simulated once from `room_seed`, then read from the cache)."""
    folder = (cache_dir if cache_dir is not None else cache_root() / "eval") / "rooms"
    path = folder / f"rooms-{_room_bank_key(config)}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return [stored[f"rir{i}"] for i in range(config.room_bank_size)]
    rng = np.random.default_rng(config.room_seed)
    responses, stats = [], []
    for _ in tqdm(
        range(config.room_bank_size), desc="simulating evaluation rooms", unit="room", mininterval=2.0
    ):
        response, info = _simulate_room(rng, config)
        responses.append(response)
        stats.append(info)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"rir{i}": r for i, r in enumerate(responses)}, stats=json.dumps(stats))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue(), keep_previous=False)
    rt60 = np.array([s["rt60_measured"] for s in stats])
    log.info(
        "evaluation rooms: %d, measured RT60 %.2f-%.2f s (median %.2f)",
        len(stats),
        rt60.min(),
        rt60.max(),
        np.median(rt60),
    )
    return responses


def condition_fingerprint(name: str, config: ConditionConfig) -> str:
    """What identifies the corrupted audio of a condition (a cache key): its settings and source files."""
    if name not in CONDITIONS:
        raise ValueError(f"condition: expected one of {', '.join(CONDITIONS)}, got {name!r}")
    if name == "clean":
        return "clean"
    fields: dict[str, object] = {"name": name, "seed": config.seed, "canonical": CANONICAL_SECONDS}
    if name == "noise10":
        fields.update(
            snr_db=config.snr_db, noise=_noise_identity(config.noise_paths), active_db=ACTIVE_RANGE_DB
        )
    else:
        fields.update(rooms=_room_bank_key(config))
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return f"{name}-{digest[:16]}"


# ---- corruption ----


def _clip_rng(name: str, seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{name}\0{seed}\0{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _noise_segment(rng: np.random.Generator, tracks: Sequence[FloatArray], length: int) -> FloatArray:
    for _ in range(100):
        track = tracks[int(rng.integers(len(tracks)))]
        if track.shape[0] < length:
            segment = np.resize(track, length)  # a short recording loops
        else:
            start = int(rng.integers(0, track.shape[0] - length + 1))
            segment = track[start : start + length]
        if np.sqrt(np.mean(np.square(segment, dtype=np.float64))) >= MIN_NOISE_RMS:
            return segment.astype(np.float32)
    raise ValueError("evaluation noise: no segment louder than MIN_NOISE_RMS in 100 draws")


def corrupt_clip(
    clip: npt.ArrayLike,
    key: str,
    name: str,
    window: int,
    config: ConditionConfig = DEFAULT_CONDITION_CONFIG,
    rooms: Sequence[FloatArray] | None = None,
) -> FloatArray:
    """The clip (16 kHz, at most the window long) under `name`, as a `window`-sample window.

    Deterministic in (name, config.seed, key). `rooms` is `room_bank(config)` for "reverb" (loaded if None).
    """
    audio = np.asarray(clip, dtype=np.float32).ravel()
    canonical = round(CANONICAL_SECONDS * TARGET_RATE)
    n = audio.shape[0]
    if n > window or window > canonical:
        raise ValueError(
            f"{key}: a {n}-sample clip cannot be corrupted into a {window}-sample window "
            f"(needs clip <= window <= {canonical})"
        )
    clip_at = (canonical - n) // 2
    crop_at = clip_at - (window - n) // 2  # so that the clip lands where fit_window centres it
    rng = _clip_rng(name, config.seed, key)
    buffer = np.zeros(canonical, dtype=np.float32)
    level = active_rms(audio)
    if name == "clean":
        buffer[clip_at : clip_at + n] = audio
    elif name == "noise10":
        buffer[clip_at : clip_at + n] = audio
        noise = _noise_segment(rng, _noise_bank(tuple(config.noise_paths)), canonical)
        noise_rms = float(np.sqrt(np.mean(np.square(noise[clip_at : clip_at + n], dtype=np.float64))))
        noise_rms = max(noise_rms, MIN_NOISE_RMS * 1e-3)
        buffer += noise * np.float32(level / noise_rms * 10.0 ** (-config.snr_db / 20.0))
    elif name == "reverb":
        bank = rooms if rooms is not None else room_bank(config)
        response = bank[int(rng.integers(len(bank)))]
        wet = fftconvolve(audio, response)[: canonical - clip_at].astype(np.float32)
        wet_level = active_rms(wet[: n + response.shape[0]])
        if wet_level > 0:
            wet *= np.float32(level / wet_level)
        buffer[clip_at : clip_at + wet.shape[0]] = wet
    else:
        raise ValueError(f"condition: expected one of {', '.join(CONDITIONS)}, got {name!r}")
    return buffer[crop_at : crop_at + window].copy()


def condition_windows(
    paths: Sequence[Path],
    keys: Sequence[str],
    window_seconds: float,
    name: str,
    config: ConditionConfig = DEFAULT_CONDITION_CONFIG,
    progress: bool = True,
) -> FloatArray:
    """Every clip under condition `name` as a window [N, L] (clean: exactly `protocol.load_windows`)."""
    from training.data.windows import fit_window, window_samples

    window = window_samples(window_seconds)
    rooms = room_bank(config) if name == "reverb" else None
    out = np.empty((len(paths), window), dtype=np.float32)
    for i, (path, key) in enumerate(
        tqdm(
            list(zip(paths, keys, strict=True)),
            desc=f"clips ({name})",
            unit="clip",
            disable=not progress,
            mininterval=2.0,
        )
    ):
        audio = load_audio(path, TARGET_RATE)
        if name == "clean" or audio.shape[0] > window:
            # Clean, or a clip longer than the window (none in gsc_v2_test): the benchmark's own window.
            window_audio = fit_window(audio, window)
            out[i] = (
                window_audio
                if name == "clean"
                else corrupt_clip(window_audio, key, name, window, config, rooms)
            )
        else:
            out[i] = corrupt_clip(audio, key, name, window, config, rooms)
    return out


def describe(config: ConditionConfig) -> dict[str, object]:
    """The settings for results.json."""
    return {**asdict(config), "canonical_seconds": CANONICAL_SECONDS, "active_range_db": ACTIVE_RANGE_DB}
