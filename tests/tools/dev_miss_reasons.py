"""Why each utterance of one development condition is missed under the exact rule (the bench's sweep at the
rule's thresholds; tests/tools/dev_misses.py gives the shares over all utterances instead), one line each: the
keyword's threshold, the window scores around the utterance, how many windows reached the threshold, were vetoed by
a look-alike and given back by the second look, and each reached window's distance to the closest take
(edge.takematch). A tally closes it:

  below threshold        no window reached the keyword's threshold (the encoder)
  reached, < L of W      some did, never `trigger_level` of `trigger_window` (the trigger rule)
  L of W reached, vetoed enough did, but look-alikes vetoed them and the second look did not give them back
  fired for another keyword or silent   the rule held, but another keyword won those windows (one keyword per
                         window) or the keyword was in its refractory period

Run after `kws-bench dev` has cached the condition (build/bench-dev):

    .venv/bin/python tests/tools/dev_miss_reasons.py --condition "own voice" --floor 7
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge.budget import veto_mask  # noqa: E402
from edge.resolver import KeywordResolver  # noqa: E402
from edge.takematch import best_distance  # noqa: E402
from training.bench import dev  # noqa: E402
from training.bench.experiments import ShippedRule  # noqa: E402
from training.bench.second_look import FRAMES  # noqa: E402
from training.bench.sweep import run_sweep  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--condition", default="own voice", choices=["own voice", "household-1", "household-3"]
    )
    parser.add_argument("--speechocean", type=Path, default=REPO.parent / "sources" / "speechocean762")
    parser.add_argument(
        "--spread", type=float, help="detector.take_match_spread (default: the shipped config)"
    )
    parser.add_argument("--floor", type=float, help="detector.take_match_floor (default: the shipped config)")
    args = parser.parse_args()
    defaults = dev._parser().parse_args(["--speechocean", str(args.speechocean)])
    config = dev.DevConfig(
        cohort_music_hours=defaults.cohort_music_hours,
        cohort_hours=defaults.cohort_hours,
        max_pairs=defaults.max_pairs,
        distractor_clips=defaults.distractors,
    )
    data = dev.prepare(
        defaults.data_dir, args.speechocean, defaults.model, config, defaults.out, False, defaults.music,
        defaults.cohort_music_pack,
    )  # fmt: skip
    settings = data.settings
    if args.spread is not None:
        settings = dataclasses.replace(settings, take_match_spread=args.spread)
    if args.floor is not None:
        settings = dataclasses.replace(settings, take_match_floor=args.floor)
    rule = ShippedRule(
        settings,
        KeywordResolver(settings, data.cohort),
        data.encoder.sha256,
        data.encoder.frontend_fingerprint,
    )
    tally: Counter[str] = Counter()
    utterances = 0
    level, span = settings.trigger_level, settings.trigger_window
    for part in data.conditions[args.condition]:
        sweep, targets = run_sweep(
            rule, data.windows, part.enrollment, part.truth, {"speech": data.speech, "music": data.music}, 60,
            50.0, 1.0,
        )  # fmt: skip
        found = sweep.matched[sweep.offsets.index(0.0)]
        resolved = rule.resolver.resolve(rule.templates(part.enrollment))
        ends_s = data.windows.ends / 16000
        for k, (own, starts, ends) in enumerate(targets.per_keyword):
            template = resolved[k].template
            threshold = float(template.threshold or 0.0)
            utterances += own.shape[0]
            for utterance, start, end in zip(own, starts, ends, strict=True):
                if found[utterance]:
                    continue
                rows = np.flatnonzero((ends_s > start) & (ends_s <= end + 1.0))
                scores = data.windows.embeddings[rows] @ template.embedding
                scores[data.windows.gated[rows]] = -1.0
                closest = (
                    np.max(data.windows.embeddings[rows] @ template.negatives.T, axis=1)
                    if template.negatives.shape[0]
                    else np.full(rows.shape[0], -np.inf)
                )
                reached = scores >= threshold
                vetoed = reached & veto_mask(closest, scores, settings.veto_margin)
                distances = np.full(rows.shape[0], np.nan)
                given = np.zeros(rows.shape[0], dtype=bool)
                if template.take_speech and reached.any():
                    distances[reached] = best_distance(
                        template.take_speech, FRAMES.windows(data.windows, rows[reached], 24000)
                    )
                    within = resolved[k].second_look_within
                    if within is not None:
                        given = vetoed & (distances <= within)
                runs = [
                    np.sort(scores[i : i + span])[-level] for i in range(max(1, rows.shape[0] - span + 1))
                ]
                hits = (reached & ~vetoed) | given
                hit_runs = [int(hits[i : i + span].sum()) for i in range(max(1, rows.shape[0] - span + 1))]
                if not reached.any():
                    why = "below threshold"
                elif max(runs) < threshold:
                    why = f"reached, < {level} of {span}"
                elif max(hit_runs) < level:
                    why = f"{level} of {span} reached, vetoed"
                else:  # the rule held: another keyword won the window, or it was still silent after a detection
                    why = "fired for another keyword or silent"
                tally[why] += 1
                spread = "-" if template.take_spread is None else f"{template.take_spread:.1f}"
                print(
                    f"{template.name:24s} threshold {threshold:.3f} max {scores.max():.3f} reached "
                    f"{int(reached.sum())} vetoed {int(vetoed.sum())} given back {int(given.sum())} spread {spread} "
                    f"distances {np.round(distances[reached], 1).tolist()[:6]}: {why}"
                )
    missed = sum(tally.values())
    print(
        f"{args.condition}: {missed} of {utterances} missed: "
        + ", ".join(f"{n} {w}" for w, n in tally.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
