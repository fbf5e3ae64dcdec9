"""Encoders: shapes, the edge model's budget, res15's structure, the MAC counter and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.models import MODELS, build_model, count_params_and_macs, model_config_dict
from training.models.edge_tcn import EdgeTcnConfig
from training.models.res15 import Res15


@pytest.mark.parametrize(("name", "frames"), [("edge_tcn", 148), ("res15", 98), ("edge_tcn", 98)])
def test_models_map_features_to_embeddings(name: str, frames: int) -> None:
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(3, frames, 40))
    assert out.shape == (3, model.embedding_dim) == (3, 128)
    assert torch.isfinite(out).all()


def test_edge_model_is_within_the_board_budget() -> None:
    params, macs = count_params_and_macs(build_model("edge_tcn"), (148, 40))
    assert params <= 250_000
    assert macs <= 30_000_000
    assert macs > 1_000_000  # the counter saw the convolutions


def test_edge_model_uses_only_int8_friendly_layers() -> None:
    allowed = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.Sequential, nn.Identity, nn.Module)
    for module in build_model("edge_tcn").modules():
        assert type(module) in allowed or type(module).__module__.startswith("training.models"), type(module)
        assert not isinstance(module, (nn.LayerNorm, nn.GELU, nn.MultiheadAttention))


def test_res15_structure_follows_tang_and_lin() -> None:
    model = build_model("res15")
    assert isinstance(model, Res15)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 14  # the stem plus 13 dilated layers
    assert all(c.out_channels == 45 and c.kernel_size == (3, 3) for c in convs)
    assert [c.dilation[0] for c in convs[1:]] == [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 13 and not any(n.affine for n in norms)
    params, _ = count_params_and_macs(model, (98, 40))
    # 14 convs of 45x45x3x3 (the stem 1x45x3x3) plus the 45 -> 128 embedding: about 238k (Tang & Lin: 238k).
    assert params == 45 * 9 + 13 * 45 * 45 * 9 + 45 * 128 + 128


def test_mac_counter_matches_hand_counts() -> None:
    conv1d = nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.ReLU())
    # [B, 10, 4] input is read as [channels=10, length=4] by Conv1d: use a module that matches the input.
    params, macs = count_params_and_macs(conv1d, (4, 10))
    assert params == 4 * 6 * 3 + 6
    assert macs == 6 * 10 * 4 * 3  # outputs x (in_channels x kernel)

    depthwise = nn.Conv1d(8, 8, 5, padding=2, groups=8, bias=False)
    assert count_params_and_macs(depthwise, (8, 20)) == (8 * 5, 8 * 20 * 5)

    conv2d = nn.Conv2d(1, 3, 3, stride=2)
    assert count_params_and_macs(conv2d, (1, 9, 9)) == (3 * 9 + 3, 3 * 4 * 4 * 9)

    linear = nn.Linear(7, 5)
    assert count_params_and_macs(linear, (2, 7)) == (7 * 5 + 5, 2 * 7 * 5)


def test_registry_rebuilds_from_config_dict_and_rejects_unknowns() -> None:
    model = build_model("edge_tcn", {"stem_channels": 16, "blocks": [[16, 1], [24, 2]], "embedding_dim": 32})
    config = model_config_dict(model)
    assert config["blocks"] == [[16, 1], [24, 2]]
    again = build_model("edge_tcn", config)
    assert (
        again.config
        == model.config
        == EdgeTcnConfig(stem_channels=16, blocks=((16, 1), (24, 2)), embedding_dim=32)
    )
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ValueError, match="unknown config field"):
        build_model("res15", {"chanels": 3})
    assert set(MODELS) == {"res15", "edge_tcn"}
