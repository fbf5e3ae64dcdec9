"""edge.config: defaults, the documented default file, validation that names the key, overrides."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.config import SHIPPED_DEFAULTS, Config, ConfigError, load_config


def test_shipped_default_file_equals_the_defaults_and_documents_every_field() -> None:
    assert load_config(SHIPPED_DEFAULTS) == Config()
    raw = tomllib.loads(SHIPPED_DEFAULTS.read_text())
    text = SHIPPED_DEFAULTS.read_text()
    for section in dataclasses.fields(Config):
        names = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(raw[section.name]) == names, section.name
        for name in names:
            # Each key is preceded by a comment line describing it (directly or in the group above).
            match = re.search(rf"(?m)^((?:#.*\n)*)(?:\w+ = .*\n)*{name} = ", text)
            assert match is not None and match.group(1).strip(), f"{section.name}.{name} is not documented"


def test_file_values_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[detector]\nthreshold = 0.6\nhop_ms = 200\n[state]\ndir = "/tmp/x"\n[gpio]\nkeyword_pins = [5, 6]\n'
    )
    config = load_config(path)
    assert config.detector.threshold == 0.6 and config.detector.hop_ms == 200 and config.state.dir == "/tmp/x"
    assert config.gpio.keyword_pins == (5, 6)
    assert config.audio == Config().audio
    overridden = load_config(path, {"detector.threshold": 0.9, "model.path": "/m.tflite"})
    assert overridden.detector.threshold == 0.9 and overridden.model.path == "/m.tflite"
    assert overridden.detector.hop_ms == 200


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[detector]\nthreshhold = 0.6\n", r"detector\.threshhold: unknown key"),
        ("[detectors]\nthreshold = 0.6\n", r"detectors: unknown section"),
        ("[detector]\nthreshold = 1.5\n", r"detector\.threshold: must be a cosine"),
        ('[detector]\nthreshold = "high"\n', r"detector\.threshold: expected a number"),
        ("[detector]\nhop_ms = 105\n", r"detector\.hop_ms: must be a multiple of 10"),
        ("[detector]\nveto_margin = -0.1\n", r"detector\.veto_margin: must be a cosine difference"),
        ("[detector]\nlookalike_prune_floor = 1.5\n", r"detector\.lookalike_prune_floor: must be a cosine"),
        ("[detector]\ntake_match_spread = -1\n", r"detector\.take_match_spread: must be 0 \(off\)"),
        ("[detector]\ntake_match_floor = 101\n", r"detector\.take_match_floor: must be a DTW distance"),
        ("[detector]\ntrigger_level = 4\ntrigger_window = 3\n", r"detector\.trigger_level"),
        ("[detector]\ngate = 1\n", r"detector\.gate: expected true or false"),
        ('[audio]\nsource = "radio"\n', r"audio\.source: must be"),
        ('[audio]\nsource = "file"\n', r"audio\.file: source = 'file' needs"),
        ("[gpio]\nled_pin = 27\n", r"gpio\.keyword_pins: pins must all differ"),
        ("[gpio]\nkeyword_pins = [22, 99]\n", r"gpio\.keyword_pins\[1\]"),
        ("[model]\nnum_threads = 0\n", r"model\.num_threads"),
        ("detector = 3\n", r"detector: expected a table"),
        ('[wyoming]\nuri = "http://host:10400"\n', r"wyoming\.uri: expected tcp://HOST:PORT"),
        ('[wyoming]\nuri = "unix://relative.sock"\n', r"wyoming\.uri: unix:// needs an absolute"),
        ("[wyoming]\nmax_clients = 0\n", r"wyoming\.max_clients: must be 1-64"),
        ("[mqtt]\nqos = 3\n", r"mqtt\.qos: must be 0, 1 or 2"),
        ('[mqtt]\ntopic_prefix = "home/#"\n', r"mqtt\.topic_prefix: expected topic levels"),
        ('[mqtt]\nca_file = "/etc/ca.pem"\n', r"mqtt\.ca_file: needs tls = true"),
        ('[mqtt]\nnode_id = "my.pi"\n', r"mqtt\.node_id: expected 1-64 letters"),
        ('[mqtt]\nusername = "u"\npassword = "secret"\n', r"mqtt\.password: a password is never read"),
        ('[network]\nallow = ["10.0.0.0/33"]\n', r"network\.allow\[0\]: expected an IP address"),
        ("[detector\n", r"not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_explicit_file_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"command line"):
        load_config(SHIPPED_DEFAULTS, {"detector.nope": 1})


def test_cli_reports_bad_config_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[detector]\nrefractory_ms = -5\n")
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "list", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "detector.refractory_ms" in result.stderr
