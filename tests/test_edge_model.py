"""edge.model: loading checks (sha256, fingerprint, tensors, quantisation) and the embedding chain."""
# ruff: noqa: F811  (fixtures imported from tests.edge_fixtures are redefined as parameters)

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.frontend import DEFAULT_CONFIG, FrontendConfig, mfcc
from edge.model import ModelError, load_model
from tests.edge_fixtures import calibration_windows, model_copy, random_model_path  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _edit_sidecar(model: Path, **changes: object) -> None:
    sidecar = model.with_suffix(".json")
    raw = json.loads(sidecar.read_text())
    raw.update(changes)
    sidecar.write_text(json.dumps(raw))


def test_embed_windows_unit_norm_and_matches_features(random_model_path: Path, kws_data_dir: Path) -> None:
    encoder = load_model(random_model_path)
    assert encoder.window_samples == 24000 and encoder.frames == 148 and encoder.embedding_dim == 32
    windows = calibration_windows(kws_data_dir, count=6)
    embeddings = encoder.embed_windows(windows)
    assert embeddings.shape == (6, 32) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    features = np.stack([mfcc(w) for w in windows])
    np.testing.assert_array_equal(encoder.embed_features(features), embeddings)
    normalized = (features - np.array(encoder.info()["feature_mean"], dtype=np.float32)) / np.array(
        encoder.info()["feature_std"], dtype=np.float32
    )
    np.testing.assert_allclose(encoder.embed_features(normalized, normalized=True), embeddings, atol=1e-6)
    # Different speech gives different embeddings (the chain is not constant).
    assert float(np.min(embeddings @ embeddings.T)) < 0.95
    assert encoder.info()["window_samples"] == 24000 and encoder.info()["loaded_from"] == str(
        random_model_path
    )


def test_embed_windows_rejects_wrong_shape(random_model_path: Path) -> None:
    encoder = load_model(random_model_path)
    with pytest.raises(ValueError, match=r"expected audio \[N, 24000\]"):
        encoder.embed_windows(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="expected"):
        encoder.embed_features(np.zeros((98, 40), dtype=np.float32))
    assert encoder.embed_windows(np.zeros((0, 24000), dtype=np.float32)).shape == (0, 32)


def test_sha256_mismatch_is_refused(model_copy: Path) -> None:
    _edit_sidecar(model_copy, model_sha256="0" * 64)
    with pytest.raises(ModelError, match=r"model_sha256 .* does not match"):
        load_model(model_copy)


def test_frontend_fingerprint_mismatch_says_what_to_do(model_copy: Path) -> None:
    _edit_sidecar(model_copy, frontend_fingerprint="deadbeefdeadbeef")
    with pytest.raises(ModelError, match="re-convert"):
        load_model(model_copy)
    other = FrontendConfig(n_mels=40, f_max_hz=7600.0)
    _edit_sidecar(model_copy, frontend_fingerprint=DEFAULT_CONFIG.fingerprint)
    with pytest.raises(ModelError, match="front end"):
        load_model(model_copy, frontend=other)


def test_shape_and_quantization_mismatch_are_refused(model_copy: Path) -> None:
    raw = json.loads(model_copy.with_suffix(".json").read_text())
    _edit_sidecar(model_copy, embedding_dim=64)
    with pytest.raises(ModelError, match=r"output shape is \(1, 32\), the sidecar says \(1, 64\)"):
        load_model(model_copy)
    quant = dict(raw["input_quantization"])
    quant["scale"] *= 1.5
    _edit_sidecar(model_copy, embedding_dim=32, input_quantization=quant)
    with pytest.raises(ModelError, match="input quantization"):
        load_model(model_copy)


def test_missing_or_bad_sidecar(model_copy: Path) -> None:
    sidecar = model_copy.with_suffix(".json")
    raw = json.loads(sidecar.read_text())
    sidecar.write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        load_model(model_copy)
    del raw["feature_std"]
    sidecar.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="missing field"):
        load_model(model_copy)
    sidecar.unlink()
    with pytest.raises(ModelError, match="sidecar JSON is missing"):
        load_model(model_copy)
    with pytest.raises(ModelError, match="no such model file"):
        load_model(model_copy.parent / "absent.tflite")


def test_wrong_format_and_bad_fields(model_copy: Path) -> None:
    _edit_sidecar(model_copy, format="udkws-model/0")
    with pytest.raises(ModelError, match="format"):
        load_model(model_copy)
    _edit_sidecar(model_copy, format="udkws-model/1", feature_mean=[0.0] * 39)
    with pytest.raises(ModelError, match="feature_mean"):
        load_model(model_copy)


@pytest.mark.skipif(
    not (REPO / "build" / "udkws_int8.tflite").is_file(), reason="shipped model not built yet"
)
def test_shipped_model_loads(kws_data_dir: Path) -> None:
    encoder = load_model(REPO / "build" / "udkws_int8.tflite")
    windows = np.zeros((1, encoder.window_samples), dtype=np.float32)
    windows[0, :16000] = calibration_windows(kws_data_dir, count=1)[0, :16000]
    embedding = encoder.embed_windows(windows)
    assert embedding.shape == (1, encoder.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(embedding), 1.0, atol=1e-5)
