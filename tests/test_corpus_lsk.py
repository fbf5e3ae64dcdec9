"""LSK builder on a tiny LibriSpeech-format tree generated with espeak-ng, from both alignment formats."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.audio import TARGET_RATE, read_audio
from tests.corpus_fixtures import EXPECTED_COUNTS, TinyLibriSpeech, make_tiny_librispeech
from training.data.alignments import read_alignment_text, read_alignments, read_textgrid
from training.data.lsk import LskConfig, build_lsk, build_lsk_main, cut_centred
from training.data.manifest import read_manifest

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

WINDOW = 1.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLibriSpeech:
    return make_tiny_librispeech(tmp_path_factory.mktemp("tiny_librispeech"))


def build(tiny: TinyLibriSpeech, output: Path, alignments: Path, **options: object) -> dict[str, object]:
    config = LskConfig(
        librispeech=str(tiny.root),
        alignments=str(alignments),
        output_dir=str(output),
        window_seconds=WINDOW,
        jobs=1,
    )
    return build_lsk(replace(config, **options))  # type: ignore[arg-type]


def manifest_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_both_alignment_formats_read_the_same_words(tiny: TinyLibriSpeech) -> None:
    from_grids = read_alignments(tiny.textgrids, "textgrid")
    from_text = read_alignments(tiny.alignment_text, "text")
    assert set(from_grids) == set(from_text) == set(tiny.words)
    for utterance, expected in tiny.words.items():
        for source in (from_grids, from_text):
            got = [(w.word, w.start, w.end) for w in source[utterance]]
            assert [word for word, _, _ in got] == [word for word, _, _ in expected]
            np.testing.assert_allclose([s for _, s, _ in got], [s for _, s, _ in expected], atol=1e-9)
            np.testing.assert_allclose([e for _, _, e in got], [e for _, _, e in expected], atol=1e-9)


@pytest.mark.parametrize("which", ["textgrids", "alignment_text"])
def test_every_selected_occurrence_is_cut_and_centred(
    tiny: TinyLibriSpeech, tmp_path: Path, which: str
) -> None:
    summary = build(tiny, tmp_path / "lsk", getattr(tiny, which))
    rows = manifest_rows(tmp_path / "lsk")
    assert {row["word"] for row in rows} == set(EXPECTED_COUNTS)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["word"]] = counts.get(row["word"], 0) + 1
    assert counts == EXPECTED_COUNTS
    excluded = summary["excluded"]
    assert isinstance(excluded, dict)
    assert excluded["the"] == "function word" and excluded["and"] == "function word"
    assert excluded["a"] == "one letter" and excluded["yes"] == "command word"
    assert excluded["don't"] == "not alphabetic"
    clips = read_manifest(tmp_path / "lsk")
    assert all(clip.dataset == "lsk" and clip.sample_rate == TARGET_RATE for clip in clips)
    assert {row["speaker"] for row in rows} == {"11", "22"}
    assert {row["split"] for row in rows if row["speaker"] == "22"} == {"validation"}
    assert {row["split"] for row in rows if row["speaker"] == "11"} == {"train"}
    length = round(WINDOW * TARGET_RATE)
    for row in rows:
        utterance, start_text = row["take"].split("@")
        occurrence = next(
            w for w in tiny.words[utterance] if w[0] == row["word"] and abs(w[1] - float(start_text)) < 0.006
        )
        source, _ = read_audio(next(tiny.root.rglob(f"{utterance}.flac")))
        clip, rate = read_audio(tmp_path / "lsk" / row["path"])
        assert rate == TARGET_RATE and clip.shape == (length,)
        centre = round((occurrence[1] + occurrence[2]) / 2 * TARGET_RATE)
        first = centre - length // 2
        for offset in range(length):
            index = first + offset
            expected = source[index] if 0 <= index < source.shape[0] else 0.0
            if clip[offset] != expected:
                raise AssertionError(f"{row['path']}: sample {offset} is {clip[offset]}, expected {expected}")


def test_window_running_past_the_file_start_is_zero_padded(tiny: TinyLibriSpeech, tmp_path: Path) -> None:
    build(tiny, tmp_path / "lsk", tiny.textgrids)
    # Utterance 11-100-0001 opens with "apple" at t = 0: half a window of zeros precedes the word.
    row = next(r for r in manifest_rows(tmp_path / "lsk") if r["take"] == "11-100-0001@0.00")
    clip, _ = read_audio(tmp_path / "lsk" / row["path"])
    word = tiny.words["11-100-0001"][0]
    lead = round(WINDOW * TARGET_RATE) // 2 - round((word[1] + word[2]) / 2 * TARGET_RATE)
    assert lead > 0
    assert not clip[:lead].any()
    assert np.abs(clip[lead : lead + 800]).max() > 0.01


def test_caps_and_top_words(tiny: TinyLibriSpeech, tmp_path: Path) -> None:
    build(tiny, tmp_path / "capped", tiny.textgrids, max_clips=2)
    words = [row["word"] for row in manifest_rows(tmp_path / "capped")]
    assert {word: words.count(word) for word in set(words)} == {
        "apple": 2,
        "garden": 2,
        "river": 2,
        "castle": 1,
    }
    build(tiny, tmp_path / "top", tiny.textgrids, top_words=2)
    # garden and river tie at 3: the tie goes alphabetically.
    assert {row["word"] for row in manifest_rows(tmp_path / "top")} == {"apple", "garden"}
    build(tiny, tmp_path / "excl", tiny.textgrids, exclude_words=("apple",))
    assert "apple" not in {row["word"] for row in manifest_rows(tmp_path / "excl")}


def test_resume_writes_nothing_and_metadata_is_complete(tiny: TinyLibriSpeech, tmp_path: Path) -> None:
    first = build(tiny, tmp_path / "lsk", tiny.textgrids, jobs=2)
    again = build(tiny, tmp_path / "lsk", tiny.textgrids)
    assert first["written"] == 12 and again["written"] == 0 and again["kept_existing"] == 12
    meta = json.loads((tmp_path / "lsk" / "corpus.json").read_text())
    assert meta["keywords"]["apple"] == {"occurrences": 5, "clips": 5}
    assert "the" in meta["stop_words"] and meta["vocabulary"] == sorted(EXPECTED_COUNTS)


def test_cut_centred_pads_both_ends() -> None:
    audio = np.arange(1, 11, dtype=np.float32)
    window = cut_centred(audio, 0.0, 10 / TARGET_RATE, 20)
    np.testing.assert_array_equal(
        window, np.concatenate([np.zeros(5), audio, np.zeros(5)]).astype(np.float32)
    )


def test_bad_alignment_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.alignment.txt"
    bad.write_text('1-2-3 ",A,B," "0.1,0.2"\n')
    with pytest.raises(ValueError, match=r"x\.alignment\.txt:1: 4 words but 2 end times"):
        read_alignment_text(bad)
    grid = tmp_path / "y.TextGrid"
    grid.write_text("not a textgrid\n")
    with pytest.raises(ValueError, match=r"y\.TextGrid: not a Praat TextGrid"):
        read_textgrid(grid)


def test_cli_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_lsk_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--librispeech",
        "--alignments",
        "--alignment-format",
        "--top-words",
        "--max-clips",
        "--window-seconds",
        "--exclude-file",
        "--jobs",
        "--seed",
        "--config",
    ):
        assert option in text


def test_short_format_textgrid(tmp_path: Path) -> None:
    grid = tmp_path / "z.TextGrid"
    grid.write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1.5\n<exists>\n2\n"TextTier"\n"events"\n0\n1.5\n1\n'
        '0.2\n"click"\n"IntervalTier"\n"words"\n0\n1.5\n3\n0\n0.4\n""\n0.4\n1.1\n"HELLO"\n1.1\n1.5\n"sp"\n'
    )
    words = read_textgrid(grid)
    assert [(w.word, w.start, w.end) for w in words] == [("hello", 0.4, 1.1)]


def test_alignment_text_with_leading_and_inner_silences(tmp_path: Path) -> None:
    path = tmp_path / "84-121123.alignment.txt"
    path.write_text('84-121123-0000 ",GO,,DO,YOU,HEAR," "0.490,0.890,1.270,1.380,1.490,1.890,2.09" \n\n')
    words = read_alignment_text(path)["84-121123-0000"]
    assert [(w.word, w.start, w.end) for w in words] == [
        ("go", 0.49, 0.89),
        ("do", 1.27, 1.38),
        ("you", 1.38, 1.49),
        ("hear", 1.49, 1.89),
    ]
