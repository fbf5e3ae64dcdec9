"""`data stats` on the real data, with a generated corpus root, and inside another command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.data_fixtures import mini_corpus  # noqa: F401  (a fixture)
from training.data.cli import add_data_commands, main


def test_stats_on_real_data(kws_data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--data-dir", str(kws_data_dir)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:] if line and line[0] != "-"}
    assert rows["gsc_v1_words"][:3] == ["20", "1480", "3071"]
    assert rows["arabic_sc"][:3] == ["40", "30", "3600"]
    assert rows["gsc_v2_test"][-2:] == ["benchmark", "only"]
    assert rows["training"][:3] == ["total", "80", "1550"]  # 40 Arabic + 20 DSPSpeech + 20 English words
    assert rows["training"][3] == "11031"


def test_stats_with_a_generated_root_via_another_cli(
    kws_data_dir: Path,
    mini_corpus: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="kws-train")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "stats", "--data-dir", str(kws_data_dir), "--root", str(mini_corpus)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert f"root: {mini_corpus.resolve()}" in out and "all roots together" in out


def test_missing_data_dir_prints_where_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--data-dir", str(tmp_path / "absent")]) == 2
    assert "speech_commands_v0.02" in capsys.readouterr().err


def test_kws_train_passes_builder_options_through(capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main as kws_train

    with pytest.raises(SystemExit) as exited:
        kws_train(["data", "synthetic", "--help"])
    assert exited.value.code == 0
    assert "--words" in capsys.readouterr().out
    from training.data.cli import split_builder_argv

    assert split_builder_argv(["-v", "data", "lsk", "--jobs", "2"]) == ("lsk", ["--jobs", "2"])
    assert split_builder_argv(["data", "stats"]) is None
