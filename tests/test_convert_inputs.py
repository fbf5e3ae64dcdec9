"""Bad input to kws-convert gives a clear error and a non-zero exit; the committed calibration set is valid."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from conversion.calibration import (
    CALIBRATION_DIR,
    MANIFEST_COLUMNS,
    CalibrationError,
    CalibrationPlan,
    calibration_inputs,
    generate_calibration_set,
    load_calibration_set,
)
from conversion.cli import main
from conversion.onnx_to_tf import Onnx2TfError, onnx_to_saved_model
from edge.audio import read_audio
from edge.frontend import FrontendConfig
from tests.convert_fixtures import make_tiny_checkpoint
from training.export import CheckpointError, load_model_source

COMMAND_WORDS = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}


def test_missing_checkpoint(tmp_path: Path, capsys: Any) -> None:
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--work-dir", str(tmp_path)]) == 2
    assert "nope.pt: no such checkpoint file" in capsys.readouterr().err


def test_foreign_checkpoint(tmp_path: Path, capsys: Any) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert main(["export", "--checkpoint", str(foreign), "--work-dir", str(tmp_path / "w")]) == 2
    assert "not a udkws checkpoint" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_model_source(garbage)


def test_frontend_fingerprint_mismatch(tmp_path: Path) -> None:
    other = FrontendConfig(f_max_hz=7600.0)
    checkpoint = make_tiny_checkpoint(tmp_path / "other_frontend.pt", frontend=other)
    with pytest.raises(CheckpointError, match=f"front end {other.fingerprint}.*edge/frontend.py"):
        load_model_source(checkpoint)


def _copy_calibration(tmp_path: Path, rows: int) -> Path:
    target = tmp_path / "cal"
    target.mkdir()
    with open(CALIBRATION_DIR / "manifest.csv", newline="") as handle:
        kept = list(csv.DictReader(handle))[:rows]
    with open(target / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    for row in kept:
        shutil.copy(CALIBRATION_DIR / row["file"], target / row["file"])
    return target


def test_empty_calibration_set(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="empty"):
        load_calibration_set(_copy_calibration(tmp_path, 0))
    with pytest.raises(CalibrationError, match="no calibration manifest"):
        load_calibration_set(tmp_path / "missing")


def test_unreadable_calibration_clip(tmp_path: Path) -> None:
    directory = _copy_calibration(tmp_path, 3)
    victim = sorted(directory.glob("*.wav"))[1]
    victim.write_bytes(b"RIFF garbage")
    with pytest.raises(CalibrationError, match=victim.name):
        load_calibration_set(directory)


def test_calibration_refuses_benchmark_rows(tmp_path: Path) -> None:
    directory = _copy_calibration(tmp_path, 2)
    text = (directory / "manifest.csv").read_text().replace(",arabic_sc,", ",gsc_v2_test,", 1)
    text = text.replace(",dspspeech20,", ",gsc_v2_test,", 1)
    (directory / "manifest.csv").write_text(text)
    with pytest.raises(CalibrationError, match="benchmark"):
        load_calibration_set(directory)


def test_onnx2tf_failure_shows_its_log(tmp_path: Path) -> None:
    """A valid ONNX graph with an op onnx2tf does not know: its ERROR line must reach the user."""
    features = helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1, 148, 40])
    embedding = helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, [1, 148, 40])
    node = helper.make_node("Foo", ["features"], ["embedding"], domain="com.example")
    graph = helper.make_graph([node], "unsupported", [features], [embedding])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    path = tmp_path / "unsupported.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Onnx2TfError, match=r"onnx2tf failed on .*unsupported\.onnx") as caught:
        onnx_to_saved_model(path, tmp_path / "saved_model")
    assert "ERROR: Foo OP is not yet implemented" in str(caught.value)
    assert not (tmp_path / "saved_model").exists()
    assert onnx.load(str(path)) == model, "the exported file must not be modified by onnxsim"


def test_invalid_onnx_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07this is not a protobuf of a model")
    with pytest.raises(ValueError, match=r"broken\.onnx: not a valid ONNX model"):
        onnx_to_saved_model(broken, tmp_path / "saved_model")


def test_toml_unknown_key(tmp_path: Path, capsys: Any) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("checkpont = 'x.pt'\n")
    assert main(["export", "--config", str(toml)]) == 2
    assert "unknown key(s) ['checkpont']" in capsys.readouterr().err
    toml.write_text("[verify]\nmin_cosin = 0.9\n")
    assert main(["export", "--config", str(toml)]) == 2
    assert "min_cosin" in capsys.readouterr().err


def test_committed_calibration_set_is_valid() -> None:
    calibration = load_calibration_set(CALIBRATION_DIR)
    rows = calibration.rows
    assert len(rows) >= 300 and calibration.windows.shape == (len(rows), 24000)
    assert {row["kind"] for row in rows} == {"speech", "quiet", "loud", "silence", "noise"}
    assert not [row for row in rows if row["dataset"] == "gsc_v2_test"]
    assert not [row for row in rows if row["word"].lower() in COMMAND_WORDS]
    speech = [row for row in rows if row["kind"] in ("speech", "quiet", "loud")]
    assert len({(row["dataset"], row["word"]) for row in speech}) >= 50
    assert len({row["speaker"] for row in speech}) >= 50
    assert all(row["split"] in ("train", "training") for row in speech)
    assert all(row["license"] == "CC-BY-SA-4.0" for row in rows if row["dataset"] == "fsdd")
    total = sum((CALIBRATION_DIR / row["file"]).stat().st_size for row in rows)
    assert total <= 15_000_000
    _, rate = read_audio(CALIBRATION_DIR / rows[0]["file"])
    assert rate == 16000
    peaks = np.abs(calibration.windows).max(axis=1)
    kinds = np.array([row["kind"] for row in rows])
    assert peaks[kinds == "loud"].min() > 0.85 and np.median(peaks[kinds == "quiet"]) < 0.1


def test_calibration_sources_are_training_split_clips(kws_data_dir: Path) -> None:
    with open(kws_data_dir / "manifest.csv", newline="") as handle:
        source_rows = {row["path"]: row for row in csv.DictReader(handle)}
    for row in load_calibration_set(CALIBRATION_DIR).rows:
        if row["source_path"]:
            source = source_rows[row["source_path"]]
            assert source["dataset"] == row["dataset"] != "gsc_v2_test"
            assert source["split"] in ("train", "training", "noise")


def test_regeneration_is_deterministic(kws_data_dir: Path, tmp_path: Path) -> None:
    plan = CalibrationPlan(speech=6, quiet=2, loud=2, silence=2, noise=2)
    first = generate_calibration_set(tmp_path / "a", kws_data_dir, plan)
    second = generate_calibration_set(tmp_path / "b", kws_data_dir, plan)
    assert (first / "manifest.csv").read_text() == (second / "manifest.csv").read_text()
    assert load_calibration_set(first).windows.shape == (14, 24000)
    np.testing.assert_array_equal(load_calibration_set(first).windows, load_calibration_set(second).windows)


def test_calibration_inputs_fit_a_shorter_window() -> None:
    windows = load_calibration_set(CALIBRATION_DIR).windows[:4]
    inputs = calibration_inputs(windows, 16000, [0.0] * 40, [2.0] * 40)
    assert inputs.shape == (4, 98, 40) and inputs.dtype == np.float32
