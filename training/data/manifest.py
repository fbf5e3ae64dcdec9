"""The manifest CSV shared by ../shared/data and generated corpora, and `Clip`, one row of it.

Columns: `path,dataset,word,speaker,take,split,sample_rate,seconds,license` (path relative to the root).
Labels (the classes metric learning separates): English words from different English corpora share a class
(`zero` of fsdd is `zero` of gsc_v1_words); Arabic Speech Commands glosses are `ar:<gloss>`; DSPSpeech-20's
Mandarin words are `zh:<pinyin>` and its English words plain. A generated corpus may write an already
namespaced word (`de:hallo`); it is kept as is.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data.paths import MANIFEST_NAME

# The ten Speech Commands words the benchmark enrolls as user-defined keywords: no training input may hold
# them, from any source. The one definition; everything else imports it.
COMMAND_WORDS_ORDERED = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
COMMAND_WORDS = frozenset(COMMAND_WORDS_ORDERED)

__all__ = [
    "COMMAND_WORDS",
    "COMMAND_WORDS_ORDERED",
    "MANIFEST_COLUMNS",
    "Clip",
    "ManifestError",
    "label_for",
    "manifest_hash",
    "read_manifest",
    "speaker_id",
]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "path",
    "dataset",
    "word",
    "speaker",
    "take",
    "split",
    "sample_rate",
    "seconds",
    "license",
)

# Corpora whose every word is in another language than English: their labels get this prefix.
LANGUAGE_PREFIX_BY_DATASET = {"arabic_sc": "ar"}
# DSPSpeech-20 mixes languages: these are its English words; the other twelve are Mandarin (pinyin).
DSPSPEECH20_ENGLISH = frozenset(
    {"speech", "speaker", "signal", "process", "print", "open", "close", "project"}
)
MAX_LISTED = 20


class ManifestError(ValueError):
    """A manifest that cannot be used: bad columns, bad values, missing files or duplicate clips."""


@dataclass(frozen=True)
class Clip:
    """One clip of a manifest. `label` is the class; `speaker` is namespaced by dataset."""

    path: Path
    dataset: str
    word: str
    label: str
    speaker: str
    take: str
    split: str
    sample_rate: int
    seconds: float
    license: str
    root: Path

    @property
    def key(self) -> str:
        """A stable id: `<dataset>/<path relative to its root>` (independent of where the root lives)."""
        relative = self.path.relative_to(self.root).as_posix()
        return relative if relative.startswith(f"{self.dataset}/") else f"{self.dataset}/{relative}"


def label_for(dataset: str, word: str) -> str:
    """The class of `word` spoken in `dataset` (see the module docstring)."""
    word = word.strip().lower()
    if ":" in word:
        return word
    prefix = LANGUAGE_PREFIX_BY_DATASET.get(dataset)
    if prefix:
        return f"{prefix}:{word}"
    if dataset == "dspspeech20" and word not in DSPSPEECH20_ENGLISH:
        return f"zh:{word}"
    return word


def speaker_id(dataset: str, speaker: str, relative_path: str) -> str:
    """`<dataset>:<speaker>`; a clip without a speaker is its own speaker (it cannot leak across splits)."""
    speaker = speaker.strip()
    return f"{dataset}:{speaker}" if speaker else f"{dataset}:?{relative_path}"


def _listing(items: Sequence[str]) -> str:
    shown = "\n  ".join(items[:MAX_LISTED])
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{len(items)}:\n  {shown}{more}"


def manifest_hash(root: Path, manifest_name: str = MANIFEST_NAME) -> str:
    """sha256 (16 hex digits) of a manifest file's bytes: caches keyed by it are rebuilt when it changes."""
    return hashlib.sha256((Path(root) / manifest_name).read_bytes()).hexdigest()[:16]


def read_manifest(root: Path, manifest_name: str = MANIFEST_NAME, check_files: bool = True) -> list[Clip]:
    """Read and validate `<root>/<manifest_name>`.

    Raises ManifestError for missing or unknown columns, unparsable numbers, empty required fields, duplicate
    clips (the same path twice) and, with `check_files`, rows whose file does not exist; each error lists the
    offenders (the first 20 and their count).
    """
    root = Path(root).expanduser().resolve()
    manifest_path = root / manifest_name
    if not manifest_path.is_file():
        raise ManifestError(f"{manifest_path}: no such manifest")
    with open(manifest_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = tuple(reader.fieldnames or ())
        missing = [name for name in MANIFEST_COLUMNS if name not in columns]
        unknown = [name for name in columns if name not in MANIFEST_COLUMNS]
        if missing or unknown:
            raise ManifestError(
                f"{manifest_path}: bad columns (missing {missing}, unknown {unknown}); "
                f"expected exactly {','.join(MANIFEST_COLUMNS)}"
            )
        rows = list(reader)
    clips: list[Clip] = []
    bad_values: list[str] = []
    for line, row in enumerate(rows, start=2):
        if None in row or any(value is None for value in row.values()):
            bad_values.append(f"line {line}: expected {len(MANIFEST_COLUMNS)} fields")
            continue
        empty = [name for name in ("path", "dataset", "word") if not row[name].strip()]
        if empty:
            bad_values.append(f"line {line}: empty {', '.join(empty)}")
            continue
        try:
            sample_rate, seconds = int(row["sample_rate"]), float(row["seconds"])
        except ValueError:
            bad_values.append(
                f"line {line}: sample_rate {row['sample_rate']!r} / seconds {row['seconds']!r} are not numbers"
            )
            continue
        if sample_rate <= 0 or not seconds >= 0.0:
            bad_values.append(f"line {line}: sample_rate must be > 0 and seconds >= 0")
            continue
        relative = row["path"].strip()
        dataset = row["dataset"].strip()
        clips.append(
            Clip(
                path=root / relative,
                dataset=dataset,
                word=row["word"].strip(),
                label=label_for(dataset, row["word"]),
                speaker=speaker_id(dataset, row["speaker"], relative),
                take=row["take"].strip(),
                split=row["split"].strip(),
                sample_rate=sample_rate,
                seconds=seconds,
                license=row["license"].strip(),
                root=root,
            )
        )
    if bad_values:
        raise ManifestError(f"{manifest_path}: bad values on rows {_listing(bad_values)}")
    counts = Counter(clip.path for clip in clips)
    duplicates = sorted(str(path.relative_to(root)) for path, count in counts.items() if count > 1)
    if duplicates:
        raise ManifestError(f"{manifest_path}: duplicate clips {_listing(duplicates)}")
    if check_files:
        absent = [str(clip.path.relative_to(root)) for clip in clips if not clip.path.is_file()]
        if absent:
            raise ManifestError(f"{manifest_path}: rows whose file is missing {_listing(absent)}")
    log.debug("read %d clips from %s", len(clips), manifest_path)
    return clips
