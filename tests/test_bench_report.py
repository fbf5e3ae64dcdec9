"""`kws-bench` end to end on a tiny stream: the daemon process, the DTW baseline and the written report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.edge_fixtures import random_model_path  # noqa: F401  (a fixture)
from training.bench.cli import build_parser, main, run_bench
from training.bench.report import frr_at_fa, render_table, write_report
from training.bench.streams import StreamConfig

TINY = StreamConfig(
    keywords=("yes", "left"), occurrences_per_level=1, unknown_clips=6, silence_clips=2, target_seconds=40.0
)


def test_small_run_writes_a_complete_report(
    random_model_path: Path,  # noqa: F811
    kws_data_dir: Path,
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(
        ["--model", str(random_model_path), "--data", str(kws_data_dir), "--out", str(tmp_path / "bench"),
         "--repeats", "1", "--cost-seconds", "20", "--no-progress", "--checkpoint", str(tmp_path / "none.pt"),
         "--no-conditions"]
    )  # fmt: skip
    results = run_bench(args, TINY)
    json.dumps(results)  # everything is JSON-ready
    assert results["cost"]["daemon_matches_in_process"] == "identical"
    daemon = results["cost"]["daemon"]
    assert daemon["gate_on"]["windows"] == daemon["gate_off"]["windows"] > 0
    assert daemon["gate_on"]["windows_gated"] > 0 == daemon["gate_off"]["windows_gated"]
    assert 20 < daemon["peak_rss_mb"] < 1000
    accuracy = results["accuracy"]
    assert accuracy["encoder"]["targets"] == 8 and accuracy["dtw"]["windows_scored"] > 0
    assert results["model"]["parameters"] is None and "not found" in results["model"]["macs_source"]

    markdown, png = tmp_path / "docs" / "BENCHMARKS.md", tmp_path / "docs" / "bench_det.png"
    write_report(results, markdown, png)
    text = markdown.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![FRR vs false accepts per hour](bench_det.png)" in text
    assert render_table(results) in text
    for needed in ("| yes |", "| left |", "daemon peak RSS", "target <= 150 MB", "MFCC + DTW", "gsc_v2_test"):
        assert needed in text
    assert f"{accuracy['threshold']:.3f}" in text


def test_frr_at_fa_reads_the_curve() -> None:
    curve = [
        {"threshold": 0.5, "frr": 0.1, "fa_per_hour": 20.0},
        {"threshold": 0.7, "frr": 0.3, "fa_per_hour": 5.0},
        {"threshold": 0.9, "frr": 0.6, "fa_per_hour": 0.0},
    ]
    assert frr_at_fa(curve, 10.0) == 0.3 and frr_at_fa(curve, 0.5) == 0.6 and frr_at_fa(curve, 100) == 0.1
    assert frr_at_fa(curve[:2], 1.0) is None


def test_a_missing_model_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = tmp_path / "nothing.tflite"
    assert main(["--model", str(missing), "--out", str(tmp_path / "bench"), "--quick", "--no-dtw"]) == 2
    assert f"{missing}: no such model file" in caplog.text
    assert not (tmp_path / "bench").exists()  # refused before building anything
