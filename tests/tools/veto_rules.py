"""The look-alike veto, examined on `kws-bench`'s cached outputs (docs/RESULTS.md, "Stage 2 in continuous
listening"). Needs a finished `make bench` for the current model; evaluates, nothing here is shipped or tuned.

    .venv/bin/python tests/tools/veto_rules.py misses          # own-voice utterances lost to the veto
    .venv/bin/python tests/tools/veto_rules.py template best prune guard
    .venv/bin/python tests/tools/veto_rules.py --dev template best prune guard   # on `make bench-dev`'s cache

Rules (each keyword's threshold recomputed from the 0.5/h budget on the cohort's calibration half under the
rule's own veto, with `edge.budget`):
- template: the shipped rule (a window is vetoed when a look-alike resembles it more than the keyword's mean);
- best: vetoed only when a look-alike beats the better of the mean and the best single take;
- prune: look-alikes that out-score one of the user's takes (each against the mean of the other two) dropped;
- guard: windows scoring at least the takes' leave-one-out minimum are never vetoed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from edge import budget  # noqa: E402
from edge.config import DetectorConfig, load_config  # noqa: E402
from edge.model import load_model  # noqa: E402
from training.bench.embedcache import Enrollment, StreamWindows  # noqa: E402
from training.bench.experiments import RuleScores, ShippedRule, evaluate_rule, load_condition  # noqa: E402
from training.bench.streaming import DEFAULT_EDGE_CONFIG  # noqa: E402
from training.evaluation.embedders import l2_normalise  # noqa: E402

CONDITIONS = ["own voice", "household-1 clean+20 dB", "10 dB", "reverb"]
MODEL = REPO / "build" / "udkws_int8.tflite"


def shipped_rule() -> ShippedRule:
    encoder = load_model(MODEL)
    return ShippedRule.for_model(
        load_config(DEFAULT_EDGE_CONFIG), MODEL, encoder.sha256, encoder.frontend_fingerprint
    )


def leave_one_out(takes: np.ndarray) -> np.ndarray:
    """Each take's cosine with the mean of the others."""
    return np.array(
        [takes[i] @ l2_normalise(np.delete(takes, i, 0).mean(0, keepdims=True))[0] for i in range(len(takes))]
    )


def vetoed(
    rows: np.ndarray, scores: np.ndarray, takes: np.ndarray, negatives: np.ndarray, mode: str
) -> np.ndarray:
    """Which of `rows` (window embeddings with keyword `scores`) the rule vetoes."""
    if negatives.shape[0] == 0:
        return np.zeros(rows.shape[0], dtype=bool)
    reference = np.maximum(scores, np.max(rows @ takes.T, axis=1)) if mode == "best" else scores
    hit = np.max(rows @ negatives.T, axis=1) > reference
    return hit & (scores < leave_one_out(takes).min()) if mode == "guard" else hit


@dataclass(frozen=True)
class VetoRule:
    base: ShippedRule
    mode: str

    @property
    def settings(self) -> DetectorConfig:
        return self.base.settings

    @property
    def name(self) -> str:
        return f"veto: {self.mode}"

    def score(self, windows: StreamWindows, enrollment: Enrollment) -> RuleScores:
        s = self.settings
        calibration = self.base.resolver._halves[1]  # the half the shipped budget calibrates on
        refractory = max(0, s.refractory_ms // s.hop_ms)
        resolved = self.base.resolver.resolve(self.base.templates(enrollment))
        out = np.empty((windows.embeddings.shape[0], len(resolved)), np.float32)
        thresholds = []
        for k, keyword in enumerate(resolved):
            template, takes, negatives = (
                keyword.template.embedding,
                enrollment.takes[k],
                keyword.template.negatives,
            )
            if self.mode == "prune" and negatives.shape[0]:
                negatives = negatives[~np.any(negatives @ takes.T > leave_one_out(takes), axis=1)]
            cohort = calibration.scores(template)
            checked = np.flatnonzero(cohort >= budget.MIN_THRESHOLD)
            cohort[
                checked[vetoed(calibration.rows(checked), cohort[checked], takes, negatives, self.mode)]
            ] = -np.inf
            found = budget.budget_for_template(
                template,
                calibration,
                s.false_alarms_per_hour,
                s.trigger_level,
                s.trigger_window,
                refractory,
                take_units=takes,
                scores=cohort,
            )
            thresholds.append(found.threshold)
            scores = (windows.embeddings @ template).astype(np.float32)
            checked = np.flatnonzero(scores >= self.base.lowest_checked)
            scores[
                checked[vetoed(windows.embeddings[checked], scores[checked], takes, negatives, self.mode)]
            ] = -np.inf
            scores[windows.gated] = -np.inf
            out[:, k] = scores
        return RuleScores(out, np.array(thresholds, np.float32))


def own_voice_misses(rule: ShippedRule) -> dict[str, int]:
    """Own-voice utterances at the rule's thresholds: never 2 windows above it, above it but vetoed, kept."""
    condition = load_condition("own voice")
    vetoed_scores = rule.score(condition.windows, condition.enrollment)
    raw = condition.windows.embeddings @ condition.enrollment.templates.T
    raw[condition.windows.gated] = -np.inf
    index = {k: i for i, k in enumerate(condition.enrollment.keywords)}
    ends = condition.windows.ends / 16000.0
    counts = {"below": 0, "vetoed": 0, "reached": 0}
    for item in (t for t in condition.truth if t.get("kind") == "keyword"):
        k = index[item["keyword"]]
        span = (ends > item["start_s"]) & (ends <= item["end_s"] + 1.0)
        second = [np.sort(m[span, k])[-2] if span.sum() > 1 else -np.inf for m in (raw, vetoed_scores.scores)]
        threshold = vetoed_scores.thresholds[k]
        counts["below" if second[0] < threshold else "vetoed" if second[1] < threshold else "reached"] += 1
    return counts


MODES = ("misses", "template", "best", "prune", "guard")


def dev_table(modes: list[str]) -> None:
    """The rules on the development condition (training.bench.dev), each keyword's budget under its own veto."""
    from edge.resolver import KeywordResolver
    from training.bench.dev import DEV_ROOT, DevConfig, evaluate_rule_on, prepare

    data = prepare(
        REPO.parent / "shared" / "data",
        REPO.parent / "sources" / "speechocean762",
        MODEL,
        DevConfig(),
        DEV_ROOT,
        False,
    )
    s = data.settings
    base = ShippedRule(
        s, KeywordResolver(s, data.cohort), data.encoder.sha256, data.encoder.frontend_fingerprint
    )
    for mode in modes:
        for name, parts in data.conditions.items():
            row = evaluate_rule_on(VetoRule(base, mode), data, parts)
            print(
                f"{mode:8s} {name:12s} FRR {100 * row['frr']:5.1f} % at {row['fa_longform']:.2f} FA/h/kw long-form"
            )


def main(modes: list[str]) -> None:
    dev = modes[:1] == ["--dev"]
    modes = modes[1:] if dev else modes
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise SystemExit(
            f"veto_rules.py: unknown mode(s) {', '.join(unknown)}; expected any of {', '.join(MODES)}"
        )
    if dev:
        dev_table([m for m in modes if m != "misses"] or [m for m in MODES if m != "misses"])
        return
    base = shipped_rule()
    for mode in modes:
        if mode == "misses":
            print("own voice at the shipped rule's thresholds:", own_voice_misses(base))
            continue
        table = evaluate_rule(VetoRule(base, mode), CONDITIONS)
        for condition in CONDITIONS:
            row = table.row(condition)
            print(
                f"{mode:8s} {condition:26s} FRR {100 * row['frr']:5.1f} % at {row['fa_longform']:.2f} FA/h long-form;"
                f" FRR at <= 0.5 / <= 1 FA/h long-form {100 * row['frr_at_longform']['0.5']:.1f} /"
                f" {100 * row['frr_at_longform']['1.0']:.1f} %"
            )


if __name__ == "__main__":
    main(sys.argv[1:] or list(MODES))
