"""Cached encoder outputs of the benchmark: every window's embedding of a stream and every enrollment take's.

Window embeddings come from the daemon's own detector (`edge.detector.Detector`, fed 100 ms chunks, its energy
gate and hop), so they are exactly what the board computes; gated windows (no encoder run) are zeros and flagged.
With them cached, any decision rule over embeddings (cosine against templates, per-keyword thresholds, a second
look at candidates) is evaluated over every condition in seconds (`training.bench.experiments`).

Files, under `build/bench/`:
- `embeddings/<stream>-<model sha12>-<front end>-<window settings>.npz`: ends [W] (end sample), gated [W], embeddings [W, D];
- `enrollments/<name>-<spec sha>-<model sha12>-<front end>.npz`: keywords, words, groups, templates [K, D] (the stored
  templates, as `kws-edge enroll` makes them), takes [N, D] with take_offsets [K + 1], take speakers, notes.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import load_audio
from edge.commands import stream_embeddings
from edge.config import DetectorConfig
from edge.fileio import atomic_write_bytes
from edge.model import Encoder
from edge.takematch import FEATURES as TAKE_FEATURES
from training.bench.streaming import CHUNK, enroll_takes
from training.bench.streams import BenchStream

__all__ = [
    "Enrollment",
    "StreamWindows",
    "embed_audio",
    "ensure_enrollment",
    "ensure_windows",
    "load_enrollment",
    "load_windows",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class StreamWindows:
    """Every model window of a stream, as the daemon evaluates them."""

    stream: str  # the stream's folder name
    audio_path: Path
    seconds: float
    ends: npt.NDArray[np.int64]  # [W] end sample of each window
    gated: npt.NDArray[np.bool_]  # [W] skipped by the energy gate (no embedding)
    embeddings: FloatArray  # [W, D] L2-normalised; zeros where gated

    @property
    def hours(self) -> float:
        return self.seconds / 3600


@dataclass(frozen=True)
class Enrollment:
    """Keywords enrolled together for a condition, with every take's embedding."""

    name: str
    keywords: list[str]
    words: list[str]  # the word each keyword is (`yes` for `yes.0a7c2a8d`)
    groups: list[list[int]]  # keyword indices enrolled together (one daemon each)
    templates: FloatArray  # [K, D] the stored templates (mean of the unit takes)
    takes: list[FloatArray]  # per keyword [n, D]
    take_speakers: list[list[str]]
    notes: list[str]
    # Each keyword's takes as the second look uses them (edge.takematch): speech features and spread; empty / None
    # for phrases.
    take_speech: list[tuple[FloatArray, ...]] = field(default_factory=list)
    take_spreads: list[float | None] = field(default_factory=list)


def _window_key(settings: DetectorConfig) -> str:
    return f"hop{settings.hop_ms}-gate{'on' if settings.gate else 'off'}{settings.gate_dbfs:g}"


def _save_npz(path: Path, **arrays: npt.ArrayLike) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def embed_audio(
    encoder: Encoder,
    audio: FloatArray,
    settings: DetectorConfig,
    progress: bool = True,
    desc: str = "embedding",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], FloatArray, float]:
    """The detector (no keywords) over the audio in 100 ms chunks: ends, gated, embeddings, CPU seconds."""
    started = time.process_time()
    chunks = -(-audio.shape[0] // CHUNK)
    with tqdm(total=chunks, desc=desc, unit="chunk", leave=False, disable=not progress) as bar:
        ends, gated, embeddings = stream_embeddings(encoder, audio, settings, on_chunk=lambda: bar.update())
    return ends, gated, embeddings, time.process_time() - started


def windows_path(root: Path, stream: BenchStream, encoder: Encoder, settings: DetectorConfig) -> Path:
    model = f"{encoder.sha256[:12]}-{encoder.frontend_fingerprint[:8]}"
    return root / "embeddings" / f"{stream.directory.name}-{model}-{_window_key(settings)}.npz"


def load_windows(path: Path, stream: BenchStream) -> StreamWindows:
    try:
        with np.load(path) as stored:
            ends, gated, embeddings = stored["ends"], stored["gated"], stored["embeddings"]
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a window-embedding cache ({error})") from error
    return StreamWindows(stream.directory.name, stream.audio_path, stream.seconds, ends, gated, embeddings)


def ensure_windows(
    stream: BenchStream,
    encoder: Encoder,
    settings: DetectorConfig,
    root: Path,
    progress: bool = True,
    computed: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], FloatArray] | None = None,
) -> tuple[StreamWindows, Path, float]:
    """The stream's window embeddings from the cache, else from `computed` (a pass already made) or a new pass.

    Returns them, the cache file, and the CPU seconds spent embedding (0 when cached or given)."""
    path = windows_path(root, stream, encoder, settings)
    cpu_s = 0.0
    if not path.is_file():
        if computed is None:
            audio = load_audio(stream.audio_path)
            *computed, cpu_s = embed_audio(
                encoder, audio, settings, progress, f"embedding {stream.directory.name}"
            )
        ends, gated, embeddings = computed
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_npz(path, ends=ends, gated=gated, embeddings=embeddings)
    return load_windows(path, stream), path, cpu_s


def ensure_enrollment(
    name: str,
    spec: dict[str, list[dict[str, str]]],
    words: dict[str, str],
    groups: list[list[str]],
    data_dir: Path,
    encoder: Encoder,
    root: Path,
) -> tuple[Enrollment, Path]:
    """Enroll every keyword of `spec` (name -> takes {path, speaker}) through `kws-edge enroll`'s code, cached."""
    canonical = json.dumps({"spec": spec, "words": words, "groups": groups}, sort_keys=True)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    safe = name.replace(" ", "_")
    model = f"{encoder.sha256[:12]}-{encoder.frontend_fingerprint[:8]}"
    path = root / "enrollments" / f"{safe}-{key}-{model}.npz"
    if not _holds_take_speech(path):  # missing, or cached before the second look existed
        state_dir = root / "state" / f"{safe}-{encoder.sha256[:12]}"
        shutil.rmtree(state_dir, ignore_errors=True)
        enrolled = enroll_takes(
            {k: [t["path"] for t in takes] for k, takes in spec.items()}, data_dir, encoder, state_dir
        )
        keywords = list(spec)
        index = {k: i for i, k in enumerate(keywords)}
        takes = enrolled.take_embeddings
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_npz(
            path,
            name=np.array(name),
            keywords=np.array(keywords),
            words=np.array([words[k] for k in keywords]),
            groups=np.array(json.dumps([[index[k] for k in g] for g in groups])),
            templates=np.stack([t.embedding for t in enrolled.templates]).astype(np.float32),
            takes=np.concatenate(takes).astype(np.float32),
            take_offsets=np.cumsum([0] + [t.shape[0] for t in takes]),
            take_speakers=np.array(json.dumps([[t["speaker"] for t in spec[k]] for k in keywords])),
            notes=np.array(json.dumps(enrolled.notes)),
            take_features=np.array(TAKE_FEATURES),
            take_speech=np.concatenate(
                [s for t in enrolled.templates for s in t.take_speech] or [np.zeros((0, 13), np.float32)]
            ),
            speech_steps=np.array(
                [s.shape[0] for t in enrolled.templates for s in t.take_speech], dtype=np.int64
            ),
            speech_takes=np.array([len(t.take_speech) for t in enrolled.templates], dtype=np.int64),
            take_spreads=np.array(
                [np.nan if t.take_spread is None else t.take_spread for t in enrolled.templates]
            ),
        )
    return load_enrollment(path), path


def _holds_take_speech(path: Path) -> bool:
    """Whether the cached enrollment holds the takes' features as edge.takematch makes them today."""
    if not path.is_file():
        return False
    try:
        with np.load(path) as stored:
            return "take_features" in stored.files and str(stored["take_features"]) == TAKE_FEATURES
    except (OSError, ValueError):
        return False


def _take_speech(
    frames: FloatArray, steps: npt.NDArray[np.int64], takes: npt.NDArray[np.int64]
) -> list[tuple[FloatArray, ...]]:
    """Split the stored [sum of steps, 13] features back into each keyword's takes."""
    bounds = np.cumsum([0, *steps])
    each = [frames[bounds[i] : bounds[i + 1]] for i in range(steps.shape[0])]
    firsts = np.cumsum([0, *takes])
    return [tuple(each[firsts[k] : firsts[k + 1]]) for k in range(takes.shape[0])]


def load_enrollment(path: Path) -> Enrollment:
    try:
        with np.load(path) as stored:
            offsets = stored["take_offsets"]
            takes = stored["takes"]
            return Enrollment(
                str(stored["name"]),
                [str(k) for k in stored["keywords"]],
                [str(w) for w in stored["words"]],
                json.loads(str(stored["groups"])),
                stored["templates"],
                [takes[offsets[i] : offsets[i + 1]] for i in range(offsets.shape[0] - 1)],
                json.loads(str(stored["take_speakers"])),
                json.loads(str(stored["notes"])),
                _take_speech(stored["take_speech"], stored["speech_steps"], stored["speech_takes"]),
                [None if np.isnan(v) else float(v) for v in stored["take_spreads"]],
            )
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not an enrollment cache ({error})") from error
