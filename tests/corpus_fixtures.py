"""A tiny LibriSpeech-format tree made with espeak-ng, with word alignments in both supported formats.

Each utterance is single-word espeak-ng renderings joined by known gaps, so every word's start and end are
known exactly. The audio is written as 16-bit FLAC, so a clip cut from it can be compared sample for sample.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio import TARGET_RATE, read_audio, resample, to_mono
from training.data.corpus_io import trim_silence, write_flac_atomic

GAP_SECONDS = 0.12
TAIL_SECONDS = 0.3
# (subset, speaker, chapter, utterance index, espeak voice, words). "a" is one letter, "yes" a command word,
# "the"/"and" function words, "don't" not alphabetic: none of them may become a keyword.
UTTERANCES = (
    ("train-clean-100", "11", "100", 0, "en-us", ("the", "apple", "river", "a", "garden")),
    ("train-clean-100", "11", "100", 1, "en-us", ("apple", "yes", "garden", "the", "apple")),
    ("train-clean-100", "11", "101", 0, "en-us", ("river", "apple", "and", "castle")),
    ("dev-clean", "22", "200", 0, "en-gb", ("garden", "apple", "don't", "river")),
)
EXPECTED_COUNTS = {"apple": 5, "garden": 3, "river": 3, "castle": 1}


@dataclass(frozen=True)
class TinyLibriSpeech:
    root: Path  # the LibriSpeech root (subsets below it)
    textgrids: Path
    alignment_text: Path
    words: dict[str, list[tuple[str, float, float]]]  # utterance id -> (word, start, end)


def espeak_word(word: str, voice: str, workdir: Path) -> np.ndarray:
    output = workdir / f"{voice}_{word.replace(chr(39), '')}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(output), "--", word], check=True, capture_output=True)
    samples, rate = read_audio(output)
    audio = resample(to_mono(samples), rate, TARGET_RATE)
    return trim_silence(audio, margin_seconds=0.0)


def textgrid_text(duration: float, intervals: list[tuple[float, float, str]]) -> str:
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        "xmin = 0",
        f"xmax = {duration}",
        "tiers? <exists>",
        "size = 2",
        "item []:",
        "    item [1]:",
        '        class = "IntervalTier"',
        '        name = "words"',
        "        xmin = 0",
        f"        xmax = {duration}",
        f"        intervals: size = {len(intervals)}",
    ]
    for number, (start, end, text) in enumerate(intervals, start=1):
        lines += [
            f"        intervals [{number}]:",
            f"            xmin = {start}",
            f"            xmax = {end}",
        ]
        lines.append(f'            text = "{text}"')
    # A phones tier after the words tier, as MFA writes: the reader must pick `words`.
    lines += [
        "    item [2]:",
        '        class = "IntervalTier"',
        '        name = "phones"',
        "        xmin = 0",
    ]
    lines += [f"        xmax = {duration}", "        intervals: size = 1", "        intervals [1]:"]
    lines += ["            xmin = 0", f"            xmax = {duration}", '            text = ""']
    return "\n".join(lines) + "\n"


def make_tiny_librispeech(base: Path) -> TinyLibriSpeech:
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng is needed to build the tiny LibriSpeech tree")
    root, textgrids, alignment_text = base / "LibriSpeech", base / "mfa", base / "alignments"
    workdir = base / "words"
    workdir.mkdir(parents=True, exist_ok=True)
    words: dict[str, list[tuple[str, float, float]]] = {}
    alignment_lines: dict[Path, list[str]] = {}
    transcripts: dict[Path, list[str]] = {}
    for subset, speaker, chapter, index, voice, sentence in UTTERANCES:
        utterance = f"{speaker}-{chapter}-{index:04d}"
        pieces, aligned, intervals = [], [], []
        cursor = 0.0
        for position, word in enumerate(sentence):
            audio = espeak_word(word, voice, workdir)
            start, end = cursor, cursor + audio.shape[0] / TARGET_RATE
            pieces.append(audio)
            aligned.append((word, start, end))
            intervals.append((start, end, word.upper()))
            gap = TAIL_SECONDS if position == len(sentence) - 1 else GAP_SECONDS
            pieces.append(np.zeros(round(gap * TARGET_RATE), dtype=np.float32))
            intervals.append((end, end + gap, ""))
            cursor = end + gap
        utterance_audio = np.concatenate(pieces)
        # Exact sample boundaries: the interval ends are cumulative sample counts divided by the rate.
        duration = utterance_audio.shape[0] / TARGET_RATE
        chapter_dir = root / subset / speaker / chapter
        write_flac_atomic(chapter_dir / f"{utterance}.flac", utterance_audio)
        transcripts.setdefault(chapter_dir / f"{speaker}-{chapter}.trans.txt", []).append(
            f"{utterance} {' '.join(sentence).upper()}"
        )
        grid = textgrids / speaker / chapter / f"{utterance}.TextGrid"
        grid.parent.mkdir(parents=True, exist_ok=True)
        grid.write_text(textgrid_text(duration, intervals), encoding="utf-8")
        labels = ",".join(text for _, _, text in intervals)
        ends = ",".join(repr(end) for _, end, _ in intervals)
        alignment_lines.setdefault(
            alignment_text / speaker / chapter / f"{speaker}-{chapter}.alignment.txt", []
        ).append(f'{utterance} "{labels}" "{ends}"')
        words[utterance] = aligned
    for path, lines in [*transcripts.items(), *alignment_lines.items()]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return TinyLibriSpeech(root, textgrids, alignment_text, words)
