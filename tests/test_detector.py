"""edge.detector: smoothing, refractory and matching on synthetic scores; the streaming detector on real audio."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from edge.commands import take_from_audio
from edge.config import DetectorConfig
from edge.detector import Detector, KeywordMatcher, TriggerSmoother, WindowResult
from edge.frontend import mfcc
from edge.model import load_model
from edge.templates import Template
from tests.edge_fixtures import KeywordStream, keyword_stream, random_model_path  # noqa: F401

HOP = 1600  # 100 ms of samples


def _fire_times(scores: list[float], threshold: float, level: int, window: int, refractory: int) -> list[int]:
    smoother = TriggerSmoother(level, window, refractory)
    return [i for i, s in enumerate(scores) if smoother.update(s >= threshold, (i + 1) * HOP)]


def test_trigger_level_needs_enough_hits_among_last_windows() -> None:
    # A single spike never fires with 2-of-3; two hits within three windows do.
    assert _fire_times([0, 0.9, 0, 0, 0.9, 0, 0, 0], 0.8, 2, 3, 0) == []
    assert _fire_times([0, 0.9, 0, 0.9, 0, 0], 0.8, 2, 3, 0) == [3]
    assert _fire_times([0, 0.9, 0.9, 0.9, 0.9, 0.9], 0.8, 3, 3, 0) == [3]
    assert _fire_times([0.9, 0, 0], 0.8, 1, 1, 0) == [0]


def test_refractory_period_on_the_sample_clock() -> None:
    scores = [0.9] * 30
    # 2-of-2, refractory 1 s = 10 windows: fires at 1, then silent while t < fire + 16000, re-arms.
    times = _fire_times(scores, 0.5, 2, 2, 16000)
    assert times == [1, 12, 23]
    assert _fire_times(scores, 0.5, 2, 2, 0) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29]


@pytest.mark.parametrize(("level", "window", "refractory"), [(4, 5, 0), (4, 5, 8000), (2, 3, 0), (1, 1, 0)])
def test_undecided_evaluations_fire_as_if_every_look_were_taken_and_are_looked_at_only_when_needed(
    level: int, window: int, refractory: int
) -> None:
    """A second look the smoother holds back changes no detection, is taken at most once, and only where the
    evaluation could fire counting it."""
    rng = np.random.default_rng(level * 100 + window + refractory)
    # each evaluation: 0 miss, 1 hit, 2 vetoed and the look says yes, 3 vetoed and it says no
    kinds = rng.choice(4, size=3000, p=[0.55, 0.15, 0.15, 0.15])
    eager = TriggerSmoother(level, window, refractory)
    lazy = TriggerSmoother(level, window, refractory)
    taken: list[int] = []

    def look(i: int) -> bool:
        taken.append(i)
        return bool(kinds[i] == 2)

    eager_fires, lazy_fires = [], []
    for i, kind in enumerate(kinds):
        time = (i + 1) * HOP
        if eager.update(kind in (1, 2), time):
            eager_fires.append(i)
        if lazy.update(kind == 1, time, (lambda i=i: look(i)) if kind >= 2 else None):
            lazy_fires.append(i)
    assert eager_fires and lazy_fires == eager_fires
    assert len(taken) == len(set(taken))  # each look at most once
    undecided = int(np.sum(kinds >= 2))
    if level > 1:
        assert len(taken) < undecided  # lone vetoed peaks are never looked at
    for i in taken:  # a look is taken only where `level` hits or undecided ones lay within `window`
        recent = kinds[max(0, i - window + 1) : i + window]
        assert np.sum(recent > 0) >= level


def test_smoother_validates() -> None:
    with pytest.raises(ValueError):
        TriggerSmoother(3, 2, 0)


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_matcher_thresholds_per_keyword_and_negative_veto() -> None:
    lamp = Template("lamp", _unit([1, 0, 0]), "s", "f", threshold=0.9)
    door = Template("door", _unit([0, 1, 0]), "s", "f")  # default threshold
    matcher = KeywordMatcher([lamp, door], default_threshold=0.5)
    result = matcher.score(_unit([1, 0.8, 0]))
    np.testing.assert_allclose(result.scores, [0.781, 0.625], atol=1e-3)
    assert result.hits.tolist() == [False, True]
    # A negative template closer to the window than the keyword vetoes it; a farther one does not.
    door_vetoed = door.with_negative(_unit([0.6, 1, 0]))
    result = KeywordMatcher([lamp, door_vetoed], 0.5).score(_unit([1, 0.8, 0]))
    assert result.negative_scores[1] > result.scores[1] and result.hits.tolist() == [False, False]
    door_far = door.with_negative(_unit([0, 0, 1]))
    assert KeywordMatcher([lamp, door_far], 0.5).score(_unit([1, 0.8, 0])).hits.tolist() == [False, True]
    # With a veto margin, a negative must beat the keyword by more than the margin.
    excess = float(result.negative_scores[1] - result.scores[1])
    assert 0.0 < excess < 0.5
    spared = KeywordMatcher([lamp, door_vetoed], 0.5, veto_margin=excess + 0.01).score(_unit([1, 0.8, 0]))
    assert spared.hits.tolist() == [False, True]
    still = KeywordMatcher([lamp, door_vetoed], 0.5, veto_margin=excess - 0.01).score(_unit([1, 0.8, 0]))
    assert still.hits.tolist() == [False, False]


@pytest.fixture(scope="module")
def stream_setup(
    random_model_path: Path, keyword_stream: KeywordStream
) -> tuple[object, Template, np.ndarray]:
    encoder = load_model(random_model_path)
    take = take_from_audio(load_audio(keyword_stream.keyword_clip), encoder.window_samples, None, "take")
    template = Template.from_takes(
        "happy",
        encoder.embed_windows(take[None]),
        encoder.sha256,
        encoder.frontend_fingerprint,
        threshold=0.9,
    )
    return encoder, template, load_audio(keyword_stream.path)


def _run(
    encoder: object, templates: list[Template], audio: np.ndarray, chunk: int, **settings: object
) -> tuple:
    windows: list[WindowResult] = []
    detector = Detector(encoder, templates, DetectorConfig(**settings), on_window=windows.append)  # type: ignore[arg-type]
    detections = []
    for start in range(0, audio.shape[0], chunk):
        detections.extend(detector.push(audio[start : start + chunk]))
    return detections, windows, detector


def test_detects_keyword_copies_at_the_right_times(
    stream_setup: tuple, keyword_stream: KeywordStream
) -> None:
    encoder, template, audio = stream_setup
    detections, windows, detector = _run(encoder, [template], audio, 1600)
    times = [d.time_s for d in detections]
    assert len(times) == 3, times
    for (start, end), t in zip(keyword_stream.keyword_times, times, strict=True):
        assert start < t <= end + 1.5  # the window that fired holds (part of) the keyword
    for d in detections:
        assert d.end_sample - d.start_sample == 24000 and d.audio.shape == (24000,)
    # Windows every 100 ms on the sample clock, the first ending at 1.5 s.
    ends = [w.end_sample for w in windows]
    assert ends[0] == 24000 and set(np.diff(ends)) == {1600}
    assert detector.windows_gated > 0  # digital silence between the words is skipped


def test_chunking_does_not_change_detections(stream_setup: tuple) -> None:
    encoder, template, audio = stream_setup
    reference, _, _ = _run(encoder, [template], audio, 1600)
    for chunk in (160, 999, 4800):
        detections, _, _ = _run(encoder, [template], audio, chunk)
        assert [(d.end_sample, round(d.score, 5)) for d in detections] == [
            (d.end_sample, round(d.score, 5)) for d in reference
        ]


def test_gate_off_scores_every_window_and_embeddings_match_batch(stream_setup: tuple) -> None:
    encoder, template, audio = stream_setup
    _, windows, detector = _run(encoder, [template], audio, 2000, gate=False)
    assert detector.windows_gated == 0 and all(w.embedding is not None for w in windows)
    picked = windows[::37]
    batch = encoder.embed_windows(np.stack([audio[w.start_sample : w.end_sample] for w in picked]))
    streamed = np.stack([w.embedding for w in picked])
    np.testing.assert_allclose(streamed, batch, atol=2e-3)
    assert mfcc(audio[:24000]).shape == (148, 40)


def test_negative_template_vetoes_a_false_trigger(stream_setup: tuple, keyword_stream: KeywordStream) -> None:
    encoder, template, audio = stream_setup
    loose = Template(
        "happy", template.embedding, template.model_sha256, template.frontend_fingerprint, threshold=0.55
    )
    detections, _, _ = _run(encoder, [loose], audio, 1600)
    other_start, other_end = keyword_stream.other_times[1]
    false = [d for d in detections if other_start < d.time_s <= other_end + 1.0]
    assert false, "the loose threshold should fire on the other word too"
    marked = loose.with_negative(encoder.embed_windows(false[0].audio[None])[0])
    after, _, _ = _run(encoder, [marked], audio, 1600)
    assert not [d for d in after if other_start < d.time_s <= other_end + 1.0]
    for start, end in keyword_stream.keyword_times:  # the keyword itself still fires
        assert [d for d in after if start < d.time_s <= end + 1.5]


def test_several_keywords_and_reload_keep_state(stream_setup: tuple) -> None:
    encoder, template, audio = stream_setup
    other = Template("other", -template.embedding, template.model_sha256, template.frontend_fingerprint)
    detections, _, detector = _run(encoder, [template, other], audio, 1600)
    assert {d.keyword for d in detections} == {"happy"} and len(detections) == 3
    detector.set_templates([other])
    assert detector.matcher.names == ["other"]


def test_threshold_report_meets_the_macro_false_alarm_target() -> None:
    from edge.threshold import Trials, report

    rng = np.random.default_rng(0)
    # Corpus "a" has 20x the trials of "b" and is easier; the macro average weighs both the same.
    target = np.concatenate([rng.normal(0.8, 0.1, 1000), rng.normal(0.7, 0.1, 50)]).astype(np.float32)
    nontarget = np.concatenate([rng.normal(0.1, 0.15, 20000), rng.normal(0.4, 0.15, 1000)]).astype(np.float32)
    trials = Trials(
        target, np.array(["a"] * 1000 + ["b"] * 50), nontarget, np.array(["a"] * 20000 + ["b"] * 1000)
    )
    result = report(trials, 0.01)
    far_a = np.mean(nontarget[:20000] >= result.threshold)
    far_b = np.mean(nontarget[20000:] >= result.threshold)
    assert (
        (far_a + far_b) / 2
        <= 0.01
        < (
            np.mean(nontarget[:20000] >= result.threshold - 0.005)
            + np.mean(nontarget[20000:] >= result.threshold - 0.005)
        )
        / 2
    )
    assert result.per_corpus["b"]["false_alarm_rate"] == pytest.approx(far_b, abs=1e-6)
    assert 0.0 < result.equal_error_rate < 0.2 and result.threshold > result.equal_error_threshold
    with pytest.raises(ValueError, match="no target trials"):
        report(Trials(target[:0], np.array([]), nontarget, np.array(["a"] * nontarget.size)), 0.01)


def test_measure_scores_uses_held_out_training_speakers_only(
    random_model_path: Path, kws_data_dir: Path, tmp_path: Path
) -> None:
    import csv

    from edge.threshold import measure_scores

    with open(kws_data_dir / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    fsdd = [r for r in rows if r["dataset"] == "fsdd" and r["split"] == "test"]
    speakers = sorted({r["speaker"] for r in fsdd})[:2]
    picked = [r for r in fsdd if r["speaker"] in speakers and r["word"] in ("one", "two")]
    gsc = [r for r in rows if r["dataset"] == "gsc_v1_words" and r["split"] == "validation"]
    picked += [r for r in gsc if r["word"] == "happy"][:3] + [r for r in gsc if r["word"] == "bed"][:2]
    trap = next(r for r in rows if r["dataset"] == "gsc_v2_test")  # must never be read
    trainset = next(r for r in rows if r["dataset"] == "fsdd" and r["split"] == "train")
    for row in [*picked, trainset]:
        (tmp_path / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / row["path"]).symlink_to(kws_data_dir / row["path"])
    (tmp_path / trap["path"]).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / trap["path"]).write_bytes(b"not audio: reading it would fail")
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*picked, trainset, trap])
    encoder = load_model(random_model_path)
    listed = {r["path"] for r in picked}
    trials = measure_scores(encoder, tmp_path, enroll_takes=2, noise_windows=0, clips=listed)
    # fsdd: 2 speakers x 2 digits x (5 - 2) same-speaker targets; each template against the other digit's 10
    # takes. gsc_v1_words has one take per speaker: its "happy" template is made across speakers (2 of them),
    # the third speaker's take is the target, the 2 "bed" takes are non-targets.
    assert int((trials.target_corpus == "fsdd").sum()) == 12
    assert int((trials.nontarget_corpus == "fsdd").sum()) == 40
    assert int((trials.target_corpus == "gsc_v1_words").sum()) == 1
    assert int((trials.nontarget_corpus == "gsc_v1_words").sum()) == 2
    assert np.all(np.abs(trials.target) <= 1.0001)
    # Without a list: the manifest's fsdd test part only (never the train row, never gsc_v2_test).
    default = measure_scores(encoder, tmp_path, enroll_takes=2, noise_windows=0)
    assert set(default.target_corpus.tolist()) == {"fsdd"} and default.target.shape == (12,)


def test_matcher_vetoes_with_each_keywords_own_negatives() -> None:
    """All negatives are scored in one product; each keyword is still vetoed by its own negatives only."""
    rng = np.random.default_rng(11)

    def units(count: int) -> np.ndarray:
        x = rng.normal(size=(count, 8)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    counts = [0, 3, 0, 1, 5]
    templates = [
        Template(
            f"k{i}", units(1)[0], "a" * 64, "f", threshold=-1.0, negatives=units(n) if n else np.zeros((0, 8))
        )
        for i, n in enumerate(counts)
    ]
    matcher = KeywordMatcher(templates, 0.5)
    for embedding in units(50):
        result = matcher.score(embedding)
        for k, template in enumerate(templates):
            expected = float(np.max(template.negatives @ embedding)) if counts[k] else -np.inf
            assert result.negative_scores[k] == pytest.approx(expected, abs=1e-6)
            assert result.hits[k] == (not expected > result.scores[k])
