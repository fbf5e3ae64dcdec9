"""The conditions part of the benchmark's report: a table per condition and one DET-style picture (FRR against
false accepts per hour per keyword, one curve per condition), from the results' `conditions` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.bench.experiments import BY_NAME, ConditionTable
from training.figures import save_figure

__all__ = ["plot_conditions", "render_conditions"]

# The targets (make bench, shipped default config): (condition, FA/h/kw level, x key, FRR target).
TARGETS = (
    ("own voice", 0.5, "fa_longform", 0.05, "own voice: FRR <= 5 % at <= 0.5 false accepts/h on the long-form negatives"),
    ("household-1 clean+20 dB", 1.0, "fa_per_hour", 0.25, "household, one enroller, clean and 20 dB: FRR <= 25 % at <= 1 false accept/h"),
)  # fmt: skip


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _targets(table: ConditionTable) -> str:
    lines = []
    for condition, level, key, target, words in TARGETS:
        if not any(r["condition"] == condition for r in table.rows):
            continue
        allowed = [p["frr"] for p in table.curves[condition] if p[key] <= level]
        measured = min(allowed) if allowed else None
        verdict = "-" if measured is None else ("meets" if measured <= target else "MISSES")
        row = table.row(condition)
        at = row["fa_longform"] if key == "fa_longform" else row["fa_per_hour"]
        shipped = "meets" if row["frr"] <= target and at <= level else "MISSES"
        lines.append(
            f"- {words}: **{_pct(measured)}** off the curve ({verdict}); at the shipped operating point "
            f"FRR {_pct(row['frr'])} at {at:.2f} false accepts/h ({shipped})"
        )
    return "\n".join(lines)


def _streams(conditions: dict[str, Any]) -> str:
    s = conditions["streams"]
    speech, music, own, reverb = s["speech"], s["music"], s["own_voice"], s["reverb"]
    enrolled = conditions["enrollments"]
    return f"""- **Long-form negatives** (never contain a keyword): {speech["hours"]:.2f} h of read English by
  {speech.get("speakers", "?")} speakers, the **test** speakers of speechocean762 ({speech["items"].get("speech", 0)}
  utterances, {speech.get("speech_seconds", 0) / 3600:.2f} h of them, short gaps between; {speech.get("utterances_left_out", "?")}
  utterances holding a command word or a relative of one left out), and {music["hours"]:.2f} h of music (every track
  of the Debian package `{conditions["music_package"]}`, reserved for false-alarm measurement). Both at the speech
  level of the streams (-26 dBFS RMS), no added noise.
- **Own voice**: {enrolled["own voice"]["keywords"]} keywords (every `gsc_v2_test` speaker and command word with 4+ takes:
  the first 3 takes enroll, the others are the {own["items"].get("keyword", 0)} utterances), a speaker's keywords enrolled
  together ({enrolled["own voice"]["groups"]} speakers); {own["hours"]:.2f} h stream with the 25 other words and
  `_silence_` as distractors. Another speaker saying the word is neither a hit nor a false accept here.
- **Household-1**: the household stream above (one enroller per keyword, 40 other speakers say it), its clean
  utterances; **20 / 10 / 5 dB**: its noisy ones. **Household-3**: the same stream, each keyword enrolled from one
  take by each of 3 other speakers (the take checks refuse such mixed takes for {len(enrolled["household-3"]["notes"])}
  of 10 keywords; they are enrolled without them).
- **Reverb**: the household stream's {reverb["items"].get("keyword", 0)} keyword clips and {reverb["items"].get("unknown", 0)}
  unknown-word clips, each in one of {reverb.get("rooms", "?")} simulated rooms of the evaluation room bank
  (`training.evaluation.conditions.room_bank`, fixed seed), no added noise; {reverb["hours"]:.2f} h, household-1 templates."""


def render_conditions(results: dict[str, Any], png_name: str) -> str:
    """The `## Conditions` section of docs/BENCHMARKS.md ('' when the run had none)."""
    conditions = results.get("conditions")
    if not conditions:
        return ""
    table = ConditionTable(**conditions["table"])
    examples = "\n".join(f"  - {e}" for e in conditions.get("speech_false_accept_examples", [])) or "  - none"
    walls = conditions["wall_s"]
    if conditions["embed_cpu_s"] > 0:
        prepared = (
            f"building the condition streams {walls['streams']:.0f} s, embedding and enrolling "
            f"{walls['prepare']:.0f} s ({conditions['embed_cpu_s']:.0f} CPU s of encoder passes)"
        )
    else:
        prepared = "the streams and embeddings came from that cache (built by an earlier run)"
    baseline = conditions.get("baseline_table")
    baseline_text = ""
    if baseline:
        old_rule = ConditionTable(**baseline)
        baseline_text = f"""
For comparison, the same conditions with one cosine threshold for every keyword and no look-alike negatives
(`{old_rule.rule}`, threshold {old_rule.settings["threshold"]:.3f}), the detector before false-alarm budgets:

{old_rule.markdown()}
"""
    settings = table.settings
    floor = float(settings.get("lookalike_prune_floor", 1.0))
    pruned = (
        f" (less those more like one of the user's takes than the takes agree and than {floor:g})"
        if floor < 1
        else ""
    )
    return f"""## Conditions: false rejects against false accepts per hour per keyword

Every condition with the shipped configuration, as the daemon runs it (`{table.rule}`): each keyword's threshold
keeps it within **{settings.get("false_alarms_per_hour", 0):g} false alarms per hour** on the model's cohort (ordinary speech and
music, never these streams), and the cohort's {settings.get("hard_negatives", 0)} moments most like the keyword{pruned} veto windows
more like them than the keyword; {settings["trigger_level"]} of {settings["trigger_window"]} windows, refractory {settings["refractory_ms"]} ms.
False accepts are **per hour per keyword**: every enrolled keyword listens to the long-form negatives (speech and
music) and to the condition stream's distractors, and the false accepts of all of them are divided by the hours
and the number of keywords. "Long-form only" counts the speech and music alone. "At the rule's thresholds" is
the shipped operating point; the FRR at <= N is the best point of the curve (one shift of every keyword's
threshold), not a setting anyone ships.

{_targets(table)}

{table.markdown()}
{baseline_text}
![FRR against false accepts per hour per keyword, one curve per condition]({png_name})

{_streams(conditions)}

Where the household-1 keywords fired on the long-form speech, the highest scores:
{examples}

These figures come from the encoder outputs cached under `build/bench/` (`{conditions["index"]}`), so a new
decision rule is evaluated over every condition in seconds (`training.bench.experiments`, docs/bench.md): the
baseline table above took {walls["evaluate_rule"]:.0f} s (wall); {prepared}.
"""


def plot_conditions(results: dict[str, Any], path: Path) -> Path | None:
    conditions = results.get("conditions")
    if not conditions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = ConditionTable(**conditions["table"])
    figure, axis = plt.subplots(figsize=(8, 5.5))
    styles = {"own voice": "-", "household-1": "-", "household-3": "--", "reverb": ":"}
    for name, curve in table.curves.items():
        if name not in BY_NAME or not BY_NAME[name].plotted:
            continue
        ordered = sorted(curve, key=lambda p: -p["offset"])  # a threshold sweep, drawn in threshold order
        (line,) = axis.plot(
            [p["fa_per_hour"] for p in ordered],
            [100 * p["frr"] for p in ordered],
            styles.get(name, "-."),
            marker=".",
            markersize=4,
            label=name,
        )
        shipped = table.row(name)
        axis.plot(
            [shipped["fa_per_hour"]], [100 * shipped["frr"]], "*", color=line.get_color(), markersize=11
        )
    axis.plot([], [], "k*", markersize=11, label="shipped operating point")
    axis.set_xscale("symlog", linthresh=0.1)
    axis.set_xlim(left=0)
    axis.set_ylim(0, 100)
    for level in (0.5, 1.0, 5.0):
        axis.axvline(level, color="grey", linewidth=0.6, alpha=0.5)
    axis.set_xlabel(
        "false accepts per hour per keyword (long-form speech + music + the stream's distractors)"
    )
    axis.set_ylabel("false reject rate (%)")
    axis.set_title("Detection by condition (gsc_v2_test keywords; speechocean762 test speech and music)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
