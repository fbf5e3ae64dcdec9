"""The conversion pipeline end to end on a tiny random edge_tcn: export -> onnx2tf -> int8 -> sidecar -> verify.

onnx2tf and the TensorFlow converter are slow, so the model is converted ONCE per module (`converted`) and
many things are asserted on that one run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from conversion.cli import STEPS, ConvertConfig, main, run_steps, step_quantize, step_verify
from conversion.sidecar import SIDECAR_FIELDS, read_sidecar
from conversion.verify import VerifyConfig, collapse_figures, op_report
from edge.frontend import FrontendConfig
from edge.model import load_model
from tests.convert_fixtures import make_tiny_checkpoint
from training.export import file_sha256, load_model_source

# A random model cannot separate words, so the collapse threshold is off for the pipeline run; the check
# itself is tested on embeddings below. The benchmark is subsampled to keep the suite fast.
QUICK_VERIFY = VerifyConfig(
    collapse_margin=-1.0, heldout_windows=64, eer_max_clips_per_word=8, eer_seeds=(0,)
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, kws_data_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("convert")
    checkpoint = make_tiny_checkpoint(root / "tiny.pt")
    config = ConvertConfig(
        checkpoint=checkpoint,
        output_dir=root / "out",
        work_dir=root / "work",
        data_dir=kws_data_dir,
        verify=QUICK_VERIFY,
    )
    results = run_steps(config, STEPS)
    return {"config": config, "results": results, "root": root}


def test_pipeline_publishes_a_verified_int8_model(converted: dict[str, Any]) -> None:
    config: ConvertConfig = converted["config"]
    verification = converted["results"]["verify"]
    assert verification["passed"], verification["failures"]
    assert sorted(p.name for p in config.output_dir.iterdir()) == ["udkws_int8.json", "udkws_int8.tflite"]
    umask = os.umask(0)
    os.umask(umask)
    for published in config.output_dir.iterdir():
        assert stat.S_IMODE(published.stat().st_mode) == 0o666 & ~umask, (
            f"{published} is not readable as usual"
        )
    encoder = load_model(config.output_dir / "udkws_int8.tflite")
    rng = np.random.default_rng(1)
    embeddings = encoder.embed_windows(0.1 * rng.standard_normal((3, 24000)).astype(np.float32))
    assert embeddings.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)


def test_sidecar_holds_every_contract_field(converted: dict[str, Any]) -> None:
    config: ConvertConfig = converted["config"]
    sidecar = read_sidecar(config.output_dir / "udkws_int8.json")
    assert set(SIDECAR_FIELDS) <= set(sidecar)
    assert sidecar["model_file"] == "udkws_int8.tflite"
    assert sidecar["model_sha256"] == file_sha256(config.output_dir / "udkws_int8.tflite")
    assert sidecar["checkpoint_sha256"] == file_sha256(config.checkpoint)
    assert sidecar["frontend_fingerprint"] == FrontendConfig().fingerprint
    assert sidecar["frontend"] == FrontendConfig().to_dict()
    assert (sidecar["window_samples"], sidecar["frames"], sidecar["n_mfcc"]) == (24000, 148, 40)
    assert sidecar["window_seconds"] == 1.5 and sidecar["embedding_dim"] == 16
    assert sidecar["model_name"] == "edge_tcn" and sidecar["teacher"] is None
    assert sidecar["vocabulary"] == {"arabic_sc": ["ar:zero"], "gsc_v1_words": ["bed", "cat"]}
    source = load_model_source(config.checkpoint)
    assert sidecar["feature_mean"] == pytest.approx(list(source.feature_mean))
    assert sidecar["feature_std"] == pytest.approx(list(source.feature_std))
    for key in ("input_quantization", "output_quantization"):
        assert set(sidecar[key]) == {"scale", "zero_point"} and sidecar[key]["scale"] > 0
    assert sidecar["verification"]["passed"] is True
    assert sidecar["conversion"]["calibration_windows"] >= 300


def test_onnx_export_is_one_file_with_the_fixed_input(converted: dict[str, Any]) -> None:
    config: ConvertConfig = converted["config"]
    model = onnx.load(str(config.onnx_path))
    (graph_input,) = model.graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert (graph_input.name, dims) == ("features", [1, 148, 40])
    assert not any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in model.graph.initializer), (
        "weights must be inside the .onnx file"
    )
    assert [p.name for p in config.work_dir.iterdir() if p.suffix == ".data"] == []


def test_int8_model_is_integer_only_small_and_faithful(converted: dict[str, Any]) -> None:
    verification = converted["results"]["verify"]
    assert verification["ops"]["non_integer_ops"] == []
    assert {"CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN"} <= set(verification["ops"]["ops"])
    assert verification["model_bytes"] <= 300_000
    fidelity = verification["fidelity"]
    assert fidelity["windows"] == 64 and fidelity["words"] > 10
    assert fidelity["mean_cosine"] >= 0.99 and fidelity["min_cosine"] >= 0.95
    task = verification["task"]
    assert task["checked"] and task["subsampled"] and task["shots"] == 5
    assert abs(task["delta_points"]) <= 0.5
    assert np.isfinite([task["float_eer_percent"], task["int8_eer_percent"]]).all()


def test_op_report_names_float_ops(converted: dict[str, Any]) -> None:
    """onnx2tf's float32 TFLite of the same graph must be flagged, op by op."""
    (float_model,) = converted["config"].saved_model_dir.glob("*_float32.tflite")
    report = op_report(float_model.read_bytes())
    assert report["non_integer_ops"], "a float model passed the integer-op check"
    assert any(entry.startswith("CONV_2D") and "FLOAT32" in entry for entry in report["non_integer_ops"])


def test_collapse_check_tells_collapsed_from_separated_embeddings() -> None:
    rng = np.random.default_rng(0)
    labels = [f"w{i % 6}" for i in range(60)]
    centres = rng.standard_normal((6, 32))
    separated = np.stack([centres[i % 6] + 0.1 * rng.standard_normal(32) for i in range(60)])
    collapsed = np.ones((60, 32)) + 0.01 * rng.standard_normal((60, 32))
    good = collapse_figures(separated, labels)
    bad = collapse_figures(collapsed, labels)
    assert good["same_word_mean_cosine"] - good["different_word_mean_cosine"] > 0.5
    assert bad["same_word_mean_cosine"] - bad["different_word_mean_cosine"] < 0.01


def test_failed_verification_publishes_nothing(converted: dict[str, Any], tmp_path: Path) -> None:
    config: ConvertConfig = converted["config"]
    work = tmp_path / "work"
    shutil.copytree(config.work_dir, work)
    out = tmp_path / "out"
    strict = ConvertConfig(
        checkpoint=config.checkpoint,
        output_dir=out,
        work_dir=work,
        data_dir=config.data_dir,
        verify=VerifyConfig(max_model_bytes=1000, heldout_windows=16, eer_check=False, collapse_margin=-1.0),
    )
    figures = step_verify(strict, load_model_source(config.checkpoint))
    assert not figures["passed"]
    assert any("more than 1000" in failure for failure in figures["failures"])
    assert not out.exists() or list(out.iterdir()) == []
    assert json.loads((work / "udkws_int8.json").read_text())["verification"]["passed"] is False


def test_cli_exit_status_on_failed_check(converted: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    config: ConvertConfig = converted["config"]
    work = tmp_path / "work"
    shutil.copytree(config.work_dir, work)
    toml = tmp_path / "strict.toml"
    toml.write_text(
        "[verify]\nmax_model_bytes = 1000\nheldout_windows = 16\neer_check = false\ncollapse_margin = -1.0\n"
    )
    args = ["verify", "--config", str(toml), "--checkpoint", str(config.checkpoint)]
    args += [
        "--work-dir",
        str(work),
        "--output-dir",
        str(tmp_path / "out"),
        "--data-dir",
        str(config.data_dir),
    ]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "FAILED: model is" in printed and "nothing published" in printed
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_steps_refuse_work_files_of_another_checkpoint(
    converted: dict[str, Any], tmp_path: Path, capsys: Any
) -> None:
    config: ConvertConfig = converted["config"]
    other = make_tiny_checkpoint(tmp_path / "other.pt", seed=1)
    args = ["quantize", "--checkpoint", str(other), "--work-dir", str(config.work_dir)]
    assert main(args) == 2
    assert "exported from another checkpoint" in capsys.readouterr().err


def test_auto_weight_scales_fall_back_to_per_tensor_when_too_big(
    converted: dict[str, Any], tmp_path: Path
) -> None:
    config: ConvertConfig = converted["config"]
    work = tmp_path / "work"
    shutil.copytree(config.work_dir, work)
    per_channel_bytes = converted["results"]["quantize"]["bytes"]
    assert converted["results"]["quantize"]["weight_scales"] == "per-channel"
    small = ConvertConfig(
        checkpoint=config.checkpoint,
        output_dir=tmp_path / "out",
        work_dir=work,
        verify=VerifyConfig(max_model_bytes=per_channel_bytes - 1),
    )
    result = step_quantize(small, load_model_source(config.checkpoint))
    assert result["weight_scales"] == f"auto: per-tensor (per-channel was {per_channel_bytes} bytes)"
    assert result["bytes"] < per_channel_bytes
    model = (work / "udkws_int8.tflite").read_bytes()
    assert op_report(model)["non_integer_ops"] == []
    assert read_sidecar(work / "udkws_int8.json")["conversion"]["weight_scales"].startswith(
        "auto: per-tensor"
    )
