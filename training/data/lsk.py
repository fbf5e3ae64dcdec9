"""LibriSpeech Keywords (LSK), the paper's corpus: a window centred on every occurrence of a selected word.

Input: a LibriSpeech tree (`<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`) and word
alignments (see `training.data.alignments`). Keyword selection: drop one-letter words, non-alphabetic tokens,
the ten command words and their relatives (`training.data.vocabulary`), the function words of STOP_WORDS and
a user exclusion list; keep the `top_words` most frequent words, at most `max_clips` occurrences of each (a
seeded choice). Each clip is `window_seconds` of the real recording centred on the word, zero-padded where the
window runs past the file's ends.

    python -m training.data.lsk --librispeech /data/LibriSpeech --alignments /data/alignments
"""

from __future__ import annotations

import argparse
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
from training.data.alignments import AlignedWord, read_alignments
from training.data.corpus_io import (
    builder_config,
    clip_seconds_if_valid,
    write_flac_atomic,
    write_json_atomic,
    write_manifest,
)
from training.data.paths import REPO_ROOT

__all__ = [
    "STOP_WORDS",
    "LskConfig",
    "Occurrence",
    "build_lsk",
    "build_lsk_main",
    "cut_centred",
    "select_keywords",
]

log = logging.getLogger(__name__)

DATASET = "lsk"
LICENSE = "CC-BY-4.0"
# The most frequent English function words (articles, pronouns, prepositions, conjunctions, auxiliaries,
# determiners): frequent, short, and mostly unstressed in running speech, so poor keywords.
_STOP_WORDS_TEXT = """
    the of and to in that is was he for it with as his be at by had not are but from or have an they which
    you were her all she there would their we him been has when who will if out so said what its about into
    than them can only other some could these may then do any my now such like our over me even most after
    also did many before must through where much your well should because each just those how too very
    here both being under while us might shall upon am does doing ever every few further himself herself
    itself myself ourselves themselves yourself yours hers ours theirs own same whom whose why again against
    between during until once more no nor off own just don cannot could would ought let this that these
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


@dataclass(frozen=True)
class LskConfig:
    librispeech: str = ""
    alignments: str = ""
    output_dir: str = str(REPO_ROOT / "corpora" / "lsk")
    alignment_format: str = "auto"
    top_words: int = 1000
    max_clips: int = 1000
    window_seconds: float = 1.5
    exclude_words: tuple[str, ...] = ()
    exclude_file: str | None = None
    seed: int = 0
    jobs: int = 2

    def __post_init__(self) -> None:
        if not self.librispeech or not self.alignments:
            raise ValueError("librispeech and alignments directories are required")
        if self.top_words < 1 or self.max_clips < 1 or self.jobs < 1:
            raise ValueError(
                f"top_words, max_clips and jobs must be >= 1 ({self.top_words}, {self.max_clips}, {self.jobs})"
            )
        if not self.window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")


@dataclass(frozen=True, slots=True)
class Occurrence:
    utterance: str
    word: str
    start: float
    end: float


def lsk_excluded_reason(word: str, user: frozenset[str]) -> str | None:
    # Imported here: the vocabulary rules pull in the torch data layer, which worker processes never need.
    from training.data.vocabulary import excluded_reason

    reason = excluded_reason(word, user)
    if reason is None and word in STOP_WORDS:
        return "function word"
    return reason


def select_keywords(
    alignments: dict[str, list[AlignedWord]],
    top_words: int,
    max_clips: int,
    seed: int,
    user: frozenset[str] = frozenset(),
) -> tuple[dict[str, list[Occurrence]], dict[str, int], dict[str, str]]:
    """The chosen occurrences per keyword, every candidate's count, and the excluded words with reasons."""
    counts: Counter[str] = Counter()
    for words in alignments.values():
        counts.update(aligned.word for aligned in words)
    excluded: dict[str, str] = {}
    eligible = []
    for word in counts:
        reason = lsk_excluded_reason(word, user)
        if reason is None:
            eligible.append(word)
        else:
            excluded[word] = reason
    eligible.sort(key=lambda word: (-counts[word], word))
    # Occurrences only of the kept words: a 960 h alignment holds ~10 M words, most of them function words.
    kept = set(eligible[:top_words])
    by_word: dict[str, list[Occurrence]] = defaultdict(list)
    for utterance in sorted(alignments):
        for aligned in alignments[utterance]:
            if aligned.word in kept:
                by_word[aligned.word].append(Occurrence(utterance, aligned.word, aligned.start, aligned.end))
    chosen: dict[str, list[Occurrence]] = {}
    for word in eligible[:top_words]:
        found = by_word[word]
        if len(found) > max_clips:
            rng = np.random.default_rng([seed, *word.encode()])
            picked = sorted(rng.choice(len(found), max_clips, replace=False).tolist())
            found = [found[index] for index in picked]
        chosen[word] = found
    return chosen, dict(counts), excluded


def cut_centred(
    audio: np.ndarray, start: float, end: float, length: int, rate: int = TARGET_RATE
) -> np.ndarray:
    """`length` samples centred on [start, end] seconds, zero-padded beyond the ends of `audio`."""
    centre = round((start + end) / 2.0 * rate)
    first = centre - length // 2
    window = np.zeros(length, dtype=np.float32)
    source_from, source_to = max(0, first), min(audio.shape[0], first + length)
    if source_to > source_from:
        window[source_from - first : source_to - first] = audio[source_from:source_to]
    return window


def find_utterances(root: Path) -> dict[str, Path]:
    """Utterance id -> FLAC path for every `<speaker>-<chapter>-<utt>.flac` under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such LibriSpeech directory")
    found = {path.stem: path for path in sorted(root.rglob("*.flac")) if path.stem.count("-") == 2}
    if not found:
        raise ValueError(f"{root}: no LibriSpeech utterances (<speaker>-<chapter>-<utt>.flac) found")
    return found


def split_of(flac: Path) -> str:
    """LibriSpeech subset -> split: dev-* is validation, test-* is test, everything else train."""
    subset = flac.parents[2].name if len(flac.parents) > 2 else ""
    if subset.startswith("dev"):
        return "validation"
    if subset.startswith("test"):
        return "test"
    return "train"


# A task: one utterance's file, its occurrences, output root, window length.
Task = tuple[str, str, list[Occurrence], str, int]


def clip_relative_path(occurrence: Occurrence) -> str:
    return f"clips/{occurrence.word}/{occurrence.utterance}_{round(occurrence.start * 1000):06d}.flac"


def _cut_task(task: Task) -> dict[str, Any]:
    utterance, flac, occurrences, output_dir, length = task
    root = Path(output_dir)
    speaker = utterance.split("-")[0]
    split = split_of(Path(flac))
    rows, written, kept = [], 0, 0
    audio: np.ndarray | None = None
    for occurrence in occurrences:
        relative = clip_relative_path(occurrence)
        if clip_seconds_if_valid(root / relative) is None:
            if audio is None:
                audio = load_audio(flac, TARGET_RATE)
            write_flac_atomic(root / relative, cut_centred(audio, occurrence.start, occurrence.end, length))
            written += 1
        else:
            kept += 1
        rows.append(
            {
                "path": relative,
                "dataset": DATASET,
                "word": occurrence.word,
                "speaker": speaker,
                "take": f"{utterance}@{occurrence.start:.2f}",
                "split": split,
                "sample_rate": TARGET_RATE,
                "seconds": f"{length / TARGET_RATE:.4f}",
                "license": LICENSE,
            }
        )
    return {"rows": rows, "written": written, "kept": kept}


def build_lsk(config: LskConfig) -> dict[str, Any]:
    """Select keywords, cut their clips (resuming), write `manifest.csv` and `corpus.json`; returns the summary."""
    from tqdm import tqdm

    started = time.monotonic()
    user = frozenset(word.lower() for word in config.exclude_words)
    if config.exclude_file:
        from training.data.vocabulary import read_word_list

        user = user | read_word_list(Path(config.exclude_file))
    utterances = find_utterances(Path(config.librispeech))
    alignments = read_alignments(Path(config.alignments), config.alignment_format)
    unmatched = sorted(set(alignments) - set(utterances))
    if unmatched:
        log.warning("%d aligned utterances have no audio (e.g. %s); skipped", len(unmatched), unmatched[:3])
    alignments = {utterance: words for utterance, words in alignments.items() if utterance in utterances}
    chosen, counts, excluded = select_keywords(
        alignments, config.top_words, config.max_clips, config.seed, user
    )
    per_utterance: dict[str, list[Occurrence]] = defaultdict(list)
    for occurrences in chosen.values():
        for occurrence in occurrences:
            per_utterance[occurrence.utterance].append(occurrence)
    length = round(config.window_seconds * TARGET_RATE)
    output = Path(config.output_dir)
    tasks: list[Task] = [
        (utterance, str(utterances[utterance]), per_utterance[utterance], str(output), length)
        for utterance in sorted(per_utterance)
    ]
    rows: list[dict[str, Any]] = []
    totals: Counter[str] = Counter()
    total = sum(len(found) for found in chosen.values())
    with tqdm(total=total, unit="clip", desc="LSK clips") as progress:
        pool = multiprocessing.get_context("spawn").Pool(config.jobs) if config.jobs > 1 else None
        results = pool.imap_unordered(_cut_task, tasks, chunksize=16) if pool else map(_cut_task, tasks)
        try:
            for result in results:
                rows.extend(result["rows"])
                totals.update(written=result["written"], kept=result["kept"])
                progress.update(len(result["rows"]))
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    rows.sort(key=lambda row: (row["word"], row["path"]))
    output.mkdir(parents=True, exist_ok=True)
    write_manifest(output / "manifest.csv", rows)
    summary = {
        "format": "udkws-lsk-corpus/1",
        "dataset": DATASET,
        "config": asdict(config),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "keywords": {word: {"occurrences": counts[word], "clips": len(chosen[word])} for word in chosen},
        "vocabulary": sorted(chosen),
        "excluded": excluded,
        "stop_words": sorted(STOP_WORDS),
        "utterances": len(per_utterance),
        "clips": len(rows),
        "written": totals["written"],
        "kept_existing": totals["kept"],
        "build_seconds": round(time.monotonic() - started, 1),
    }
    write_json_atomic(output / "corpus.json", summary)
    return summary


def build_parser() -> argparse.ArgumentParser:
    defaults = LskConfig(librispeech="-", alignments="-")
    parser = argparse.ArgumentParser(
        prog="python -m training.data.lsk",
        description="Build LibriSpeech Keywords: clips centred on word occurrences, from LibriSpeech and word "
        "alignments. Options: command line over the [lsk] table of --config over the defaults shown.",
    )
    parser.add_argument("--config", type=Path, help="TOML file with an [lsk] table of these options")
    parser.add_argument(
        "--librispeech", help="LibriSpeech root (holding <subset>/<speaker>/<chapter>/*.flac)"
    )
    parser.add_argument(
        "--alignments", help="folder of MFA *.TextGrid and/or librispeech-alignments *.alignment.txt files"
    )
    parser.add_argument(
        "--alignment-format",
        choices=("auto", "textgrid", "text"),
        help="which alignment files to read (default auto: both)",
    )
    parser.add_argument("--output-dir", help=f"corpus root (default {defaults.output_dir})")
    parser.add_argument(
        "--top-words",
        type=int,
        help=f"keep the N most frequent eligible words (default {defaults.top_words})",
    )
    parser.add_argument(
        "--max-clips", type=int, help=f"at most M clips per word (default {defaults.max_clips})"
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        help=f"clip length, centred on the word (default {defaults.window_seconds})",
    )
    parser.add_argument(
        "--exclude", action="append", dest="exclude_words", metavar="WORD", help="exclude a word (repeatable)"
    )
    parser.add_argument("--exclude-file", help="text file of words to exclude, one per line (# comments)")
    parser.add_argument(
        "--seed", type=int, help=f"seed of the capped choice of occurrences (default {defaults.seed})"
    )
    parser.add_argument("--jobs", type=int, help=f"worker processes (default {defaults.jobs})")
    return parser


def build_lsk_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = builder_config(args, LskConfig, "lsk", repeated=("exclude_words",))
        summary = build_lsk(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(
        f"{summary['clips']} clips of {len(summary['vocabulary'])} keywords in {config.output_dir} ({summary['written']} written)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(build_lsk_main())
