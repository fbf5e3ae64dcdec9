"""Fuzzing the model's sidecar JSON: `load_model` gives a working encoder or one ModelError line naming the file.

Every field of the real sidecar of the test model gets values of every JSON type, and the file's bytes are cut,
overwritten and extended. An encoder that loads must embed a window; the model file itself is never touched.
"""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.model import ModelError, load_model
from tests.edge_fixtures import random_model_path  # noqa: F401

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def pair(random_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sidecar")
    shutil.copy(random_model_path, folder / "model.tflite")
    return folder / "model.tflite", json.loads(random_model_path.with_suffix(".json").read_text())


def _load_or_one_line(model: Path, sidecar_bytes: bytes) -> None:
    folder = Path(tempfile.mkdtemp(dir=model.parent))
    copy = folder / "model.tflite"
    copy.hardlink_to(model)
    (folder / "model.json").write_bytes(sidecar_bytes)
    before = model.read_bytes()
    try:
        encoder = load_model(copy)
    except ModelError as error:
        message = str(error)
        assert "model.json" in message or "model.tflite" in message, message
        assert "\n" not in message, message
    else:
        embedding = encoder.embed_windows(np.zeros((1, encoder.window_samples), dtype=np.float32))
        assert embedding.shape == (1, encoder.embedding_dim) and np.all(np.isfinite(embedding))
    finally:
        assert model.read_bytes() == before
        shutil.rmtree(folder)


@FUZZ
@given(data=st.data())
def test_any_value_in_any_field(pair: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    model, good = pair
    field = data.draw(st.sampled_from(sorted(good)))
    value = data.draw(json_values | st.integers(-5, 100000))
    _load_or_one_line(model, json.dumps(good | {field: value}).encode())


@FUZZ
@given(data=st.data())
def test_any_corruption_of_the_bytes(pair: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    model, good = pair
    text = json.dumps(good, indent=1).encode()
    at = data.draw(st.integers(0, len(text)))
    patch = data.draw(st.binary(max_size=10))
    drop = data.draw(st.integers(0, 10))
    _load_or_one_line(model, text[:at] + patch + text[at + drop :])


def test_a_sidecar_that_is_not_utf8_names_the_file(pair: tuple[Path, dict[str, Any]]) -> None:
    """A byte that is not UTF-8 gave the bare 'utf-8 codec can't decode' without the file's name."""
    model, good = pair
    folder = Path(tempfile.mkdtemp(dir=model.parent))
    (folder / "model.tflite").hardlink_to(model)
    (folder / "model.json").write_bytes(json.dumps(good).encode()[:40] + b"\xff\xfe")
    with pytest.raises(ModelError, match=r"model\.json: not readable JSON"):
        load_model(folder / "model.tflite")
