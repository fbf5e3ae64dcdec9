"""The benchmark's outputs: one printed table, docs/BENCHMARKS.md and the FRR vs false-accepts-per-hour PNG.

Everything here reads the results dictionary that `training.bench.cli` assembles (also saved as JSON), so a
report can be rewritten from a saved run without measuring again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.fileio import atomic_write_text
from training.bench.report_conditions import plot_conditions, render_conditions
from training.bench.soak_report import soak_section
from training.figures import save_figure

__all__ = ["frr_at_fa", "plot_curves", "render_markdown", "render_table", "write_report"]

CONDITIONS_PNG = "bench_conditions.png"
TARGETS = {"cpu_percent_gate_off": 3.0, "rss_mb": 150.0, "latency_median_ms": 300.0}


def frr_at_fa(curve: list[dict[str, float]], fa_per_hour: float) -> float | None:
    """The lowest FRR among the curve's points with at most `fa_per_hour` false accepts per hour."""
    allowed = [p["frr"] for p in curve if p["fa_per_hour"] <= fa_per_hour]
    return min(allowed) if allowed else None


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _num(value: float | None, fmt: str = ".2f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _verdict(measured: float | None, target: float) -> str:
    return "-" if measured is None else ("meets" if measured <= target else "MISSES")


Row = tuple[str, str, str, str]


def _rule_rows(acc: dict[str, Any]) -> list[Row]:
    """The daemon's own rule: budget thresholds and look-alikes from the model's cohort."""
    rule = acc.get("shipped_rule")
    if rule is None:
        return []
    thresholds = sorted(rule["thresholds"].values())
    return [
        (
            "shipped rule: thresholds (false-alarm budget)",
            f"{thresholds[0]:.3f}-{thresholds[-1]:.3f}" if thresholds else "-",
            "-",
            f"{rule['false_alarms_per_hour_budget']:g}/h budget on a {rule['cohort_hours']:.2f} h cohort, "
            f"{rule['hard_negatives']} look-alikes; {'/'.join(rule['threshold_sources'])}",
        ),
        ("shipped rule: false rejects", _pct(rule["frr"]), "-", f"{rule['targets']} utterances"),
        (
            "shipped rule: false accepts per hour",
            _num(rule["fa_per_hour"], ".1f"),
            "-",
            f"{acc['hours']:.2f} h, 10 keywords (all together)",
        ),
    ]


def _threshold_rows(acc: dict[str, Any]) -> list[Row]:
    """One cosine threshold for every keyword, and the curve read at the false-accept levels."""
    enc, dtw = acc["encoder"], acc.get("dtw")
    rows: list[Row] = [
        (
            "one cosine threshold for all (no budget): threshold",
            f"{acc['threshold']:.3f}",
            "-",
            "detector.threshold; the curve below shifts it",
        ),
        ("false rejects at that threshold", _pct(enc["frr"]), "-", f"{enc['targets']} utterances"),
        (
            "false accepts per hour at that threshold",
            _num(enc["fa_per_hour"], ".1f"),
            "-",
            f"{acc['hours']:.2f} h, 10 keywords",
        ),
    ]
    for level in acc["frr_at_fa_levels"]:
        rows.append(
            (
                f"false rejects at <= {level:g} false accepts/h (curve)",
                _pct(frr_at_fa(enc["curve"], level)),
                _pct(frr_at_fa(dtw["curve"], level)) if dtw else "-",
                "read off the threshold curve",
            )
        )
    return rows


def _latency_rows(enc: dict[str, Any], chunk_ms: float) -> list[Row]:
    """Keyword end to event: the audio clock's delay plus one chunk's compute."""
    median, p95 = (
        None if enc[k] is None else 1000 * enc[k] + chunk_ms for k in ("latency_median_s", "latency_p95_s")
    )
    target = TARGETS["latency_median_ms"]
    return [
        (
            "latency, median (keyword end to event)",
            _num(median, ".0f", " ms"),
            f"target <= {target:.0f} ms: {_verdict(median, target)}",
            "audio clock + chunk compute",
        ),
        ("latency, 95th percentile", _num(p95, ".0f", " ms"), "-", ""),
    ]


def _daemon_rows(daemon: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for gate in ("gate_on", "gate_off"):
        if gate in daemon:
            pct = daemon[gate]["cpu_percent"]
            target = (
                f"target <= 3 %: {_verdict(pct, TARGETS['cpu_percent_gate_off'])}"
                if gate == "gate_off"
                else "less than gate off"
            )
            rows.append(
                (
                    f"daemon CPU, % of real time ({gate.replace('_', ' ')})",
                    f"{pct:.2f} %",
                    target,
                    f"{daemon[gate]['cpu_s_per_hour']:.0f} CPU s per hour of audio",
                )
            )
    rss = daemon.get("peak_rss_mb")
    rows += [
        (
            "daemon peak RSS",
            _num(rss, ".0f", " MB"),
            f"target <= 150 MB: {_verdict(rss, TARGETS['rss_mb'])}",
            "max over the daemon runs",
        ),
        (
            "daemon start-up CPU",
            _num(daemon.get("startup_cpu_s"), ".2f", " s"),
            "-",
            "imports, model and keyword loading",
        ),
    ]
    return rows


def _compute_rows(results: dict[str, Any]) -> list[Row]:
    """The encoder, the DTW baseline's pass, the front end and the model file."""
    cost, dtw = results["cost"], results["accuracy"].get("dtw")
    rows: list[Row] = [
        ("encoder time per window", _num(cost["encoder_ms_per_window"], ".2f", " ms"), "-", "CPU, 1 thread")
    ]
    if dtw:
        enc_cpu, dtw_cpu = cost["encoder_pass_cpu_s_per_hour"], cost["dtw_pass_cpu_s_per_hour"]
        rows.append(
            (
                "scoring pass CPU s per hour of audio",
                f"{enc_cpu:.0f} s",
                f"{dtw_cpu:.0f} s",
                f"encoder / DTW = {enc_cpu / dtw_cpu:.2f}",
            )
        )
    front, model = cost["frontend"], results["model"]
    rows += [
        (
            "front end, streaming / batch",
            f"{front['frontend_streaming_ms_per_s']:.3f} / {front['frontend_batch_ms_per_s']:.3f} ms CPU / s",
            f"budget {front['budget_ms_per_s']} ms",
            "edge.bench.run_frontend_bench (100 ms chunks / whole signal)",
        ),
        (
            "model: parameters / MACs per window",
            f"{_num(model.get('parameters'), ',')} / {_num(model.get('macs'), ',')}",
            "-",
            model.get("macs_source", ""),
        ),
        ("model file size", f"{model['file_bytes'] / 1024:.1f} KiB", "-", model["file"]),
    ]
    return rows


def _summary_rows(results: dict[str, Any]) -> list[Row]:
    """(measure, encoder, MFCC+DTW baseline or target, note) rows of the main table."""
    acc, cost = results["accuracy"], results["cost"]
    return [
        *_rule_rows(acc),
        *_threshold_rows(acc),
        *_latency_rows(acc["encoder"], cost["chunk_ms_median"]),
        *_daemon_rows(cost["daemon"]),
        *_compute_rows(results),
    ]


def render_table(results: dict[str, Any]) -> str:
    lines = ["| measure | encoder (daemon) | MFCC+DTW / target | note |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _summary_rows(results)]
    return "\n".join(lines)


def _keyword_table(results: dict[str, Any]) -> str:
    enc = results["accuracy"]["encoder"]
    lines = [
        "| keyword | utterances | false rejects | false accepts/h | enrolled by |",
        "|---|---|---|---|---|",
    ]
    for word, row in enc["per_keyword"].items():
        speaker = results["stream"]["enrollment_speakers"].get(word, "?")
        lines.append(
            f"| {word} | {row['targets']} | {_pct(row['frr'])} | {row['fa_per_hour']:.1f} | speaker {speaker} |"
        )
    return "\n".join(lines)


def render_markdown(results: dict[str, Any], png_name: str) -> str:
    acc, stream, machine = results["accuracy"], results["stream"], results["machine"]
    enc = acc["encoder"]
    snr = ", ".join(f"{label}: {_pct(v)}" for label, v in enc["frr_by_snr"].items())
    causes = (
        ", ".join(f"{k} {v}" for k, v in sorted(enc["false_accept_causes"].items(), key=lambda kv: -kv[1]))
        or "none"
    )
    notes = "\n".join(f"- {note}" for note in results.get("notes", [])) or "- none"
    if stream.get("quick"):
        notes = "- SMOKE RUN (`--quick`, a 5-minute stream): these are not the benchmark's figures\n" + notes
    stage_walls = results.get("stage_wall_s", {})
    stages = (
        ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stage_walls.items())
        + f"; {results.get('wall_s', sum(stage_walls.values())):.0f} s in all (wall clock)"
    )
    return f"""# Benchmarks: streaming accuracy and cost

Generated by `kws-bench` (the second step of `make bench`) on {results["created"]}:
`{results["command"]}`. Do not edit by hand.

Model: `{results["model"]["file"]}` (sha256 {results["model"]["sha256"][:12]}..., {results["model"]["name"]}).
Machine: {machine["cpu"]}, {machine["cores"]} cores, Python {machine["python"]}, numpy {machine["numpy"]},
LiteRT {machine["litert"]}; 1 interpreter thread; load average {machine.get("load_before", "?")} before the run,
{machine.get("load_after", "?")} after (other jobs share the machine: CPU times are per process, wall times are
not). Cost figures are medians over {results["repeats"]} runs; accuracy is deterministic (one pass).

## Summary

{render_table(results)}

Targets of the edge issue: daemon CPU <= 3 % of real time with the energy gate off (less with it on), peak RSS
<= 150 MB, median latency <= 300 ms.

![FRR vs false accepts per hour]({png_name})

## What was measured
- **Stream**: {stream["hours"]:.2f} h of 16 kHz audio built from `gsc_v2_test` (evaluation only; nothing here
  trains or tunes): {stream["keyword_utterances"]} keyword utterances (the ten command words,
  {stream["per_keyword"]} each, each by a different speaker, equally at clean / 20 / 10 / 5 dB SNR), with
  {stream["unknown"]} clips of the 25 other words and {stream["silence"]} `_silence_` clips as distractors, in random
  order with random gaps, over a Speech Commands background-noise bed (dishes, bike, miaowing, pink, tap,
  white) at each item's SNR. Speech at {stream["speech_dbfs"]:g} dBFS RMS. Details in
  `training/bench/streams.py`; the file and its truth lie in `{stream["directory"]}`.
- **Enrollment**: per keyword, 3 takes by ONE speaker (who speaks none of its test utterances), through
  `kws-edge enroll`'s own code (voice-activity cut, take checks, mean embedding). All ten keywords are enrolled
  at once, so the other nine are distractors for each.
- **Detection**: the daemon's detector (`edge/detector.py`) with the shipped `edge/default_config.toml`:
  threshold {acc["threshold"]:.3f}, hop 100 ms, {results["settings"]["trigger_level"]} of
  {results["settings"]["trigger_window"]} windows, refractory {results["settings"]["refractory_ms"]} ms, energy gate
  {"on" if results["settings"]["gate"] else "off"} at {results["settings"]["gate_dbfs"]:g} dBFS.
  The shipped rule (the daemon's default: each keyword's threshold from the false-alarm budget on the model's
  cohort, and look-alike negatives; docs/edge.md) is one pass; the curve is a second pass with one cosine
  threshold for every keyword, re-applying the same decision logic to every window's stored scores per threshold
  (at that threshold it reproduces the detector's own detections exactly, checked on every run). The daemon
  process (`kws-edge run --stdin`) on the cost excerpt, compared with the in-process pass of the shipped rule,
  gave {results["cost"]["daemon_matches_in_process"]} detections.
- **Scoring**: a detection of keyword k at time t (end of its window) is a hit when an undetected utterance of k
  has start < t <= end + {acc["tolerance_s"]:g} s; anything else is a false accept. Latency = t - end of the spoken
  keyword, plus the median compute time of one 100 ms chunk ({results["cost"]["chunk_ms_median"]:.1f} ms).
- **Baseline**: MFCC + DTW against the same enrollment takes, same windows, same gate and decision logic
  (`training/bench/dtw_baseline.py`: 13 coefficients, frames averaged in pairs, DTW per window and take).
- **Cost**: the daemon process (`python -m edge.cli run --stdin --no-gpio`) over the first
  {results["cost"]["excerpt_s"]:.0f} s of the stream, fed through a pipe as fast as it reads; CPU seconds and peak
  RSS from `os.wait4`; start-up CPU (an empty stream) is subtracted for the % of real time.

## Encoder at one cosine threshold, per keyword

{_keyword_table(results)}

False rejects by SNR: {snr}.
What the windows of false accepts held: {causes}.

{render_conditions(results, str(Path(png_name).with_name(CONDITIONS_PNG)))}
## Run time

{stages}

## Notes

{notes}
"""


def plot_curves(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = results["accuracy"]
    figure, axis = plt.subplots(figsize=(7, 5))
    systems = [("learned encoder (int8, daemon)", acc["encoder"]["curve"])]
    if acc.get("dtw"):
        systems.append(("MFCC + DTW baseline", acc["dtw"]["curve"]))
    for label, curve in systems:
        ordered = sorted(curve, key=lambda p: p["fa_per_hour"])
        axis.plot(
            [p["fa_per_hour"] for p in ordered], [100 * p["frr"] for p in ordered], marker=".", label=label
        )
    enc = acc["encoder"]
    axis.plot(
        [enc["fa_per_hour"]],
        [100 * enc["frr"]],
        "k*",
        markersize=12,
        label=f"shipped threshold {acc['threshold']:.2f}",
    )
    axis.set_xscale("symlog", linthresh=1.0)
    axis.set_xlim(left=0)
    axis.set_ylim(0, 100)
    axis.set_xlabel("false accepts per hour (10 keywords enrolled)")
    axis.set_ylabel("false reject rate (%)")
    axis.set_title(f"Streaming detection on {acc['hours']:.2f} h of gsc_v2_test speech and noise")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)


def write_report(results: dict[str, Any], markdown_path: Path, png_path: Path) -> None:
    plot_curves(results, png_path)
    plot_conditions(results, png_path.with_name(CONDITIONS_PNG))
    markdown = render_markdown(results, os.path.relpath(png_path, markdown_path.parent))
    soak = soak_section(markdown_path.parent)  # `make soak`'s section, kept from its committed results
    atomic_write_text(markdown_path, markdown + ("\n" + soak if soak else ""))
