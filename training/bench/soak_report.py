"""The soak's place in docs/BENCHMARKS.md: a section between markers, rendered from docs/soak_results.json.

`make soak` writes the results file, the plot (docs/soak.png) and the section; `make bench`, which rewrites the
rest of BENCHMARKS.md, appends the same section from the committed results file, so neither loses the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.fileio import atomic_write_json, atomic_write_text
from training.figures import save_figure

__all__ = ["BEGIN", "END", "render_section", "soak_section", "write_soak_report"]

BEGIN = "<!-- soak:begin (written by `make soak` from docs/soak_results.json) -->"
END = "<!-- soak:end -->"
RESULTS_NAME = "soak_results.json"
PNG_NAME = "soak.png"


def _hour_rows(results: dict[str, Any]) -> list[str]:
    samples, block_h = results["samples"], results["block_s"] / 3600
    rows = [
        "| simulated hour | RSS (MB) | descriptors | threads | CPU in that hour (s) | CPU / fresh daemon's |",
        "|---|---|---|---|---|---|",
    ]
    per_block = zip(samples[1:], results["cpu_s_per_block"], results["cpu_ratio_to_fresh"], strict=True)
    for index, (sample, cpu, ratio) in enumerate(per_block):
        rows.append(
            f"| {(index + 1) * block_h:g} | {sample['rss_mb']:.1f} | {sample['fds']} | {sample['threads']} "
            f"| {cpu:.2f} | {ratio:.3f} |"
        )
    return rows


def render_section(results: dict[str, Any], png_name: str = PNG_NAME) -> str:
    growth, watchdog, reloads = results["growth_after_first_block"], results["watchdog"], results["reloads"]
    actions = ", ".join(f"{kind} {count}" for kind, count in sorted(results["actions"].items()))
    failed = [name for name, ok in results["checks"].items() if not ok]
    verdict = "PASSED: every check held" if results["passed"] else f"FAILED: {', '.join(failed)}"
    hours = results["simulated_hours"]
    return f"""{BEGIN}
## Soak: {hours:g} simulated hours through the daemon

`{results.get("command", "make soak")}` on {results["created"]}: {results["wall_s"] / 60:.1f} minutes of wall time
({results["speed"]:.0f} times real time) on this {results["machine"]["cores"]}-core machine, shared with other
jobs (load average {results["machine"].get("load_before", "?")} at the start, {results["machine"]["load_after"]} at the end). Model sha256 {results["model_sha256"][:12]}.
{verdict}.

The real daemon process (`kws-edge run --stdin`, with a systemd notify socket and a 2 s watchdog) read {hours:g}
hours of audio built from the demo stream, Speech Commands noise and digital silence
(`training/bench/soak_stream.py`), with the keyword "happy" {results["occurrences"]} times at random moments. A
second process changed the keywords {sum(results["actions"].values())} times at random moments of the stream
({actions}) through the real command line, SIGHUP, the configuration file's time stamp and torn keyword files
(`training/bench/soak_mutator.py`).

| check | result |
|---|---|
| keyword occurrences found | {results["detected"]} of {results["occurrences"]} |
| other detections (false alarms) | {results["false_alarms"]} |
| RSS growth after the first hour (limit 5 %) | {100 * growth["rss"]:.1f} % |
| descriptor / thread growth after the first hour (limit 5 %) | {100 * growth["fds"]:.1f} % / {100 * growth["threads"]:.1f} % |
| CPU per hour over a fresh daemon's on the same audio, fitted trend from hour 2 (limit 5 %) | {100 * growth["cpu_trend"]:+.1f} % (raw CPU per hour: {100 * growth["cpu_trend_raw"]:+.1f} %) |
| keyword changes reloaded (a `keywords` event with the new set) | {reloads["seen"]} of {reloads["expected"]}; median {reloads["median_s"]} s, longest {reloads["max_s"]} s of wall time |
| watchdog: pings, longest silence (the unit's WatchdogSec is {watchdog["limit_s"]:g} s) | {watchdog["pings"]}, {watchdog["longest_gap_s"]:g} s |
| exit at the end of the stream | status {results["exit_code"]} |

![RSS and CPU of the daemon per simulated hour]({png_name})

{chr(10).join(_hour_rows(results))}

Every hour holds the same pieces (silence, noise at a ladder of levels, demo speech, keywords) in its own order, so
the daemon does the same work each hour. Its CPU time for that work still varies with the machine's load (other
jobs share these cores), so the CPU check compares it, hour by hour, with a daemon started fresh for that hour and
fed the same audio at the same time (`training/bench/soak_run.py`): a long-running daemon that slowed down would
drift away from the fresh one. The fitted trend of that ratio is what is checked.
{END}
"""


def plot_soak(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block_h = results["block_s"] / 3600
    hours = [(i + 1) * block_h for i in range(len(results["cpu_s_per_block"]))]
    figure, (rss_axis, cpu_axis, ratio_axis) = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True)
    rss_axis.plot(hours, [s["rss_mb"] for s in results["samples"][1:]], marker=".")
    rss_axis.set_ylabel("RSS at the end\nof the hour (MB)")
    rss_axis.set_ylim(0, 1.2 * max(s["rss_mb"] for s in results["samples"]))
    cpu_axis.plot(hours, results["cpu_s_per_block"], marker=".", color="tab:orange")
    cpu_axis.set_ylabel("daemon CPU\nin the hour (s)")
    cpu_axis.set_ylim(0, 1.2 * max(results["cpu_s_per_block"]))
    ratio_axis.plot(hours, results["cpu_ratio_to_fresh"], marker=".", color="tab:green")
    ratio_axis.axhline(1.0, color="grey", linewidth=0.8)
    ratios = [1.0, *results["cpu_ratio_to_fresh"]]
    ratio_axis.set_ylim(min(0.9, min(ratios) - 0.02), max(1.2, max(ratios) + 0.02))
    ratio_axis.set_ylabel("CPU over a fresh\ndaemon's (same audio)")
    ratio_axis.set_xlabel("simulated hour")
    for axis in (rss_axis, cpu_axis, ratio_axis):
        axis.grid(True, alpha=0.3)
    rss_axis.set_title(f"kws-edge run over {results['simulated_hours']:g} simulated hours")
    figure.tight_layout()
    return save_figure(figure, path, dpi=100)


def soak_section(docs_dir: Path) -> str:
    """The section for the BENCHMARKS.md in `docs_dir`, from its committed results; empty when there are none."""
    results_path = docs_dir / RESULTS_NAME
    if not results_path.is_file():
        return ""
    return render_section(json.loads(results_path.read_text()))


def write_soak_report(results: dict[str, Any], markdown_path: Path) -> None:
    """Results file and plot beside the report, and the report's soak section replaced (or appended)."""
    docs = markdown_path.parent
    atomic_write_json(docs / RESULTS_NAME, results)
    plot_soak(results, docs / PNG_NAME)
    text = markdown_path.read_text() if markdown_path.is_file() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + render_section(results).rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + render_section(results)
    atomic_write_text(markdown_path, text)
