"""Manifest parsing and validation, label and speaker namespacing, the data directory lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import write_wav
from tests.data_fixtures import write_manifest
from training.data.manifest import ManifestError, label_for, read_manifest
from training.data.paths import OFFICIAL_SOURCES, kws_data_dir


def _row(
    path: str, dataset: str = "fsdd", word: str = "zero", speaker: str = "jackson", **extra: str
) -> dict[str, str]:
    row = {
        "path": path,
        "dataset": dataset,
        "word": word,
        "speaker": speaker,
        "take": "0",
        "split": "train",
        "sample_rate": "16000",
        "seconds": "0.5",
        "license": "CC-BY-4.0",
    }
    row.update(extra)
    return row


def _wav(root: Path, relative: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    write_wav(root / relative, np.zeros(8000, dtype=np.float32))


def test_reads_a_valid_manifest_with_absolute_paths(tmp_path: Path) -> None:
    _wav(tmp_path, "fsdd/zero/a.wav")
    _wav(tmp_path, "arabic_sc/yes/b.wav")
    write_manifest(tmp_path, [_row("fsdd/zero/a.wav"), _row("arabic_sc/yes/b.wav", "arabic_sc", "yes", "7")])
    clips = read_manifest(tmp_path)
    assert [c.path for c in clips] == [
        tmp_path.resolve() / "fsdd/zero/a.wav",
        tmp_path.resolve() / "arabic_sc/yes/b.wav",
    ]
    assert [c.label for c in clips] == ["zero", "ar:yes"]
    assert [c.speaker for c in clips] == ["fsdd:jackson", "arabic_sc:7"]
    assert clips[0].key == "fsdd/zero/a.wav"
    assert clips[0].sample_rate == 16000 and clips[0].seconds == 0.5


def test_missing_files_are_listed_first_twenty_and_count(tmp_path: Path) -> None:
    write_manifest(tmp_path, [_row(f"fsdd/zero/{i}.wav", speaker=str(i)) for i in range(25)])
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path)
    message = str(caught.value)
    assert "missing 25:" in message and "fsdd/zero/0.wav" in message and "and 5 more" in message
    assert "fsdd/zero/24.wav" not in message


def test_duplicate_clips_are_an_error(tmp_path: Path) -> None:
    _wav(tmp_path, "fsdd/zero/a.wav")
    write_manifest(tmp_path, [_row("fsdd/zero/a.wav"), _row("fsdd/zero/a.wav", take="1")])
    with pytest.raises(ManifestError, match=r"duplicate clips 1:\n  fsdd/zero/a.wav"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("path,dataset,word,speaker,take,split,sample_rate,seconds", r"missing \['license'\]"),
        ("path,dataset,word,speaker,take,split,sample_rate,seconds,license,extra", r"unknown \['extra'\]"),
    ],
)
def test_bad_columns_are_named(tmp_path: Path, header: str, expected: str) -> None:
    write_manifest(tmp_path, [], header=header)
    with pytest.raises(ManifestError, match=expected):
        read_manifest(tmp_path)


def test_bad_values_name_the_line(tmp_path: Path) -> None:
    _wav(tmp_path, "fsdd/zero/a.wav")
    write_manifest(tmp_path, [_row("fsdd/zero/a.wav", sample_rate="fast"), _row("", speaker="x")])
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path)
    assert "line 2: sample_rate 'fast'" in str(caught.value) and "line 3: empty path" in str(caught.value)


def test_absent_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path)


def test_label_namespacing() -> None:
    assert label_for("arabic_sc", "yes") == "ar:yes"
    assert label_for("gsc_v1_words", "yes") == "yes"
    assert label_for("fsdd", "zero") == label_for("gsc_v1_words", "zero") == "zero"
    assert label_for("dspspeech20", "fudan") == "zh:fudan"
    assert label_for("dspspeech20", "open") == "open"
    assert label_for("arabic_sc", "open") != label_for("dspspeech20", "open")
    assert label_for("synthetic_tts", "de:hallo") == "de:hallo"


def test_real_manifest_labels_and_speakers(kws_data_dir: Path) -> None:
    clips = read_manifest(kws_data_dir)
    labels = {(c.dataset, c.word): c.label for c in clips}
    assert labels[("fsdd", "zero")] == labels[("gsc_v1_words", "zero")] == "zero"
    assert labels[("arabic_sc", "yes")] == "ar:yes"
    assert labels[("gsc_v2_test", "yes")] == "yes"
    assert labels[("dspspeech20", "beijing_background")] == "zh:beijing_background"
    assert all(c.speaker.startswith(f"{c.dataset}:") for c in clips)


def test_data_dir_order_and_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(tmp_path / "a", [])
    write_manifest(tmp_path / "b", [])
    monkeypatch.setenv("KWS_DATA_DIR", str(tmp_path / "b"))
    assert kws_data_dir(tmp_path / "a") == (tmp_path / "a").resolve()
    assert kws_data_dir() == (tmp_path / "b").resolve()
    monkeypatch.setenv("KWS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as caught:
        kws_data_dir()
    message = str(caught.value)
    assert "does not exist" in message
    assert (
        "speech_commands_v0.02" in message
        and "speech_commands_v0.01" in message
        and "openslr.org/12" in message
    )
    assert all(url.split()[0] in message for url in OFFICIAL_SOURCES.values())
