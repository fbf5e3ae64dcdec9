"""`kws-convert cohort`: the impostor cohort shipped beside the model (see `edge.cohort` and `edge.budget`).

Hours of ordinary audio that hold no keyword, run through the daemon's own detector (streaming MFCC, energy
gate, the int8 encoder) so that every window embedding is the one the board would compute, every `hop_ms`:
- read speech of the speechocean762 **train** speakers (test speakers are reserved for measuring false alarms
  and are refused), sentences holding a command word or one of its relatives left out, one stream per
  speaker with the sentences joined by short pauses;
- isolated words of the training corpora in the speech data folder (never `gsc_v2_test`, never a command
  word), joined into streams of many speakers with short random gaps;
- noise and music from a noise-set manifest, `train` split only;
- music it may ship: the CC BY 3.0 tracks of the Debian package `ufoai-music` (inside its `0music.pk3`), up to
  two minutes of each at the speech level (the GPL game music of the training set stays out, and the benchmark's
  `singularity-music` is reserved for measuring).
Gated windows are stored as zero vectors (cosine 0: they never fire), so the cohort's length is its duration.
Deterministic for a given model, sources and seed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.audio import load_audio
from edge.cohort import Cohort, CohortError, cohort_path_for
from edge.commands import stream_embeddings
from edge.config import DetectorConfig
from edge.fileio import file_sha256
from edge.model import Encoder
from training.data.kaldi import read_kaldi_part
from training.data.manifest import COMMAND_WORDS
from training.data.vocabulary import COMMAND_WORD_RELATIVES

__all__ = [
    "SHIPPED_COHORT",
    "CohortSources",
    "Stream",
    "build_cohort",
    "cohort_main",
    "embed_cohort",
    "holds_forbidden",
    "music_streams",
    "publish_cohort",
    "speechocean_train_streams",
]

log = logging.getLogger(__name__)

RATE = 16000
REPO_ROOT = Path(__file__).resolve().parents[1]
# The cohort of the shipped model, committed beside its checkpoint (building it needs speechocean762).
SHIPPED_COHORT = REPO_ROOT / "training" / "shipped" / "udkws_int8.cohort.npz"
_FORBIDDEN_WORDS = frozenset(COMMAND_WORDS) | COMMAND_WORD_RELATIVES
# Arabic Speech Commands folders are English glosses; these glosses are command words (as in calibration_data).
_WORD_DATASETS = ("arabic_sc", "dspspeech20", "fsdd", "gsc_v1_words")


@dataclass(frozen=True)
class CohortSources:
    speechocean: Path | None = None  # a speechocean762 checkout (train/ is read)
    speechocean_hours: float = 1.5
    data_dir: Path | None = None  # the speech data folder (manifest.csv)
    words_hours: float = 0.25
    noise_manifest: Path | None = None  # a noise-set manifest.csv (path,...,split), `train` rows only
    noise_hours: float = 0.25
    seed: int = 0
    noise_kinds: tuple[str, ...] = ("noise",)
    music_pack: Path | None = None  # ufoai-music's 0music.pk3 (COHORT_MUSIC_PACK)
    music_hours: float = 0.4


@dataclass(frozen=True)
class Stream:
    name: str  # e.g. "speechocean762:0012"
    source: str
    audio: np.ndarray


def holds_forbidden(text: str, extra: frozenset[str] = frozenset()) -> bool:
    return any(word.strip(".,!?;:'\"").lower() in _FORBIDDEN_WORDS | extra for word in text.split())


def speechocean_train_streams(
    root: Path, hours: float, seed: int, exclude: frozenset[str] = frozenset()
) -> Iterator[Stream]:
    """One stream per train speaker (sentences joined by 0.3-0.8 s pauses), speakers in a seeded order.

    Sentences holding a command word, a relative of one, or a word of `exclude` are left out."""
    train = root / "train"
    if not (train / "wav.scp").is_file():
        raise FileNotFoundError(f"{train}/wav.scp: not a speechocean762 checkout (expected train/wav.scp)")
    if (root / "test").resolve() == train.resolve():
        raise ValueError(f"{root}: the test speakers are reserved for measuring false alarms")
    by_speaker: dict[str, list[Path]] = defaultdict(list)
    for utterance in read_kaldi_part(root):  # refuses a test speaker in the train list
        if not holds_forbidden(utterance.text, exclude):
            by_speaker[utterance.speaker].append(utterance.wav)
    rng = random.Random(seed)
    order = sorted(by_speaker)
    rng.shuffle(order)
    budget = hours * 3600 * RATE
    for speaker in order:
        if budget <= 0:
            return
        pieces: list[np.ndarray] = []
        for wav in by_speaker[speaker]:
            pieces += [
                load_audio(wav),
                np.zeros(int(rng.uniform(0.3, 0.8) * RATE), np.float32),
            ]
        audio = np.concatenate(pieces)
        budget -= audio.shape[0]
        yield Stream(f"speechocean762:{speaker}", "speechocean762 train speakers (CC BY 4.0)", audio)


def word_streams(
    data_dir: Path, hours: float, seed: int, per_word: int = 12, minutes_per_stream: float = 5.0
) -> Iterator[Stream]:
    """Training-corpus words (no benchmark clip, no command word) joined with 0.2-1.0 s gaps.

    At most `per_word` clips of each word: some corpora hold a thousand takes of one word, and ordinary
    speech is many words, each rarely.
    """
    by_word: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    with open(data_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["dataset"] in _WORD_DATASETS and row["word"].lower() not in _FORBIDDEN_WORDS:
                by_word[row["dataset"], row["word"]].append(row)
    rng = random.Random(seed + 1)
    rows = [
        row for key in sorted(by_word) for row in rng.sample(by_word[key], min(per_word, len(by_word[key])))
    ]
    rng.shuffle(rows)
    budget, stream, index = hours * 3600 * RATE, [], 0
    length = 0
    for row in rows:
        if budget <= 0:
            break
        clip = load_audio(data_dir / row["path"])
        gap = np.zeros(int(rng.uniform(0.2, 1.0) * RATE), np.float32)
        stream += [clip, gap]
        length += clip.shape[0] + gap.shape[0]
        budget -= clip.shape[0] + gap.shape[0]
        if length >= minutes_per_stream * 60 * RATE:
            yield Stream(
                f"words:{index}", "training-corpus words (see the speech data README)", np.concatenate(stream)
            )
            stream, length, index = [], 0, index + 1
    if stream:
        yield Stream(
            f"words:{index}", "training-corpus words (see the speech data README)", np.concatenate(stream)
        )


def noise_streams(
    manifest: Path, hours: float, seed: int, kinds: Sequence[str] = ("noise",), per_file_s: float = 90.0
) -> Iterator[Stream]:
    """Up to `per_file_s` of each file of the given `kinds` in a sound-set manifest (`split` train only: the
    eval parts are reserved for measuring), a stream each, files in a seeded order.

    Noise only by default: the training music packages are GPL, and the cohort ships with the model."""
    with open(manifest, newline="") as handle:
        rows = [
            row
            for row in csv.DictReader(handle)
            if row.get("split") == "train" and row.get("kind", "noise") in kinds
        ]
    if not rows:
        raise ValueError(f"{manifest}: no row of kind {'/'.join(kinds)} with split = train")
    rng = random.Random(seed + 2)
    rng.shuffle(rows)
    budget = hours * 3600 * RATE
    for row in rows:
        if budget <= 0:
            return
        audio = load_audio(manifest.parent / row["path"])
        length = int(min(budget, per_file_s * RATE, audio.shape[0]))
        start = rng.randrange(0, audio.shape[0] - length + 1)
        budget -= length
        yield Stream(
            f"noise:{row['path']}",
            f"{row.get('source', 'noise')} ({row.get('license', '?')})",
            audio[start : start + length],
        )


# Music the cohort may ship (it is published with the model): the CC BY 3.0 tracks of ufoai-music, per its Debian
# copyright file: David Reeves (Destructavator), azrael1322, Karl Macklin, Manuel "Vanethian" Marino, Gren.
COHORT_MUSIC_PACKAGE = "ufoai-music"
COHORT_MUSIC_PACK = Path("/usr/share/games/ufoai/base/0music.pk3")
COHORT_MUSIC_TRACKS = (
    "David01", "David02", "David03", "David04", "David05", "azrael1", "karlmacklin_geoscape", "van_geoscape",
    "van_mission", "van_mission2", "van_mission3", "van_mission4", "van_theme",
)  # fmt: skip
COHORT_MUSIC_SOURCE = "ufoai-music CC BY 3.0 tracks (Reeves, azrael1322, Macklin, Marino, Gren)"
MUSIC_DBFS = -26.0  # the speech level of kws-bench's streams


def music_streams(
    pack: Path,
    hours: float,
    seed: int,
    tracks: Sequence[str] = COHORT_MUSIC_TRACKS,
    per_track_s: float = 120.0,
) -> Iterator[Stream]:
    """Up to `per_track_s` of each track (`music/<name>.ogg` in the zip `pack`) from a seeded offset, tracks in a
    seeded order, each scaled to MUSIC_DBFS RMS, until `hours`."""
    import io
    import zipfile

    import soundfile

    from edge.audio import resample, to_mono

    if not pack.is_file():
        raise FileNotFoundError(
            f"{pack}: no music pack (`apt-get install {COHORT_MUSIC_PACKAGE}`, or `make data-setup`)"
        )
    rng = random.Random(seed + 3)
    order = list(tracks)
    rng.shuffle(order)
    budget = hours * 3600 * RATE
    with zipfile.ZipFile(pack) as archive:
        for name in order:
            if budget <= 0:
                return
            member = f"music/{name}.ogg"
            try:
                data, rate = soundfile.read(io.BytesIO(archive.read(member)), dtype="float32", always_2d=True)
            except KeyError:
                raise FileNotFoundError(
                    f"{pack}: no {member} (expected the {COHORT_MUSIC_PACKAGE} package's)"
                ) from None
            audio = resample(to_mono(data), rate, RATE) if rate != RATE else to_mono(data)
            length = int(min(budget, per_track_s * RATE, audio.shape[0]))
            start = rng.randrange(0, audio.shape[0] - length + 1)
            piece = audio[start : start + length].astype(np.float64)
            rms = float(np.sqrt(np.mean(piece**2))) or 1.0
            peak = float(np.max(np.abs(piece))) or 1.0
            budget -= length
            scaled = piece * min(10 ** (MUSIC_DBFS / 20) / rms, 0.99 / peak)
            yield Stream(f"music:{name}", COHORT_MUSIC_SOURCE, scaled.astype(np.float32))


def build_cohort(encoder: Encoder, settings: DetectorConfig, sources: CohortSources, command: str) -> Cohort:
    """Embed every source stream with the daemon's detector; one cohort segment per stream."""
    streams: list[Stream] = []
    if sources.speechocean is not None:
        streams += speechocean_train_streams(sources.speechocean, sources.speechocean_hours, sources.seed)
    if sources.data_dir is not None:
        streams += word_streams(sources.data_dir, sources.words_hours, sources.seed)
    if sources.noise_manifest is not None:
        streams += noise_streams(
            sources.noise_manifest, sources.noise_hours, sources.seed, sources.noise_kinds
        )
    if sources.music_pack is not None and sources.music_hours > 0:
        streams += music_streams(sources.music_pack, sources.music_hours, sources.seed)
    if not streams:
        raise ValueError(
            "cohort: no source given (--speechocean, --data-dir, --noise-manifest and/or --music-pack)"
        )
    return embed_cohort(encoder, settings, streams, command)


def embed_cohort(
    encoder: Encoder, settings: DetectorConfig, streams: Sequence[Stream], command: str
) -> Cohort:
    """The streams' window embeddings through the daemon's detector, one cohort segment per stream."""
    started = time.monotonic()
    parts, starts, seconds = [], [], defaultdict(float)
    total = 0
    for stream in tqdm(streams, desc="cohort streams", unit="stream"):
        embedded = stream_embeddings(encoder, stream.audio, settings)[2]
        if embedded.shape[0] == 0:
            continue
        starts.append(total)
        parts.append(embedded)
        total += embedded.shape[0]
        seconds[stream.source] += stream.audio.shape[0] / RATE
    meta = {
        "command": command,
        "frontend_fingerprint": encoder.frontend_fingerprint,
        "detector": {"hop_ms": settings.hop_ms, "gate": settings.gate, "gate_dbfs": settings.gate_dbfs},
        "sources": [{"source": name, "seconds": round(value, 1)} for name, value in seconds.items()],
        "streams": len(parts),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    log.info("cohort: %d windows from %d streams in %.0f s", total, len(parts), meta["build_seconds"])
    return Cohort.from_float(np.concatenate(parts), starts, settings.hop_ms, encoder.sha256, meta)


def publish_cohort(model_path: Path, shipped: Path = SHIPPED_COHORT) -> Path | None:
    """Put the shipped cohort beside a published model when it was made with that very model."""
    target = cohort_path_for(model_path)
    if not shipped.is_file():
        return None
    sha = file_sha256(model_path)
    try:
        cohort = Cohort.load(shipped, sha)
    except CohortError as error:
        log.warning(
            "%s; no cohort published beside %s (false-alarm budgets need one: `kws-convert cohort`)",
            error,
            model_path,
        )
        return None
    cohort.save(target)
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws-convert cohort",
        description="Build the impostor cohort of a converted model (see edge/cohort.py, edge/budget.py and docs/edge.md).",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO_ROOT / "build" / "udkws_int8.tflite",
        help="the int8 model (default build/udkws_int8.tflite)",
    )
    parser.add_argument("--out", type=Path, help="cohort file (default <model>.cohort.npz beside the model)")
    parser.add_argument(
        "--speechocean", type=Path, help="speechocean762 checkout: its train speakers' speech"
    )
    parser.add_argument("--speechocean-hours", type=float, default=CohortSources.speechocean_hours)
    parser.add_argument("--data-dir", type=Path, help="speech data folder: training-corpus words")
    parser.add_argument("--words-hours", type=float, default=CohortSources.words_hours)
    parser.add_argument("--noise-manifest", type=Path, help="noise/music manifest: its train rows")
    parser.add_argument("--noise-hours", type=float, default=CohortSources.noise_hours)
    parser.add_argument(
        "--noise-kinds", default="noise", help="kinds of the manifest to use, comma-separated (default noise)"
    )
    parser.add_argument(
        "--music-pack",
        type=Path,
        help=f"the {COHORT_MUSIC_PACKAGE} pack ({COHORT_MUSIC_PACK}): its CC BY tracks",
    )
    parser.add_argument("--music-hours", type=float, default=CohortSources.music_hours)
    parser.add_argument("--config", type=Path, help="edge config for the detector settings (default shipped)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def cohort_main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    from edge.config import load_config
    from edge.model import load_model

    settings = load_config(args.config or REPO_ROOT / "edge" / "default_config.toml").detector
    sources = CohortSources(
        args.speechocean,
        args.speechocean_hours,
        args.data_dir,
        args.words_hours,
        args.noise_manifest,
        args.noise_hours,
        args.seed,
        tuple(args.noise_kinds.split(",")),
        args.music_pack,
        args.music_hours,
    )
    encoder = load_model(args.model)
    cohort = build_cohort(encoder, settings, sources, "kws-convert cohort " + " ".join(argv))
    beside = cohort_path_for(args.model)
    target = args.out or beside
    cohort.save(target)
    if target.resolve() != beside.resolve():
        cohort.save(beside)  # the model's own copy, which the daemon reads
    print(
        f"{target}: {cohort.embeddings.shape[0]} windows, {cohort.hours:.2f} h, model {cohort.model_sha256[:12]}"
    )
    return 0
