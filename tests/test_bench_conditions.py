"""The benchmark's conditions: the fast decision replay, own-voice scoring, the condition streams and enrollments,
the long-form negatives, and the experiment harness end to end on a tiny scale with a random model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edge.audio import load_audio
from edge.config import DetectorConfig
from edge.detector import TriggerSmoother
from tests.data_fixtures import chord_tracks, kaldi_corpus
from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)
from training.bench.condition_streams import ConditionsConfig, household3_enrollment, own_voice_picks
from training.bench.longform import (
    ensure_music_stream,
    ensure_speech_stream,
    holds_keyword,
    speech_utterances,
)
from training.bench.streaming import Event, WindowScores, decide, score_events
from training.bench.streams import StreamConfig, ensure_stream, manifest_rows


def _reference_decide(
    scores: np.ndarray,
    ends: np.ndarray,
    thresholds: np.ndarray,
    settings: DetectorConfig,
    groups: list[list[int]],
) -> list[tuple[int, int]]:
    """The detector's rule, window by window, with its own TriggerSmoother: (window, keyword) detections."""
    refractory = settings.refractory_ms * 16000 // 1000
    smoothers = [
        TriggerSmoother(settings.trigger_level, settings.trigger_window, refractory)
        for _ in range(scores.shape[1])
    ]
    found = []
    for w in range(scores.shape[0]):
        fired = [
            k
            for k in range(scores.shape[1])
            if smoothers[k].update(bool(scores[w, k] >= thresholds[k]), int(ends[w]))
        ]
        for group in groups:
            mine = [k for k in fired if k in group]
            if mine:
                found.append((w, max(mine, key=lambda k: float(scores[w, k]) - float(thresholds[k]))))
    return sorted(found)


@pytest.mark.parametrize(
    ("level", "window", "refractory_ms"), [(2, 3, 1500), (1, 1, 0), (3, 5, 300), (2, 4, 100), (3, 3, 0)]
)
def test_fast_decisions_equal_the_trigger_smoother(level: int, window: int, refractory_ms: int) -> None:
    rng = np.random.default_rng(level * 100 + window + refractory_ms)
    settings = DetectorConfig(trigger_level=level, trigger_window=window, refractory_ms=refractory_ms)
    for trial in range(20):
        count, keywords = 400, 4
        # Smooth random scores (hits come in runs, as over a spoken word), some gated windows, some ties.
        scores = np.cumsum(rng.normal(0, 0.15, (count, keywords)), axis=0).astype(np.float32)
        scores = np.tanh(scores - scores.mean(axis=0)).astype(np.float32)
        scores[rng.random(count) < 0.05] = -np.inf
        scores[::37, 1] = scores[::37, 0]
        ends = 24000 + 1600 * np.arange(count, dtype=np.int64)
        thresholds = rng.uniform(0.0, 0.6, keywords).astype(np.float32)
        groups = [[0, 1, 2, 3]] if trial % 2 else [[0, 2], [1, 3]]
        windows = WindowScores("test", ["a", "b", "c", "d"], ends, scores, ~np.isfinite(scores[:, 0]))
        fast = [(round(e.time_s * 16000), e.keyword) for e in decide(windows, thresholds, settings, groups)]
        reference = _reference_decide(scores, ends, thresholds, settings, groups)
        assert fast == [(int(ends[w]), "abcd"[k]) for w, k in reference]


def _item(word: str, keyword: str, start: float) -> dict[str, object]:
    return {
        "word": word, "kind": "keyword", "keyword": keyword, "path": f"{keyword}.flac", "speaker": keyword[-1],
        "snr_db": None, "start_s": start, "end_s": start + 0.5, "clip_start_s": start - 0.2, "clip_end_s": start + 0.8,
    }  # fmt: skip


def test_own_voice_scoring_leaves_other_speakers_takes_neutral() -> None:
    truth = [_item("yes", "yes.a", 10.0), _item("yes", "yes.b", 20.0), _item("no", "no.a", 30.0)]
    events = [
        Event("yes.a", 10.8, 0.9),
        Event("yes.a", 20.8, 0.9),
        Event("yes.a", 30.8, 0.9),
        Event("yes.b", 40.0, 0.9),
    ]
    words = {"yes.a": "yes", "yes.b": "yes", "no.a": "no"}
    scores = score_events(events, truth, list(words), 3600.0, words=words)
    assert scores.per_keyword["yes.a"] == {
        "targets": 1,
        "hits": 1,
        "frr": 0.0,
        "false_accepts": 1,
        "fa_per_hour": 1.0,
    }
    assert scores.neutral_detections == 1  # yes.a on b's "yes"
    assert scores.per_keyword["yes.b"]["hits"] == 0 and scores.per_keyword["yes.b"]["false_accepts"] == 1
    assert scores.misses == 2 and scores.false_accepts == 2


def test_own_voice_picks_enroll_the_first_takes_and_stream_the_rest(kws_data_dir: Path) -> None:
    rows = manifest_rows(kws_data_dir)
    picks = own_voice_picks(rows, ConditionsConfig(), np.random.default_rng(0))
    assert len(picks["enrollment"]) == 495  # every (speaker, command word) pair with 4+ takes of gsc_v2_test
    keyword_items = [i for i in picks["items"] if i["kind"] == "keyword"]
    assert len(keyword_items) == 915 and len({i["path"] for i in picks["items"]}) == len(picks["items"])
    enrolled = {t["path"] for takes in picks["enrollment"].values() for t in takes}
    assert not enrolled & {i["path"] for i in picks["items"]}
    takes = {
        r["path"]: int(r["take"].split(".")[0]) for r in rows if r["dataset"] == "gsc_v2_test" and r["take"]
    }
    for item in keyword_items:
        own = picks["enrollment"][item["keyword"]]
        assert item["keyword"] == f"{item['word']}.{item['speaker']}" and {t["speaker"] for t in own} == {
            item["speaker"]
        }
        assert max(takes[t["path"]] for t in own) < takes[item["path"]]
    assert sorted(n for g in picks["groups"] for n in g) == sorted(picks["enrollment"])
    assert all(len({n.split(".")[1] for n in g}) == 1 for g in picks["groups"])


def test_household3_enrolls_three_free_speakers(kws_data_dir: Path, tmp_path: Path) -> None:
    tiny = StreamConfig(
        keywords=("yes", "no"), occurrences_per_level=1, unknown_clips=2, silence_clips=1, target_seconds=30.0
    )
    household = ensure_stream(kws_data_dir, tiny, tmp_path)
    spec = household3_enrollment(manifest_rows(kws_data_dir), household, ConditionsConfig())
    for word, takes in spec.items():
        speakers = [t["speaker"] for t in takes]
        busy = {e["speaker"] for e in household.events("keyword") if e["word"] == word}
        busy.add(household.truth["enrollment"][word][0]["speaker"])
        assert len(set(speakers)) == 3 and not set(speakers) & busy
        assert all(f"/{word}/" in t["path"] for t in takes)


def _kaldi_corpus(data_dir: Path, root: Path) -> Path:
    """A tiny Kaldi-style corpus of real clips: test/{text,wav.scp,utt2spk}, WAVE/SPEAKERnnnn/*.WAV."""
    texts = ["THE CAT IS GOING HOME", "NOBODY CAME", "I WENT DOWNSTAIRS", "A NOTE FOR YOU", "THE BIRD SANG",
             "WE KNOW IT", "HAPPY DAYS", "MY DOG SLEEPS"]  # fmt: skip
    return kaldi_corpus(data_dir, root, {"test": texts})


def _music(root: Path) -> Path:
    return chord_tracks(root)


def test_long_form_negatives_leave_out_the_keywords(kws_data_dir: Path, tmp_path: Path) -> None:
    assert holds_keyword("I KNOW") and holds_keyword("It's going") and not holds_keyword("a note, now")
    corpus = _kaldi_corpus(kws_data_dir, tmp_path / "corpus")
    kept, left_out = speech_utterances(corpus)
    assert left_out == 4 and len(kept) == 4 and "A NOTE FOR YOU" in {u["text"] for u in kept}
    config = ConditionsConfig(longform_gap_s=(0.3, 0.6))
    speech = ensure_speech_stream(corpus, config, tmp_path / "streams")
    assert sorted(e["text"] for e in speech.events()) == sorted(u["text"] for u in kept)
    assert speech.truth["utterances_left_out"] == 4 and speech.truth["speakers"] >= 2
    again = ensure_speech_stream(corpus, config, tmp_path / "streams")
    assert again.directory == speech.directory
    audio = load_audio(speech.audio_path)
    first = speech.events()[0]
    spoken = audio[round(first["start_s"] * 16000) : round(first["end_s"] * 16000)]
    assert 20 * np.log10(np.sqrt(np.mean(spoken**2))) == pytest.approx(-26.0, abs=0.5)

    music = ensure_music_stream(_music(tmp_path / "music"), config, tmp_path / "streams")
    assert [e["track"] for e in music.events()] == ["a.ogg", "win/b.ogg"]
    assert music.seconds == pytest.approx(12.0 + 3.0, abs=0.1)
    with pytest.raises(FileNotFoundError, match="singularity-music"):
        ensure_music_stream(tmp_path / "nothing", config, tmp_path / "streams")


TINY_STREAM = StreamConfig(
    keywords=("yes", "left"), occurrences_per_level=1, unknown_clips=6, silence_clips=2, target_seconds=40.0
)
TINY_CONDITIONS = ConditionsConfig(
    own_voice_max_pairs=4, distractor_unknown_clips=4, distractor_silence_clips=2, reverb_rooms=2,
    reverb_keyword_clips=2, reverb_unknown_clips=3, gap_s=(0.5, 1.0), longform_gap_s=(0.3, 0.6),
)  # fmt: skip


def test_conditions_end_to_end_and_the_harness(
    random_model_path: Path,  # noqa: F811
    kws_data_dir: Path,
    tmp_path: Path,
) -> None:
    from training.bench.cli import build_parser, run_bench
    from training.bench.experiments import (
        CONDITIONS,
        BaselineRule,
        evaluate_rule,
        load_condition,
        rule_events,
    )
    from training.bench.report import write_report

    out = tmp_path / "bench"
    args = build_parser().parse_args(
        ["--model", str(random_model_path), "--data", str(kws_data_dir), "--out", str(out), "--repeats", "1",
         "--cost-seconds", "10", "--no-progress", "--no-dtw", "--checkpoint", str(tmp_path / "none.pt"),
         "--speechocean", str(_kaldi_corpus(kws_data_dir, tmp_path / "corpus")), "--music", str(_music(tmp_path / "music"))]
    )  # fmt: skip
    results = run_bench(args, TINY_STREAM, TINY_CONDITIONS)
    json.dumps(results)
    conditions = results["conditions"]
    assert conditions["replay_matches_detector"] and conditions["enrollments"]["own voice"]["keywords"] == 4
    rows = {r["condition"]: r for r in conditions["table"]["rows"]}
    assert list(rows) == [c.name for c in CONDITIONS]
    assert rows["household-1"]["utterances"] == 2 and rows["20 dB"]["utterances"] == 2
    assert rows["reverb"]["utterances"] == 4 and rows["own voice"]["keywords"] == 4
    for row in rows.values():
        assert set(row["hours"]) == {"stream", "speech", "music"} and 0.0 <= row["frr"] <= 1.0

    household = load_condition("household-1", out)
    assert household.enrollment.templates.shape == (2, household.windows.embeddings.shape[1])
    assert household.windows.embeddings.shape[0] == household.windows.ends.shape[0] > 0
    assert [t.shape[0] for t in household.enrollment.takes] == [3, 3]
    assert np.allclose(
        np.linalg.norm(household.windows.embeddings[~household.windows.gated], axis=1), 1.0, atol=1e-4
    )
    again = evaluate_rule(BaselineRule(DetectorConfig()), root=out)
    assert again.rows == conditions["table"]["rows"]  # from the cache alone, the same figures
    stricter = evaluate_rule(
        BaselineRule(dataclasses.replace(DetectorConfig(), threshold=0.99)), ["own voice"], out
    )
    assert stricter.row("own voice")["fa_per_hour"] <= rows["own voice"]["fa_per_hour"]
    own = load_condition("own voice", out)
    assert all(
        e[0] in own.enrollment.keywords for e in rule_events(BaselineRule(), own.windows, own.enrollment)
    )
    with pytest.raises(ValueError, match="condition"):
        load_condition("kitchen", out)

    markdown, png = tmp_path / "docs" / "BENCHMARKS.md", tmp_path / "docs" / "bench_det.png"
    write_report(results, markdown, png)
    text = markdown.read_text()
    assert "own voice" in text and "household-3" in text and "speechocean762" in text
    assert (markdown.parent / "bench_conditions.png").read_bytes()[:4] == b"\x89PNG"
