"""`kws-convert cohort`: which audio may go into the impostor cohort, and the cohort it builds."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conversion.cohort import (
    COHORT_MUSIC_SOURCE,
    COHORT_MUSIC_TRACKS,
    CohortSources,
    build_cohort,
    music_streams,
    noise_streams,
    speechocean_train_streams,
)
from edge.audio import load_audio, write_wav
from edge.cohort import Cohort, cohort_path_for
from edge.config import DetectorConfig
from edge.model import load_model
from tests.data_fixtures import music_pack
from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)

MINI = Path(__file__).resolve().parent / "fixtures" / "speechocean762_mini"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """The four-sentence speechocean762 fixture, one sentence rewritten to hold a command word."""
    root = tmp_path / "speechocean762"
    shutil.copytree(MINI, root)
    text = (root / "train" / "text").read_text().replace("FIVE TWO FOUR SEVEN", "FIVE TWO STOP SEVEN")
    (root / "train" / "text").write_text(text)
    return root


def test_only_train_speakers_without_command_words(corpus: Path) -> None:
    streams = list(speechocean_train_streams(corpus, hours=1.0, seed=0))
    assert sorted(s.name for s in streams) == [
        "speechocean762:0001",
        "speechocean762:0005",
        "speechocean762:0026",
    ]
    seconds = {s.name: s.audio.shape[0] / 16000 for s in streams}
    one = load_audio(corpus / "WAVE" / "SPEAKER0001" / "000010053.flac").shape[0] / 16000
    assert one < seconds["speechocean762:0001"] < one + 0.81  # the sentence and a pause after it
    with pytest.raises(FileNotFoundError, match=r"train/wav\.scp"):
        list(speechocean_train_streams(corpus / "test", hours=1.0, seed=0))


def test_noise_streams_take_the_train_split_of_the_kinds_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["path,kind,source,license,split,seconds,sample_rate,detail"]
    for name, kind, split in (("a", "noise", "train"), ("b", "music", "train"), ("c", "noise", "eval")):
        write_wav(tmp_path / f"{name}.wav", (0.1 * rng.normal(size=16000)).astype(np.float32))
        rows.append(f"{name}.wav,{kind},test,CC0,{split},1.0,16000,")
    manifest = tmp_path / "sounds.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert [s.name for s in noise_streams(manifest, 1.0, 0)] == ["noise:a.wav"]
    assert sorted(s.name for s in noise_streams(manifest, 1.0, 0, ("noise", "music"))) == [
        "noise:a.wav",
        "noise:b.wav",
    ]
    with pytest.raises(ValueError, match="no row of kind ir"):
        list(noise_streams(manifest, 1.0, 0, ("ir",)))


def test_build_cohort_embeds_each_stream_as_the_daemon_does(
    corpus: Path, random_model_path: Path, tmp_path: Path
) -> None:
    encoder = load_model(random_model_path)
    settings = DetectorConfig()
    cohort = build_cohort(encoder, settings, CohortSources(speechocean=corpus), "test")
    assert cohort.segment_starts.shape == (3,) and cohort.model_sha256 == encoder.sha256
    assert cohort.meta["sources"][0]["source"].startswith("speechocean762 train speakers")
    # As many windows as the detector evaluates: one per 100 ms once the first 1.5 s window is full.
    streams = list(speechocean_train_streams(corpus, 1.0, 0))
    expected = sum(1 + (s.audio.shape[0] - encoder.window_samples) // 1600 for s in streams)
    assert abs(cohort.embeddings.shape[0] - expected) <= len(streams)
    path = cohort_path_for(tmp_path / "m.tflite")
    cohort.save(path)
    assert np.array_equal(Cohort.load(path, encoder.sha256).embeddings, cohort.embeddings)


def test_music_streams_read_the_pack_at_the_speech_level(tmp_path: Path) -> None:
    pack = music_pack(tmp_path)
    streams = list(music_streams(pack, hours=1.0, seed=0, tracks=("a", "b"), per_track_s=2.0))
    assert sorted(s.name for s in streams) == ["music:a", "music:b"]
    for stream in streams:
        assert stream.audio.shape == (32000,) and stream.source == COHORT_MUSIC_SOURCE
        assert 20 * np.log10(np.sqrt(np.mean(stream.audio**2))) == pytest.approx(-26.0, abs=0.1)
    # The hour budget stops the list; tracks come in a seeded order.
    assert len(list(music_streams(pack, hours=1.5 / 3600, seed=0, tracks=("a", "b"), per_track_s=2.0))) == 1
    with pytest.raises(FileNotFoundError, match=r"music/c\.ogg"):
        list(music_streams(pack, hours=1.0, seed=0, tracks=("c",)))
    with pytest.raises(FileNotFoundError, match="apt-get install ufoai-music"):
        list(music_streams(tmp_path / "none.pk3", hours=1.0, seed=0))


def test_build_cohort_adds_the_music(corpus: Path, random_model_path: Path, tmp_path: Path) -> None:
    encoder = load_model(random_model_path)
    pack = music_pack(tmp_path, COHORT_MUSIC_TRACKS)
    sources = CohortSources(speechocean=corpus, music_pack=pack, music_hours=1.0)
    cohort = build_cohort(encoder, DetectorConfig(), sources, "test")
    assert cohort.segment_starts.shape == (3 + len(COHORT_MUSIC_TRACKS),)
    music = next(s for s in cohort.meta["sources"] if s["source"] == COHORT_MUSIC_SOURCE)
    assert music["seconds"] == pytest.approx(6.0 * len(COHORT_MUSIC_TRACKS), abs=0.5)
