"""speechocean762 words: a real four-sentence Kaldi tree (tests/fixtures, CC BY 4.0), real pocketsphinx alignment
and real Whisper tiny.en; the test speakers are refused by construction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from training.data.manifest import read_manifest
from training.data.speechocean import (
    ReservedSpeakerError,
    SpeechoceanConfig,
    build_speechocean,
    build_speechocean_main,
    heard_probability,
    read_kaldi_part,
)

FIXTURE = Path(__file__).parent / "fixtures" / "speechocean762_mini"
TEST_SPEAKER = "0003"  # the first speaker of the fixture's test/utt2spk


def config(output: Path, **options: object) -> SpeechoceanConfig:
    return SpeechoceanConfig(source=str(FIXTURE), output_dir=str(output), jobs=1, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    output = tmp_path_factory.mktemp("speechocean")
    return output, build_speechocean(config(output, min_speakers=3, validation_fraction=0.34))


def test_reads_only_train_speakers() -> None:
    utterances = read_kaldi_part(FIXTURE)
    assert [u.speaker for u in utterances] == ["0001", "0005", "0006", "0026"]
    assert all(u.wav.is_file() for u in utterances)
    with pytest.raises(ReservedSpeakerError, match="reserved for false-alarm"):
        read_kaldi_part(FIXTURE, "test")


def test_a_test_speaker_in_the_train_list_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree)
    utt2spk = tree / "train" / "utt2spk"
    utt2spk.write_text(utt2spk.read_text().replace("000050028 0005", f"000050028 {TEST_SPEAKER}"))
    with pytest.raises(ReservedSpeakerError, match=TEST_SPEAKER):
        read_kaldi_part(tree)
    assert (
        build_speechocean_main(["--source", str(tree), "--output-dir", str(tmp_path / "out"), "--jobs", "1"])
        == 2
    )
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_heard_probability_needs_the_word_at_its_place() -> None:
    asr = [
        {"word": "three", "start": 0.0, "end": 0.9, "probability": 0.8},
        {"word": "seven", "start": 2.0, "end": 2.5, "probability": 0.95},
        {"word": "to", "start": 1.0, "end": 1.3, "probability": 0.7},  # a homophone of "two"
    ]
    assert heard_probability("seven", 2.1, 2.6, asr, 0.2) == 0.95
    assert heard_probability("seven", 0.1, 0.8, asr, 0.2) == 0.0  # heard, but elsewhere
    assert heard_probability("two", 1.0, 1.4, asr, 0.2) == 0.7
    assert heard_probability("nine", 2.1, 2.6, asr, 0.2) == 0.0


def test_clips_centred_on_words_heard_by_three_speakers(built: tuple[Path, dict[str, object]]) -> None:
    output, summary = built
    clips = read_manifest(output)  # validates columns, values and files
    assert (
        clips
        and {c.dataset for c in clips} == {"speechocean762"}
        and {c.license for c in clips} == {"CC-BY-4.0"}
    )
    seven = [c for c in clips if c.word == "seven"]
    assert {c.speaker for c in seven} == {"speechocean762:0001", "speechocean762:0006", "speechocean762:0026"}
    assert not any(c.speaker.endswith(TEST_SPEAKER) for c in clips)
    for clip in clips:
        audio, rate = soundfile.read(str(clip.path), dtype="float32")
        assert rate == 16000 and audio.shape == (24000,) and np.abs(audio).max() > 0.05
    splits = {c.speaker: c.split for c in clips}
    assert set(splits.values()) <= {"train", "validation"}
    meta = json.loads((output / "corpus.json").read_text())
    assert meta["attribution"].startswith("speechocean762") and "2104.01378" in meta["attribution"]
    flt = meta["filter"]
    assert flt["sentences"] == 4 and flt["rejected_asr"] >= 1  # 000050028's "seven" is not heard
    assert flt["excluded_words"]["two"].startswith("fewer than") or "two" in meta["clips_per_word"]
    assert meta["clips"] == len(clips) == summary["clips"]


def test_cached_analysis_recut_with_other_thresholds(
    built: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    output, _ = built
    again = tmp_path / "again"
    shutil.copytree(output / "analysis", again / "analysis")
    summary = build_speechocean(config(again, min_speakers=1, min_probability=0.0))
    assert summary["analysed_sentences"] == 0  # alignment and ASR came from the cache
    assert summary["clips"] > read_manifest(output).__len__()
    resumed = build_speechocean(config(again, min_speakers=1, min_probability=0.0))
    assert resumed["written"] == 0 and resumed["clips"] == summary["clips"]


def test_whisper_spells_numbers_out_and_stale_analyses_rerun(
    built: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    from training.data.asr import ASR_DECODING, WhisperAsr, numeral_tokens

    asr = WhisperAsr()
    tokenizer = asr.model.hf_tokenizer
    suppressed = set(numeral_tokens(tokenizer))
    assert {tokenizer.token_to_id("7"), tokenizer.token_to_id("%")} <= suppressed
    assert tokenizer.token_to_id("Ġseven") not in suppressed
    assert max(suppressed) < tokenizer.token_to_id("<|endoftext|>")
    audio, _ = soundfile.read(str(FIXTURE / "WAVE" / "SPEAKER0006" / "000060031.flac"), dtype="float32")
    # Whisper without the suppression wrote this sentence as one word, "5247", on some machines
    assert [word.word for word in asr.words(audio)] == ["five", "two", "four", "seven"]

    output, _ = built
    again = tmp_path / "stale"
    shutil.copytree(output / "analysis", again / "analysis")
    stale = again / "analysis" / "000060031.json"
    analysis = json.loads(stale.read_text())
    assert analysis["asr_decoding"] == ASR_DECODING
    stale.write_text(json.dumps({**analysis, "asr_decoding": "an older decoding", "asr": []}))
    summary = build_speechocean(config(again, min_speakers=3, validation_fraction=0.34))
    assert summary["analysed_sentences"] == 1 and summary["clips"] == len(read_manifest(output))
