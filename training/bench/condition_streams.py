"""Streams and enrollments for the benchmark's conditions beyond the household stream (`streams.py`).

All from `gsc_v2_test` (evaluation only), deterministic for a config and the data, cached under
`build/bench/streams/<kind>-<fingerprint>/` (`stream.flac` + `truth.json`, the household stream's format):
- **own voice**: every (speaker, command word) pair with at least `own_voice_enroll_takes + 1` takes (495 pairs
  of 73 speakers). The first takes (by take number) enroll the keyword `<word>.<speaker>`; the speaker's other
  takes of that word are its utterances, all in one stream with every pair's utterances and the household
  stream's distractors (the 25 other words and `_silence_`), clean, in random order with random gaps. A speaker's
  keywords are enrolled together (one user, one daemon): `groups`. Another speaker's take of the same word is
  neither a hit nor a false accept for the keyword (that is the household condition's business).
- **reverb**: the household stream's keyword and unknown-word clips, each convolved with an impulse response
  from the evaluation room bank (`training.evaluation.conditions.room_bank`: pyroomacoustics rooms simulated
  from a fixed seed, reserved for evaluation), then brought back to the speech level; no added noise.
- **household-3** enrollment: per keyword, one take by each of 3 speakers who say none of that keyword's
  utterances in the household and reverb streams and are not its household-1 enroller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.audio import load_audio
from training.bench.streams import (
    BENCH_DATASET,
    COMMAND_WORDS,
    RATE,
    TRUTH_FORMAT,
    BenchStream,
    build_once,
    level_speech,
    manifest_rows,
    write_stream,
)

__all__ = [
    "ConditionsConfig",
    "compose_stream",
    "ensure_own_voice_stream",
    "ensure_reverb_stream",
    "household3_enrollment",
    "level_loader",
    "own_voice_picks",
    "pair_picks",
    "takes_in_order",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BUILDER_VERSION = 1  # part of every fingerprint here: bump when a builder's output changes
MAX_IR_SECONDS = 1.0


@dataclass(frozen=True)
class ConditionsConfig:
    """What the condition streams hold; None means all there is."""

    own_voice_enroll_takes: int = 3
    own_voice_max_pairs: int | None = None
    distractor_unknown_clips: int | None = None  # of the own-voice stream
    distractor_silence_clips: int | None = None
    household3_speakers: int = 3
    reverb_rooms: int = 64  # the evaluation room bank's size
    reverb_keyword_clips: int | None = None  # per keyword, from the household stream
    reverb_unknown_clips: int | None = None
    speech_max_seconds: float | None = None  # long-form read speech (see longform.py)
    music_max_seconds: float | None = None
    gap_s: tuple[float, float] = (0.8, 2.0)
    longform_gap_s: tuple[float, float] = (0.3, 1.2)
    speech_dbfs: float = -26.0
    seed: int = 20261204

    def fingerprint(self, kind: str, **inputs: Any) -> str:
        canonical = json.dumps(
            {"kind": kind, "config": asdict(self), "inputs": inputs, "builder": BUILDER_VERSION},
            sort_keys=True,
        )
        return f"{kind}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def _take_number(take: str) -> int:
    digits = re.match(r"\d+", take)  # some manifest takes read "2.wav"
    return int(digits.group()) if digits else 0


def takes_in_order(clips: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(clips, key=lambda r: (_take_number(r["take"]), r["path"]))


def compose_stream(
    items: Sequence[dict[str, Any]],
    load: Callable[[dict[str, Any]], tuple[FloatArray, float, float]],
    rng: np.random.Generator,
    gap_s: tuple[float, float],
    desc: str,
) -> tuple[FloatArray, list[dict[str, Any]]]:
    """Items one after another with random gaps of silence; `load(item)` gives (audio, spoken start_s, end_s).

    Returns the audio and one truth event per item: the item's fields plus start_s/end_s (the spoken part) and
    clip_start_s/clip_end_s on the stream's clock."""
    gaps = rng.uniform(*gap_s, size=len(items) + 1)
    pieces: list[FloatArray] = []
    events = []
    position = 0
    for item, gap in zip(tqdm(items, desc=desc, unit="clip", leave=False), gaps[:-1], strict=False):
        audio, start_s, end_s = load(item)
        silence = round(gap * RATE)
        pieces += [np.zeros(silence, dtype=np.float32), audio]
        position += silence
        events.append(
            item
            | {
                "start_s": round(position / RATE + start_s, 6),
                "end_s": round(position / RATE + end_s, 6),
                "clip_start_s": round(position / RATE, 6),
                "clip_end_s": round((position + audio.shape[0]) / RATE, 6),
            }
        )
        position += audio.shape[0]
    pieces.append(np.zeros(round(gaps[-1] * RATE), dtype=np.float32))
    return np.concatenate(pieces), events


def _distractors(
    bench: list[dict[str, str]], unknown: int | None, silence: int | None, rng: np.random.Generator
) -> list[dict[str, Any]]:
    items = []
    for kind, count in (("unknown", unknown), ("silence", silence)):
        pool = [
            r
            for r in bench
            if (r["word"] == "_silence_") == (kind == "silence") and r["word"] not in COMMAND_WORDS
        ]
        for i in sorted(rng.permutation(len(pool))[: len(pool) if count is None else count]):
            row = pool[int(i)]
            items.append({"word": row["word"], "kind": kind, "path": row["path"], "speaker": row["speaker"]})
    return items


def own_voice_picks(
    rows: list[dict[str, str]], config: ConditionsConfig, rng: np.random.Generator
) -> dict[str, Any]:
    """Enrollment takes, keyword words and groups, and the stream's items for the own-voice condition."""
    bench = [r for r in rows if r["dataset"] == BENCH_DATASET]
    by_pair: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in bench:
        if row["word"] in COMMAND_WORDS:
            by_pair[(row["speaker"], row["word"])].append(row)
    needed = config.own_voice_enroll_takes + 1
    pairs = sorted(p for p, clips in by_pair.items() if len(clips) >= needed)
    if config.own_voice_max_pairs is not None:
        pairs = sorted(pairs[int(i)] for i in rng.permutation(len(pairs))[: config.own_voice_max_pairs])
    if not pairs:
        raise ValueError(f"{BENCH_DATASET}: no speaker recorded a command word {needed} times")
    distractors = _distractors(bench, config.distractor_unknown_clips, config.distractor_silence_clips, rng)
    return pair_picks(by_pair, pairs, needed - 1, None, distractors, rng)


def pair_picks(
    by_pair: dict[tuple[str, str], list[dict[str, str]]],
    pairs: Sequence[tuple[str, str]],
    enroll_takes: int,
    utterances_per_pair: int | None,
    distractors: list[dict[str, Any]],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Own voice from (speaker, word) pairs: the first `enroll_takes` takes (in take order) enroll `<word>.<speaker>`,
    the next `utterances_per_pair` (None: all) are its utterances; with the distractors, in a random order. A
    speaker's keywords make one group (one user, one daemon)."""
    enrollment, words, groups, items = {}, {}, defaultdict(list), []
    for speaker, word in pairs:
        name = f"{word}.{speaker}"
        takes = takes_in_order(by_pair[(speaker, word)])
        enrollment[name] = [{"path": r["path"], "speaker": speaker} for r in takes[:enroll_takes]]
        words[name] = word
        groups[speaker].append(name)
        last = None if utterances_per_pair is None else enroll_takes + utterances_per_pair
        for row in takes[enroll_takes:last]:
            items.append(
                {"word": word, "kind": "keyword", "keyword": name, "path": row["path"], "speaker": speaker}
            )
    items += distractors
    order = rng.permutation(len(items))
    return {
        "enrollment": enrollment,
        "words": words,
        "groups": [groups[s] for s in sorted(groups)],
        "items": [items[int(i)] for i in order],
    }


def level_loader(
    data_dir: Path | None, speech_dbfs: float
) -> Callable[[dict[str, Any]], tuple[FloatArray, float, float]]:
    """compose_stream's loader: an item's audio (its path under `data_dir`, or as given when None) with its speech
    at `speech_dbfs` (silence items as recorded), and the speech's start and end in seconds."""

    def load(item: dict[str, Any]) -> tuple[FloatArray, float, float]:
        path = Path(item["path"]) if data_dir is None else data_dir / item["path"]
        audio, start, end = level_speech(load_audio(path), None if item["kind"] == "silence" else speech_dbfs)
        return audio, start / RATE, end / RATE

    return load


def _manifest_sha(data_dir: Path) -> str:
    return hashlib.sha256((data_dir / "manifest.csv").read_bytes()).hexdigest()


def ensure_own_voice_stream(data_dir: Path, config: ConditionsConfig, root: Path) -> BenchStream:
    target = root / config.fingerprint("own_voice", manifest=_manifest_sha(data_dir))

    def build(out: Path) -> None:
        rng = np.random.default_rng(config.seed)
        picks = own_voice_picks(manifest_rows(data_dir), config, rng)
        audio, events = compose_stream(
            picks["items"], level_loader(data_dir, config.speech_dbfs), rng, config.gap_s, "own voice: clips"
        )
        for event in events:
            event["snr_db"] = None
        truth = {
            "format": TRUTH_FORMAT,
            "sample_rate": RATE,
            "seconds": audio.shape[0] / RATE,
            "keywords": sorted(picks["enrollment"]),
            "words": picks["words"],
            "groups": picks["groups"],
            "config": asdict(config),
            "enrollment": picks["enrollment"],
            "events": events,
        }
        write_stream(out, audio, truth)

    return build_once(target, build)


def eval_rooms(count: int) -> list[FloatArray]:
    """The evaluation room bank's impulse responses (direct path first), cut to MAX_IR_SECONDS."""
    from training.evaluation.conditions import ConditionConfig, room_bank

    return [r[: int(MAX_IR_SECONDS * RATE)] for r in room_bank(ConditionConfig(room_bank_size=count))]


def _rooms_sha(rooms: Sequence[FloatArray]) -> str:
    digest = hashlib.sha256()
    for response in rooms:
        digest.update(np.ascontiguousarray(response, dtype=np.float32).tobytes())
    return digest.hexdigest()


def ensure_reverb_stream(
    data_dir: Path, household: BenchStream, config: ConditionsConfig, root: Path, rooms: Sequence[FloatArray]
) -> BenchStream:
    """The household stream's keyword (and unknown-word) clips in simulated rooms, without added noise."""
    from scipy.signal import fftconvolve

    target = root / config.fingerprint("reverb", household=household.directory.name, rooms=_rooms_sha(rooms))

    def load(item: dict[str, Any]) -> tuple[FloatArray, float, float]:
        dry, start, end = level_speech(load_audio(data_dir / item["path"]), config.speech_dbfs)
        response = rooms[item["room"]]
        delay = int(np.argmax(np.abs(response)))
        wet, _, _ = level_speech(fftconvolve(dry, response), config.speech_dbfs)
        return wet, (start + delay) / RATE, (end + delay) / RATE

    def build(out: Path) -> None:
        rng = np.random.default_rng(config.seed + 1)
        items = []
        for kind, limit in (
            ("keyword", config.reverb_keyword_clips),
            ("unknown", config.reverb_unknown_clips),
        ):
            chosen = household.events(kind)
            if kind == "keyword" and limit is not None:
                chosen = [
                    e for w in household.keywords for e in [x for x in chosen if x["word"] == w][:limit]
                ]
            elif limit is not None:
                chosen = chosen[:limit]
            for event in chosen:
                items.append(
                    {k: event[k] for k in ("word", "kind", "path", "speaker")}
                    | {"room": int(rng.integers(len(rooms))), "snr_db": None}
                )
        order = rng.permutation(len(items))
        audio, events = compose_stream(
            [items[int(i)] for i in order], load, rng, config.gap_s, "reverb: clips"
        )
        truth = {
            "format": TRUTH_FORMAT,
            "sample_rate": RATE,
            "seconds": audio.shape[0] / RATE,
            "keywords": household.keywords,
            "config": asdict(config),
            "household": household.directory.name,
            "rooms": len(rooms),
            "events": events,
        }
        write_stream(out, np.clip(audio, -0.999, 0.999), truth)

    return build_once(target, build)


def household3_enrollment(
    rows: list[dict[str, str]], household: BenchStream, config: ConditionsConfig
) -> dict[str, list[dict[str, str]]]:
    """Per keyword, one take (the first) by each of `household3_speakers` speakers who say none of its utterances
    in the household stream and are not its household-1 enroller."""
    rng = np.random.default_rng(config.seed + 2)
    enrollment = {}
    for word in household.keywords:
        busy = {e["speaker"] for e in household.events("keyword") if e["word"] == word}
        busy |= {t["speaker"] for t in household.truth["enrollment"][word]}
        by_speaker: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            if row["dataset"] == BENCH_DATASET and row["word"] == word and row["speaker"] not in busy:
                by_speaker[row["speaker"]].append(row)
        candidates = sorted(by_speaker)
        if len(candidates) < config.household3_speakers:
            raise ValueError(
                f"{BENCH_DATASET}: {len(candidates)} free speakers of {word!r}, need {config.household3_speakers}"
            )
        chosen = [candidates[int(i)] for i in rng.permutation(len(candidates))[: config.household3_speakers]]
        enrollment[word] = [{"path": takes_in_order(by_speaker[s])[0]["path"], "speaker": s} for s in chosen]
    return enrollment
