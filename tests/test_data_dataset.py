"""Clip selection (benchmark and command-word refusal), speaker splits, windows and the WindowDataset."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.audio import load_audio, write_wav
from tests.data_fixtures import mini_corpus, write_manifest  # noqa: F401  (mini_corpus is a fixture)
from training.data import clipcache
from training.data.dataset import (
    COMMAND_WORDS,
    WindowDataset,
    check_trainable,
    load_window,
    noise_files,
    speaker_split,
    training_clips,
)
from training.data.manifest import read_manifest
from training.data.windows import fit_window, speech_crop_start


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_refuses_the_benchmark_and_noise(kws_data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"gsc_v2_test.*benchmark"):
        training_clips([kws_data_dir], ["fsdd", "gsc_v2_test"])
    with pytest.raises(ValueError, match="not a word corpus"):
        training_clips([kws_data_dir], ["gsc_noise"])
    with pytest.raises(ValueError, match=r"\['librispeech'\] not found"):
        training_clips([kws_data_dir], ["librispeech"])


def test_default_selection_has_no_benchmark_and_no_command_word(kws_data_dir: Path) -> None:
    clips = training_clips([kws_data_dir])
    assert {c.dataset for c in clips} == {"arabic_sc", "dspspeech20", "fsdd", "gsc_v1_words"}
    labels = {c.label for c in clips}
    assert not labels & COMMAND_WORDS
    assert {"ar:yes", "ar:stop", "zero", "zh:fudan", "open", "ar:open"} <= labels
    assert len(noise_files(kws_data_dir)) == 6
    without_test = training_clips([kws_data_dir], ["fsdd", "arabic_sc"], exclude_splits=["test"])
    assert len(without_test) == 2700 + 2880 and {c.split for c in without_test} == {"train", "val"}


def test_command_words_are_dropped_but_arabic_yes_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = []
    for i, (dataset, word) in enumerate(
        [("synthetic", "yes"), ("synthetic", "go"), ("arabic_sc", "yes"), ("synthetic", "hello")]
    ):
        relative = f"{dataset}/{word}/{i}.wav"
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / relative, np.zeros(1600, dtype=np.float32))
        rows.append(
            {
                "path": relative,
                "dataset": dataset,
                "word": word,
                "speaker": "s",
                "sample_rate": "16000",
                "seconds": "0.1",
            }
        )
    write_manifest(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        clips = training_clips([tmp_path], exclude_words=["hello"])
    assert [c.label for c in clips] == ["ar:yes"]
    assert "dropped 2 clip(s) of English command words" in caplog.text
    with pytest.raises(ValueError, match="ten English command words"):
        check_trainable(read_manifest(tmp_path))
    with pytest.raises(ValueError, match="ten English command words"):
        WindowDataset(read_manifest(tmp_path), 1.0, cache_root=None)


def test_speaker_split_is_disjoint_deterministic_and_covers_words(kws_data_dir: Path) -> None:
    clips = training_clips([kws_data_dir])
    train, val = speaker_split(clips, 0.1, seed=0)
    assert len(train) + len(val) == len(clips)
    assert not {c.speaker for c in train} & {c.speaker for c in val}
    assert 0.07 < len(val) / len(clips) < 0.15
    labels = {c.label for c in clips}
    assert {c.label for c in val} == labels and {c.label for c in train} == labels
    again, _ = speaker_split(clips, 0.1, seed=0)
    other, _ = speaker_split(clips, 0.1, seed=1)
    assert [c.key for c in again] == [c.key for c in train]
    assert {c.key for c in other} != {c.key for c in train}


def test_energy_crop_finds_the_speech_in_a_long_clip(kws_data_dir: Path, tmp_path: Path) -> None:
    speech = load_audio(kws_data_dir / "gsc_v1_words/happy/0ab3b47d_nohash_0.flac")
    rng = np.random.default_rng(0)
    lead, tail = 16000, 40000  # 1 s of quiet room before, 2.5 s after
    long = np.concatenate([np.zeros(lead), speech, np.zeros(tail)]).astype(np.float32)
    long += rng.normal(0, 1e-4, long.shape[0]).astype(np.float32)
    path = tmp_path / "long.wav"
    write_wav(path, long)
    # Where the word is inside its 1 s clip: the 10 ms blocks holding 90 % of its energy.
    energy = np.cumsum(speech.astype(np.float64) ** 2)
    word_start = int(np.searchsorted(energy, 0.05 * energy[-1]))
    word_end = int(np.searchsorted(energy, 0.95 * energy[-1]))
    for window_seconds in (1.0, 1.5):
        length = round(window_seconds * 16000)
        start = speech_crop_start(load_audio(path), length)
        assert start <= lead + word_start and start + length >= lead + word_end, (window_seconds, start)
        window = load_window(path, window_seconds)
        assert window.shape == (length,) and window.dtype == np.float32
        assert np.sum(window.astype(np.float64) ** 2) > 0.9 * energy[-1]
        shifted = [speech_crop_start(load_audio(path), length, np.random.default_rng(s)) for s in range(8)]
        assert len(set(shifted)) > 1
        assert all(s <= lead + word_start and s + length >= lead + word_end for s in shifted)


def test_short_clips_are_padded_centred_or_at_random() -> None:
    audio = np.ones(8000, dtype=np.float32)
    centred = fit_window(audio, 24000)
    assert centred.shape == (24000,) and np.flatnonzero(centred)[[0, -1]].tolist() == [8000, 15999]
    first = fit_window(audio, 24000, np.random.default_rng(5))
    assert np.array_equal(first, fit_window(audio, 24000, np.random.default_rng(5)))
    offsets = {int(np.flatnonzero(fit_window(audio, 24000, np.random.default_rng(s)))[0]) for s in range(10)}
    assert len(offsets) > 1 and all(0 <= o <= 16000 for o in offsets)


def test_window_dataset_items_cache_and_corrupt_clip(
    mini_corpus: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = _rows(mini_corpus)
    broken = "fsdd/zero/broken_0.flac"
    (mini_corpus / broken).write_bytes(b"fLaC this is not audio")
    rows.append({**rows[0], "path": broken, "dataset": "fsdd", "word": "zero", "speaker": "broken"})
    write_manifest(mini_corpus, rows)
    clips = training_clips([mini_corpus])
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        dataset = WindowDataset(clips, 1.5, cache_root=cache, random_placement=True, seed=3, progress=False)
    assert len(dataset) == len(clips) - 1
    assert [key for key, _ in dataset.skipped] == [broken] and broken in caplog.text
    assert "skipped 1 unreadable clip(s)" in caplog.text
    item = dataset[0]
    assert item["audio"].shape == (24000,) and item["audio"].dtype == torch.float32
    assert (
        item["key"] == dataset.clips[0].key
        and item["label"] == dataset.label_to_index[dataset.clips[0].label]
    )
    assert dataset.label_to_index["zero"] == dataset.labels[[c.dataset for c in dataset.clips].index("fsdd")]
    assert torch.equal(dataset[4]["audio"], dataset[4]["audio"])  # (seed, epoch, index) fixes the draw
    before = [dataset[i]["audio"] for i in range(4)]
    dataset.set_epoch(1)
    assert any(not torch.equal(b, dataset[i]["audio"]) for i, b in enumerate(before))
    # A second dataset over the same clips reads the cache: no decoding at all.
    monkeypatch.setattr(
        clipcache, "load_audio", lambda *a, **k: pytest.fail("decoded again despite the cache")
    )
    again = WindowDataset(clips, 1.5, cache_root=cache, progress=False)
    assert again.skipped == dataset.skipped and len(again) == len(dataset)
    assert np.array_equal(again.window(2), dataset.window(2))
