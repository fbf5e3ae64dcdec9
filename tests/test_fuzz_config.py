"""Fuzzing the TOML configuration: any file gives a validated Config or one ConfigError line naming the problem.

Values of every type (and NaN, infinities, huge integers, odd strings) go into every key of the shipped
default file; arbitrary bytes and mutations of the whole file follow. The command line (`kws-edge list
--config F`, in process) must answer exit status 2 with the same single line. Nothing is written anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli import main as kws_main
from edge.config import SHIPPED_DEFAULTS, Config, ConfigError, load_config

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DEFAULTS = tomllib.loads(SHIPPED_DEFAULTS.read_text())
KEYS = sorted((section, key) for section, table in DEFAULTS.items() for key in table)

toml_values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.integers(-10, 100), max_size=5),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml(item) for item in value) + "]"


def _check(path: Path, caplog: pytest.LogCaptureFixture) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as error:
        message = str(error)
        assert "\n" not in message and message, message
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert kws_main(["list", "--config", str(path), "--state-dir", str(path.parent)]) == 2
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [message]
        return None
    assert config.validate() is config
    return config


@FUZZ
@given(key=st.sampled_from(KEYS), value=toml_values)
def test_any_value_for_any_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key: tuple[str, str], value: Any
) -> None:
    section, name = key
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "config.toml"
    path.write_text(f"[{section}]\n{name} = {_toml(value)}\n")
    config = _check(path, caplog)
    if config is None:
        return
    assert getattr(getattr(config, section), name) == (tuple(value) if isinstance(value, list) else value)


@FUZZ
@given(data=st.data())
def test_any_corruption_of_the_shipped_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    text = SHIPPED_DEFAULTS.read_bytes()
    cut = data.draw(st.integers(0, len(text)))
    patch = data.draw(
        st.binary(max_size=8) | st.sampled_from([b"=", b"[", b"]", b'"', b"\n[x]\n", b"\x00", b"\xff"])
    )
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "config.toml"
    path.write_bytes(text[:cut] + patch + text[cut + data.draw(st.integers(0, 8)) :])
    _check(path, caplog)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture, raw: bytes) -> None:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "config.toml"
    path.write_bytes(raw)
    _check(path, caplog)


def test_a_directory_or_a_missing_file_is_one_line(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(ConfigError, match=f"{path}: no such configuration file"):
            load_config(path)
