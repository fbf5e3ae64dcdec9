"""The development condition's data (`training/bench/dev.py` evaluates on it): built only from what training and the
cohort may use, cached under `build/bench-dev/` like the benchmark's streams.

- **own voice (dev)**: the Free Spoken Digit Dataset's `train` split in the speech data folder (6 speakers x
  the 10 digits, 45 takes each, recorded at 8 kHz): the first `enroll_takes` takes (by take number) of every
  (speaker, digit) enroll the keyword `<digit>.<speaker>`, the next `utterances_per_pair` are its utterances,
  all in one stream with `distractor_clips` clips of gsc_v1_words' `training` split (no command word, no
  digit), random order, random gaps. A speaker's keywords are enrolled together.
- **households (dev)**: the same stream, each digit enrolled by one speaker's takes or by one take of each of
  three speakers (`household_spec`), said by the others.
- **cohort (dev)**: built as the shipped one (`conversion.cohort`: speechocean762 **train** speakers in its
  seeded order, one stream each, and the cohort music) from the first `cohort_hours` of speakers.
- **long-form speech (dev)**: the other train speakers' sentences, one stream, leveled like the benchmark's;
  **long-form music (dev)**: the training music (wesnoth-1.16-music), never the benchmark's.
Sentences holding a digit are left out of the cohort and the negatives, as the benchmark leaves command words
out of its own: the cohort's look-alikes and the false accepts are then ordinary audio, never the keyword.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from conversion.cohort import (
    COHORT_MUSIC_PACK,
    embed_cohort,
    holds_forbidden,
    music_streams,
    speechocean_train_streams,
)
from edge.cohort import Cohort, CohortError
from edge.config import DetectorConfig
from edge.model import Encoder
from training.bench.condition_streams import compose_stream, level_loader, pair_picks
from training.bench.streaming import REPO
from training.bench.streams import (
    RATE,
    TRUTH_FORMAT,
    BenchStream,
    build_once,
    manifest_rows,
    write_stream,
)
from training.data.kaldi import read_kaldi_part
from training.data.manifest import COMMAND_WORDS
from training.data.vocabulary import COMMAND_WORD_RELATIVES

__all__ = [
    "DEV_ROOT",
    "DIGITS",
    "DevConfig",
    "ensure_cohort",
    "ensure_own_voice",
    "ensure_speech",
    "household_spec",
    "own_voice_picks",
    "training_music_dir",
]

FloatArray = npt.NDArray[np.float32]
OWN_VOICE_DATASET = "fsdd"
DISTRACTOR_DATASET = "gsc_v1_words"
DIGITS = frozenset({"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"})
DEV_ROOT = REPO / "build" / "bench-dev"
DEV_MUSIC_PACKAGE = "wesnoth-1.16-music"


@dataclass(frozen=True)
class DevConfig:
    enroll_takes: int = 3
    utterances_per_pair: int = 12
    max_pairs: int | None = None  # all 60
    distractor_clips: int = 600
    # The first train speakers of the shipped cohort's order; the rest (0.89 h of sentences) are the negatives.
    cohort_hours: float = 1.5
    cohort_seed: int = 0  # the shipped cohort's speaker order
    cohort_music_hours: float = 0.4  # the shipped cohort's music (`make cohort`)
    music_seconds: float = 3600.0  # of the training music (wesnoth-1.16-music, 2.1 h), never the benchmark's
    gap_s: tuple[float, float] = (0.8, 2.0)
    longform_gap_s: tuple[float, float] = (0.3, 1.2)
    speech_dbfs: float = -26.0
    seed: int = 20261207

    def fingerprint(self, kind: str, **inputs: Any) -> str:
        canonical = json.dumps({"kind": kind, "config": asdict(self), "inputs": inputs}, sort_keys=True)
        return f"dev-{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def own_voice_picks(
    rows: list[dict[str, str]], config: DevConfig, rng: np.random.Generator
) -> dict[str, Any]:
    """Enrollment takes, words, groups and the stream's items of the dev own-voice condition."""
    by_pair: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["dataset"] == OWN_VOICE_DATASET and row["split"] == "train":
            by_pair[(row["speaker"], row["word"])].append(row)
    needed = config.enroll_takes + 1
    # By word first, so that a few pairs (max_pairs) still hold several speakers of one word.
    pairs = sorted((p for p, clips in by_pair.items() if len(clips) >= needed), key=lambda p: (p[1], p[0]))
    pairs = pairs[: config.max_pairs]
    if not pairs:
        raise ValueError(f"{OWN_VOICE_DATASET}: no (speaker, word) with {needed} train takes in the manifest")
    excluded = COMMAND_WORDS | COMMAND_WORD_RELATIVES | DIGITS
    pool = [
        r
        for r in rows
        if r["dataset"] == DISTRACTOR_DATASET and r["split"] == "training" and r["word"] not in excluded
    ]
    distractors = [
        {"word": row["word"], "kind": "unknown", "path": row["path"], "speaker": row["speaker"]}
        for row in (pool[int(i)] for i in sorted(rng.permutation(len(pool))[: config.distractor_clips]))
    ]
    return pair_picks(by_pair, pairs, config.enroll_takes, config.utterances_per_pair, distractors, rng)


def _stream_truth(
    audio: FloatArray, events: list[dict[str, Any]], config: DevConfig, **extra: Any
) -> dict[str, Any]:
    return {
        "format": TRUTH_FORMAT,
        "sample_rate": RATE,
        "seconds": audio.shape[0] / RATE,
        "config": asdict(config),
        "events": events,
    } | extra


def ensure_own_voice(data_dir: Path, config: DevConfig, root: Path) -> BenchStream:
    manifest = hashlib.sha256((data_dir / "manifest.csv").read_bytes()).hexdigest()

    def build(out: Path) -> None:
        rng = np.random.default_rng(config.seed)
        picks = own_voice_picks(manifest_rows(data_dir), config, rng)
        load = level_loader(data_dir, config.speech_dbfs)
        audio, events = compose_stream(picks["items"], load, rng, config.gap_s, "dev own voice: clips")
        for event in events:
            event["snr_db"] = None
        extra = {k: picks[k] for k in ("enrollment", "words", "groups")}
        write_stream(
            out, audio, _stream_truth(audio, events, config, keywords=sorted(picks["enrollment"]), **extra)
        )

    return build_once(root / "streams" / config.fingerprint("own_voice", manifest=manifest), build)


def training_music_dir() -> Path:
    """The training music (Debian wesnoth-1.16-music, GPL: measured here, never shipped in a cohort)."""
    from training.data.rooms import MUSIC_PACKAGES

    folder = Path(MUSIC_PACKAGES[DEV_MUSIC_PACKAGE][2])
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no training music (`apt-get install {DEV_MUSIC_PACKAGE}`, or `make data-setup`)"
        )
    return folder


def ensure_cohort(
    encoder: Encoder,
    settings: DetectorConfig,
    speechocean: Path,
    config: DevConfig,
    root: Path,
    music_pack: Path = COHORT_MUSIC_PACK,
) -> tuple[Cohort, list[str]]:
    """The dev cohort and the train speakers it holds (cached per model)."""
    path = root / "cohorts" / f"{config.fingerprint('cohort', model=encoder.sha256, hop=settings.hop_ms)}.npz"
    try:
        cohort = Cohort.load(path, encoder.sha256)
        return cohort, list(cohort.meta["speakers"])
    except CohortError:
        pass
    streams = list(speechocean_train_streams(speechocean, config.cohort_hours, config.cohort_seed, DIGITS))
    speakers = [s.name.split(":", 1)[1] for s in streams]
    if config.cohort_music_hours > 0:
        streams += music_streams(music_pack, config.cohort_music_hours, config.cohort_seed)
    cohort = embed_cohort(encoder, settings, streams, "training.bench.dev")
    cohort = dataclasses.replace(cohort, meta=cohort.meta | {"speakers": speakers})
    path.parent.mkdir(parents=True, exist_ok=True)
    cohort.save(path)
    return cohort, speakers


def ensure_speech(speechocean: Path, held: Sequence[str], config: DevConfig, root: Path) -> BenchStream:
    """The train speakers the dev cohort does not hold, sentences without a command word or digit, one stream."""
    held_set = set(held)
    utterances = [
        u
        for u in read_kaldi_part(speechocean)
        if u.speaker not in held_set and not holds_forbidden(u.text, DIGITS)
    ]
    listing = hashlib.sha256("\n".join(f"{u.utt}\t{u.text}" for u in utterances).encode()).hexdigest()

    load = level_loader(None, config.speech_dbfs)

    def build(out: Path) -> None:
        rng = np.random.default_rng(config.seed + 3)
        order = rng.permutation(len(utterances))
        items = [
            {
                "kind": "speech",
                "word": "",
                "speaker": u.speaker,
                "path": str(u.wav),
                "id": u.utt,
                "text": u.text,
            }
            for u in (utterances[int(i)] for i in order)
        ]
        audio, events = compose_stream(items, load, rng, config.longform_gap_s, "dev long-form speech")
        truth = _stream_truth(
            audio, events, config, keywords=[], kind="speech", speakers=len({u.speaker for u in utterances})
        )
        write_stream(out, audio, truth)

    return build_once(root / "streams" / config.fingerprint("speech", utterances=listing), build)


def household_spec(
    truth: dict[str, Any], rotation: int, enrollers: int = 1
) -> tuple[dict[str, list[dict[str, str]]], dict[str, str], list[dict[str, Any]]]:
    """A household on the own-voice stream: each digit enrolled by `enrollers` speakers (speakers in turn,
    starting at `rotation`): one speaker's three takes that enroll their own-voice keyword (household-1), or the
    first of those takes of each of several speakers (household-3). The other speakers' utterances of the digit
    are its targets; the enrollers' own are neutral (the own-voice condition scores those)."""
    speakers = sorted({t[0]["speaker"] for t in truth["enrollment"].values()})
    digits = sorted(set(truth["words"].values()))
    chosen = {
        d: [speakers[(i + rotation + k) % len(speakers)] for k in range(enrollers)]
        for i, d in enumerate(digits)
    }
    spec = {
        d: truth["enrollment"][f"{d}.{who[0]}"]
        if enrollers == 1
        else [truth["enrollment"][f"{d}.{s}"][0] for s in who]
        for d, who in chosen.items()
    }
    events = [
        e | {"keyword": e["word"]} if e["kind"] == "keyword" and e["speaker"] not in chosen[e["word"]] else e
        for e in truth["events"]
    ]
    return spec, {d: d for d in digits}, events
