"""What the second look at vetoed windows costs the daemon: the daemon process on the first 10 minutes of the
benchmark's household stream with its ten keywords, `detector.take_match_spread` as configured and 0 (off),
alternated; median CPU seconds of each. Run after `make bench` (it reuses build/bench):

    .venv/bin/python tests/tools/second_look_cost.py --repeats 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge.audio import load_audio  # noqa: E402
from training.bench.daemon_run import run_daemon_process  # noqa: E402
from training.bench.experiments import BENCH_ROOT, _index  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "build" / "udkws_int8.tflite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument(
        "--state", help="a state folder under build/bench/state (default: the household keywords)"
    )
    args = parser.parse_args()
    index = _index(BENCH_ROOT)
    stream = BENCH_ROOT / index["streams"]["household"]["stream"] / "stream.flac"
    audio = load_audio(stream)[: int(args.seconds * 16000)]
    pcm = np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)
    config = BENCH_ROOT / "edge_config.toml"
    # the household stream's keywords (the other conditions' states are named after them)
    states = [d for d in (BENCH_ROOT / "state").iterdir() if "-" not in d.name]
    state = BENCH_ROOT / "state" / args.state if args.state else states[0]
    with tempfile.TemporaryDirectory() as tmp:
        off = Path(tmp) / "off.toml"
        off.write_text(re.sub(r"(?m)^take_match_spread = .*$", "take_match_spread = 0.0", config.read_text()))
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.repeats):
            for name, path in (("on", config), ("off", off)):
                run = run_daemon_process(args.model, state, pcm, gate=True, config_path=path, threads=1)
                cpu[name].append(run.cpu_s)
                print(f"{name}: {run.cpu_s:.2f} CPU s, {len(run.events)} detections", flush=True)
    on, off_s = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    print(f"median CPU s over {args.seconds:g} s of audio: second look {on:.2f}, off {off_s:.2f}; "
          f"difference {100 * (on - off_s) / args.seconds:.3f} % of one core")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
