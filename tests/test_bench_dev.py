"""The development condition (training.bench.dev): its streams, enrollments and cohort come from training data
only, the cohort and the negatives hold different speakers and never a digit, and the settings' figures are
consistent (a wider veto margin never lowers a keyword's threshold)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conversion.cohort import COHORT_MUSIC_SOURCE, COHORT_MUSIC_TRACKS
from tests.data_fixtures import chord_tracks, kaldi_corpus, music_pack
from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)
from training.bench.dev import (
    DIGITS,
    DevConfig,
    DevSetting,
    dev_main,
    evaluate_settings,
    household_spec,
    own_voice_picks,
    prepare,
)
from training.bench.streams import manifest_rows
from training.data.manifest import COMMAND_WORDS
from training.data.vocabulary import COMMAND_WORD_RELATIVES

TRAIN_TEXTS = ["THE CAT IS HOME", "I HAVE FIVE APPLES", "NOBODY CAME", "A NOTE FOR YOU", "WE KNOW IT",
               "GO AWAY NOW", "HAPPY DAYS", "MY DOG SLEEPS", "THE BIRD SANG"]  # fmt: skip
TINY = DevConfig(utterances_per_pair=2, max_pairs=4, distractor_clips=5, cohort_hours=0.001, gap_s=(0.3, 0.6))


def test_own_voice_picks_enroll_the_first_takes_of_each_digit(kws_data_dir: Path) -> None:
    rows = manifest_rows(kws_data_dir)
    picks = own_voice_picks(rows, TINY, np.random.default_rng(0))
    assert len(picks["enrollment"]) == 4 and sum(len(g) for g in picks["groups"]) == 4
    by_path = {r["path"]: r for r in rows}
    for name, takes in picks["enrollment"].items():
        word, speaker = name.split(".")
        assert word in DIGITS and [by_path[t["path"]]["take"] for t in takes] == ["5", "6", "7"]
        assert all(by_path[t["path"]]["split"] == "train" and t["speaker"] == speaker for t in takes)
    keyword_items = [i for i in picks["items"] if i["kind"] == "keyword"]
    assert len(keyword_items) == 8 and all(by_path[i["path"]]["take"] in {"8", "9"} for i in keyword_items)
    unknown = [i for i in picks["items"] if i["kind"] == "unknown"]
    excluded = DIGITS | COMMAND_WORDS | COMMAND_WORD_RELATIVES
    assert len(unknown) == 5 and not {i["word"] for i in unknown} & excluded
    assert all(by_path[i["path"]]["dataset"] == "gsc_v1_words" for i in unknown)


def test_household_rotations_enroll_every_speaker_and_leave_the_enroller_neutral() -> None:
    speakers, digits = ["a", "b", "c"], ["one", "two"]
    enrollment = {f"{d}.{s}": [{"path": f"{d}/{s}_0", "speaker": s}] for d in digits for s in speakers}
    events = [
        {"kind": "keyword", "word": d, "keyword": f"{d}.{s}", "speaker": s} for d in digits for s in speakers
    ] + [{"kind": "unknown", "word": "cat", "speaker": "a"}]
    truth = {"enrollment": enrollment, "words": {k: k.split(".")[0] for k in enrollment}, "events": events}
    enrollers = set()
    for rotation in range(3):
        spec, words, scored = household_spec(truth, rotation)
        assert sorted(spec) == digits and words == {"one": "one", "two": "two"}
        for digit, takes in spec.items():
            enroller = takes[0]["speaker"]
            enrollers.add((digit, enroller))
            mine = [e for e in scored if e["word"] == digit]
            assert {e["keyword"] for e in mine if e["speaker"] != enroller} == {digit}
            assert [e["keyword"] for e in mine if e["speaker"] == enroller] == [f"{digit}.{enroller}"]
        assert scored[-1] == events[-1]
    assert len(enrollers) == 6  # over the rotations, every speaker enrolls every digit


@pytest.fixture(scope="module")
def corpus(kws_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("speechocean")
    return kaldi_corpus(
        kws_data_dir, root, {"train": TRAIN_TEXTS, "test": ["THE TEST SPEAKERS ARE RESERVED"]}
    )


def test_dev_condition_end_to_end(
    random_model_path: Path,  # noqa: F811
    kws_data_dir: Path,
    corpus: Path,
    tmp_path: Path,
) -> None:
    music = chord_tracks(tmp_path / "music")
    pack = music_pack(tmp_path / "pack", COHORT_MUSIC_TRACKS)
    data = prepare(kws_data_dir, corpus, random_model_path, TINY, tmp_path / "dev", False, music, pack)
    assert {s["source"] for s in data.cohort.meta["sources"]} >= {COHORT_MUSIC_SOURCE}
    assert data.music.hours == pytest.approx(15.0 / 3600, abs=1e-4)  # two 6 s tracks, 1 s gaps
    held = set(data.cohort.meta["speakers"])
    speech_stream = json.loads((Path(str(data.speech.audio_path)).parent / "truth.json").read_text())
    spoken = {e["speaker"] for e in speech_stream["events"]}
    assert held and spoken and not held & spoken  # the negatives' speakers are not in the cohort
    assert not any(
        word in DIGITS | COMMAND_WORDS for e in speech_stream["events"] for word in e["text"].lower().split()
    )
    assert not any(s.startswith("01") for s in held | spoken)  # the test part's speakers (0100...) never read
    assert list(data.conditions) == ["own voice", "household-1", "household-3"]
    assert len(data.conditions["household-1"]) == len(data.conditions["household-3"]) == 4
    settings = [DevSetting(0.0, 5), DevSetting(1.0, 5), DevSetting(0.0, 0, 3, 4)]
    rows = evaluate_settings(data, settings)
    assert [(r["condition"], r["veto_margin"]) for r in rows[:6]] == [
        ("own voice", 0.0), ("household-1", 0.0), ("household-3", 0.0),
        ("own voice", 1.0), ("household-1", 1.0), ("household-3", 1.0),
    ]  # fmt: skip
    utterances = {"own voice": 8, "household-1": 24, "household-3": 8}  # others' takes: 3 x 2, 1 x 2 (x 4)
    for row in rows:
        assert 0.0 <= row["frr"] <= 1.0 and row["fa_longform"] >= 0.0 and row["keywords"] == 4
        assert row["utterances"] == utterances[row["condition"]]
        assert row["fa_music"] >= 0.0 and row["fa_speech"] >= 0.0
        assert (row["frr_at_longform"]["0.5"] is None) == (row["condition"] != "own voice")
    # Never vetoing (margin 1) can only raise the budget thresholds.
    assert all(a <= b for a, b in zip(rows[0]["thresholds"], rows[3]["thresholds"], strict=True))
    assert rows[6]["trigger_level"] == 3 and rows[6]["hard_negatives"] == 0


def test_dev_cli_writes_the_table(
    random_model_path: Path,  # noqa: F811
    kws_data_dir: Path,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "dev"
    argv = ["--speechocean", str(corpus), "--data-dir", str(kws_data_dir), "--model", str(random_model_path),
            "--cohort-hours", "0.001", "--max-pairs", "2", "--distractors", "3", "--veto-margins", "0", "0.1",
            "--triggers", "2/3", "--music", str(chord_tracks(tmp_path / "music")), "--out", str(out),
            "--cohort-music-hours", "0",
            "--no-progress"]  # fmt: skip
    assert dev_main(argv) == 0
    result = json.loads((out / "dev.json").read_text())
    assert len(result["rows"]) == 6 and result["config"]["max_pairs"] == 2
    assert "| own voice | 2/3 | 0.1 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        dev_main([*argv, "--triggers", "4/3"])
    assert dev_main([*argv, "--veto-margins", "2"]) == 2
