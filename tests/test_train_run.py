"""End to end on a handful of real clips: a short training run, its checkpoint, resuming, the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.checkpoint import load_checkpoint
from training.cli import main as kws_train
from training.config import ConfigError, load_config
from training.train import train

TINY_MODEL = "model.params={stem_channels = 16, blocks = [[16, 1], [24, 2]], embedding_dim = 32}"


def tiny_overrides(data_dir: Path, out_dir: Path, name: str, augment: bool = False) -> list[str]:
    return [
        f"data.data_dir='{data_dir}'",
        "data.datasets=['fsdd']",
        "data.max_clips=120",  # 10 digits x 6 speakers x 2 takes: one speaker is held out
        "data.val_fraction=0.2",
        f"data.augment={str(augment).lower()}",
        f"data.random_placement={str(augment).lower()}",
        "data.num_workers=0",
        "data.window_seconds=1.0",
        TINY_MODEL,
        "train.words_per_batch=6",
        "train.takes_per_word=2",
        "train.max_steps_per_epoch=3",
        "train.warmup_steps=2",
        "train.epochs=2",
        "validate.shots=[1]",
        "validate.seeds=[0]",
        "validate.select_on='eer_pairs'",
        f"run.out_dir='{out_dir}'",
        f"run.name='{name}'",
        "run.progress=false",
    ]


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_short_run_writes_a_loadable_checkpoint_and_resumes(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    config = load_config(None, tiny_overrides(kws_data_dir, tmp_path / "runs", "tiny"))
    result = train(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert result.run_dir == run_dir
    assert (run_dir / "config.toml").is_file() and load_config(run_dir / "config.toml") == config
    rows = read_log(run_dir / "log.csv")
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert all(0.0 <= float(row["eer_pairs"]) <= 1.0 for row in rows)
    last = load_checkpoint(result.last_path)
    assert last.model_name == "edge_tcn" and last.window_seconds == 1.0 and last.frames == 98
    assert last.vocabulary == {
        "fsdd": ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
    }
    assert last.training_state is not None and last.training_state["epoch"] == 1
    assert max(last.feature_std) > 0 and last.metrics["epoch"] == 1
    features = torch.randn(2, 98, 40)
    with torch.no_grad():
        assert torch.allclose(last.build_model()(features), result.model.eval()(features))
    assert result.best_path is not None and load_checkpoint(result.best_path).metrics["eer_pairs"] >= 0

    resumed = load_config(
        None,
        [
            *tiny_overrides(kws_data_dir, tmp_path / "runs", "tiny"),
            "train.epochs=3",
            f"run.resume='{result.last_path}'",
        ],
    )
    train(resumed)
    rows = read_log(run_dir / "log.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    after = load_checkpoint(run_dir / "last.pt")
    assert after.training_state is not None and after.training_state["epoch"] == 2
    assert not torch.equal(after.state_dict["embedding.weight"], last.state_dict["embedding.weight"])


def test_fine_tuning_freezes_early_layers_and_keeps_statistics(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    first = train(load_config(None, [*tiny_overrides(kws_data_dir, tmp_path, "stage1"), "train.epochs=1"]))
    stage1 = load_checkpoint(first.last_path)
    overrides = [
        *tiny_overrides(kws_data_dir, tmp_path, "stage2", augment=True),
        "train.epochs=1",
        f"run.init_from='{first.last_path}'",
        "train.freeze=['stem', 'blocks.0']",
        "train.learning_rate=1e-2",
    ]
    second = load_checkpoint(train(load_config(None, overrides)).last_path)
    for key, value in stage1.state_dict.items():
        if key.startswith(("stem.", "blocks.0.")):
            assert torch.equal(second.state_dict[key], value), key  # weights and BN statistics fixed
    assert not torch.equal(second.state_dict["embedding.weight"], stage1.state_dict["embedding.weight"])
    assert second.feature_mean == stage1.feature_mean


def test_head_warmup_keeps_the_loaded_encoder_until_it_ends(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    first = train(load_config(None, [*tiny_overrides(kws_data_dir, tmp_path, "stage1"), "train.epochs=1"]))
    stage1 = load_checkpoint(first.last_path)

    def stage2(name: str, warmup_steps: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        overrides = [
            *tiny_overrides(kws_data_dir, tmp_path, name),
            "train.epochs=1",  # 3 steps
            f"run.init_from='{first.last_path}'",
            f"train.head_warmup_steps={warmup_steps}",
            "train.learning_rate=1e-2",
        ]
        checkpoint = load_checkpoint(train(load_config(None, overrides)).last_path)
        assert checkpoint.training_state is not None
        return checkpoint.state_dict, checkpoint.training_state["loss"]

    encoder, loss_head = stage2("all-warmup", 3)
    for key, value in stage1.state_dict.items():
        assert torch.equal(encoder[key], value), key  # weights and batch-norm statistics as loaded
    assert not torch.equal(loss_head["angular.w"], torch.tensor(10.0))  # the head did learn
    encoder, _ = stage2("warmup-then-encoder", 2)
    assert not torch.equal(encoder["embedding.weight"], stage1.state_dict["embedding.weight"])
    with pytest.raises(ConfigError, match="head_warmup_steps"):
        load_config(None, ["train.head_warmup_steps=-1"])


def test_cli_trains_and_ships(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["train"]
    for override in tiny_overrides(kws_data_dir, tmp_path, "cli"):
        arguments += ["--set", override]
    assert kws_train([*arguments, "--epochs", "1", "--name", "cli-flag"]) == 0
    assert "last checkpoint" in capsys.readouterr().out
    last = tmp_path / "cli-flag" / "last.pt"  # --name beats --set run.name
    shipped = tmp_path / "shipped.pt"
    assert kws_train(["ship", str(last), str(shipped)]) == 0
    assert load_checkpoint(shipped).training_state is None
    assert shipped.stat().st_size < last.stat().st_size
    assert kws_train(["train", "--set", "train.epoch=1"]) == 2
    assert "train.epoch: unknown key" in capsys.readouterr().err
