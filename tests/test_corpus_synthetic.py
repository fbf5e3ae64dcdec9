"""The synthetic corpus: a 3-word corpus rendered with every engine installed here (real engine calls)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge.audio import TARGET_RATE
from training.data.corpus_io import trim_silence
from training.data.manifest import MANIFEST_COLUMNS, read_manifest
from training.data.synthetic import (
    SyntheticConfig,
    build_parser,
    build_synthetic,
    build_synthetic_main,
    config_from_args,
)
from training.data.tts_engines import ENGINES, available_engines, festival_voice_exists
from training.data.vocabulary import Vocabulary

WORDS = Vocabulary(words=("apple", "river", "garden"), source="test")
AVAILABLE = available_engines()
# festival without any of these voice packages (festvox-kallpc16k, festvox-us-slt-hts) has nothing to render.
FESTIVAL_VOICES = tuple(v for v in ("kal_diphone", "cmu_us_slt_arctic_hts") if festival_voice_exists(v))
if AVAILABLE["festival"] is None and not FESTIVAL_VOICES:
    AVAILABLE["festival"] = (
        "no festival voice installed (apt-get install festvox-kallpc16k festvox-us-slt-hts)"
    )
USABLE = tuple(engine for engine in ENGINES if AVAILABLE[engine] is None)


def small_config(output: Path, **options: object) -> SyntheticConfig:
    config = SyntheticConfig(
        output_dir=str(output),
        engines=USABLE,
        espeak_voices=("en-us", "en-gb", "en-029"),
        espeak_variants_per_voice=2,
        flite_voices=("slt", "kal"),
        flite_variants=1,
        festival_voices=FESTIVAL_VOICES,
        festival_variants=1,
        piper_variants=1,
        validation_fraction=0.34,
        jobs=1,
    )
    return replace(config, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not USABLE:
        pytest.skip(f"no TTS engine installed: {AVAILABLE}")
    root = tmp_path_factory.mktemp("synthetic")
    report = build_synthetic(small_config(root, jobs=2), WORDS)
    assert report.failed == 0 and report.rendered == report.clips
    return root


def rows_of(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def decoded(root: Path) -> dict[str, bytes]:
    return {
        row["path"]: soundfile.read(str(root / row["path"]), dtype="int16")[0].tobytes()
        for row in rows_of(root)
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_renders_every_word(corpus: Path, engine: str) -> None:
    if AVAILABLE[engine] is not None:
        pytest.skip(f"{engine} unavailable: {AVAILABLE[engine]}")
    rows = [row for row in rows_of(corpus) if row["speaker"].startswith(f"{engine}:")]
    speakers = {row["speaker"] for row in rows}
    assert speakers, f"no clip from {engine}"
    for speaker in speakers:
        assert sorted(row["word"] for row in rows if row["speaker"] == speaker) == sorted(WORDS.words)
    for row in rows:
        audio, rate = soundfile.read(str(corpus / row["path"]), dtype="float32")
        info = soundfile.info(str(corpus / row["path"]))
        assert rate == TARGET_RATE and audio.ndim == 1 and info.subtype == "PCM_16" and info.format == "FLAC"
        assert abs(float(row["seconds"]) - audio.shape[0] / TARGET_RATE) < 1e-3
        assert 0.08 < audio.shape[0] / TARGET_RATE < 2.0
        # Trimmed: the first and last 10 ms are far quieter than the loudest part.
        peak = np.abs(audio).max()
        assert peak > 0.5 and np.abs(audio[:160]).max() < peak and np.abs(audio[-160:]).max() < peak


def test_manifest_format_and_split_by_voice(corpus: Path) -> None:
    with open(corpus / "manifest.csv", newline="") as handle:
        assert tuple(next(csv.reader(handle))) == MANIFEST_COLUMNS
    clips = read_manifest(corpus)  # the data layer's validator: columns, values, files
    assert {clip.dataset for clip in clips} == {"synthetic"}
    rows = rows_of(corpus)
    assert all(row["speaker"].count(":") == 2 and row["sample_rate"] == "16000" for row in rows)
    split_of_voice: dict[str, set[str]] = {}
    for row in rows:
        engine, voice, _ = row["speaker"].split(":")
        split_of_voice.setdefault(f"{engine}:{voice}", set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_voice.values())
    assert {row["split"] for row in rows} == {"train", "validation"}
    meta = json.loads((corpus / "corpus.json").read_text())
    assert meta["vocabulary"]["words"] == list(WORDS.words)
    assert meta["seed"] == 0 and meta["clips"] == len(rows) and set(meta["engines"]) == set(USABLE)
    assert {voice["speaker"] for voice in meta["voices"]} == {row["speaker"] for row in rows}


def test_same_seed_same_corpus_and_resume(corpus: Path, tmp_path: Path) -> None:
    report = build_synthetic(small_config(tmp_path / "again", jobs=1), WORDS)
    assert (tmp_path / "again" / "manifest.csv").read_text() == (corpus / "manifest.csv").read_text()
    assert decoded(tmp_path / "again") == decoded(corpus)
    # Resume: nothing is rendered again; a deleted and a corrupted clip are rendered anew.
    again = build_synthetic(small_config(tmp_path / "again"), WORDS)
    assert again.rendered == 0 and again.skipped == report.clips
    paths = sorted(decoded(corpus))
    (tmp_path / "again" / paths[0]).unlink()
    (tmp_path / "again" / paths[1]).write_bytes(b"not audio")
    repaired = build_synthetic(small_config(tmp_path / "again"), WORDS)
    assert repaired.rendered == 2 and repaired.clips == report.clips
    assert decoded(tmp_path / "again") == decoded(corpus)


def test_another_seed_changes_the_renditions(corpus: Path, tmp_path: Path) -> None:
    if AVAILABLE["espeak-ng"] is not None:
        pytest.skip("espeak-ng unavailable")
    build_synthetic(small_config(tmp_path / "seed1", seed=1, engines=("espeak-ng",)), WORDS)
    other = decoded(tmp_path / "seed1")
    mine = {path: data for path, data in decoded(corpus).items() if "espeak-ng" in path}
    assert other != mine


def test_a_failing_rendition_is_counted_not_fatal(tmp_path: Path) -> None:
    if AVAILABLE["espeak-ng"] is not None:
        pytest.skip("espeak-ng unavailable")
    config = small_config(tmp_path, engines=("espeak-ng",), espeak_voices=("en-us", "xx-no-such-voice"))
    report = build_synthetic(config, WORDS)
    assert report.failed == 2 * len(WORDS.words) and report.rendered == 2 * len(WORDS.words)
    meta = json.loads((tmp_path / "corpus.json").read_text())
    assert meta["failed"] == report.failed and "xx-no-such-voice" in meta["failures"][0]
    assert all("xx-no-such-voice" not in row["speaker"] for row in rows_of(tmp_path))


def test_uninstalled_voices_are_skipped_and_recorded(tmp_path: Path) -> None:
    usable = tuple(engine for engine in ("flite", "festival") if AVAILABLE[engine] is None)
    if not usable:
        pytest.skip("neither flite nor festival is installed")
    config = small_config(
        tmp_path, engines=usable, flite_voices=("nosuchvoice",), festival_voices=("nosuchvoice",)
    )
    report = build_synthetic(config, WORDS)
    assert report.clips == 0 and report.failed == 0
    skipped = json.loads((tmp_path / "corpus.json").read_text())["voices_skipped"]
    assert {speaker.split(":")[0] for speaker in skipped} == set(usable)


def test_trim_silence_keeps_the_sound_and_a_margin() -> None:
    rate = TARGET_RATE
    tone = 0.5 * np.sin(2 * np.pi * 300 * np.arange(rate // 4) / rate).astype(np.float32)
    audio = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)]).astype(np.float32)
    trimmed = trim_silence(audio, margin_seconds=0.03)
    assert abs(trimmed.shape[0] - (tone.shape[0] + 2 * 480)) <= 160
    assert trim_silence(np.zeros(1000, dtype=np.float32)).size == 0


def test_cli_options_toml_and_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[synthetic]\nwords = 20\nseed = 7\nengines = ["espeak-ng"]\n')
    config = config_from_args(
        build_parser().parse_args(["--config", str(toml), "--seed", "9", "--exclude", "cat"])
    )
    assert (config.words, config.seed, config.engines, config.exclude_words) == (
        20,
        9,
        ("espeak-ng",),
        ("cat",),
    )
    toml.write_text("[synthetic]\nvoices = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['voices'\]"):
        config_from_args(build_parser().parse_args(["--config", str(toml)]))
    with pytest.raises(ValueError, match="unknown"):
        SyntheticConfig(engines=("say",))
    with pytest.raises(SystemExit) as exit_info:
        build_synthetic_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        assert all(option in text for option in action.option_strings)
