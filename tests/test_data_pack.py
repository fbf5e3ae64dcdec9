"""Feature packs: the same windows as the feature cache within half a quantisation step, the same selection
rules, training from a pack alone, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_train_run import tiny_overrides
from tests.train_fixtures import one_torch_thread  # noqa: F401
from training.checkpoint import load_checkpoint
from training.cli import main as kws_train
from training.config import ConfigError, load_config
from training.data.dataset import WindowDataset
from training.data.features import FeatureCache
from training.data.pack import load_pack
from training.prepare import prepare_data, select_clips
from training.train import train


def _pack_arguments(overrides: list[str], output: Path) -> list[str]:
    arguments = ["data", "pack", "--output", str(output)]
    for override in overrides:
        arguments += ["--set", override]
    return arguments


@pytest.fixture()
def tiny_pack(kws_data_dir: Path, tmp_path: Path, isolated_cache: Path) -> tuple[Path, list[str]]:
    overrides = tiny_overrides(kws_data_dir, tmp_path / "runs", "from-pack")
    pack = tmp_path / "packs" / "tiny.npz"
    assert kws_train(_pack_arguments(overrides, pack)) == 0
    return pack, overrides


def test_pack_holds_the_cached_windows(tiny_pack: tuple[Path, list[str]]) -> None:
    path, overrides = tiny_pack
    pack = load_pack(path)
    clips = select_clips(load_config(None, overrides).data)
    windows = WindowDataset(clips, 1.0, progress=False)
    cached = np.asarray(FeatureCache().load_or_build(windows, progress=False).features, dtype=np.float32)
    assert [clip.key for clip in pack.clips] == [clip.key for clip in windows.clips]
    assert pack.features.shape == cached.shape == (len(clips), 98, 40)
    half_step = (cached.max(axis=(0, 1)) - cached.min(axis=(0, 1))) / 255 / 2
    error = np.abs(pack.features.astype(np.float32) - cached).max(axis=(0, 1))
    assert np.all(error <= half_step * 1.05 + 1e-2)  # + float16 rounding of the dequantised values
    assert {clip.speaker for clip in pack.clips} == {clip.speaker for clip in clips}


def test_training_from_a_pack_needs_no_audio(tiny_pack: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, overrides = tiny_pack
    from_audio = prepare_data(load_config(None, overrides).data, seed=0, progress=False)
    from_pack_overrides = [*overrides, f"data.pack='{path}'", f"data.data_dir='{tmp_path / 'no-audio-here'}'"]
    from_pack = prepare_data(load_config(None, from_pack_overrides).data, seed=0, progress=False)
    assert [c.key for c in from_pack.train.clips] == [c.key for c in from_audio.train.clips]
    assert from_pack.val is not None and from_audio.val is not None
    assert [c.key for c in from_pack.val.clips] == [c.key for c in from_audio.val.clips]
    np.testing.assert_allclose(from_pack.feature_mean, from_audio.feature_mean, rtol=0.01, atol=0.05)
    result = train(load_config(None, [*from_pack_overrides, "train.epochs=1"]))
    checkpoint = load_checkpoint(result.last_path)
    assert checkpoint.vocabulary == {"fsdd": sorted(checkpoint.vocabulary["fsdd"])}
    assert checkpoint.train_config["data"]["pack"] == str(path)


def test_pack_refusals(tiny_pack: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, overrides = tiny_pack
    with pytest.raises(ValueError, match="no audio"):
        prepare_data(load_config(None, [*overrides, f"data.pack='{path}'", "data.augment=true"]).data, 0)
    with pytest.raises(ValueError, match=r"windows but data\.window_seconds"):
        prepare_data(
            load_config(None, [*overrides, f"data.pack='{path}'", "data.window_seconds=1.5"]).data, 0
        )
    with pytest.raises(ConfigError, match="distillation"):
        load_config(None, [*overrides, f"data.pack='{path}'", "distill.weight=1"])
    with pytest.raises(FileNotFoundError, match="kws-train data pack"):
        prepare_data(load_config(None, [*overrides, f"data.pack='{tmp_path / 'missing.npz'}'"]).data, 0)
    not_a_pack = tmp_path / "other.npz"
    np.savez(not_a_pack, something=np.zeros(3))
    with pytest.raises(ValueError, match="not a feature pack"):
        load_pack(not_a_pack)


def test_exclude_clips_from_a_key_list_or_a_filter_report(
    tiny_pack: tuple[Path, list[str]], tmp_path: Path
) -> None:
    path, overrides = tiny_pack
    keys = [clip.key for clip in load_pack(path).clips]
    listed = tmp_path / "drop.txt"
    listed.write_text(f"# dropped by hand\n{keys[0]}\n{keys[1]}  # a comment\n\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dropped_clips": [{"key": keys[2], "word": "x"}]}))
    for source, gone in ((listed, keys[:2]), (report, keys[2:3])):
        config = load_config(None, [*overrides, f"data.pack='{path}'", f"data.exclude_clips='{source}'"])
        assert {clip.key for clip in select_clips(config.data, load_pack(path).clips)} == set(keys) - set(
            gone
        )
        from_manifests = load_config(None, [*overrides, f"data.exclude_clips='{source}'"])
        assert not {clip.key for clip in select_clips(from_manifests.data)} & set(gone)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="dropped_clips"):
        select_clips(load_config(None, [*overrides, f"data.exclude_clips='{bad}'"]).data)


def test_an_empty_table_override_clears_the_table() -> None:
    base = load_config(Path("training/configs/pretrain.toml"))
    assert dict(base.loss.params) == {"ap_weight": 1.0, "softmax_weight": 1.0}
    assert dict(load_config(Path("training/configs/pretrain.toml"), ["loss.params={}"]).loss.params) == {}
    merged = load_config(Path("training/configs/pretrain.toml"), ["loss.params.ap_weight=2.0"])
    assert dict(merged.loss.params) == {"ap_weight": 2.0, "softmax_weight": 1.0}
