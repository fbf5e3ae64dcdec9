"""The false-alarm budget: cohort files, the detector's rule on stored scores, thresholds from a budget, and the
resolver that turns stored keywords into the detector's."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.budget import (
    MAX_THRESHOLD,
    MIN_THRESHOLD,
    TailModel,
    budget_for_template,
    hard_negatives,
    prune_lookalikes,
    trigger_peaks,
    trigger_scores,
)
from edge.cohort import Cohort, CohortError, cohort_path_for
from edge.config import Config, DetectorConfig
from edge.detector import TriggerSmoother
from edge.resolver import KeywordResolver
from edge.templates import Template

SHA = "a" * 64
FP = "0a7aa6b892d8a6c0"
DIM = 16


def _units(rng: np.random.Generator, count: int, dim: int = DIM) -> np.ndarray:
    x = rng.normal(size=(count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cohort(rng: np.random.Generator, windows: int = 6000, streams: int = 6) -> Cohort:
    starts = np.arange(streams) * (windows // streams)
    return Cohort.from_float(_units(rng, windows), starts, 100, SHA, {"sources": ["test"]})


def test_cohort_round_trip_and_refusals(tmp_path: Path) -> None:
    cohort = _cohort(np.random.default_rng(0))
    path = tmp_path / "m.cohort.npz"
    cohort.save(path)
    loaded = Cohort.load(path, SHA)
    assert np.array_equal(loaded.embeddings, cohort.embeddings)
    assert loaded.hours == pytest.approx(6000 * 0.1 / 3600)
    with pytest.raises(CohortError, match="running model is bbbb"):
        Cohort.load(path, "b" * 64)
    with pytest.raises(CohortError, match="no such cohort file"):
        Cohort.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CohortError, match=r"bad.npz: unreadable cohort file"):
        Cohort.load(tmp_path / "bad.npz")
    with pytest.raises(CohortError, match="segment_starts"):
        Cohort.from_float(_units(np.random.default_rng(1), 10), [3, 5], 100, SHA)
    assert cohort_path_for("build/udkws_int8.tflite") == Path("build/udkws_int8.cohort.npz")


def test_stored_vectors_score_like_the_floats() -> None:
    rng = np.random.default_rng(2)
    floats = _units(rng, 500)
    cohort = Cohort.from_float(floats, [0], 100, SHA)
    template = _units(rng, 1)[0]
    assert np.max(np.abs(cohort.scores(template) - floats @ template)) < 0.01
    assert np.allclose(np.linalg.norm(cohort.rows([0, 7]), axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("level", "window"), [(2, 3), (1, 1), (3, 5)])
def test_trigger_scores_are_the_detectors_hit_rule(level: int, window: int) -> None:
    """A window's trigger score reaches t exactly when it is a hit and `level` of the last `window` are."""
    rng = np.random.default_rng(level * 10 + window)
    scores = rng.uniform(0, 1, 400).astype(np.float32)
    starts = np.array([0, 150], dtype=np.int64)
    trigger = trigger_scores(scores, starts, level, window)
    for t in (0.3, 0.6, 0.9):
        hits = scores >= t
        for i in range(scores.shape[0]):
            first = 150 if i >= 150 else 0
            recent = hits[max(first, i - window + 1) : i + 1]
            assert (trigger[i] >= t) == (hits[i] and recent.sum() >= level), (t, i)


def test_peaks_count_the_smoothers_alarms_on_separate_bumps() -> None:
    """Bumps further apart than the refractory period: the smoother fires once per bump above t, the peak list
    holds one value per bump."""
    scores = np.full(3000, 0.1, dtype=np.float32)
    heights = np.linspace(0.5, 0.95, 12)
    for k, height in enumerate(heights):
        scores[100 + 240 * k : 105 + 240 * k] = height
    trigger = trigger_scores(scores, np.array([0]), 2, 3)
    peaks, windows = trigger_peaks(trigger, np.array([0]), 15)
    for t in (0.55, 0.7, 0.9):
        smoother = TriggerSmoother(2, 3, 15)
        fired = sum(smoother.update(bool(s >= t), i) for i, s in enumerate(scores))
        assert fired == int(np.sum(peaks >= t)), t
    assert np.all(np.diff(peaks) <= 0) and np.all(scores[windows[:12]] >= 0.5)


def test_threshold_keeps_the_budget_on_an_independent_cohort() -> None:
    """Calibrated on one cohort, the false alarms on another of the same kind stay near the budget."""
    rng = np.random.default_rng(3)
    template = _units(rng, 1)[0]
    made, fresh = _cohort(rng, 36000), _cohort(rng, 36000)  # one hour each
    for per_hour in (2.0, 10.0):
        budget = budget_for_template(template, made, per_hour, 2, 3, 15)
        trigger = trigger_scores(fresh.scores(template), fresh.segment_starts, 2, 3)
        peaks, _ = trigger_peaks(trigger, fresh.segment_starts, 15)
        measured = np.sum(peaks >= budget.threshold) / fresh.hours
        assert per_hour / 4 <= measured <= per_hour * 2.5, (per_hour, measured)
        assert budget.expected_per_hour <= per_hour * 1.01


def test_tail_model_is_consistent_with_itself() -> None:
    peaks = np.sort(np.random.default_rng(4).gumbel(0.4, 0.03, 300).astype(np.float32))[::-1]
    tail = TailModel(peaks, hours=2.0)
    for per_hour in (0.1, 0.5, 1.0, 5.0, 20.0):
        threshold = tail.threshold(per_hour)
        assert tail.rate(threshold) <= per_hour * 1.01, per_hour
        assert tail.rate(threshold - 0.02) > per_hour * 0.99 or threshold - 0.02 < peaks[-1], per_hour


def test_budget_limits_and_the_warning() -> None:
    rng = np.random.default_rng(5)
    cohort = _cohort(rng)
    template = _units(rng, 1)[0]
    budget = budget_for_template(template, cohort, 0.5, 2, 3, 15)
    assert MIN_THRESHOLD <= budget.threshold <= MAX_THRESHOLD
    assert budget.warning is None and budget.take_scores == ()
    # Takes that barely resemble each other: keeping them would cost far more than the budget.
    loose = _units(rng, 3)
    warned = budget_for_template(loose.mean(0) / np.linalg.norm(loose.mean(0)), cohort, 0.5, 2, 3, 15, loose)
    assert warned.warning is not None and "false alarms an hour" in warned.warning
    assert warned.per_hour_at_takes > 1.0 and len(warned.take_scores) == 3


def test_hard_negatives_are_the_cohorts_closest_events_and_veto_them() -> None:
    rng = np.random.default_rng(6)
    pool = _cohort(rng)
    template = _units(rng, 1)[0]
    found = hard_negatives(template, pool, 10, 2, 3, 15)
    assert found.shape == (10, DIM)
    scores = found @ template
    assert scores.min() >= np.sort(pool.scores(template))[-200]  # from the top of the pool
    plain = budget_for_template(template, pool, 5.0, 2, 3, 15)
    vetoed = budget_for_template(template, pool, 5.0, 2, 3, 15, negatives=found)
    assert vetoed.threshold < plain.threshold  # the look-alikes no longer count as alarms
    # A veto margin vetoes fewer windows: the threshold climbs back; past every excess, as without negatives.
    thresholds = [
        budget_for_template(template, pool, 5.0, 2, 3, 15, negatives=found, veto_margin=m).threshold
        for m in (0.0, 0.05, 0.2, 1.0)
    ]
    assert thresholds == sorted(thresholds) and thresholds[0] == vetoed.threshold
    assert thresholds[-1] == plain.threshold


def _template(rng: np.random.Generator, name: str, **extra: object) -> Template:
    takes = _units(rng, 3) * 0.3 + _units(rng, 1)
    return Template.from_takes(name, takes, SHA, FP, **extra)  # type: ignore[arg-type]


def test_resolver_thresholds_by_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    _cohort(rng, 24000).save(cohort_path_for(model))  # enough alarms in its first half for every look-alike
    config = Config()
    resolver = KeywordResolver.for_model(config, model, SHA)
    own = _template(rng, "own", threshold=0.8)
    budgeted = _template(rng, "budgeted", negatives=_units(rng, 2))
    first = resolver.resolve([own, budgeted])
    assert [r.threshold_source for r in first] == ["keyword", "budget"]
    assert first[0].template.threshold == 0.8
    assert first[1].template.negatives.shape[0] == 2 + config.detector.hard_negatives
    assert first[1].budget is not None and first[1].template.threshold == first[1].budget.threshold
    event = first[1].as_event()
    assert event["threshold_source"] == "budget" and "expected_false_alarms_per_hour" in event
    assert resolver.resolve([own, budgeted])[1] is first[1]  # cached: nothing recomputed
    twin = replace(budgeted, name="twin")  # enrolled from the same takes: still its own keyword
    assert [r.template.name for r in resolver.resolve([budgeted, twin])] == ["budgeted", "twin"]
    # Another model's cohort, or none: every keyword falls back to detector.threshold, said once in the log.
    with caplog.at_level(logging.WARNING):
        other = KeywordResolver.for_model(config, model, "c" * 64)
    assert "running model is cccc" in caplog.text
    assert other.resolve([budgeted])[0].threshold_source == "default"
    assert other.resolve([budgeted])[0].template.threshold == config.detector.threshold
    off = Config(detector=DetectorConfig(false_alarms_per_hour=0.0, hard_negatives=0))
    assert KeywordResolver.for_model(off, model, SHA).cohort_hours == 0.0


def test_template_keeps_takes_and_pools_variants() -> None:
    rng = np.random.default_rng(8)
    takes, variants = _units(rng, 3), _units(rng, 6)
    template = Template.from_takes("lamp", takes, SHA, FP, variants=variants)
    expected = np.concatenate([takes, variants]).mean(0)
    assert np.allclose(template.embedding, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(template.take_embeddings, takes, atol=1e-6)
    again = Template.from_json(json.loads(json.dumps(template.to_json())), "lamp.json")
    assert np.allclose(again.take_embeddings, takes, atol=1e-6)


def test_the_shipped_cohort_belongs_to_the_shipped_model() -> None:
    """`make convert` publishes the committed cohort beside the int8 model it was made with."""
    repo = Path(__file__).resolve().parents[1]
    model = repo / "build" / "udkws_int8.tflite"
    shipped = repo / "training" / "shipped" / "udkws_int8.cohort.npz"
    if not model.is_file():
        pytest.skip("build/udkws_int8.tflite is not built (make test builds it first)")
    from edge.model import file_sha256

    cohort = Cohort.load(shipped, file_sha256(model))
    assert cohort.hours > 2.0 and cohort.hop_ms == DetectorConfig().hop_ms
    assert all("test" not in source["source"] for source in cohort.meta["sources"])
    published = Cohort.load(cohort_path_for(model), file_sha256(model))
    assert np.array_equal(published.embeddings, cohort.embeddings)


def test_look_alikes_like_the_users_own_takes_are_pruned() -> None:
    rng = np.random.default_rng(11)
    word = _units(rng, 1)[0]
    takes = word + 0.25 * _units(rng, 3)
    takes /= np.linalg.norm(takes, axis=1, keepdims=True)
    near = takes[0] + 0.05 * _units(rng, 1)[0]  # how the user says it: closer to a take than the takes agree
    far = _units(rng, 1)[0]
    found = np.stack([near / np.linalg.norm(near), far]).astype(np.float32)
    loo = np.array(
        [
            takes[i] @ np.delete(takes, i, 0).mean(0) / np.linalg.norm(np.delete(takes, i, 0).mean(0))
            for i in range(3)
        ]
    )
    assert float(found[0] @ takes[0]) > max(float(loo[0]), 0.7) and float(np.max(found[1] @ takes.T)) < 0.7
    np.testing.assert_array_equal(prune_lookalikes(found, takes, 0.7), found[1:])
    np.testing.assert_array_equal(prune_lookalikes(found, takes, 1.0), found)  # 1: never prune
    np.testing.assert_array_equal(
        prune_lookalikes(found, takes[:1], 0.0), found
    )  # one take: no agreement to judge
    np.testing.assert_array_equal(prune_lookalikes(found, takes, float(found[0] @ takes[0]) + 0.01), found)


def test_resolver_prunes_by_the_configured_floor(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    template = _template(rng, "budgeted")
    rows = _units(rng, 24000)
    for index in range(100, 2000, 200):  # moments of the first streams that sound like the user's first take
        near = template.take_embeddings[0] + 0.03 * _units(rng, 1)[0]
        rows[index : index + 4] = near / np.linalg.norm(near)
    cohort = Cohort.from_float(rows, np.arange(6) * 4000, 100, SHA, {"sources": ["test"]})
    cohort.save(cohort_path_for(model))
    counts = []
    for floor in (1.0, 0.0):
        config = Config(detector=DetectorConfig(lookalike_prune_floor=floor))
        resolved = KeywordResolver.for_model(config, model, SHA).resolve([template])[0]
        counts.append(resolved.template.negatives.shape[0])
    found = hard_negatives(template.embedding, cohort.halves()[0], 100, 4, 5, 15)
    expected = prune_lookalikes(found, template.take_embeddings, 0.0).shape[0]
    assert counts == [100, expected] and expected < 100
