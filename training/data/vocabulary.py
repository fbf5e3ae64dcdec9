"""The word list of the synthetic corpus: frequent English words minus what no training set may hold.

Excluded, with the reason recorded: one-letter words, tokens that are not plain ASCII letters (numbers,
contractions, hyphenations), the ten command words of the benchmark, words that sound like a command word or
are built on one (`know` sounds like `no`; `stopped` holds `stop`; see COMMAND_WORD_RELATIVES), and the
words of a user-supplied exclusion list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from training.data.manifest import COMMAND_WORDS

__all__ = [
    "COMMAND_WORD_RELATIVES",
    "Vocabulary",
    "build_vocabulary",
    "excluded_reason",
    "read_word_list",
]

log = logging.getLogger(__name__)

# Homophones of a command word and words that contain one as a whole morpheme. Training on them would teach
# the encoder the benchmark's targets through the back door, so they are treated like command words.
COMMAND_WORD_RELATIVES = frozenset(
    {
        # homophones and near-homophones
        "know", "knows", "noh", "yess", "write", "rite", "wright", "right's", "upp", "doun", "gough",
        # inflections and compounds built on a command word
        "yeses", "noes", "nos", "ups", "upped", "upping", "downs", "downed", "downing", "lefts", "lefty",
        "rights", "righted", "righting", "ons", "offs", "stops", "stopped", "stopping", "stopper", "goes",
        "going", "gonna", "goer", "nobody", "upon", "update", "upset", "upload", "download", "downtown",
        "rightly", "leftover", "offset", "offline", "online", "onto", "stoppage", "goodbye",
    }
)  # fmt: skip
MIN_WORD_LENGTH = 2
# wordfreq's list is longer than the vocabulary wanted: this many candidates per word asked for.
CANDIDATE_FACTOR = 3


@dataclass(frozen=True)
class Vocabulary:
    """The words kept (most frequent first) and each excluded candidate with why it was excluded."""

    words: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    source: str = "wordfreq top_n_list('en')"

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "words": list(self.words), "excluded": dict(self.excluded)}


def excluded_reason(word: str, user_exclusions: frozenset[str] = frozenset()) -> str | None:
    """Why `word` may not be in a training vocabulary, or None when it may."""
    if not (word.isascii() and word.isalpha()):
        return "not alphabetic"
    if len(word) < MIN_WORD_LENGTH:
        return "one letter"
    lowered = word.lower()
    if lowered in COMMAND_WORDS:
        return "command word"
    if lowered in COMMAND_WORD_RELATIVES:
        return "sounds like or contains a command word"
    if lowered in user_exclusions:
        return "user exclusion list"
    return None


def read_word_list(path: Path) -> frozenset[str]:
    """Words of a text file, one per line (blank lines and `#` comments ignored), lower-cased."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such word list (expected a text file, one word per line)")
    words: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise ValueError(f"{path}:{number}: expected one word per line, got {line!r}")
        words.add(text.lower())
    return frozenset(words)


def build_vocabulary(
    size: int = 1000,
    exclude: Iterable[str] = (),
    exclude_file: Path | None = None,
    candidates: list[str] | None = None,
) -> Vocabulary:
    """The `size` most frequent English words that pass `excluded_reason`.

    `candidates` replaces wordfreq's frequency-ordered list (tests, or a corpus of your own).
    """
    if size < 1:
        raise ValueError(f"vocabulary size must be at least 1, got {size}")
    user = frozenset(word.strip().lower() for word in exclude if word.strip())
    if exclude_file is not None:
        user = user | read_word_list(exclude_file)
    if candidates is None:
        from wordfreq import top_n_list

        candidates = top_n_list("en", size * CANDIDATE_FACTOR + 500)
        source = "wordfreq top_n_list('en')"
    else:
        source = "given candidate list"
    kept: list[str] = []
    seen: set[str] = set()
    excluded: dict[str, str] = {}
    for candidate in candidates:
        word = candidate.strip().lower()
        if word in seen:
            continue
        seen.add(word)
        reason = excluded_reason(word, user)
        if reason is not None:
            excluded[word] = reason
            continue
        kept.append(word)
        if len(kept) == size:
            break
    if len(kept) < size:
        raise ValueError(
            f"only {len(kept)} of the {size} words asked for pass the vocabulary rules "
            f"({len(candidates)} candidates, {len(excluded)} excluded)"
        )
    log.info("vocabulary: %d words, %d candidates excluded", len(kept), len(excluded))
    return Vocabulary(words=tuple(kept), excluded=excluded, source=source)
