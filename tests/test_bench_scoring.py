"""Scoring of streaming detections, the threshold replay of the detector's logic, and the DTW baseline."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.audio import load_audio
from edge.commands import take_from_audio
from edge.config import DetectorConfig
from edge.model import load_model
from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)
from training.bench.dtw_baseline import run_dtw_pass
from training.bench.streaming import (
    Event,
    WindowScores,
    decide,
    enroll_keywords,
    run_encoder_pass,
    score_events,
    threshold_curve,
)
from training.bench.streams import StreamConfig, ensure_stream

SETTINGS = DetectorConfig(threshold=0.5, trigger_level=2, trigger_window=3, refractory_ms=1500)


def _item(
    word: str, kind: str, clip_start: float, start: float, end: float, snr: float | None = None
) -> dict[str, Any]:
    return {
        "word": word, "kind": kind, "path": f"{word}.flac", "speaker": "s", "snr_db": snr,
        "start_s": start, "end_s": end, "clip_start_s": clip_start, "clip_end_s": clip_start + 1.0,
    }  # fmt: skip


TRUTH = [
    _item("yes", "keyword", 10.0, 10.2, 10.6),
    _item("no", "keyword", 20.0, 20.3, 20.7, snr=5.0),
    _item("yes", "keyword", 30.0, 30.1, 30.5, snr=5.0),
    _item("bed", "unknown", 40.0, 40.2, 40.6),
]


def test_hits_misses_false_accepts_and_latency() -> None:
    events = [
        Event("yes", 10.9, 0.9),  # hit, 0.3 s after the end
        Event("yes", 11.2, 0.9),  # the same utterance again: a false accept
        Event("no", 21.8, 0.9),  # 1.1 s after the end: outside the 1 s tolerance, a false accept (and a miss)
        Event("no", 30.7, 0.8),  # "yes" spoken: a false accept of "no"
        Event("yes", 40.8, 0.7),  # an unknown word
    ]
    scores = score_events(events, TRUTH, ["yes", "no"], seconds=1800.0, tolerance_s=1.0, window_s=1.5)
    assert scores.targets == 3 and scores.misses == 2 and scores.false_accepts == 4
    assert scores.frr == pytest.approx(2 / 3)
    assert scores.fa_per_hour == pytest.approx(8.0)
    assert scores.latencies_s == pytest.approx([0.3])
    assert scores.per_keyword["yes"] == {
        "targets": 2,
        "hits": 1,
        "frr": 0.5,
        "false_accepts": 2,
        "fa_per_hour": 4.0,
    }
    assert scores.false_accept_causes == {"keyword:yes": 2, "keyword:no": 1, "unknown": 1}
    assert scores.frr_by_snr == {"5 dB": 1.0, "clean": 0.0}
    summary = scores.summary()
    assert summary["latency_median_s"] == pytest.approx(0.3)


def test_a_detection_before_the_word_starts_is_not_a_hit() -> None:
    scores = score_events([Event("yes", 10.1, 0.9)], TRUTH, ["yes"], seconds=3600.0)
    assert scores.misses == 2 and scores.false_accepts == 1


def _windows(scores: list[list[float]], hop: int = 1600) -> WindowScores:
    matrix = np.asarray(scores, dtype=np.float32)
    ends = 24000 + hop * np.arange(matrix.shape[0], dtype=np.int64)
    return WindowScores("test", ["a", "b"], ends, matrix, ~np.isfinite(matrix).any(axis=1))


def test_decide_applies_trigger_level_refractory_and_one_keyword_per_window() -> None:
    inf = -np.inf
    rows = (
        [
            [0.6, 0.1],  # 0 (window end 1.5 s): first hit of a
            [0.2, 0.1],  # 1
            [0.7, 0.1],  # 2: second hit of a within 3 windows: fires at 1.7 s
            [0.8, 0.1],  # 3: refractory until 3.2 s
            [inf, inf],  # 4: gated
            [0.9, 0.1],  # 5: still refractory
        ]
        + [[0.1, 0.1]] * 12
        + [
            [0.9, 0.1],  # 18 (3.3 s): out of the refractory period, one hit
            [0.1, 0.1],  # 19
            [0.1, 0.1],  # 20: the hit at 18 has left the last 3 windows
            [0.9, 0.1],  # 21: one hit among the last 3: nothing
            [0.95, 0.6],  # 22 (3.7 s): a fires (hits at 21 and 22); b has one hit
            [0.2, 0.7],  # 23 (3.8 s): b fires
        ]
    )
    events = decide(_windows(rows), 0.5, SETTINGS)
    assert [(e.keyword, round(e.time_s, 2)) for e in events] == [("a", 1.7), ("a", 3.7), ("b", 3.8)]
    both = [[0.6, 0.7], [0.6, 0.8]]  # both fire at window 1: the higher score wins
    assert [e.keyword for e in decide(_windows(both), 0.5, SETTINGS)] == ["b"]


def test_curve_is_monotonic_in_false_accepts(
    random_model_path: Path,  # noqa: F811
    kws_data_dir: Path,
    tmp_path: Path,
) -> None:
    """The replay equals the real detector at several thresholds; FA/h falls as the threshold rises."""
    stream = ensure_stream(
        kws_data_dir,
        StreamConfig(
            keywords=("yes", "up"),
            occurrences_per_level=1,
            unknown_clips=6,
            silence_clips=2,
            target_seconds=40.0,
        ),
        tmp_path / "streams",
    )
    encoder = load_model(random_model_path)
    templates, _ = enroll_keywords(stream, kws_data_dir, encoder, tmp_path / "state")
    audio = load_audio(stream.audio_path)
    settings = DetectorConfig()
    full = run_encoder_pass(encoder, audio, templates, settings, progress=False)
    assert full.windows.scores.shape == (full.windows.ends.shape[0], 2)
    for threshold in (0.3, 0.6, settings.threshold, 0.9):
        real = run_encoder_pass(
            encoder, audio, templates, dataclasses.replace(settings, threshold=threshold), progress=False
        )
        assert decide(full.windows, threshold, settings) == real.detections
    curve = threshold_curve(full.windows, settings, stream.events(), stream.seconds, [0.0, 0.5, 0.9, 1.01])
    fa = [p["fa_per_hour"] for p in curve]
    assert fa == sorted(fa, reverse=True) and fa[-1] == 0.0 and curve[-1]["frr"] == 1.0


def test_dtw_finds_a_copy_of_an_enrollment_take(kws_data_dir: Path, tmp_path: Path) -> None:
    stream = ensure_stream(
        kws_data_dir,
        StreamConfig(
            keywords=("yes", "no"),
            occurrences_per_level=1,
            unknown_clips=2,
            silence_clips=1,
            target_seconds=25.0,
        ),
        tmp_path / "streams",
    )
    takes = {
        w: [load_audio(kws_data_dir / t["path"]) for t in stream.truth["enrollment"][w]]
        for w in ("yes", "no")
    }
    window = take_from_audio(takes["no"][1], 24000, None, "take")
    audio = np.concatenate([load_audio(stream.audio_path)[: 16000 * 8], window, np.zeros(16000, np.float32)])
    ends = np.arange(24000, audio.shape[0] + 1, 1600, dtype=np.int64)
    like = WindowScores(
        "encoder",
        ["yes", "no"],
        ends,
        np.zeros((ends.shape[0], 2), np.float32),
        np.zeros(ends.shape[0], bool),
    )
    result = run_dtw_pass(audio, takes, like, 24000, progress=False)
    scores = result.windows.scores
    assert result.windows_scored == ends.shape[0] and np.isfinite(scores).all()
    best = int(np.argmax(scores[:, 1]))
    assert ends[best] == 16000 * 8 + 24000  # the window that holds exactly the copied take
    assert scores[best, 1] > scores[best, 0]
    events = decide(
        result.windows, float(scores[best, 1]) - 1e-3, dataclasses.replace(SETTINGS, trigger_level=1)
    )
    assert [(e.keyword, e.time_s) for e in events] == [("no", ends[best] / 16000)]
