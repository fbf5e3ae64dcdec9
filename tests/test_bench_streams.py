"""The benchmark's test streams: deterministic, truthful about where each clip lies, enrollment kept apart."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from training.bench.streams import BenchStream, StreamConfig, build_stream, ensure_stream, speech_bounds

TINY = StreamConfig(
    keywords=("yes", "no", "stop"),
    occurrences_per_level=1,
    unknown_clips=4,
    silence_clips=2,
    target_seconds=45.0,
    seed=7,
)


@pytest.fixture(scope="module")
def tiny_stream(kws_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> BenchStream:
    return ensure_stream(kws_data_dir, TINY, tmp_path_factory.mktemp("bench_streams"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_building_twice_gives_identical_files(
    kws_data_dir: Path, tiny_stream: BenchStream, tmp_path: Path
) -> None:
    again = build_stream(kws_data_dir, TINY, tmp_path / "again")
    assert _sha(again.audio_path) == _sha(tiny_stream.audio_path)
    assert (tmp_path / "again" / "truth.json").read_text() == (
        tiny_stream.directory / "truth.json"
    ).read_text()
    other = build_stream(kws_data_dir, StreamConfig(**{**TINY.__dict__, "seed": 8}), tmp_path / "other")
    assert _sha(other.audio_path) != _sha(tiny_stream.audio_path)


def test_ensure_stream_reuses_a_built_stream(kws_data_dir: Path, tiny_stream: BenchStream) -> None:
    before = tiny_stream.audio_path.stat().st_mtime_ns
    again = ensure_stream(kws_data_dir, TINY, tiny_stream.directory.parent)
    assert again.directory == tiny_stream.directory
    assert again.audio_path.stat().st_mtime_ns == before


def test_contents_follow_the_config(tiny_stream: BenchStream) -> None:
    truth = tiny_stream.truth
    assert truth["seconds"] == pytest.approx(TINY.target_seconds)
    keywords = tiny_stream.events("keyword")
    assert len(keywords) == len(TINY.keywords) * TINY.occurrences_per_level * len(TINY.levels)
    for word in TINY.keywords:
        levels = sorted(str(e["snr_db"]) for e in keywords if e["word"] == word)
        assert levels == sorted(str(level) for level in TINY.levels)
    assert len(tiny_stream.events("unknown")) == 4 and len(tiny_stream.events("silence")) == 2
    assert all(e["word"] not in TINY.keywords for e in tiny_stream.events("unknown"))
    events = sorted(truth["events"], key=lambda e: e["clip_start_s"])
    for before, after in itertools.pairwise(events):
        assert after["clip_start_s"] - before["clip_end_s"] >= TINY.min_gap_s - 1e-3
    assert all(e["clip_start_s"] <= e["start_s"] < e["end_s"] <= e["clip_end_s"] for e in events)


def test_no_clip_is_reused_and_enrollment_speakers_are_kept_apart(tiny_stream: BenchStream) -> None:
    truth = tiny_stream.truth
    used = [e["path"] for e in truth["events"]]
    enrolled = [t["path"] for takes in truth["enrollment"].values() for t in takes]
    assert len(set(used)) == len(used)
    assert not set(used) & set(enrolled)
    for word, takes in truth["enrollment"].items():
        assert len(takes) == TINY.enroll_takes and len({t["speaker"] for t in takes}) == 1
        speakers = {e["speaker"] for e in tiny_stream.events("keyword") if e["word"] == word}
        assert takes[0]["speaker"] not in speakers
        assert all(f"/{word}/" in t["path"] for t in takes)


def test_truth_times_are_where_the_clips_were_placed(kws_data_dir: Path, tiny_stream: BenchStream) -> None:
    stream = load_audio(tiny_stream.audio_path)
    clean = [e for e in tiny_stream.events("keyword") if e["snr_db"] is None]
    noisy = [e for e in tiny_stream.events("keyword") if e["snr_db"] == 5.0]
    assert clean and noisy
    for event in clean + noisy:
        clip = load_audio(kws_data_dir / event["path"])
        start = round(event["clip_start_s"] * 16000)
        assert round(event["clip_end_s"] * 16000) - start == clip.shape[0]
        # The clip's best alignment with the stream within +-0.25 s is exactly at the recorded start.
        lags = range(-4000, 4001, 10)
        fits = [float(np.dot(stream[start + lag : start + lag + clip.shape[0]], clip)) for lag in lags]
        assert list(lags)[int(np.argmax(fits))] == 0
        segment = stream[start : start + clip.shape[0] - 800]  # the last 50 ms may hold the next noise ramp
        correlation = np.corrcoef(segment, clip[: segment.shape[0]])[0, 1]
        assert correlation > (0.999 if event["snr_db"] is None else 0.5)
        spoken = speech_bounds(clip)
        assert event["start_s"] == pytest.approx(event["clip_start_s"] + spoken[0] / 16000, abs=1e-3)
        assert event["end_s"] == pytest.approx(event["clip_start_s"] + spoken[1] / 16000, abs=1e-3)


def test_speech_bounds_find_a_burst_in_noise() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 1e-3, 16000).astype(np.float32)
    audio[4800:9600] += 0.3 * np.sin(np.arange(4800) * 0.2).astype(np.float32)
    start, end = speech_bounds(audio)
    assert abs(start - 4800) <= 160 and abs(end - 9600) <= 160


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="keywords"):
        StreamConfig(keywords=("happy",))
    with pytest.raises(ValueError, match="SNR"):
        StreamConfig(snrs_db=(), include_clean=False)


def test_a_stream_too_short_for_its_clips_is_refused(kws_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        build_stream(kws_data_dir, StreamConfig(**{**TINY.__dict__, "target_seconds": 10.0}), tmp_path)
