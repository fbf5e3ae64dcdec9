"""The soak test's audio: any number of simulated hours, generated block by block from a seed, never held whole.

Material: the bundled demo stream (`edge/demo/stream.flac`, its truth file) and Speech Commands' background
noise (`gsc_noise`, CC BY 4.0), plus digital silence. Every block (an hour in the full soak) holds the same
pieces in its own random order, so per-block CPU can be compared: `keywords_per_block` keyword excerpts, and the
rest split 30 % silence, 40 % noise (a ladder of levels from -65 to -30 dBFS) and 30 % demo material free of the
keyword, in pieces of random length. A keyword excerpt is a demo-stream utterance of the keyword with 2 s before and 1.6 s after it,
cut on the detector's 100 ms hop grid and placed on that grid, so every window that sees the word (and the two
before it, which the trigger counts) is the very window the demo scores: each occurrence is found exactly when
the model finds it in the demo (`training.bench.soak.usable_excerpts` keeps those the detector finds).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.audio import load_audio

__all__ = [
    "GRID",
    "Excerpt",
    "Material",
    "Occurrence",
    "Piece",
    "SoakStreamConfig",
    "load_material",
    "plan_block",
    "render_block",
]

FloatArray = npt.NDArray[np.float32]
RATE = 16000
GRID = 1600  # the detector's hop (100 ms): every piece starts and ends on it
PRE_ROLL_S = 2.0  # before the word: the windows that see it and the two before them
POST_ROLL_S = 1.6  # after the word: every window that still sees it
SHARES = {"silence": 0.3, "noise": 0.4, "demo": 0.3}
NOISE_LEVELS_DBFS = (-65.0, -30.0)  # the ladder's ends (RMS)


@dataclass(frozen=True)
class Excerpt:
    """A keyword utterance cut from the demo stream; `word_start`/`word_end` are samples into `audio`."""

    audio: FloatArray
    word_start: int
    word_end: int
    source_s: float


@dataclass(frozen=True)
class Material:
    demo: FloatArray
    keyword: str
    excerpts: tuple[Excerpt, ...]
    demo_free: tuple[tuple[int, int], ...]  # grid-aligned spans of the demo stream without the keyword
    noises: dict[str, FloatArray]  # unit RMS


@dataclass(frozen=True)
class SoakStreamConfig:
    seconds: float = 86400.0
    block_s: float = 3600.0
    keywords_per_block: int = 30
    seed: int = 2024

    @property
    def blocks(self) -> int:
        return round(self.seconds / self.block_s)

    def validate(self) -> SoakStreamConfig:
        block = round(self.block_s * RATE)
        if (
            block % GRID
            or block <= 0
            or abs(self.blocks * self.block_s - self.seconds) > 1e-6
            or self.blocks < 2
        ):
            raise ValueError(
                f"soak stream: seconds {self.seconds} must be at least 2 blocks of block_s {self.block_s} "
                "(a multiple of 0.1 s)"
            )
        if self.keywords_per_block < 1:
            raise ValueError(f"soak stream: keywords_per_block must be >= 1, got {self.keywords_per_block}")
        return self


@dataclass(frozen=True)
class Piece:
    kind: str  # "silence", "noise", "demo" or "keyword"
    samples: int
    source: str = ""  # the noise's name; the excerpt's index for a keyword
    offset: int = 0  # into the source
    gain: float = 1.0


@dataclass(frozen=True)
class Occurrence:
    """A keyword utterance in the soak stream (seconds from its start) and the excerpt it came from."""

    start_s: float
    end_s: float
    excerpt: int


def _grid_floor(samples: float) -> int:
    return int(samples // GRID) * GRID


def load_material(demo_dir: Path, noise_dir: Path) -> Material:
    """The demo stream cut into keyword excerpts and keyword-free spans, and the noise beds at unit RMS."""
    truth = json.loads((demo_dir / "stream_truth.json").read_text())
    demo = load_audio(demo_dir / "stream.flac")
    keyword = truth["keyword"]
    spans = [(e["start_s"], e["end_s"]) for e in truth["events"] if e["word"] == keyword]
    excerpts = []
    for start_s, end_s in spans:
        first = _grid_floor(start_s * RATE - PRE_ROLL_S * RATE)
        last = min(demo.shape[0], -(-round((end_s + POST_ROLL_S) * RATE) // GRID) * GRID)
        word_start, word_end = round(start_s * RATE) - first, round(end_s * RATE) - first
        excerpts.append(Excerpt(demo[first:last].copy(), word_start, word_end, start_s))
    free, cursor = [], 0
    for start_s, end_s in spans:  # keep 2 s clear of every keyword utterance
        stop = _grid_floor((start_s - 2.0) * RATE)
        if stop - cursor >= 5 * GRID:
            free.append((cursor, stop))
        cursor = -(-round((end_s + 2.0) * RATE) // GRID) * GRID
    if _grid_floor(demo.shape[0]) - cursor >= 5 * GRID:
        free.append((cursor, _grid_floor(demo.shape[0])))
    noises = {}
    for path in sorted(noise_dir.glob("*.flac")):
        audio = load_audio(path)
        noises[path.stem] = (
            audio / max(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))), 1e-9)
        ).astype(np.float32)
    if not excerpts or not free or not noises:
        raise ValueError(
            f"soak material: need keyword utterances in {demo_dir} and noise files in {noise_dir}"
        )
    return Material(demo, keyword, tuple(excerpts), tuple(free), noises)


def _split(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """`total` samples (a multiple of GRID) in `parts` random grid-aligned lengths of at least one GRID each."""
    weights = rng.uniform(0.5, 1.5, parts)
    cells = total // GRID
    sizes = np.maximum(1, np.floor(weights / weights.sum() * cells)).astype(int)
    sizes[-1] = cells - int(sizes[:-1].sum())
    if sizes[-1] < 1:
        raise ValueError(f"soak stream: cannot split {total} samples into {parts} pieces")
    return [int(s) * GRID for s in sizes]


def plan_block(config: SoakStreamConfig, material: Material, index: int) -> list[Piece]:
    """Block `index`: the pieces every block holds, in the block's own random order (deterministic from the seed).

    The pieces (noise beds and levels, demo spans, keyword excerpts) are the same in every block and only their
    order differs, so the encoder runs on as many windows in each block and its CPU per block is comparable.
    """
    rng = np.random.default_rng(config.seed)
    block = round(config.block_s * RATE)
    keywords = [
        Piece(
            "keyword",
            material.excerpts[i % len(material.excerpts)].audio.shape[0],
            str(i % len(material.excerpts)),
        )
        for i in range(config.keywords_per_block)
    ]
    rest = block - sum(p.samples for p in keywords)
    counts = {
        "silence": max(1, round(config.block_s / 600)),
        "noise": max(2, round(config.block_s / 360)),
        "demo": max(1, round(config.block_s / 360)),
    }
    totals = {kind: _grid_floor(rest * share) for kind, share in SHARES.items()}
    totals["demo"] += rest - sum(totals.values())
    if min(totals.values()) < GRID * max(counts.values()):
        raise ValueError(
            f"soak stream: block_s {config.block_s} is too short for {config.keywords_per_block} keywords"
        )
    pieces = list(keywords)
    pieces += [Piece("silence", n) for n in _split(totals["silence"], counts["silence"], rng)]
    levels = rng.permutation(np.linspace(*NOISE_LEVELS_DBFS, counts["noise"]))
    names = sorted(material.noises)
    for samples, level in zip(_split(totals["noise"], counts["noise"], rng), levels, strict=True):
        name = names[int(rng.integers(len(names)))]
        offset = int(rng.integers(material.noises[name].shape[0]))
        pieces.append(Piece("noise", samples, name, offset, float(10 ** (level / 20))))
    for samples in _split(totals["demo"], counts["demo"], rng):
        span_start, span_end = material.demo_free[int(rng.integers(len(material.demo_free)))]
        offset = span_start + GRID * int(rng.integers(max(1, (span_end - span_start) // GRID)))
        pieces.append(Piece("demo", samples, "demo", offset, 1.0))
    order = np.random.default_rng([config.seed, index]).permutation(len(pieces))
    return [pieces[i] for i in order]


def _looped(
    source: FloatArray, offset: int, samples: int, bounds: tuple[int, int] | None = None
) -> FloatArray:
    start, end = bounds if bounds is not None else (0, source.shape[0])
    index = start + (offset - start + np.arange(samples)) % (end - start)
    looped: FloatArray = source[index]
    return looped


def render_piece(piece: Piece, material: Material) -> FloatArray:
    if piece.kind == "silence":
        return np.zeros(piece.samples, dtype=np.float32)
    if piece.kind == "keyword":
        return material.excerpts[int(piece.source)].audio
    if piece.kind == "noise":
        return (_looped(material.noises[piece.source], piece.offset, piece.samples) * piece.gain).astype(
            np.float32
        )
    span = next(s for s in material.demo_free if s[0] <= piece.offset < s[1])
    return _looped(material.demo, piece.offset, piece.samples, span).astype(np.float32)


def render_block(
    config: SoakStreamConfig, material: Material, index: int
) -> Iterator[tuple[FloatArray, Sequence[Occurrence]]]:
    """The block's audio piece by piece (each with the keyword occurrence it holds, if any)."""
    position = round(index * config.block_s * RATE)
    for piece in plan_block(config, material, index):
        occurrences: list[Occurrence] = []
        if piece.kind == "keyword":
            excerpt = material.excerpts[int(piece.source)]
            occurrences.append(
                Occurrence(
                    (position + excerpt.word_start) / RATE,
                    (position + excerpt.word_end) / RATE,
                    int(piece.source),
                )
            )
        yield render_piece(piece, material), occurrences
        position += piece.samples


def to_pcm(audio: FloatArray) -> bytes:
    """float32 in [-1, 1] as the 16-bit little-endian PCM that `kws-edge run --stdin` reads."""
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype("<i2").tobytes()
