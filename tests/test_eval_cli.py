"""`kws-eval` and the embedders on a tiny subset of the real benchmark (a few clips per word)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.edge_fixtures import random_model_path  # noqa: F401  (a pytest fixture)
from training.checkpoint import save_checkpoint
from training.evaluation.cli import EvalConfig, main
from training.evaluation.embedders import CheckpointEmbedder, TfliteEmbedder
from training.evaluation.protocol import evaluate, load_benchmark
from training.models import build_model

OPTIONS = (
    "--checkpoint",
    "--tflite",
    "--baseline",
    "--shots",
    "--seeds",
    "--out",
    "--data-dir",
    "--config",
    "--max-clips-per-word",
    "--dtw-aggregate",
    "--dtw-coefficients",
    "--num-threads",
    "--batch-size",
    "--no-progress",
)


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text


def test_benchmark_rows_are_the_protocol(kws_data_dir: Path) -> None:
    eval_set, paths = load_benchmark(kws_data_dir)
    assert eval_set.counts() == {"target": 4074, "unknown": 408, "silence": 408}
    assert len(set(eval_set.words) - set(eval_set.target_words) - {"_silence_"}) == 25
    assert all(path.is_file() for path in paths[:50])


def test_cli_runs_the_dtw_baseline_on_a_tiny_subset(kws_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dtw"
    code = main(
        ["--baseline", "mfcc-dtw", "--data-dir", str(kws_data_dir), "--max-clips-per-word", "3", "--shots", "1",
         "--seeds", "0", "1", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["kind"] == "mfcc-dtw"
    assert results["benchmark"] == "gsc_v2_test (subsampled)"
    assert results["counts"] == {"target": 30, "unknown": 75, "silence": 3}
    block = results["shots"]["1"]
    assert [row["seed"] for row in block["per_seed"]] == [0, 1]
    assert block["per_seed"][0]["test_target_clips"] == 20
    assert 0.0 <= block["mean"]["eer"] <= 1.0
    assert "open_set_accuracy" in block["mean"]
    assert "| 1 |" in (out / "results.md").read_text()
    for name in ("det.png", "scores.png"):
        assert (out / name).stat().st_size > 10_000


def tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("res15", {"channels": 8, "dilated_layers": 2, "embedding_dim": 16})
    rng = np.random.default_rng(0)
    return save_checkpoint(
        path,
        model=model,
        model_name="res15",
        window_seconds=1.0,
        feature_mean=rng.normal(size=40),
        feature_std=rng.uniform(1, 5, size=40),
        vocabulary={"test": ["a"]},
        train_config={},
        commit="test",
    )


def test_checkpoint_embedder_runs_the_float_model(tmp_path: Path, kws_data_dir: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt")
    embedder = CheckpointEmbedder(checkpoint)
    assert embedder.window_samples == 16000
    audio = np.random.default_rng(1).normal(0, 0.1, size=(3, 16000)).astype(np.float32)
    embeddings = embedder.embed(audio)
    assert embeddings.shape == (3, 16)
    assert np.linalg.norm(embeddings, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    with torch.inference_mode():
        raw = embedder._model(torch.from_numpy(embedder.features(audio))).numpy()
    assert embeddings == pytest.approx(raw / np.linalg.norm(raw, axis=1, keepdims=True), abs=1e-5)
    with pytest.raises(ValueError, match="16000"):
        embedder.embed(audio[:, :8000])
    out = tmp_path / "ckpt"
    code = main(
        ["--checkpoint", str(checkpoint), "--data-dir", str(kws_data_dir), "--max-clips-per-word", "3",
         "--shots", "1", "--seeds", "0", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["kind"] == "checkpoint"
    assert results["window_seconds"] == 1.0


def test_tflite_embedder_is_the_board_encoder(random_model_path: Path, kws_data_dir: Path) -> None:  # noqa: F811
    from edge.model import load_model

    embedder = TfliteEmbedder(random_model_path)
    assert embedder.window_seconds == 1.5
    audio = np.random.default_rng(2).normal(0, 0.1, size=(2, embedder.window_samples)).astype(np.float32)
    assert embedder.embed(audio) == pytest.approx(
        load_model(random_model_path).embed_windows(audio), abs=1e-6
    )
    summary = evaluate(embedder, kws_data_dir, shots=(1,), seeds=(0,), max_clips_per_word=3, progress=False)
    assert summary["window_seconds"] == 1.5
    assert summary["shots"]["1"]["per_seed"][0]["positive_trials"] == 20


def test_config_file_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "eval.toml"
    config.write_text("[eval]\nshots = [1, 5]\nbogus = 1\n")
    code = main(["--baseline", "mfcc-dtw", "--config", str(config), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "bogus" in capsys.readouterr().err
    code = main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y")])
    assert code == 2
    assert "missing.pt" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_clips_per_word"):
        EvalConfig(shots=(1, 10), max_clips_per_word=5)
