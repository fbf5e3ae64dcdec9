"""Training config: defaults, TOML, command-line overrides, unknown keys and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, TrainingConfig, dumps_toml, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_defaults_toml_and_overrides_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[train]\nepochs = 7\nlearning_rate = 1e-3\n[data]\ndatasets = ["fsdd"]\n[model.params]\nstem_channels = 32\n'
    )
    config = load_config(toml, ["train.epochs=3", "model.params.embedding_dim=64", "run.name=short"])
    assert config.train.epochs == 3  # override beats TOML
    assert config.train.learning_rate == 1e-3  # TOML beats default
    assert config.train.words_per_batch == TrainingConfig().train.words_per_batch  # default
    assert config.data.datasets == ("fsdd",)
    assert dict(config.model.params) == {"stem_channels": 32, "embedding_dim": 64}
    assert config.run.name == "short"


def test_resolved_config_round_trips_through_toml(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "finetune.toml", ["train.freeze=['stem']", "validate.shots=[1, 5, 10]"])
    path = tmp_path / "resolved.toml"
    path.write_text(dumps_toml(config))
    assert load_config(path) == config
    assert config.to_dict()["train"]["freeze"] == ["stem"]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_load(name: str) -> None:
    load_config(CONFIGS / name)


def test_unknown_keys_and_sections_are_named(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_config(toml)
    toml.write_text("[optimiser]\nlr = 3\n")
    with pytest.raises(ConfigError, match=r"optimiser: unknown section"):
        load_config(toml)
    with pytest.raises(ConfigError, match=r"run\.nmae: unknown key in override"):
        load_config(None, ["run.nmae=x"])
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        parse_override("epochs3")


def test_bad_types_and_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer"):
        load_config(None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"data\.augment: expected true or false"):
        load_config(None, ["data.augment=1"])
    with pytest.raises(ConfigError, match=r"invalid value for train\.takes_per_word"):
        load_config(None, ["train.takes_per_word=1"])
    with pytest.raises(ConfigError, match="nothing to train on"):
        load_config(None, ["loss.weight=0"])
    with pytest.raises(FileNotFoundError, match="no such config file"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_override_values_use_toml_syntax() -> None:
    assert parse_override("data.datasets=['fsdd', 'arabic_sc']") == {
        "data": {"datasets": ["fsdd", "arabic_sc"]}
    }
    assert parse_override("run.name=plain-word") == {"run": {"name": "plain-word"}}
    assert parse_override("train.learning_rate=3e-4") == {"train": {"learning_rate": 3e-4}}
