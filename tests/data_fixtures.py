"""Small corpora for the data-layer tests: real clips copied from the speech data, with their own manifest."""

from __future__ import annotations

import csv
import shutil
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge.audio import load_audio
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


def kaldi_corpus(
    data_dir: Path, root: Path, parts: Mapping[str, list[str]], speakers_per_part: int = 3
) -> Path:
    """A tiny Kaldi-style corpus of real clips (gsc_v1_words, padded with silence), speechocean762's layout:
    <part>/{text,wav.scp,utt2spk} for each part's transcripts, WAVE/SPEAKERnnnn/*.WAV; no speaker in two parts."""
    texts = [(part, text) for part, lines in parts.items() for text in lines]
    with open(data_dir / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] == "gsc_v1_words"][: len(texts)]
    lines: dict[tuple[str, str], list[str]] = {}
    for i, (row, (part, text)) in enumerate(zip(rows, texts, strict=True)):
        offset = 100 * list(parts).index(part)
        utt, speaker = f"{i:09d}", f"{offset + i % speakers_per_part:04d}"
        wav = Path("WAVE") / f"SPEAKER{speaker}" / f"{utt}.WAV"
        (root / wav).parent.mkdir(parents=True, exist_ok=True)
        silence = np.zeros(4000, np.float32)
        audio = np.concatenate([silence, load_audio(data_dir / row["path"]), silence])
        soundfile.write(str(root / wav), audio, 16000, subtype="PCM_16")
        for name, line in (
            ("text", f"{utt}\t{text}"),
            ("wav.scp", f"{utt}\t{wav}"),
            ("utt2spk", f"{utt}\t{speaker}"),
        ):
            lines.setdefault((part, name), []).append(line)
    for (part, name), content in lines.items():
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / name).write_text("\n".join(content) + "\n")
    return root


def chord_tracks(root: Path) -> Path:
    """Two short 'tracks' of chords, written as Ogg Vorbis (one in a subfolder), at 44.1 kHz stereo."""
    t = np.arange(44100 * 6) / 44100
    for index, path in enumerate((root / "a.ogg", root / "win" / "b.ogg")):
        path.parent.mkdir(parents=True, exist_ok=True)
        chord = sum(np.sin(2 * np.pi * f * (1 + index) * t) for f in (220.0, 277.2, 329.6)) * 0.1
        soundfile.write(str(path), np.stack([chord, chord], axis=1), 44100, format="OGG", subtype="VORBIS")
    return root


def music_pack(tmp_path: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    """A zip laid out as ufoai-music's 0music.pk3: music/<name>.ogg (6 s chord tracks at 44.1 kHz)."""
    tracks = chord_tracks(tmp_path / "tracks")
    pack = tmp_path / "0music.pk3"
    with zipfile.ZipFile(pack, "w") as archive:
        for index, name in enumerate(names):
            archive.write(tracks / ("a.ogg" if index % 2 == 0 else "win/b.ogg"), f"music/{name}.ogg")
    return pack
