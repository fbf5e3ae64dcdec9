"""Corpus filters: character error rate, the ASR filter (fake transcriber) and the embedding-outlier filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.data.corpus_io import write_flac_atomic, write_manifest
from training.data.filtering import (
    asr_filter,
    character_error_rate,
    embedding_filter,
    filter_main,
    transcript_matches,
    write_filtered_manifest,
)
from training.data.manifest import Clip, read_manifest


def make_corpus(root: Path, words: dict[str, int]) -> list[Clip]:
    """A corpus whose clip i of each word holds a constant level (i + 1) / 100, so a fake ASR can tell clips apart."""
    rows = []
    for word, count in words.items():
        for index in range(count):
            relative = f"clips/{word}/s{index}.flac"
            write_flac_atomic(root / relative, np.full(1600, (index + 1) / 100, dtype=np.float32))
            rows.append(
                {
                    "path": relative,
                    "dataset": "synthetic",
                    "word": word,
                    "speaker": f"espeak-ng:en-us:m{index}",
                    "take": "1",
                    "split": "train",
                    "sample_rate": 16000,
                    "seconds": "0.1000",
                    "license": "test",
                }
            )
    write_manifest(root / "manifest.csv", rows)
    return read_manifest(root)


def test_character_error_rate() -> None:
    assert character_error_rate("kitten", "sitting") == pytest.approx(3 / 6)
    assert character_error_rate("apple", "apple") == 0.0
    assert character_error_rate("apple", "aple") == pytest.approx(0.2)
    assert character_error_rate("apple", "") == 1.0
    assert character_error_rate("", "") == 0.0 and character_error_rate("", "a") == 1.0
    assert character_error_rate("ab", "ba") == 1.0


def test_transcript_matches_exactly_one_close_word() -> None:
    assert transcript_matches("apple", "An aple.")[0]  # CER 0.2
    assert not transcript_matches("apple", "ample apple")[0]  # two words within 0.2 (ample: 0.2)
    assert not transcript_matches("apple", "a pineapple")[0]
    assert not transcript_matches("apple", "")[0]
    assert transcript_matches("garden", "GARDEN!")[0]
    assert not transcript_matches("garden", "gordon")[0]  # CER 2/6


def test_asr_filter_with_a_fake_transcriber(tmp_path: Path) -> None:
    clips = make_corpus(tmp_path, {"apple": 4})
    heard = {1: "apple", 2: "the apple", 3: "apricot", 4: "apple apple"}

    def transcribe(audio: np.ndarray) -> str:
        assert audio.dtype == np.float32 and audio.ndim == 1
        return heard[round(float(audio.mean()) * 100)]

    from edge.audio import load_audio

    decisions = asr_filter(clips, transcribe, lambda clip: load_audio(clip.path))
    assert [d.keep for d in decisions] == [True, True, False, False]
    kept = write_filtered_manifest(decisions, tmp_path / "manifest.filtered.csv", tmp_path / "report.json")
    assert kept == 2
    assert len(read_manifest(tmp_path, "manifest.filtered.csv")) == 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dropped"] == 2 and report["dropped_per_word"] == {"apple": 2}


def clustered(rng: np.random.Generator, direction: np.ndarray, count: int, spread: float) -> np.ndarray:
    return direction + spread * rng.standard_normal((count, direction.shape[0]))


def test_embedding_filter_drops_far_clips(tmp_path: Path) -> None:
    clips = make_corpus(tmp_path, {"apple": 20, "river": 20, "castle": 3})
    rng = np.random.default_rng(0)
    basis = np.eye(16)
    apple = clustered(rng, 5 * basis[0], 20, 0.3)
    river = clustered(rng, 5 * basis[1], 20, 0.3)
    apple[[4, 11]] = 5 * basis[2]  # two apple clips that sound like something else
    river[7] = -5 * basis[1]
    castle = clustered(rng, 5 * basis[3], 3, 3.0)
    decisions = embedding_filter(clips, np.concatenate([apple, river, castle]), mad_k=3.0)
    dropped = {(d.clip.word, d.clip.path.name) for d in decisions if not d.keep}
    assert dropped == {("apple", "s4.flac"), ("apple", "s11.flac"), ("river", "s7.flac")}
    assert all("median - 3.0 MAD" in d.reason for d in decisions if not d.keep)
    assert all(d.keep and "only 3 clips" in d.reason for d in decisions if d.clip.word == "castle")
    # A global quantile alone drops the lowest-scoring share of all scored clips.
    by_quantile = embedding_filter(
        clips, np.concatenate([apple, river, castle]), mad_k=None, global_quantile=0.1
    )
    assert sum(not d.keep for d in by_quantile) == 4
    kept = write_filtered_manifest(decisions, tmp_path / "filtered.csv")
    assert kept == len(clips) - 3
    # A filtered manifest outside the corpus root points back into it.
    (tmp_path / "elsewhere").mkdir()
    write_filtered_manifest(decisions, tmp_path / "elsewhere" / "filtered.csv")
    outside = read_manifest(tmp_path / "elsewhere", "filtered.csv")
    assert sorted(c.path.resolve() for c in outside) == sorted(
        d.clip.path.resolve() for d in decisions if d.keep
    )
    assert {c.speaker for c in read_manifest(tmp_path, "filtered.csv")} <= {c.speaker for c in clips}


def test_embedding_filter_rejects_bad_input(tmp_path: Path) -> None:
    clips = make_corpus(tmp_path, {"apple": 6})
    with pytest.raises(ValueError, match=r"embeddings must be \[6, D\]"):
        embedding_filter(clips, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        embedding_filter(clips, np.full((6, 4), np.nan))
    with pytest.raises(ValueError, match="give mad_k, global_quantile or both"):
        embedding_filter(clips, np.ones((6, 4)), mad_k=None)


def level_transcriber(audio: np.ndarray) -> str:
    """A stand-in ASR for the CLI test: clips 1 and 2 of a word 'say' apple, the others banana."""
    return "apple" if float(audio.mean()) < 0.025 else "banana"


def test_filter_cli_asr_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_corpus(tmp_path, {"apple": 4})
    spec = f"{__name__}:level_transcriber"
    assert filter_main(["asr", "--corpus", str(tmp_path), "--transcriber", spec]) == 0
    assert "kept 2 of 4 clips" in capsys.readouterr().out
    kept = read_manifest(tmp_path, "manifest.filtered.csv")
    assert sorted(clip.path.name for clip in kept) == ["s0.flac", "s1.flac"]
    assert filter_main(["asr", "--corpus", str(tmp_path)]) == 2
    assert filter_main(["asr", "--corpus", str(tmp_path), "--transcriber", f"{__name__}:nothing"]) == 2
    assert filter_main(["embedding", "--corpus", str(tmp_path / "clips")]) == 2
    assert "no such manifest" in capsys.readouterr().out
