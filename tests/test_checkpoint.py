"""Checkpoints: round trip, atomic writes, clear errors on missing, foreign or malformed files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from edge.frontend import DEFAULT_CONFIG
from tests.train_fixtures import one_torch_thread  # noqa: F401
from training import checkpoint as checkpoint_module
from training.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from training.models import build_model

SMALL = {"stem_channels": 16, "blocks": [[16, 1], [24, 2]], "embedding_dim": 32}


def save_small(path: Path, **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model("edge_tcn", SMALL)
    with torch.no_grad():  # non-trivial batch-norm statistics, so that buffers are checked too
        model.train()(torch.randn(8, 148, 40))
    arguments: dict[str, Any] = {
        "model": model,
        "model_name": "edge_tcn",
        "window_seconds": 1.5,
        "feature_mean": [0.5] * 40,
        "feature_std": [2.0] * 40,
        "vocabulary": {"fsdd": ["one", "zero", "one"]},
        "train_config": {"train": {"epochs": 2}},
        "metrics": {"eer_pairs": 0.25},
        "training_state": {"epoch": 3, "optimizer": torch.optim.AdamW(model.parameters()).state_dict()},
    }
    arguments.update(overrides)
    save_checkpoint(path, **arguments)
    return model.eval()


def test_round_trip_rebuilds_an_identical_model(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    model = save_small(path)
    loaded = load_checkpoint(path)
    assert loaded.model_name == "edge_tcn"
    assert loaded.frontend == DEFAULT_CONFIG and loaded.frontend_fingerprint == DEFAULT_CONFIG.fingerprint
    assert loaded.window_seconds == 1.5 and loaded.window_samples == 24000 and loaded.frames == 148
    assert loaded.feature_mean == [0.5] * 40 and loaded.feature_std == [2.0] * 40
    assert loaded.embedding_dim == 32
    assert loaded.vocabulary == {"fsdd": ["one", "zero"]}
    assert loaded.train_config == {"train": {"epochs": 2}} and loaded.metrics == {"eer_pairs": 0.25}
    assert loaded.git_commit and loaded.teacher is None
    assert loaded.training_state is not None and loaded.training_state["epoch"] == 3
    rebuilt = loaded.build_model()
    assert not rebuilt.training
    features = torch.randn(4, 148, 40)
    with torch.no_grad():
        assert torch.equal(model(features), rebuilt(features))


def test_payload_has_the_documented_keys(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_small(path, teacher={"name": "t", "sha256": "ab", "licence": "Apache-2.0"})
    payload = torch.load(path, weights_only=True)
    documented = {
        "format", "model_name", "model_config", "state_dict", "frontend", "frontend_fingerprint",
        "window_seconds", "feature_mean", "feature_std", "embedding_dim", "vocabulary", "train_config",
        "git_commit", "metrics", "teacher",
    }  # fmt: skip
    assert documented <= set(payload)
    assert payload["format"] == FORMAT
    assert payload["teacher"]["licence"] == "Apache-2.0"
    assert not any(key.startswith("module.") for key in payload["state_dict"])


def test_write_is_atomic_and_keeps_the_previous_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    save_small(path, metrics={"epoch": 1})
    save_small(path, metrics={"epoch": 2})
    assert load_checkpoint(path).metrics == {"epoch": 2}
    assert load_checkpoint(tmp_path / "model.pt.prev").metrics == {"epoch": 1}
    before = path.read_bytes()

    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if str(dst) == str(path):
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        save_small(path, metrics={"epoch": 3})
    monkeypatch.undo()
    # No temp file is left behind, and the newest complete checkpoint is still readable.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt.prev"]
    assert (tmp_path / "model.pt.prev").read_bytes() == before


def test_missing_and_foreign_files_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a udkws checkpoint"):
        load_checkpoint(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a udkws checkpoint"):
        load_checkpoint(foreign)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ValueError, match="not a udkws checkpoint"):
        load_checkpoint(tensor_only)


def test_malformed_checkpoints_name_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    save_small(path)
    payload = torch.load(path, weights_only=True)
    cases = {
        "format": ("udkws-checkpoint/0", "format 'udkws-checkpoint/0'"),
        "model_name": ("transformer", "model_name 'transformer'"),
        "frontend_fingerprint": ("0000", "frontend_fingerprint 0000 does not match"),
        "feature_std": ([1.0] * 39, "feature_std: expected 40 values"),
    }
    for key, (value, message) in cases.items():
        broken = dict(payload, **{key: value})
        torch.save(broken, tmp_path / "broken.pt")
        with pytest.raises(ValueError, match=message):
            load_checkpoint(tmp_path / "broken.pt")
    missing = {k: v for k, v in payload.items() if k != "metrics"}
    torch.save(missing, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"lacks required key\(s\) \['metrics'\]"):
        load_checkpoint(tmp_path / "broken.pt")


def test_save_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown model"):
        save_small(tmp_path / "x.pt", model_name="resnet")
    with pytest.raises(ValueError, match="feature_mean: expected 40 values"):
        save_small(tmp_path / "x.pt", feature_mean=[0.0] * 13)
    assert not (tmp_path / "x.pt").exists()
