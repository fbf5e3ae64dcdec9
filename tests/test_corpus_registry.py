"""The corpus registry: names resolve to roots, prepare composes registered corpora, stats lists them."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.data_fixtures import mini_corpus  # noqa: F401  (a fixture)
from training.config import DataConfig
from training.data.cli import main
from training.data.corpora import CORPORA, built_corpora, corpus, resolve_root
from training.data.paths import REPO_ROOT
from training.data.rooms import SOUND_COLUMNS
from training.prepare import corpus_roots


def test_names_resolve_to_roots_and_paths_stay_paths(tmp_path: Path) -> None:
    assert resolve_root("kokoro") == REPO_ROOT / "corpora" / "kokoro"
    assert resolve_root("speechocean762") == REPO_ROOT / "corpora" / "speechocean762"
    assert resolve_root("corpora/x") == REPO_ROOT / "corpora" / "x"
    assert resolve_root(str(tmp_path)) == tmp_path
    assert {"shared", "synthetic", "lsk", "speechocean762", "kokoro", "rooms"} <= set(CORPORA)
    assert all(c.license and c.summary for c in CORPORA.values())
    with pytest.raises(KeyError, match="registered"):
        corpus("librivox")
    with pytest.raises(ValueError, match=r"sounds\.csv"):
        corpus("rooms").clips()


def test_prepare_composes_registered_corpora(kws_data_dir: Path, mini_corpus: Path, monkeypatch) -> None:  # noqa: F811
    registered = CORPORA["kokoro"]
    monkeypatch.setitem(
        CORPORA, "kokoro", type(registered)(**{**registered.__dict__, "default_root": str(mini_corpus)})
    )
    roots = corpus_roots(DataConfig(data_dir=str(kws_data_dir), optional_roots=("kokoro", "lsk-never-built")))
    assert roots == [kws_data_dir.resolve(), mini_corpus]
    assert CORPORA["kokoro"].is_built() and len(CORPORA["kokoro"].clips()) == 26
    with pytest.raises(FileNotFoundError, match=r"holds no manifest\.csv"):
        corpus_roots(DataConfig(data_dir=str(kws_data_dir), extra_roots=("lsk-never-built",)))


def test_stats_through_the_registry(
    kws_data_dir: Path,
    mini_corpus: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KWS_DATA_DIR", str(kws_data_dir))
    rooms = tmp_path / "rooms"
    (rooms / "noise").mkdir(parents=True)
    noise = next(kws_data_dir.glob("gsc_noise/*.flac"))
    shutil.copy(noise, rooms / "noise" / noise.name)
    with open(rooms / "sounds.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SOUND_COLUMNS)
        writer.writerow([f"noise/{noise.name}", "noise", "gsc", "CC-BY-4.0", "train", "90.0", "16000", ""])
    for name, root in (("rooms", rooms), ("kokoro", mini_corpus), ("lsk", tmp_path / "absent")):
        monkeypatch.setitem(
            CORPORA, name, type(CORPORA[name])(**{**CORPORA[name].__dict__, "default_root": str(root)})
        )
    built, missing = built_corpora(names=("shared", "kokoro", "rooms", "lsk"))
    assert [c.name for c in built] == ["shared", "kokoro", "rooms"] and [c.name for c in missing] == ["lsk"]
    assert (
        main(["stats", "--corpus", "shared", "--corpus", "kokoro", "--corpus", "rooms", "--corpus", "lsk"])
        == 0
    )
    out = capsys.readouterr().out
    assert "shared: " in out and "kokoro: " in out and "all speech corpora together" in out
    assert "noise          train       1    0.03" in out
    assert "lsk: not built (make data LIBRISPEECH=" in out
