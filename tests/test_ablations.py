"""The ablation table resolves to valid training configs, and bad requests are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.ablations import ABLATIONS, AblationSettings, ablation_config, run_ablations


def test_every_ablation_resolves_to_a_pack_config(tmp_path: Path) -> None:
    settings = AblationSettings("packs/p.npz", tmp_path, "cpu", 20, 8, "packs/report.json")
    configs = {a.name: ablation_config(a, settings) for a in ABLATIONS}
    assert {c.model.name for c in configs.values()} == {"res15"}
    assert all(c.data.pack == "packs/p.npz" and not c.data.augment for c in configs.values())
    assert {configs[f"loss_{n}"].loss.name for n in ("softmax", "amsoftmax", "proto", "angleproto")} == {
        "softmax",
        "amsoftmax",
        "proto",
        "angleproto",
    }
    assert all(not configs[f"loss_{n}"].loss.params for n in ("softmax", "amsoftmax", "proto", "angleproto"))
    assert configs["two_stage"].run.init_from == str(tmp_path / "loss_ap_softmax" / "model.pt")
    assert configs["two_stage"].train.freeze and configs["two_stage"].train.epochs == 8
    assert configs["filtered_ap_softmax"].data.exclude_clips == "packs/report.json"
    assert configs["loss_ap_softmax"].data.exclude_clips == ""
    assert configs["one_stage_english"].data.english_only


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ablation named"):
        run_ablations(AblationSettings("p.npz", tmp_path), only=["loss_nonsense"])
    with pytest.raises(ValueError, match="exclude-clips"):
        run_ablations(AblationSettings("p.npz", tmp_path), only=["filtered_ap_softmax"])


def test_a_small_ablation_set_runs_end_to_end_from_a_pack(
    kws_data_dir: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    from training.checkpoint import load_checkpoint
    from training.cli import main as kws_train

    pack = tmp_path / "small.npz"
    arguments = ["data", "pack", "--config", "training/configs/pretrain.toml", "--output", str(pack)]
    for override in (f"data.data_dir='{kws_data_dir}'", "data.optional_roots=[]", "data.max_clips=600"):
        arguments += ["--set", override]
    assert kws_train(arguments) == 0
    small = (
        "model.params={channels = 8, dilated_layers = 4, embedding_dim = 16}",
        "train.words_per_batch=4", "train.takes_per_word=2", "train.max_steps_per_epoch=2",
        "train.warmup_steps=1", "validate.shots=[1]", "validate.seeds=[0]", "data.val_fraction=0.3",
    )  # fmt: skip
    settings = AblationSettings(str(pack), tmp_path / "runs", "cpu", 1, 1, extra_overrides=small)
    summary = run_ablations(settings, only=["loss_amsoftmax", "loss_ap_softmax", "two_stage"])
    assert list(summary) == ["loss_amsoftmax", "loss_ap_softmax", "two_stage"]
    stage1 = load_checkpoint(tmp_path / "runs" / "loss_ap_softmax" / "model.pt")
    stage2 = load_checkpoint(tmp_path / "runs" / "two_stage" / "model.pt")
    assert stage1.training_state is None and stage2.model_name == "res15"
    assert stage2.train_config["run"]["init_from"].endswith("loss_ap_softmax/model.pt")
    assert set(stage2.vocabulary) <= {"gsc_v1_words", "fsdd", "dspspeech20"}  # English words only
    assert stage2.feature_mean == stage1.feature_mean  # stage 2 keeps stage 1's statistics
    again = run_ablations(settings, only=["loss_softmax"])  # a later call keeps the earlier runs' records
    assert set(again) == {"loss_amsoftmax", "loss_ap_softmax", "two_stage", "loss_softmax"}
