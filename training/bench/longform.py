"""Long-form negatives: hours of audio that never hold a keyword, to count false accepts per hour as a board
hears them (talk and music rather than one-second command clips).

- **speech**: the TEST speakers of speechocean762 (read English sentences by 125 non-native speakers, 16 kHz; a
  Kaldi folder: `text`, `wav.scp`, `utt2spk`). Reserved for measuring false alarms: never a training,
  calibration, cohort or threshold input. Every utterance whose transcript holds a command word, one of its
  relatives (`training.data.vocabulary.COMMAND_WORD_RELATIVES`) or one of EXTRA_EXCLUDED (compounds holding one,
  found in this corpus) is left out; the rest, in a seeded random
  order, each brought to the speech level and separated by short gaps, make one stream (about 2.6 h).
- **music**: every track of a Debian music package reserved for false-alarm measurement and never used for
  training (MUSIC_PACKAGE: `singularity-music`, 64 minutes of instrumental electronic music by Max McCracken,
  CC BY-SA 3.0), each track at the speech level's RMS, one after another with 1 s gaps.

Cached like the other streams (`build/bench/streams/<kind>-<fingerprint>/`); truth events have kind `speech` or
`music` and name the utterance (text, speaker) or track.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import load_audio
from training.bench.condition_streams import ConditionsConfig, compose_stream, level_loader
from training.bench.streams import RATE, TRUTH_FORMAT, BenchStream, build_once, write_stream
from training.data.kaldi import read_split
from training.data.manifest import COMMAND_WORDS
from training.data.vocabulary import COMMAND_WORD_RELATIVES

__all__ = [
    "EXTRA_EXCLUDED",
    "MUSIC_DIR",
    "MUSIC_PACKAGE",
    "check_sources",
    "ensure_music_stream",
    "ensure_speech_stream",
    "music_files",
    "read_kaldi_split",
    "speech_utterances",
]

FloatArray = npt.NDArray[np.float32]
MUSIC_PACKAGE = "singularity-music"
MUSIC_DIR = Path("/usr/share/games/singularity/music")
MUSIC_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".wav")
# Words of this corpus that hold a command word whole (compounds, and "yesterday" which begins with "yes"), beyond
# the relatives listed for training. Look-alikes that do not hold one ("note", "goal", "now") stay: they are the
# false alarms a user would meet.
EXTRA_EXCLUDED = frozenset({"downstairs", "upstairs", "upward", "upwards", "uptown", "nonstop", "yesterday"})
WORD = re.compile(r"[a-z']+")


def read_kaldi_split(corpus: Path, split: str) -> list[dict[str, str]]:
    """Utterances of one split of a Kaldi-style corpus: id, speaker, text and the audio path (absolute)."""
    folder = corpus / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such folder (speechocean762, whose test speakers are the long-form speech negatives: "
            "pass --speechocean DIR or set KWS_SPEECHOCEAN_DIR; --no-conditions skips the conditions)"
        )
    return [
        {"id": u.utt, "speaker": u.speaker, "text": u.text, "path": str(u.wav)}
        for u in read_split(corpus, split, hint="")
    ]


def holds_keyword(text: str) -> bool:
    """True when a transcript holds a command word, a relative of one, or a word of EXTRA_EXCLUDED."""
    excluded = COMMAND_WORDS | COMMAND_WORD_RELATIVES | EXTRA_EXCLUDED
    return any(word.strip("'") in excluded for word in WORD.findall(text.lower()))


def speech_utterances(corpus: Path) -> tuple[list[dict[str, str]], int]:
    """The TEST split's utterances that hold no keyword, and how many were left out."""
    utterances = read_kaldi_split(corpus, "test")
    kept = [u for u in utterances if not holds_keyword(u["text"])]
    return kept, len(utterances) - len(kept)


def check_sources(corpus: Path, music: Path) -> None:
    """Fail early, before any stream is built, when a long-form source is missing."""
    read_kaldi_split(corpus, "test")
    music_files(music)


def music_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no music folder (the Debian package {MUSIC_PACKAGE}: `apt-get install {MUSIC_PACKAGE}`, "
            "or `make setup`)"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MUSIC_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder}: no audio files ({', '.join(MUSIC_SUFFIXES)})")
    return files


def _files_sha(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _truth(
    kind: str, audio: FloatArray, events: list[dict[str, Any]], config: ConditionsConfig, **extra: Any
) -> dict[str, Any]:
    return {
        "format": TRUTH_FORMAT,
        "sample_rate": RATE,
        "seconds": audio.shape[0] / RATE,
        "keywords": [],
        "kind": kind,
        "config": asdict(config),
        "events": events,
    } | extra


def _until(items: list[dict[str, Any]], max_seconds: float | None) -> list[dict[str, Any]]:
    if max_seconds is None:
        return items
    kept, total = [], 0.0
    for item in items:
        if total >= max_seconds:
            break
        kept.append(item)
        total += item["seconds"]
    return kept


def ensure_speech_stream(corpus: Path, config: ConditionsConfig, root: Path) -> BenchStream:
    """speechocean762's test speakers' utterances without keywords, as one stream (see the module docstring)."""
    utterances, left_out = speech_utterances(corpus)
    listing = hashlib.sha256(json_lines(utterances).encode()).hexdigest()
    target = root / config.fingerprint("speech", utterances=listing)

    load = level_loader(None, config.speech_dbfs)

    def build(out: Path) -> None:
        import soundfile

        rng = np.random.default_rng(config.seed + 3)
        order = rng.permutation(len(utterances))
        items = [
            {"kind": "speech", "word": "", "speaker": u["speaker"], "path": u["path"], "id": u["id"], "text": u["text"],
             "seconds": soundfile.info(u["path"]).duration}
            for u in (utterances[int(i)] for i in order)
        ]  # fmt: skip
        items = _until(items, config.speech_max_seconds)
        audio, events = compose_stream(items, load, rng, config.longform_gap_s, "long-form speech")
        speech_s = sum(e["clip_end_s"] - e["clip_start_s"] for e in events)
        truth = _truth(
            "speech",
            audio,
            events,
            config,
            source=str(corpus),
            utterances_left_out=left_out,
            speakers=len({e["speaker"] for e in events}),
            speech_seconds=speech_s,
        )
        write_stream(out, audio, truth)

    return build_once(target, build)


def json_lines(rows: Sequence[dict[str, str]]) -> str:
    return "\n".join(f"{r['id']}\t{r['speaker']}\t{r['text']}" for r in rows)


def ensure_music_stream(folder: Path, config: ConditionsConfig, root: Path) -> BenchStream:
    """Every track of the reserved music package at the speech level's RMS, with 1 s gaps."""
    files = music_files(folder)
    target = root / config.fingerprint("music", files=_files_sha(files))
    level = 10 ** (config.speech_dbfs / 20)

    def load(item: dict[str, Any]) -> tuple[FloatArray, float, float]:
        audio = load_audio(item["path"]).astype(np.float64)
        if config.music_max_seconds is not None:
            audio = audio[: int(config.music_max_seconds * RATE)]
        rms = float(np.sqrt(np.mean(audio**2))) or 1.0
        peak = float(np.max(np.abs(audio))) or 1.0
        scaled = (audio * min(level / rms, 0.99 / peak)).astype(np.float32)
        return scaled, 0.0, scaled.shape[0] / RATE

    def build(out: Path) -> None:
        import soundfile

        rng = np.random.default_rng(config.seed + 4)
        items = [
            {"kind": "music", "word": "", "speaker": "", "path": str(p), "track": str(p.relative_to(folder)),
             "seconds": soundfile.info(str(p)).duration}
            for p in files
        ]  # fmt: skip
        items = _until(items, config.music_max_seconds)
        audio, events = compose_stream(items, load, rng, (1.0, 1.0), "long-form music")
        write_stream(
            out, audio, _truth("music", audio, events, config, source=str(folder), package=MUSIC_PACKAGE)
        )

    return build_once(target, build)
