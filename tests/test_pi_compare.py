"""`make pi-test`'s comparison: the arm64 board is held to the float model as this machine is."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "tools"))
from pi_compare import (  # noqa: E402
    EMBED_MEAN_SLACK,
    embedding_fidelity,
    fidelity_failures,
    float_embeddings,
    float_graph_problem,
    same_detections,
)

SHIPPED = REPO / "build" / "udkws_int8.tflite"
ONNX = REPO / "build" / "convert" / "udkws.onnx"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _tilted(reference: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """Rows at exactly `cosine` to `reference`'s rows, each tilted towards its own random direction."""
    noise = np.random.default_rng(seed).normal(size=reference.shape)
    noise -= np.sum(noise * reference, axis=1, keepdims=True) * reference
    return cosine * reference + np.sqrt(1 - cosine**2) * _unit(noise)


def test_two_int8_kernel_sets_pass_when_each_is_as_faithful_to_float_as_the_other() -> None:
    reference = _unit(np.random.default_rng(0).normal(size=(40, 48)))
    host, arm = _tilted(reference, 0.99, 1), _tilted(reference, 0.99, 2)
    figures = embedding_fidelity(arm, host, reference)
    # Independent rounding: the machines sit further from each other than from float (~0.98).
    assert figures["embedding_arm64_x86_64_mean_cosine"] < 0.985
    assert figures["embedding_arm64_float_mean_cosine"] == pytest.approx(0.99, abs=1e-6)
    assert fidelity_failures(figures) == []


def test_arm64_less_faithful_than_this_machine_or_a_window_below_the_floor_fails() -> None:
    reference = _unit(np.random.default_rng(0).normal(size=(40, 48)))
    host = _tilted(reference, 0.995, 1)
    worse = _tilted(reference, 0.995 - 2 * EMBED_MEAN_SLACK, 2)
    failures = fidelity_failures(embedding_fidelity(worse, host, reference))
    assert len(failures) == 1 and "arm64 mean cosine to float" in failures[0]
    broken = host.copy()
    broken[7] = _tilted(reference[7:8], 0.5, 3)[0]
    failures = fidelity_failures(embedding_fidelity(broken, host, reference))
    assert any(f.startswith("arm64 window cosine to float 0.5000") for f in failures)


def test_detections_match_within_the_tolerance_only() -> None:
    assert same_detections([("happy", 3.0), ("happy", 9.1)], [("happy", 3.2), ("happy", 9.1)])
    assert not same_detections([("happy", 3.0)], [("happy", 3.5)])
    assert not same_detections([("happy", 3.0)], [("happy", 3.0), ("happy", 9.0)])


@pytest.mark.skipif(not (SHIPPED.is_file() and ONNX.is_file()), reason="run `make convert` first")
def test_float_reference_is_the_graph_the_shipped_int8_model_came_from() -> None:
    """Through the board's front end and the sidecar's normalisation, the float graph's embeddings of the demo
    stream's windows sit where `make convert` verified the int8 model (a wrong front end would not)."""
    from edge.audio import load_audio
    from edge.model import load_model

    encoder = load_model(SHIPPED)
    stream = load_audio(REPO / "edge" / "demo" / "stream.flac")
    starts = np.arange(0, stream.shape[0] - encoder.window_samples, 8000)[:40]
    windows = np.stack([stream[s : s + encoder.window_samples] for s in starts]).astype(np.float32)
    reference = float_embeddings(ONNX, SHIPPED, windows)
    int8 = encoder.embed_windows(windows)
    cosine = np.sum(reference * int8, axis=1)
    assert cosine.mean() >= 0.98 and cosine.min() >= 0.95
    # The stream's windows differ from one another, so agreement above is not a property of any embedding.
    assert np.sum(reference * np.roll(reference, 1, axis=0), axis=1).mean() < 0.9


def test_the_float_graph_must_come_from_the_models_checkpoint(tmp_path: Path) -> None:
    import json

    onnx, model = tmp_path / "convert" / "udkws.onnx", tmp_path / "udkws_int8.tflite"
    assert "run `make convert` first" in str(float_graph_problem(onnx, model))
    onnx.parent.mkdir()
    onnx.write_bytes(b"graph")
    (onnx.parent / "source.json").write_text(json.dumps({"checkpoint_sha256": "a" * 64}))
    model.with_suffix(".json").write_text(json.dumps({"checkpoint_sha256": "b" * 64}))
    problem = str(float_graph_problem(onnx, model))
    assert "aaaaaaaaaaaa..." in problem and "bbbbbbbbbbbb..." in problem and "--onnx" in problem
    model.with_suffix(".json").write_text(json.dumps({"checkpoint_sha256": "a" * 64}))
    assert float_graph_problem(onnx, model) is None
    model.with_suffix(".json").write_text("{")
    assert "no checkpoint_sha256" in str(float_graph_problem(onnx, model))


@pytest.mark.skipif(not (SHIPPED.is_file() and ONNX.is_file()), reason="run `make convert` first")
def test_make_converts_graph_matches_its_model() -> None:
    assert float_graph_problem(ONNX, SHIPPED) is None
