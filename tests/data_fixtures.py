"""Small corpora for the data-layer tests: real clips copied from the speech data, with their own manifest."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from training.data.manifest import MANIFEST_COLUMNS

HEADER = ",".join(MANIFEST_COLUMNS)


def write_manifest(root: Path, rows: Iterable[Mapping[str, str]], header: str = HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.csv"
    columns = header.split(",")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(name, "") for name in columns])
    return path


def real_rows(data_dir: Path, wanted: Mapping[tuple[str, str], int]) -> list[dict[str, str]]:
    """Manifest rows of the real data: up to `count` clips (distinct speakers first) per (dataset, word)."""
    picked: list[dict[str, str]] = []
    left = dict(wanted)
    seen: set[tuple[str, str, str]] = set()
    with open(data_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["dataset"], row["word"])
            if left.get(key, 0) > 0 and (row["dataset"], row["word"], row["speaker"]) not in seen:
                seen.add((row["dataset"], row["word"], row["speaker"]))
                left[key] -= 1
                picked.append(row)
    return picked


def copy_corpus(data_dir: Path, dest: Path, rows: list[dict[str, str]]) -> Path:
    """Copy the clips of `rows` from the real data into `dest` and write its manifest."""
    for row in rows:
        target = dest / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / row["path"], target)
    write_manifest(dest, rows)
    return dest


MINI_WANTED = {
    ("gsc_v1_words", "bed"): 4,
    ("gsc_v1_words", "cat"): 4,
    ("gsc_v1_words", "zero"): 3,
    ("fsdd", "zero"): 3,
    ("arabic_sc", "yes"): 3,
    ("arabic_sc", "zero"): 3,
    ("dspspeech20", "fudan"): 3,
    ("dspspeech20", "open"): 3,
}


@pytest.fixture()
def mini_corpus(kws_data_dir: Path, tmp_path: Path) -> Path:
    """A real-speech corpus of 26 clips: 8 (dataset, word) pairs, distinct speakers where the data has them."""
    return copy_corpus(kws_data_dir, tmp_path / "mini", real_rows(kws_data_dir, MINI_WANTED))
