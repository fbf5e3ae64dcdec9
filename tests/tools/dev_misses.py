"""Why the development condition's utterances are missed under the shipped rule: per condition, the share that
reach the threshold on at least `trigger_level` of their windows after the look-alike veto (found), only before
it (lost to the veto), or not even then (below the threshold). Reads `kws-bench dev`'s cache (run `make bench-dev`
first); evaluates, nothing here is tuned or shipped. A count per utterance, not the trigger's exact window rule.

    .venv/bin/python tests/tools/dev_misses.py [--speechocean ../sources/speechocean762]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from edge.resolver import KeywordResolver  # noqa: E402
from training.bench.dev import DEV_ROOT, DevConfig, prepare  # noqa: E402
from training.bench.experiments import ShippedRule  # noqa: E402
from training.bench.sweep import Targets  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speechocean", type=Path, default=REPO.parent / "sources" / "speechocean762")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=REPO / "build" / "udkws_int8.tflite")
    args = parser.parse_args(argv)
    data = prepare(args.data_dir, args.speechocean, args.model, DevConfig(), DEV_ROOT, progress=False)
    settings = data.settings
    rule = ShippedRule(
        settings,
        KeywordResolver(settings, data.cohort),
        data.encoder.sha256,
        data.encoder.frontend_fingerprint,
    )
    ends_s = data.windows.ends / 16000
    for name, parts in data.conditions.items():
        counts = {"found": 0, "lost to the veto": 0, "below the threshold": 0}
        for part in parts:
            scored = rule.score(data.windows, part.enrollment)
            resolved = rule.resolver.resolve(rule.templates(part.enrollment))
            raw = data.windows.embeddings @ np.stack([r.template.embedding for r in resolved]).T
            for k, (_, starts, stops) in enumerate(Targets.make(part.truth, part.enrollment).per_keyword):
                for start, stop in zip(starts, stops, strict=True):
                    seen = np.flatnonzero((ends_s >= start) & (ends_s <= stop + 1.0))
                    after = int(np.sum(scored.scores[seen, k] >= scored.thresholds[k]))
                    before = int(np.sum(raw[seen, k] >= scored.thresholds[k]))
                    key = (
                        "found"
                        if after >= settings.trigger_level
                        else "lost to the veto"
                        if before >= settings.trigger_level
                        else "below the threshold"
                    )
                    counts[key] += 1
        total = sum(counts.values())
        shares = ", ".join(f"{key} {100 * value / max(1, total):.1f} %" for key, value in counts.items())
        print(f"{name}: {total} utterances: {shares}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
