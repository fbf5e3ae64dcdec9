"""Reproducible long test streams for the streaming benchmark, built from `gsc_v2_test` clips (evaluation only).

One stream holds every target keyword at once (the daemon listens for all ten enrolled keywords together), so a
single pass measures all of them. Contents, with `StreamConfig()` defaults:
- keywords: the ten command words of `gsc_v2_test`. Per keyword, the enrollment takes are 3 clips of ONE
  speaker (a user enrolling their own word), chosen among the speakers who recorded it 3+ times; the
  occurrences are 40 other clips, each from a different speaker (never the enrolling one), 10 at each level:
  clean, 20, 10 and 5 dB SNR against the added noise;
- background: every other `gsc_v2_test` clip that is not a command word (the 25 unknown words, ~408 clips) and
  every `_silence_` clip (408, as recorded), so the other nine keywords and the unknown words are the
  distractors of each keyword;
- all items in a random order, separated by random gaps, filling `target_seconds` (61 minutes);
- under everything, a noise bed of Speech Commands `_background_noise_` (`gsc_noise`: dishes, bike, miaowing,
  pink, tap, white; random 10-30 s pieces, each scaled to unit RMS, or less where that would put its peak
  above 20x RMS: such pieces (a loud miaow) sit at a higher SNR than their label), whose level follows the SNR of each item (from the end of the item
  before to the end of this one; 50 ms ramps between levels); "clean" items have no added noise.
Speech is scaled so that its RMS over the spoken part is `speech_dbfs`; the SNR is that RMS over the noise bed's.

Written under `build/bench/streams/<fingerprint>/`: `stream.flac` (16 kHz, 16-bit) and `truth.json` (every
item: word, kind, clip, speaker, snr_db, the spoken part's start_s/end_s and the clip's placement).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import load_audio
from training.data.manifest import COMMAND_WORDS_ORDERED

__all__ = [
    "COMMAND_WORDS",
    "BenchStream",
    "StreamConfig",
    "build_once",
    "build_stream",
    "ensure_stream",
    "level_speech",
    "load_stream",
    "manifest_rows",
    "speech_bounds",
    "write_stream",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
RATE = 16000
BENCH_DATASET = "gsc_v2_test"
NOISE_DATASET = "gsc_noise"
COMMAND_WORDS = COMMAND_WORDS_ORDERED
TRUTH_FORMAT = "udkws-bench-stream/1"
BUILDER_VERSION = 2  # part of the fingerprint: bump when the builder's output changes
BLOCK = 160  # 10 ms
CLIP_LEVEL = 0.999
MAX_NOISE_CREST = 20.0  # a noise piece is scaled to unit RMS unless that puts its peak above this


@dataclass(frozen=True)
class StreamConfig:
    keywords: tuple[str, ...] = COMMAND_WORDS
    enroll_takes: int = 3
    occurrences_per_level: int = 10
    snrs_db: tuple[float, ...] = (20.0, 10.0, 5.0)
    include_clean: bool = True
    unknown_clips: int | None = None  # None: every unknown-word clip
    silence_clips: int | None = None  # None: every _silence_ clip
    target_seconds: float = 3660.0
    min_gap_s: float = 0.8
    speech_dbfs: float = -26.0
    noise_piece_s: tuple[float, float] = (10.0, 30.0)
    ramp_ms: float = 50.0
    seed: int = 20261125

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keywords) - set(COMMAND_WORDS))
        if unknown or not self.keywords:
            raise ValueError(
                f"StreamConfig.keywords: expected command words of {BENCH_DATASET}, got {unknown}"
            )
        if self.enroll_takes < 1 or self.occurrences_per_level < 1:
            raise ValueError("StreamConfig: enroll_takes and occurrences_per_level must be >= 1")
        if not self.snrs_db and not self.include_clean:
            raise ValueError("StreamConfig: no SNR level (snrs_db empty and include_clean false)")
        if self.min_gap_s < 0 or self.target_seconds <= 0:
            raise ValueError("StreamConfig: min_gap_s must be >= 0 and target_seconds > 0")

    @property
    def levels(self) -> tuple[float | None, ...]:
        """SNR levels of the occurrences; None is clean (no added noise)."""
        return ((None,) if self.include_clean else ()) + tuple(float(s) for s in self.snrs_db)

    def fingerprint(self, manifest_sha256: str) -> str:
        canonical = json.dumps(
            {"config": asdict(self), "manifest": manifest_sha256, "builder": BUILDER_VERSION}, sort_keys=True
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BenchStream:
    """A built stream: its audio file and ground truth."""

    directory: Path
    audio_path: Path
    truth: dict[str, Any] = field(repr=False)

    @property
    def seconds(self) -> float:
        return float(self.truth["seconds"])

    @property
    def keywords(self) -> list[str]:
        return list(self.truth["keywords"])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.truth["events"] if kind is None or e["kind"] == kind]


def speech_bounds(audio: npt.NDArray[np.floating[Any]]) -> tuple[int, int]:
    """[start, end) samples of the spoken part: 10 ms blocks within 30 dB of the loudest and 10 dB above the floor.

    The floor (the 10th percentile block level) keeps a clip's own background noise out of the spoken part.
    """
    usable = audio.shape[0] // BLOCK * BLOCK
    if usable == 0:
        return 0, int(audio.shape[0])
    blocks = np.asarray(audio[:usable], dtype=np.float64).reshape(-1, BLOCK)
    level = 10 * np.log10(np.maximum(np.mean(blocks * blocks, axis=1), 1e-12))
    floor = float(np.percentile(level, 10))
    voiced = np.flatnonzero(level >= max(level.max() - 30.0, floor + 10.0))
    if voiced.size == 0:  # a flat signal: all of it
        return 0, usable
    return int(voiced[0]) * BLOCK, int(voiced[-1] + 1) * BLOCK


def level_speech(
    audio: npt.NDArray[np.floating[Any]], speech_dbfs: float | None
) -> tuple[FloatArray, int, int]:
    """A clip scaled so that its spoken part's RMS is `speech_dbfs` (peak at most 0.9; None: as recorded), with
    the spoken part's [start, end) samples."""
    samples = np.asarray(audio, dtype=np.float64)
    start, end = speech_bounds(samples)
    if speech_dbfs is not None:
        rms = float(np.sqrt(np.mean(samples[start:end] ** 2))) or 1.0
        gain = 10 ** (speech_dbfs / 20) / rms
        peak = float(np.max(np.abs(samples))) or 1.0
        samples = samples * min(gain, 0.9 / peak)
    return samples.astype(np.float32), start, end


def manifest_rows(data_dir: Path) -> list[dict[str, str]]:
    path = data_dir / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (set KWS_DATA_DIR to the speech data folder)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda r: r["path"])


def _pick_clips(rows: list[dict[str, str]], config: StreamConfig, rng: np.random.Generator) -> dict[str, Any]:
    bench = [r for r in rows if r["dataset"] == BENCH_DATASET]
    if not bench:
        raise ValueError(f"manifest: no {BENCH_DATASET} clips")
    enrollment: dict[str, list[dict[str, str]]] = {}
    items: list[dict[str, Any]] = []
    per_keyword = config.occurrences_per_level * len(config.levels)
    for word in config.keywords:
        by_speaker: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in bench:
            if row["word"] == word:
                by_speaker[row["speaker"]].append(row)
        candidates = sorted(s for s, clips in by_speaker.items() if len(clips) >= config.enroll_takes)
        if not candidates:
            raise ValueError(f"{BENCH_DATASET}: no speaker recorded {word!r} {config.enroll_takes} times")
        enroller = candidates[int(rng.integers(len(candidates)))]
        enrollment[word] = sorted(by_speaker[enroller], key=lambda r: r["path"])[: config.enroll_takes]
        others = sorted(s for s in by_speaker if s != enroller)
        if len(others) < per_keyword:
            raise ValueError(f"{BENCH_DATASET}: {len(others)} other speakers of {word!r}, need {per_keyword}")
        speakers = [others[i] for i in rng.permutation(len(others))[:per_keyword]]
        for index, speaker in enumerate(speakers):
            clips = by_speaker[speaker]
            row = clips[int(rng.integers(len(clips)))]
            level = config.levels[index % len(config.levels)]
            items.append({"row": row, "kind": "keyword", "snr_db": level})
    for kind, count in (("unknown", config.unknown_clips), ("silence", config.silence_clips)):
        pool = [
            r
            for r in bench
            if (r["word"] == "_silence_") == (kind == "silence") and r["word"] not in COMMAND_WORDS
        ]
        chosen = rng.permutation(len(pool))[: len(pool) if count is None else count]
        for i in sorted(chosen):
            level = config.levels[int(rng.integers(len(config.levels)))]
            items.append({"row": pool[i], "kind": kind, "snr_db": level})
    order = rng.permutation(len(items))
    return {"enrollment": enrollment, "items": [items[i] for i in order]}


def _noise_bed(
    data_dir: Path, rows: list[dict[str, str]], length: int, config: StreamConfig, rng: Any
) -> Any:
    noise_rows = [r for r in rows if r["dataset"] == NOISE_DATASET]
    if not noise_rows:
        raise ValueError(f"manifest: no {NOISE_DATASET} recordings for the noise bed")
    sources = []
    for row in noise_rows:
        sources.append((row["path"], load_audio(data_dir / row["path"])))
    bed = np.zeros(length, dtype=np.float32)
    pieces = []
    ramp = int(config.ramp_ms * RATE / 1000)
    position = 0
    while position < length:
        name, audio = sources[int(rng.integers(len(sources)))]
        piece = int(rng.uniform(*config.noise_piece_s) * RATE)
        piece = min(piece, audio.shape[0], length - position)
        offset = int(rng.integers(audio.shape[0] - piece + 1))
        segment = audio[offset : offset + piece].astype(np.float64)
        rms = float(np.sqrt(np.mean(segment**2))) or 1.0
        peak = float(np.max(np.abs(segment))) or 1.0
        segment = (segment * min(1.0 / rms, MAX_NOISE_CREST / peak)).astype(np.float32)
        fade = min(ramp, piece // 2)
        if fade:
            segment[:fade] *= np.linspace(0.0, 1.0, fade, dtype=np.float32)
            segment[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        bed[position : position + piece] = segment
        pieces.append(
            {"file": name, "offset_s": offset / RATE, "at_s": position / RATE, "seconds": piece / RATE}
        )
        position += piece
    return bed, pieces


def _smoothed_steps(values: list[float], bounds: list[int], length: int, ramp: int) -> FloatArray:
    """A step function (values[i] from bounds[i] to bounds[i+1]) with linear ramps of `ramp` samples."""
    steps = np.zeros(length, dtype=np.float64)
    for value, start, end in zip(values, bounds[:-1], bounds[1:], strict=True):
        steps[start:end] = value
    if ramp <= 1:
        return steps.astype(np.float32)
    padded = np.concatenate([np.full(ramp // 2, steps[0]), steps, np.full(ramp - ramp // 2, steps[-1])])
    cumulative = np.concatenate([[0.0], np.cumsum(padded)])
    smoothed: FloatArray = ((cumulative[ramp:] - cumulative[:-ramp])[:length] / ramp).astype(np.float32)
    return smoothed


def build_stream(data_dir: Path, config: StreamConfig, out_dir: Path) -> BenchStream:
    """Build the stream and its truth into `out_dir` (created); deterministic for a config and manifest."""
    rows = manifest_rows(data_dir)
    rng = np.random.default_rng(config.seed)
    picked = _pick_clips(rows, config, rng)
    items = picked["items"]
    clips = []
    for item in tqdm(items, desc="stream: loading clips", unit="clip", leave=False):
        audio = load_audio(data_dir / item["row"]["path"])
        clips.append(level_speech(audio, None if item["kind"] == "silence" else config.speech_dbfs))
    clip_total = sum(c[0].shape[0] for c in clips) / RATE
    spare = config.target_seconds - clip_total - config.min_gap_s * (len(items) + 1)
    if spare < 0:
        raise ValueError(
            f"StreamConfig: {len(items)} clips ({clip_total:.0f} s) with {config.min_gap_s} s gaps do not fit "
            f"in target_seconds={config.target_seconds}"
        )
    weights = rng.uniform(0.0, 1.0, size=len(items) + 1)
    gaps = config.min_gap_s + spare * weights / weights.sum()
    length = round(config.target_seconds * RATE)
    speech = np.zeros(length, dtype=np.float32)
    events = []
    position = 0.0
    noise_values: list[float] = []
    noise_bounds = [0]
    for item, (clip, start, end), gap in zip(items, clips, gaps[:-1], strict=True):
        position += gap
        offset = round(position * RATE)
        speech[offset : offset + clip.shape[0]] += clip
        row, snr = item["row"], item["snr_db"]
        events.append(
            {
                "word": row["word"],
                "kind": item["kind"],
                "path": row["path"],
                "speaker": row["speaker"],
                "snr_db": snr,
                "start_s": round((offset + start) / RATE, 6),
                "end_s": round((offset + end) / RATE, 6),
                "clip_start_s": round(offset / RATE, 6),
                "clip_end_s": round((offset + clip.shape[0]) / RATE, 6),
            }
        )
        position = (offset + clip.shape[0]) / RATE
        noise_values.append(0.0 if snr is None else 10 ** ((config.speech_dbfs - snr) / 20))
        noise_bounds.append(offset + clip.shape[0])
    noise_values.append(noise_values[-1])
    noise_bounds.append(length)
    bed, pieces = _noise_bed(data_dir, rows, length, config, rng)
    envelope = _smoothed_steps(noise_values, noise_bounds, length, int(config.ramp_ms * RATE / 1000))
    mixed = speech + bed * envelope
    del speech, bed, envelope
    clipped = int(np.count_nonzero(np.abs(mixed) > CLIP_LEVEL))
    if clipped:
        log.warning("stream: %d samples clipped at %.3f", clipped, CLIP_LEVEL)
        np.clip(mixed, -CLIP_LEVEL, CLIP_LEVEL, out=mixed)
    enrollment = {
        word: [{"path": r["path"], "speaker": r["speaker"]} for r in takes]
        for word, takes in picked["enrollment"].items()
    }
    truth = {
        "format": TRUTH_FORMAT,
        "sample_rate": RATE,
        "seconds": length / RATE,
        "keywords": list(config.keywords),
        "config": asdict(config),
        "enrollment": enrollment,
        "events": events,
        "noise_pieces": pieces,
        "clipped_samples": clipped,
    }
    return write_stream(out_dir, mixed, truth)


def write_stream(out_dir: Path, audio: FloatArray, truth: dict[str, Any]) -> BenchStream:
    """Write a stream's audio (16-bit FLAC) and truth into `out_dir` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    import soundfile

    soundfile.write(str(out_dir / "stream.flac"), audio, RATE, subtype="PCM_16")
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return BenchStream(out_dir, out_dir / "stream.flac", truth)


def load_stream(directory: Path) -> BenchStream:
    truth_path = directory / "truth.json"
    try:
        truth = json.loads(truth_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{truth_path}: not a readable stream truth file ({error})") from error
    if truth.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{truth_path}: format {truth.get('format')!r}, expected {TRUTH_FORMAT!r}")
    return BenchStream(directory, directory / "stream.flac", truth)


def ensure_stream(data_dir: Path, config: StreamConfig, root: Path) -> BenchStream:
    """The stream for this config under root/<fingerprint>/, built (atomically, by rename) when missing."""
    manifest_sha = hashlib.sha256((data_dir / "manifest.csv").read_bytes()).hexdigest()
    return build_once(
        root / config.fingerprint(manifest_sha), lambda out: build_stream(data_dir, config, out)
    )


def build_once(target: Path, build: Callable[[Path], object]) -> BenchStream:
    """The stream in `target`, or `build(folder)` into a staging folder renamed to `target` when it is missing."""
    if (target / "truth.json").is_file() and (target / "stream.flac").is_file():
        return load_stream(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built test stream %s", target)
    return load_stream(target)
