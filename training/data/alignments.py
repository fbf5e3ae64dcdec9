"""Word alignments of LibriSpeech utterances: Montreal Forced Aligner TextGrids and the `librispeech-alignments`
text format.

TextGrid: Praat's long or short text format; the word tier is the interval tier named `words` (else the first
interval tier). One file per utterance, named `<utterance-id>.TextGrid`.

Text format: one utterance per line, `<utt-id> ",WORD1,WORD2," "0.0,0.5,0.9"`: comma-separated words (an empty
word is silence) and the end time of each; a word starts where the previous one ends. Files are named
`*.alignment.txt` (one per chapter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AlignedWord", "read_alignment_text", "read_alignments", "read_textgrid"]

# Praat values: quoted strings ("" escapes a quote), numbers, and the <exists> flag.
_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"|(?<![\w.])([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)(?![\w])|<(exists|absent)>'
)
_INDEX = re.compile(r"\[\s*\d*\s*\]")
_SILENCE = {"", "sil", "sp", "spn", "<eps>", "<unk>"}


@dataclass(frozen=True, slots=True)
class AlignedWord:
    word: str  # lower-case
    start: float  # seconds
    end: float


def _tokens(text: str, path: Path) -> list[str | float]:
    values: list[str | float] = []
    for match in _TOKEN.finditer(_INDEX.sub(" ", text)):
        quoted, number, flag = match.groups()
        if quoted is not None:
            values.append(quoted.replace('""', '"'))
        elif number is not None:
            values.append(float(number))
        else:
            values.append(f"<{flag}>")
    if len(values) < 2 or values[0] != "ooTextFile" or values[1] != "TextGrid":
        raise ValueError(
            f"{path}: not a Praat TextGrid (expected 'File type = \"ooTextFile\"' and 'TextGrid')"
        )
    return values


def read_textgrid(path: Path, tier_name: str = "words") -> list[AlignedWord]:
    """The words of the interval tier `tier_name` (else the first interval tier), silences dropped."""
    path = Path(path)
    values = _tokens(path.read_text(encoding="utf-8-sig"), path)
    position = 2 + 2  # file type, object class, xmin, xmax
    try:
        if values[position] == "<exists>":
            position += 1
        tier_count = int(values[position])
        position += 1
        tiers: list[tuple[str, list[tuple[float, float, str]]]] = []
        for _ in range(tier_count):
            kind, name = str(values[position]), str(values[position + 1])
            count = int(values[position + 4])
            position += 5
            if kind == "IntervalTier":
                items = [
                    (
                        float(values[position + 3 * i]),
                        float(values[position + 3 * i + 1]),
                        str(values[position + 3 * i + 2]),
                    )
                    for i in range(count)
                ]
                position += 3 * count
                tiers.append((name, items))
            elif kind == "TextTier":
                position += 2 * count
            else:
                raise ValueError(f"unknown tier class {kind!r}")
    except (IndexError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: malformed TextGrid ({error})") from error
    intervals = [tier for tier in tiers if tier[0] == tier_name]
    if not intervals:
        if not tiers:
            raise ValueError(f"{path}: no interval tier (expected one named {tier_name!r})")
        intervals = tiers[:1]
    return [
        AlignedWord(text.strip().lower(), start, end)
        for start, end, text in intervals[0][1]
        if text.strip().lower() not in _SILENCE
    ]


def read_alignment_text(path: Path) -> dict[str, list[AlignedWord]]:
    """Every utterance of a `librispeech-alignments` file: utterance id -> its words, silences dropped."""
    path = Path(path)
    utterances: dict[str, list[AlignedWord]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f'{path}:{number}: expected `<utt-id> ",W1,W2," "t1,t2,t3"`, got {line[:80]!r}')
        utterance, words_text, times_text = parts
        words = words_text.strip('"').split(",")
        times_field = times_text.strip('"').split(",")
        try:
            ends = [float(value) for value in times_field]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: end times are not numbers ({error})") from error
        if len(words) != len(ends):
            raise ValueError(f"{path}:{number}: {len(words)} words but {len(ends)} end times")
        aligned = []
        start = 0.0
        for word, end in zip(words, ends, strict=True):
            if end < start:
                raise ValueError(f"{path}:{number}: end time {end} of {word!r} is before its start {start}")
            if word.strip().lower() not in _SILENCE:
                aligned.append(AlignedWord(word.strip().lower(), start, end))
            start = end
        utterances[utterance] = aligned
    return utterances


def read_alignments(root: Path, alignment_format: str = "auto") -> dict[str, list[AlignedWord]]:
    """All alignments under `root`: `*.TextGrid` (utterance id = file stem) and/or `*.alignment.txt`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such alignment directory")
    if alignment_format not in ("auto", "textgrid", "text"):
        raise ValueError(f"alignment format must be auto, textgrid or text, got {alignment_format!r}")
    found: dict[str, list[AlignedWord]] = {}
    if alignment_format in ("auto", "textgrid"):
        for path in sorted(root.rglob("*.TextGrid")):
            found[path.stem] = read_textgrid(path)
    if alignment_format in ("auto", "text"):
        for path in sorted(root.rglob("*.alignment.txt")):
            for utterance, words in read_alignment_text(path).items():
                found.setdefault(utterance, words)
    if not found:
        raise ValueError(
            f"{root}: no alignments found (*.TextGrid or *.alignment.txt, format {alignment_format})"
        )
    return found
