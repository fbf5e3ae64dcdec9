"""Kaldi-style data folders (`text`, `wav.scp`, `utt2spk`), as speechocean762 ships them, and the rule that keeps
its test speakers out of everything but the measurement of false alarms.

One reader for the corpus builder (`training/data/speechocean.py`), the cohort builder (`conversion/cohort.py`)
and the benchmark's long-form negatives (`training/bench/longform.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ReservedSpeakerError", "Utterance", "read_kaldi_part", "read_split", "read_table"]

SPEECHOCEAN_HINT = (
    "speechocean762 is public: git clone https://github.com/jimbozhang/speechocean762 (CC BY 4.0), then "
    "make data SPEECHOCEAN=/path/to/speechocean762"
)


class ReservedSpeakerError(ValueError):
    """A speechocean762 test speaker was about to enter a training corpus or a cohort."""


@dataclass(frozen=True)
class Utterance:
    utt: str
    speaker: str
    text: str
    wav: Path  # absolute, or relative to the working directory when the corpus path is


def read_table(path: Path, hint: str = SPEECHOCEAN_HINT) -> dict[str, str]:
    """`<utterance id> <value>` per line (a space or a tab after the id); blank lines skipped."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (expected a Kaldi data folder: text, wav.scp, utt2spk). {hint}"
        )
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected '<utterance id> <value>', got {line!r}")
        table[parts[0]] = parts[1].strip()
    return table


def read_split(corpus: Path, split: str, hint: str = SPEECHOCEAN_HINT) -> list[Utterance]:
    """Every utterance of `<corpus>/<split>`, sorted by id; an id missing from one of the three files is an error."""
    folder = Path(corpus) / split
    texts, wavs, speakers = (read_table(folder / name, hint) for name in ("text", "wav.scp", "utt2spk"))
    ids = set(texts) | set(wavs)
    incomplete = sorted(utt for utt in ids if utt not in texts or utt not in wavs or utt not in speakers)
    if incomplete:
        raise ValueError(
            f"{folder}: utterances without all of text, wav.scp and utt2spk, e.g. {incomplete[:5]}"
        )
    return [Utterance(utt, speakers[utt], texts[utt], Path(corpus) / wavs[utt]) for utt in sorted(ids)]


def read_kaldi_part(source: Path, part: str = "train") -> list[Utterance]:
    """The utterances of speechocean762's `train` part, each checked against the test speakers.

    Only `train` may be read for training or calibration: the test speakers are reserved for measuring false
    alarms, so asking for `test`, or a train list holding a test speaker, raises ReservedSpeakerError.
    """
    if part != "train":
        raise ReservedSpeakerError(
            f"speechocean762 {part!r}: only the train speakers may build a training corpus or a cohort; the test "
            "speakers are reserved for false-alarm measurement"
        )
    source = Path(source)
    utterances = read_split(source, "train")
    test_speakers = set(read_table(source / "test" / "utt2spk").values())
    leaked = sorted({u.speaker for u in utterances if u.speaker in test_speakers})
    if leaked:
        raise ReservedSpeakerError(
            f"{source}/train lists test speaker(s) {leaked[:10]}: refusing to use them"
        )
    return utterances
