"""Where the shipped rule's false accepts on the long-form negatives come from: per keyword, and per music track or
speech sentence, for one benchmark condition's enrollment. Reads `kws-bench`'s cache (run `make bench` first);
evaluates, nothing here is tuned or shipped.

    .venv/bin/python tests/tools/false_accepts.py household-3 [--source music|speech] [--top 5]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from edge.config import load_config  # noqa: E402
from edge.model import load_model  # noqa: E402
from training.bench.experiments import ShippedRule, load_condition, load_negatives, rule_events  # noqa: E402
from training.bench.streaming import DEFAULT_EDGE_CONFIG  # noqa: E402
from training.bench.streams import load_stream  # noqa: E402

MODEL = REPO / "build" / "udkws_int8.tflite"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("condition", help="a kws-bench condition, e.g. 'household-3' or 'own voice'")
    parser.add_argument("--source", choices=["music", "speech"], default="music")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    encoder = load_model(MODEL)
    rule = ShippedRule.for_model(
        load_config(DEFAULT_EDGE_CONFIG), MODEL, encoder.sha256, encoder.frontend_fingerprint
    )
    windows = load_negatives()[args.source]
    events = rule_events(rule, windows, load_condition(args.condition).enrollment)
    items = load_stream(Path(str(windows.audio_path)).parent).truth["events"]
    label = "track" if args.source == "music" else "text"

    def said(time_s: float) -> str:
        found = next((e for e in items if e["clip_start_s"] <= time_s <= e["clip_end_s"] + 1.5), None)
        return str(found[label]) if found else "(gap)"

    hours = windows.hours
    print(f"{args.condition} on {args.source} ({hours:.2f} h): {len(events)} false accepts")
    for keyword, count in collections.Counter(k for k, _, _ in events).most_common():
        where = collections.Counter(said(t) for k, t, _ in events if k == keyword)
        top = "; ".join(f"{n} x {w}" for w, n in where.most_common(args.top))
        print(f"  {keyword}: {count} ({count / hours:.2f}/h): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
