"""edge.templates: atomic writes with .bak, corruption fallback, model-mismatch refusal, reload signature."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge.templates import Template, TemplateError, TemplateMismatchError, TemplateStore, atomic_write_bytes

SHA = "a" * 64
FP = "0a7aa6b892d8a6c0"


def _template(name: str = "lamp", seed: int = 0, **extra: object) -> Template:
    takes = np.random.default_rng(seed).standard_normal((3, 16)).astype(np.float32)
    return Template.from_takes(name, takes, SHA, FP, **extra)  # type: ignore[arg-type]


def test_from_takes_is_normalised_mean_of_normalised_takes() -> None:
    takes = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32) * [[1.0], [5.0], [0.1]]
    template = Template.from_takes("lamp", takes, SHA, FP)
    units = takes / np.linalg.norm(takes, axis=1, keepdims=True)
    expected = units.mean(axis=0) / np.linalg.norm(units.mean(axis=0))
    np.testing.assert_allclose(template.embedding, expected, atol=1e-6)
    assert template.takes == 3 and template.negatives.shape == (0, 16)


def test_add_get_list_remove_roundtrip(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path)
    store.add(_template("lamp", threshold=0.8, pin=22, hook="echo hi"))
    store.add(_template("door", seed=1))
    assert store.names() == ["door", "lamp"]
    lamp = store.get("lamp")
    assert (lamp.threshold, lamp.pin, lamp.hook, lamp.model_sha256) == (0.8, 22, "echo hi", SHA)
    np.testing.assert_allclose(lamp.embedding, _template("lamp").embedding, atol=1e-6)
    store.remove("door")
    assert [t.name for t in store.list()] == ["lamp"]
    assert (tmp_path / "keywords" / "door.json.bak").is_file()
    with pytest.raises(TemplateError, match="no keyword 'door'"):
        store.get("door")
    with pytest.raises(TemplateError, match="no keyword"):
        store.remove("door")


def test_rewrite_keeps_previous_version_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path)
    first = _template(seed=0)
    store.add(first)
    store.add(_template(seed=5))
    folder = tmp_path / "keywords"
    assert sorted(p.name for p in folder.iterdir()) == ["lamp.json", "lamp.json.bak"]
    backup = json.loads((folder / "lamp.json.bak").read_text())
    np.testing.assert_allclose(backup["embedding"], first.embedding, atol=1e-6)


def test_corrupt_file_falls_back_to_backup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = TemplateStore(tmp_path)
    good = _template(seed=0)
    store.add(good)
    store.add(_template(seed=5))
    path = store.path_for("lamp")
    path.write_text('{"format": "udkws-template/1", "name": "lamp", "embed')  # torn write
    with caplog.at_level(logging.ERROR):
        loaded = store.get("lamp")
    np.testing.assert_allclose(loaded.embedding, good.embedding, atol=1e-6)
    assert "corrupt" in caplog.text and "previous version" in caplog.text


def test_corrupt_without_backup_is_left_out_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TemplateStore(tmp_path)
    store.add(_template("door", seed=1))
    store.path_for("door").write_bytes(b"\x00\xff garbage")
    store.add(_template("lamp"))
    with pytest.raises(TemplateError, match="no backup"):
        store.get("door")
    with caplog.at_level(logging.ERROR):
        assert [t.name for t in store.list()] == ["lamp"]
    assert "'door' left out" in caplog.text


def test_invalid_content_names_the_problem(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path)
    store.add(_template())
    raw = json.loads(store.path_for("lamp").read_text())
    raw["threshold"] = 3.0
    store.path_for("lamp").write_text(json.dumps(raw))
    store.path_for("lamp").with_name("lamp.json.bak").unlink(missing_ok=True)
    with pytest.raises(TemplateError, match="threshold must be in"):
        store.get("lamp")
    raw["threshold"], raw["colour"] = 0.5, "red"
    store.path_for("lamp").write_text(json.dumps(raw))
    with pytest.raises(TemplateError, match="unknown field"):
        store.get("lamp")


def test_model_mismatch_is_refused_with_reenroll_advice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TemplateStore(tmp_path)
    store.add(_template("lamp"))
    store.add(Template.from_takes("door", np.ones((1, 16)), "b" * 64, FP))
    with pytest.raises(TemplateMismatchError, match="kws-edge enroll door"):
        store.get("door").check_model(SHA, FP)
    with pytest.raises(TemplateMismatchError, match="front end"):
        store.get("lamp").check_model(SHA, "ffffffffffffffff")
    with caplog.at_level(logging.ERROR):
        valid = store.load_for_model(SHA, FP)
    assert [t.name for t in valid] == ["lamp"]
    assert "Re-enroll" in caplog.text


def test_negatives_and_signature(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path)
    assert store.signature() == ()
    store.add(_template())
    before = store.signature()
    store.add_negative("lamp", np.random.default_rng(3).standard_normal(16))
    assert store.signature() != before
    template = store.get("lamp")
    assert template.negatives.shape == (1, 16)
    np.testing.assert_allclose(np.linalg.norm(template.negatives, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["", "../etc", "a b", "-x", "x" * 65])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(TemplateError, match="keyword name"):
        TemplateStore(tmp_path).path_for(name)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "x" / "state.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and target.with_name("state.json.bak").read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json", "state.json.bak"]
