"""Phrases longer than the model's window: enrolled as the sequence of windows that start with, centre on and
end with them, and matched whole (every part in order)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory

from edge.audio import load_audio
from edge.budget import phrase_scores
from edge.cohort import Cohort
from edge.commands import cut_take, enroll_from_audio
from edge.config import DetectorConfig
from edge.detector import Detector, KeywordMatcher
from edge.enrollment import EnrollmentConfig, EnrollmentSession
from edge.gpio import Gesture, Indicator
from edge.model import Encoder, load_model
from edge.takes import EDGE_PAD, Segment, TakeChecks, take_windows
from edge.templates import Template, TemplateStore

RATE = 16000
REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "build" / "udkws_int8.tflite"
PHRASE = ("open", "options", "record")  # Arabic Speech Commands words (English glosses), none a command word
NEAR_MISSES = {
    "last word wrong": ("open", "options", "send"),
    "first word wrong": ("close", "options", "record"),
    "middle word wrong": ("open", "cancel", "record"),
    "first word missing": ("options", "record"),
}


def _units(rng: np.random.Generator, count: int, dim: int = 8) -> np.ndarray:
    x = rng.normal(size=(count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_phrase_windows_cover_the_phrase_on_the_hop_grid() -> None:
    audio = np.arange(RATE * 4, dtype=np.float32)
    segment = Segment(
        RATE // 2 - EDGE_PAD, int(2.7 * RATE) + 1600, RATE // 2, int(2.7 * RATE)
    )  # 2.2 s of speech
    cut = take_windows(audio, segment, 24000, 1600)
    assert cut.is_phrase and cut.part_offsets == (16000, 8000, 0)  # 2.2 + 0.3 - 1.5 = 1.0 s
    first, _, last = cut.parts
    assert first[0] == segment.speech_start - EDGE_PAD  # the first window starts just before the phrase
    assert last[-1] == segment.speech_end + EDGE_PAD - 1  # and the last ends just after it


def test_matcher_scores_a_phrase_by_its_weakest_part_in_order() -> None:
    rng = np.random.default_rng(0)
    parts = _units(rng, 3)
    phrase = Template(
        "ph", parts.mean(0), "a" * 64, "f", threshold=0.5, parts=parts, part_offsets_ms=(1000, 500, 0)
    )
    matcher = KeywordMatcher([phrase], 0.5, hop_ms=100)
    assert matcher.history == 11
    noise = _units(rng, 11)
    recent = list(noise)
    recent[-11], recent[-6], recent[-1] = parts[0], parts[1], parts[2]
    assert matcher.score(recent[-1], recent).scores[0] == pytest.approx(1.0, abs=1e-5)
    recent[-6] = noise[4]  # the middle word is another one
    assert matcher.score(recent[-1], recent).scores[0] == pytest.approx(float(parts[1] @ noise[4]), abs=1e-5)
    swapped = list(noise)
    swapped[-11], swapped[-6], swapped[-1] = parts[2], parts[1], parts[0]  # the words in the wrong order
    assert matcher.score(swapped[-1], swapped).scores[0] < 0.9
    gated = [None] * 10 + [parts[2]]  # nothing heard before the last window
    assert matcher.score(parts[2], gated).scores[0] == pytest.approx(0.0, abs=1e-6)


def test_phrase_scores_on_the_cohort_are_the_detectors() -> None:
    rng = np.random.default_rng(1)
    cohort = Cohort.from_float(_units(rng, 300), [0, 120], 100, "a" * 64)
    parts = _units(rng, 3)
    got = phrase_scores(cohort, parts, [4, 2, 0])
    rows = cohort.rows(np.arange(300))
    matcher = KeywordMatcher(
        [Template("ph", parts[2], "a" * 64, "f", parts=parts, part_offsets_ms=(400, 200, 0))], 0.5
    )
    for start, end in ((0, 120), (120, 300)):
        for i in range(start, end):
            recent = [rows[j] if j >= start else None for j in range(i - 4, i + 1)]
            assert got[i] == pytest.approx(matcher.score(rows[i], recent).scores[0], abs=3e-3), i  # int8 rows


@pytest.fixture(scope="module")
def shipped() -> Encoder:
    if not SHIPPED.is_file():
        pytest.skip("build/udkws_int8.tflite is not built (make test builds it first)")
    return load_model(SHIPPED)


def _word(data_dir: Path, word: str, speaker: str, take: str) -> np.ndarray:
    audio = load_audio(data_dir / "arabic_sc" / word / f"{speaker}_{take}.flac")
    energy = np.convolve(audio**2, np.ones(320) / 320, "same")
    spoken = np.flatnonzero(energy > energy.max() * 0.01)
    return audio[max(0, spoken[0] - 800) : spoken[-1] + 800]


def _say(data_dir: Path, words: tuple[str, ...], speaker: str, take: str) -> np.ndarray:
    gap = np.zeros(int(0.15 * RATE), dtype=np.float32)
    pieces = [piece for w in words for piece in (_word(data_dir, w, speaker, take), gap)]
    return np.concatenate(pieces[:-1])


def _room(samples: int) -> np.ndarray:
    return (np.random.default_rng(0).normal(size=samples) * 1e-3).astype(np.float32)


def _best_score(encoder: Encoder, template: Template, audio: np.ndarray) -> float:
    best = [-1.0]
    detector = Detector(
        encoder,
        [template],
        DetectorConfig(threshold=-1.0, gate=False),
        on_window=lambda r: best.append(float(r.scores.scores[0])) if r.scores is not None else None,
    )
    for start in range(0, audio.shape[0], 1600):
        detector.push(audio[start : start + 1600])
    return max(best)


def test_a_phrase_is_matched_whole_better_than_by_one_window(
    kws_data_dir: Path, shipped: Encoder, tmp_path: Path
) -> None:
    """Three words enrolled from two takes of a speaker; the third take of the phrase against the same speaker's
    near misses (one word changed or left out). Matched whole, the phrase stands further above its near
    misses than the one window centred on it does."""
    margins: dict[str, list[float]] = {"phrase": [], "one window": []}
    for number in range(1, 9):
        speaker = f"{number:08d}"
        takes = [
            (f"take {t}", np.concatenate([_room(8000), _say(kws_data_dir, PHRASE, speaker, t), _room(8000)]))
            for t in ("01", "02")
        ]
        store = TemplateStore(tmp_path / speaker)
        phrase = enroll_from_audio("open-options-record", takes, shipped, store, check=False)
        assert phrase.is_phrase and phrase.part_offsets_ms[0] >= 300, phrase.part_offsets_ms
        assert store.get("open-options-record").part_offsets_ms == phrase.part_offsets_ms
        one_window = replace(phrase, parts=np.zeros((0, shipped.embedding_dim)), part_offsets_ms=())
        for name, template in (("phrase", phrase), ("one window", one_window)):

            def heard(words: tuple[str, ...], template: Template = template, speaker: str = speaker) -> float:
                audio = np.concatenate(
                    [_room(RATE), _say(kws_data_dir, words, speaker, "03"), _room(2 * RATE)]
                )
                return _best_score(shipped, template, audio)

            target = heard(PHRASE)
            margins[name].append(target - max(heard(words) for words in NEAR_MISSES.values()))
            assert target > 0.6, (speaker, name, target)
    assert np.mean(margins["phrase"]) > np.mean(margins["one window"]) + 0.01, margins


@pytest.fixture
def indicator() -> Iterator[Indicator]:
    factory = MockFactory()
    led = LED(17, pin_factory=factory)
    yield Indicator(led)
    led.close()


def test_the_button_enrolls_a_phrase(
    kws_data_dir: Path, shipped: Encoder, indicator: Indicator, tmp_path: Path
) -> None:
    store = TemplateStore(tmp_path)
    session = EnrollmentSession(
        shipped,
        store,
        indicator,
        EnrollmentConfig(pin_pool=(5,), checks=TakeChecks(consistency_threshold=-1.0)),
    )
    session.gesture(Gesture.SHORT)
    for take in ("01", "02", "03"):
        while session.state.value != "listening":
            session.feed(_room(1600))
        spoken = np.concatenate(
            [_room(RATE // 2), _say(kws_data_dir, PHRASE, "00000002", take), _room(4 * RATE)]
        )
        for start in range(0, spoken.shape[0], 1600):
            session.feed(spoken[start : start + 1600])
            if session.state.value != "listening":
                break
    assert store.names() == ["keyword-1"], session.rejections
    saved = store.get("keyword-1")
    assert saved.is_phrase and saved.parts.shape == (3, shipped.embedding_dim)
    assert saved.part_offsets_ms[0] >= 300 and saved.part_offsets_ms[-1] == 0
    assert cut_take(spoken, shipped.window_samples, None, "x").is_phrase
