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
