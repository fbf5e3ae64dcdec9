"""edge.takematch: the second look at vetoed windows, on real speech; the template fields that carry it; the
detector giving a vetoed keyword back; the bench's version of the same rule."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from edge.commands import cut_take, enrollment_report
from edge.config import DetectorConfig
from edge.detector import Detector, KeywordMatcher, WindowResult
from edge.frontend import mfcc
from edge.model import load_model
from edge.resolver import KeywordResolver
from edge.takematch import TakeReference, best_distance, looks_again, match_features, take_spread
from edge.takes import make_template, speed_perturbed
from edge.templates import Template, TemplateError
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401
from training.bench.second_look import may_trigger

WINDOW = 24000


def _reference(audio: np.ndarray) -> TakeReference:
    cut = cut_take(audio, WINDOW, None, "take")
    return TakeReference(cut.centred, cut.speech_samples)


def _placed(audio: np.ndarray, offset: int) -> np.ndarray:
    """The clip's speech somewhere in a 1.5 s window of quiet room noise."""
    cut = cut_take(audio, WINDOW, None, "take")
    window = np.random.default_rng(abs(offset)).normal(0, 1e-3, WINDOW).astype(np.float32)
    return window + np.roll(cut.centred, offset)


def test_features_are_pair_averaged_and_centred() -> None:
    frames = np.random.default_rng(0).normal(size=(148, 40)).astype(np.float32)
    features = match_features(frames)
    assert features.shape == (74, 13)
    pooled = frames[:, 1:14].reshape(74, 2, 13).mean(axis=1)  # c0 (the level) left out
    np.testing.assert_allclose(features, pooled, atol=1e-5)


def test_a_take_matches_itself_anywhere_in_the_window_and_not_other_words(real_clips: list[Path]) -> None:
    word, other = load_audio(real_clips[0]), load_audio(real_clips[1])
    reference = _reference(word)
    windows = np.stack([match_features(mfcc(_placed(word, shift))) for shift in (-4000, 0, 3000)])
    own = best_distance([reference.speech], windows)
    different = best_distance([reference.speech], match_features(mfcc(_placed(other, 0))))
    assert own.shape == (3,) and different.shape == (1,)
    # The speech slice is found wherever it sits (the window's other content only moves the mean a little).
    assert own.max() < 0.5 * different[0], (own, different)


def test_spread_of_takes(real_clips: list[Path]) -> None:
    word, other = load_audio(real_clips[0]), load_audio(real_clips[1])
    one = _reference(word)
    assert take_spread([one]) is None
    louder = _reference(2.0 * word)  # the same take louder: the centred cepstra do not change
    same = take_spread([one, louder])
    mixed = take_spread([one, louder, _reference(other)])
    assert same is not None and mixed is not None and same < 0.5 < mixed


@pytest.mark.parametrize(
    ("speech", "spread", "limit", "expected"),
    [((np.zeros((6, 13)),), 5.0, 8.0, True), ((np.zeros((6, 13)),), 9.0, 8.0, False), ((), 5.0, 8.0, False),
     ((np.zeros((6, 13)),), None, 8.0, False), ((np.zeros((6, 13)),), 0.0, 0.0, False)],
)  # fmt: skip
def test_which_keywords_get_the_second_look(
    speech: tuple[np.ndarray, ...], spread: float | None, limit: float, expected: bool
) -> None:
    assert looks_again(speech, spread, limit) is expected


def test_template_keeps_the_take_features_through_its_file() -> None:
    speech = (np.arange(26, dtype=np.float32).reshape(2, 13) / 7, np.ones((3, 13), np.float32))
    template = Template("lamp", np.ones(4), "s", "f", take_speech=speech, take_spread=4.25)
    again = Template.from_json(json.loads(json.dumps(template.to_json())), "lamp.json")
    assert again.take_spread == 4.25 and len(again.take_speech) == 2
    for a, b in zip(again.take_speech, speech, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    older = template.to_json()
    del older["take_speech"], older["take_spread"]  # a keyword enrolled before the second look
    assert Template.from_json(older, "old.json").take_speech == ()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("take_speech", [[[1.0] * 12]], "take_speech"), ("take_speech", [[[float("nan")] * 13]], "take_speech"),
     ("take_speech", "abc", "take_speech"), ("take_spread", -1.0, "take_spread"), ("take_spread", True, "take_spread")],
)  # fmt: skip
def test_template_rejects_bad_take_features(field: str, value: object, message: str) -> None:
    raw = Template("lamp", np.ones(4), "s", "f").to_json() | {field: value}
    with pytest.raises(TemplateError, match=message):
        Template.from_json(raw, "lamp.json")


def test_matcher_gives_a_vetoed_window_back_only_when_it_follows_a_take(real_clips: list[Path]) -> None:
    word, other = load_audio(real_clips[0]), load_audio(real_clips[1])
    reference = _reference(word)
    keyword = Template("lamp", np.array([1, 0, 0.0]), "s", "f", threshold=0.5, take_speech=(reference.speech,),
                       take_spread=4.0).with_negative(np.array([1, 0.3, 0.0]))  # fmt: skip
    window = np.array([0.9, 0.45, 0], dtype=np.float32)
    window /= np.linalg.norm(window)  # the look-alike resembles this window more than the keyword does
    own, different = mfcc(_placed(word, 2000)), mfcc(_placed(other, 0))
    # the test's premise: the word in other room noise within the spread, another word beyond it
    assert best_distance([reference.speech], match_features(own))[0] <= 4.0
    assert best_distance([reference.speech], match_features(different))[0] > 4.0
    looking = KeywordMatcher([keyword], 0.5, take_match_spread=8.0)
    assert not looking.score(window).hits[0]  # no features: no second look
    assert looking.score(window, (), own).hits[0]
    assert not looking.score(window, (), different).hits[0]
    assert not KeywordMatcher([keyword], 0.5, take_match_spread=0.0).score(window, (), own).hits[0]
    below = np.array([0.3, 1, 0], dtype=np.float32)
    assert not looking.score(below / np.linalg.norm(below), (), own).hits[0]  # under the threshold: no look
    assert looking.score(window).undecided == (0,)  # without features the look waits (the detector's case)
    # Takes that agree more closely than a later saying of the word: the floor is the distance accepted at least.
    own_distance = float(best_distance([reference.speech], match_features(own))[0])
    other_distance = float(best_distance([reference.speech], match_features(different))[0])
    tight = dataclasses.replace(keyword, take_spread=own_distance / 2)
    assert not KeywordMatcher([tight], 0.5, take_match_spread=8.0).score(window, (), own).hits[0]
    floored = KeywordMatcher(
        [tight], 0.5, take_match_spread=8.0, take_match_floor=(own_distance + other_distance) / 2
    )
    assert floored.score(window, (), own).hits[0] and not floored.score(window, (), different).hits[0]


def test_detector_finds_a_vetoed_keyword_again_by_its_takes(
    random_model_path: Path, keyword_stream: KeywordStream
) -> None:
    """End to end on the streaming detector: a keyword whose look-alike vetoes every copy of it is found again
    when its takes are the same clip (the user saying their own word)."""
    encoder = load_model(random_model_path)
    clip = cut_take(load_audio(keyword_stream.keyword_clip), encoder.window_samples, None, "take").centred
    # three takes: the clip as recorded, a little slower and a little faster
    takes = [clip, *speed_perturbed(clip, (0.95, 1.05))]
    cuts = [cut_take(take, encoder.window_samples, None, "take") for take in takes]
    embeddings = encoder.embed_windows(np.stack([c.centred for c in cuts]))
    audio = load_audio(keyword_stream.path)
    # A threshold between the keyword's peaks and everything else's, for this (random) encoder.
    probe = make_template("happy", cuts, embeddings, encoder, threshold=1.0)
    scored: list[WindowResult] = []
    Detector(encoder, [probe], DetectorConfig(), on_window=scored.append).push(audio)
    peak = {w.end_sample: float(w.scores.scores[0]) for w in scored if w.scores is not None}

    def highest(start: float, end: float) -> float:
        return max(v for e, v in peak.items() if start < e / 16000 <= end + 1.5)

    lowest_keyword = min(highest(a, b) for a, b in keyword_stream.keyword_times)
    elsewhere = max(
        v
        for e, v in peak.items()
        if not any(a < e / 16000 <= b + 1.5 for a, b in keyword_stream.keyword_times)
    )
    assert lowest_keyword > elsewhere + 0.02, (lowest_keyword, elsewhere)
    threshold = (lowest_keyword + elsewhere) / 2
    template = make_template("happy", cuts, embeddings, encoder, threshold=threshold)
    assert len(template.take_speech) == 3 and template.take_spread is not None

    looks_taken: list[int] = []

    def found(keyword: Template, spread: float) -> tuple[list[float], list[WindowResult]]:
        windows: list[WindowResult] = []
        detector = Detector(
            encoder, [keyword], DetectorConfig(take_match_spread=spread), on_window=windows.append
        )
        follows_take = detector.matcher.follows_take

        def counted(k: int, window: np.ndarray) -> bool:
            looks_taken.append(k)
            return follows_take(k, window)

        detector.matcher.follows_take = counted  # type: ignore[method-assign]
        times = [
            d.time_s for at in range(0, audio.shape[0], 1600) for d in detector.push(audio[at : at + 1600])
        ]
        return times, windows

    plain, windows = found(template, 0.0)
    assert len(plain) == len(keyword_stream.keyword_times), plain
    # Look-alikes that are the keyword's own windows: each resembles itself more than the keyword does.
    hits = [w.embedding for w in windows if w.scores is not None and w.scores.scores[0] >= threshold]
    vetoed = template
    for embedding in hits:
        vetoed = vetoed.with_negative(embedding)
    assert not found(vetoed, 0.0)[0]
    again, looked_at = found(vetoed, 8.0)
    assert len(again) == len(keyword_stream.keyword_times), (again, template.take_spread)
    # The looks wait for the trigger: fewer than the vetoed windows, at least the 4 of 5 each detection needs.
    undecided = sum(1 for w in looked_at if w.scores is not None and w.scores.undecided)
    assert 4 * len(again) <= len(looks_taken) < undecided, (len(looks_taken), undecided)
    for (start, end), t in zip(keyword_stream.keyword_times, again, strict=True):
        assert start < t <= end + 1.5


def test_bench_looks_only_where_the_trigger_could_fire() -> None:
    reached = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    inside = may_trigger(reached, 4, 5)
    # windows 1-5 hold four reached windows within five; the lone one at 8 cannot fire
    assert inside.tolist() == [False, True, True, True, True, True, False, False, False, False, False, False]
    assert may_trigger(reached, 1, 1).tolist() == reached.tolist()


@pytest.mark.parametrize(("spread", "limit", "on"), [(4.0, 8.0, True), (9.0, 8.0, False), (4.0, 0.0, False)])
def test_resolver_and_enrollment_report_say_whether_the_second_look_is_on(
    spread: float, limit: float, on: bool
) -> None:
    template = Template("lamp", np.ones(4), "s", "f", take_speech=(np.zeros((6, 13)),), take_spread=spread)
    resolved = KeywordResolver(DetectorConfig(take_match_spread=limit), None).resolve_one(template)
    assert resolved.second_look is on and resolved.as_event()["second_look"] is on
    report = enrollment_report(resolved)
    assert (f"second look on: the takes agree closely ({spread:.1f})" in report) is on
    assert ("follows one of them within 7.0" in report) is on  # the floor (7) over a spread of 4
    assert (f"second look off: the takes' spread {spread:.1f}" in report) is not on
    older = KeywordResolver(DetectorConfig(), None).resolve_one(Template("old", np.ones(4), "s", "f"))
    assert not older.second_look and "second look" not in enrollment_report(older)
