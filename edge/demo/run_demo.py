"""`make demo`: enroll "happy" from three bundled takes, replay a bundled 60 s stream through the real daemon
(`kws-edge run --file`, mock GPIO), and print the detections, the LED events and a summary against the
stream's ground truth. No microphone or board needed.

Model: `build/udkws_int8.tflite` (the shipped one; or `DEMO_MODEL=path`) when present; otherwise a RANDOM-weight test encoder is
built (tests/edge_fixtures.py) so that the whole pipeline still runs, and the summary says that its detections
mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge.commands import score_against_truth  # noqa: E402

DEMO = REPO / "edge" / "demo"
SHIPPED = REPO / "build" / "udkws_int8.tflite"
KWS = [sys.executable, "-m", "edge.cli"]


def _model() -> tuple[Path, bool]:
    chosen = Path(os.environ.get("DEMO_MODEL", SHIPPED))  # DEMO_MODEL=path: try another converted model
    if chosen.is_file() and chosen.with_suffix(".json").is_file():
        return chosen.resolve(), True
    print(
        "NOTE: build/udkws_int8.tflite is not built yet: using a RANDOM-weight test encoder instead.\n"
        "      The pipeline is real (enrollment, streaming MFCC, int8 LiteRT, detection, mock GPIO), but a\n"
        "      random encoder knows no words, so expect misses and false alarms.\n",
        flush=True,
    )
    out = REPO / "cache" / "demo_model"
    subprocess.run(
        [sys.executable, "-m", "tests.edge_fixtures", str(out)],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    return out / "udkws_int8.tflite", False


def main() -> int:
    started = time.monotonic()
    model, shipped = _model()
    truth_path = DEMO / "stream_truth.json"
    truth = json.loads(truth_path.read_text())
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="udkws-demo-") as state:
        takes = sorted(DEMO.glob(f"enroll_{truth['keyword']}_*.wav"))
        enroll = [
            *KWS,
            "enroll",
            truth["keyword"],
            *map(str, takes),
            "--model",
            str(model),
            "--state-dir",
            state,
            "--pin",
            "22",
        ]
        if not shipped:
            enroll.append("--no-checks")  # a random encoder finds real takes of one word "inconsistent"
        print(f"$ kws-edge enroll {truth['keyword']} {' '.join(t.name for t in takes)}", flush=True)
        if subprocess.run(enroll, cwd=REPO, env=env).returncode != 0:
            print("the take checks refused a take (above); enrolling without them", flush=True)
            subprocess.run([*enroll, "--no-checks"], check=True, cwd=REPO, env=env)
        print(
            f"\n$ GPIOZERO_PIN_FACTORY=mock kws-edge run --file {DEMO.name}/stream.flac   "
            f"({truth['seconds']:.0f} s: {truth['keyword']!r} x "
            f"{sum(e['word'] == truth['keyword'] for e in truth['events'])} among {len(truth['events'])} words)",
            flush=True,
        )
        run = subprocess.run(
            [*KWS, "run", "--model", str(model), "--state-dir", state, "--file", str(DEMO / "stream.flac")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return run.returncode
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    detections = []
    for event in events:
        if event["event"] == "detection":
            detections.append(event["time_s"])
            print(
                f"  {event['time_s']:7.2f} s  DETECTED {event['keyword']!r}  score {event['score']:.3f} "
                f"(threshold {event['threshold']:.3f})"
            )
        elif event["event"] == "led":
            print(f"  {'':7} LED  pin {event['pin']}: {event['pattern']}")
    window_s = json.loads(model.with_suffix(".json").read_text())["window_seconds"]
    summary = score_against_truth(detections, truth_path, window_s)
    stopped = events[-1]
    print(
        f"\nsummary: {summary['detected']}/{summary['utterances']} utterances of {summary['keyword']!r} detected, "
        f"{summary['false_alarms']} false alarm(s) among {summary['other_words']} other words and noise; "
        f"missed at {summary['missed_at_s']} s; false alarms at {summary['false_alarms_at_s']} s"
    )
    print(
        f"daemon: {stopped['audio_s']} s of audio, {stopped['windows']} windows, {stopped['windows_gated']} skipped "
        f"by the energy gate; model {model}{'' if shipped else ' (RANDOM weights)'}; "
        f"demo took {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
