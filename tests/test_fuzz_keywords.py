"""Fuzzing the keyword files: whatever a `<name>.json` holds, reading it gives a keyword or one clear error.

Every generated file is read the way the board reads it (TemplateStore.get, load_for_model, the detector's
scoring, `kws-edge list`): the outcome is a valid keyword or a TemplateError whose single line names the file,
never another exception, and reading never changes the file. Regression tests for the bugs found follow.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main as kws_main
from edge.detector import KeywordMatcher
from edge.templates import Template, TemplateError, TemplateStore

SHA, FINGERPRINT, DIM = "ab" * 32, "0a7aa6b892d8a6c0", 8
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _good() -> dict[str, Any]:
    embedding = np.random.default_rng(0).standard_normal(DIM)
    return Template(
        "happy", embedding, SHA, FINGERPRINT, threshold=0.6, pin=22, hook="true", takes=3
    ).to_json()


def _read_like_the_board(folder: Path) -> None:
    """TemplateStore.get/list/load_for_model and one scoring pass; only TemplateError may come out of get."""
    store = TemplateStore(folder)
    path = store.path_for("happy")
    before = path.read_bytes()
    try:
        template = store.get("happy")
    except TemplateError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message, message
    else:
        assert template.embedding.dtype == np.float32 and abs(np.linalg.norm(template.embedding) - 1) < 1e-4
        assert template.threshold is None or isinstance(template.threshold, float)
        assert template.pin is None or (isinstance(template.pin, int) and not isinstance(template.pin, bool))
        assert isinstance(template.hook, str | None) and isinstance(template.created, str)
    valid = store.load_for_model(SHA, FINGERPRINT, DIM)
    if valid:  # the detector scores only when there are keywords
        scores = KeywordMatcher(valid, 0.5).score(np.full(DIM, DIM**-0.5, dtype=np.float32))
        assert scores.scores.shape == (len(valid),)
    assert path.read_bytes() == before, "reading changed the file"


@FUZZ
@given(field=st.sampled_from(sorted(_good())), value=json_values)
def test_any_value_in_any_field(tmp_path: Path, field: str, value: Any) -> None:
    raw = _good() | {field: value}
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "keywords").mkdir()
    (folder / "keywords" / "happy.json").write_text(json.dumps(raw))
    _read_like_the_board(folder)


@FUZZ
@given(data=st.data())
def test_any_corruption_of_the_bytes(tmp_path: Path, data: st.DataObject) -> None:
    """Truncations, overwritten bytes and inserted bytes of a valid file, with and without a good .bak."""
    good = (json.dumps(_good(), indent=1) + "\n").encode()
    cut = data.draw(st.integers(0, len(good)))
    patch = data.draw(st.binary(max_size=12))
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    corrupt = {
        "truncate": good[:cut],
        "overwrite": good[:cut] + patch + good[cut + len(patch) :],
        "insert": good[:cut] + patch + good[cut:],
    }[kind]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "keywords").mkdir()
    (folder / "keywords" / "happy.json").write_bytes(corrupt)
    backup = folder / "keywords" / "happy.json.bak"
    if data.draw(st.booleans()):
        backup.write_bytes(good)
    _read_like_the_board(folder)
    assert not backup.exists() or backup.read_bytes() == good


def test_kws_edge_list_skips_a_bad_file_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keywords = tmp_path / "keywords"
    keywords.mkdir()
    (keywords / "happy.json").write_text(json.dumps(_good()))
    (keywords / "broken.json").write_bytes(b'{"format": "udkws-template/1", "name": \xff')
    with caplog.at_level(logging.ERROR):
        assert kws_main(["list", "--state-dir", str(tmp_path), "--json"]) == 0
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "broken.json" in record.getMessage() and "\n" not in record.getMessage()


# ---------------------------------------------------------------- regressions of the bugs the fuzzing found


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("model_sha256", 5, "model_sha256 must be a string"),  # crashed the daemon's reload (TypeError)
        ("frontend_fingerprint", None, "frontend_fingerprint must be a string"),
        ("pin", 0.5, "pin must be an integer"),  # was accepted, then failed inside gpiozero at detection time
        ("pin", True, "pin must be an integer"),
        ("takes", 2.5, "takes must be an integer"),
        ("hook", ["rm", "-rf"], "hook must be a shell command"),  # failed silently in the hook thread
        ("created", {}, "created must be a string"),
        ("threshold", True, "threshold must be a number"),
    ],
)
def test_field_types_are_checked(field: str, value: Any, expected: str) -> None:
    with pytest.raises(TemplateError, match=expected):
        Template.from_json(_good() | {field: value}, "happy.json")


def test_a_file_holding_another_keyword_is_refused(tmp_path: Path) -> None:
    """happy.json claiming to be 'lamp' made two keywords share one trigger state (and `remove lamp` failed)."""
    (tmp_path / "keywords").mkdir()
    (tmp_path / "keywords" / "happy.json").write_text(json.dumps(_good() | {"name": "lamp"}))
    with pytest.raises(TemplateError, match="holds keyword 'lamp', expected 'happy'"):
        TemplateStore(tmp_path).get("happy")


def test_an_embedding_of_another_length_is_refused_not_scored(tmp_path: Path) -> None:
    """A template vector of the wrong length passed the sha check and crashed the scoring (matmul)."""
    store = TemplateStore(tmp_path)
    store.add(Template("happy", np.ones(DIM), SHA, FINGERPRINT))
    store.add(Template("short", np.ones(DIM - 3), SHA, FINGERPRINT))
    valid = store.load_for_model(SHA, FINGERPRINT, DIM)
    assert [t.name for t in valid] == ["happy"]
    KeywordMatcher(valid, 0.5).score(np.ones(DIM, dtype=np.float32) / np.sqrt(DIM))


def test_huge_numbers_normalise_without_an_overflow(recwarn: pytest.WarningsRecorder) -> None:
    """1e300 overflowed the float32 cast (a RuntimeWarning in the log, then 'not finite'); now it is a direction."""
    for value in (1e300, 3e38, 1e-300):
        loaded = Template.from_json(_good() | {"embedding": [value] * DIM}, "happy.json")
        assert np.allclose(loaded.embedding, DIM**-0.5)
    for value in (float("inf"), float("nan")):
        with pytest.raises(TemplateError, match="finite numbers"):
            Template.from_json(_good() | {"embedding": [value] * DIM}, "happy.json")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
