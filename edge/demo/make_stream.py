"""Build the bundled demo audio reproducibly from speakers held out of the model's training.

Writes into edge/demo/:
- `enroll_happy_1..3.wav`: three takes of "happy" by three held-out speakers of Speech Commands v0.01 (takes
  that pass `kws-edge enroll`'s checks); never gsc_v2_test;
- `stream.flac`: about 60 s in which "happy" is spoken 6 times by 6 other held-out speakers, among 12 other
  words (Speech Commands words and FSDD digits of held-out speakers), over a quiet kitchen/tap noise bed from
  Speech Commands' background noise, with silences between;
- `stream_truth.json`: every word's placement (start/end of its speech in the stream, speaker, source file);
- `ATTRIBUTION.md`: the sources and licences of all of it.

Run: `.venv/bin/python edge/demo/make_stream.py [HELD_OUT_CLIPS.txt]` (needs KWS_DATA_DIR or ../shared/data and
soundfile). Without an argument the speakers come from the manifest's `validation` (Speech Commands) and `test`
(FSDD) parts; with the list that `tests/tools/held_out_clips.py CHECKPOINT` writes, only from the speakers that
the model's own training run held out.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge.audio import load_audio, write_wav  # noqa: E402

OUT = Path(__file__).resolve().parent
KEYWORD = "happy"
SEED = 20231
RATE = 16000
SECONDS = 60.0
KEYWORD_COUNT = 6
OTHER_COUNT = 12
NOISE_FILES = ("running_tap.flac", "doing_the_dishes.flac")
NOISE_DBFS = -55.0
SPEECH_PEAK = 0.5


def _data_dir() -> Path:
    configured = os.environ.get("KWS_DATA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def _speech_bounds(audio: np.ndarray) -> tuple[int, int]:
    """First and last 10 ms block within 30 dB of the loudest one: the spoken part of a clip."""
    blocks = audio[: audio.shape[0] // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.maximum(np.mean(blocks.astype(np.float64) ** 2, axis=1), 1e-12))
    voiced = np.flatnonzero(level >= level.max() - 30)
    return int(voiced[0]) * 160, int(voiced[-1] + 1) * 160


def _passes_take_checks(path: Path) -> bool:
    from edge.commands import take_from_audio
    from edge.takes import TakeChecks

    try:
        take_from_audio(_normalise(load_audio(path)), 24000, TakeChecks(), str(path))
    except ValueError:
        return False
    return True


def _normalise(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) or 1.0
    return (audio * (SPEECH_PEAK / peak)).astype(np.float32)


def main() -> int:
    data = _data_dir()
    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(SEED)
    listed = set(Path(sys.argv[1]).read_text().split()) if len(sys.argv) > 1 else None
    if listed is not None:
        # The training run's held-out clips (tests/tools/held_out_clips.py CHECKPOINT): speakers it never saw.
        rows = [r for r in rows if r["path"] in listed]
    held_out = [
        r
        for r in rows
        if r["dataset"] == "gsc_v1_words" and (listed is not None or r["split"] == "validation")
    ]
    keyword_rows = sorted((r for r in held_out if r["word"] == KEYWORD), key=lambda r: r["path"])
    order = rng.permutation(len(keyword_rows))
    # Enrollment takes must pass `kws-edge enroll`'s checks (some corpus clips are near-silent or clipped).
    enroll_rows = [keyword_rows[i] for i in order if _passes_take_checks(data / keyword_rows[i]["path"])][:3]
    target_rows = [keyword_rows[i] for i in order if keyword_rows[i] not in enroll_rows][:KEYWORD_COUNT]
    enroll_speakers = {r["speaker"] for r in enroll_rows}
    target_rows = [r for r in target_rows if r["speaker"] not in enroll_speakers]
    others = sorted((r for r in held_out if r["word"] != KEYWORD), key=lambda r: r["path"])
    digits = sorted(
        (r for r in rows if r["dataset"] == "fsdd" and (listed is not None or r["split"] == "test")),
        key=lambda r: r["path"],
    )
    other_rows = [others[i] for i in rng.choice(len(others), size=OTHER_COUNT - 4, replace=False)]
    other_rows += [digits[i] for i in rng.choice(len(digits), size=4, replace=False)]

    for i, row in enumerate(enroll_rows, 1):
        write_wav(OUT / f"enroll_{KEYWORD}_{i}.wav", _normalise(load_audio(data / row["path"])))

    placements = [(row, True) for row in target_rows] + [(row, False) for row in other_rows]
    order = rng.permutation(len(placements))
    total = int(SECONDS * RATE)
    noise = np.concatenate([load_audio(data / "gsc_noise" / name) for name in NOISE_FILES])
    start = int(rng.integers(0, noise.shape[0] - total))
    bed = noise[start : start + total].astype(np.float64)
    bed *= 10 ** (NOISE_DBFS / 20) / max(float(np.sqrt(np.mean(bed**2))), 1e-9)
    stream = bed.copy()
    slot = total // len(placements)
    events = []
    for n, index in enumerate(order):
        row, _ = placements[index]
        clip = _normalise(load_audio(data / row["path"]))
        lo, hi = _speech_bounds(clip)
        clip = clip[max(0, lo - 1600) : hi + 1600]
        # Centred in its slot (+-0.3 s) so that utterances stay > 2 s apart, beyond the refractory period.
        offset = n * slot + (slot - clip.shape[0]) // 2 + int(rng.integers(-4800, 4801))
        stream[offset : offset + clip.shape[0]] += clip
        speech_lo, speech_hi = _speech_bounds(clip)
        events.append(
            {
                "word": row["word"],
                "start_s": round((offset + speech_lo) / RATE, 3),
                "end_s": round((offset + speech_hi) / RATE, 3),
                "speaker": row["speaker"],
                "source": f"{row['dataset']}/{row['path'].split('/', 1)[1]}",
                "license": row["license"],
            }
        )
    import soundfile

    soundfile.write(
        str(OUT / "stream.flac"), np.clip(stream, -1, 1).astype(np.float32), RATE, subtype="PCM_16"
    )
    truth = {
        "keyword": KEYWORD,
        "seconds": SECONDS,
        "seed": SEED,
        "events": events,
        "enrollment": [f"gsc_v1_words/{r['path'].split('/', 1)[1]}" for r in enroll_rows],
        "noise": [f"gsc_noise/{n}" for n in NOISE_FILES],
        "noise_dbfs": NOISE_DBFS,
    }
    (OUT / "stream_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    _write_attribution(enroll_rows, events)
    print(
        f"wrote {OUT / 'stream.flac'} ({SECONDS:.0f} s, {KEYWORD_COUNT} x {KEYWORD!r}, {len(events)} words)"
    )
    return 0


def _write_attribution(enroll_rows: list[dict[str, str]], events: list[dict[str, object]]) -> None:
    lines = [
        "# Bundled demo audio",
        "",
        "| file | source | speaker | licence |",
        "|---|---|---|---|",
        "| `happy_012c8314_0.wav` | Speech Commands v0.01, `happy/012c8314_nohash_0.wav` (re-encoded 16-bit PCM "
        "WAV, 16 kHz) | 012c8314 | CC BY 4.0 |",
    ]
    for i, row in enumerate(enroll_rows, 1):
        lines.append(
            f"| `enroll_{KEYWORD}_{i}.wav` | Speech Commands v0.01 (a speaker held out of training), "
            f"`{row['path'].split('/', 1)[1]}`, peak-normalised | {row['speaker']} | CC BY 4.0 |"
        )
    lines.append(
        "| `stream.flac`, `stream_truth.json` | a mix made by `make_stream.py` of the clips below over "
        f"Speech Commands `_background_noise_` ({', '.join(NOISE_FILES)}) | see below | "
        "CC BY-SA 4.0 (it contains FSDD clips) |"
    )
    lines += [
        "",
        "Clips in `stream.flac` (times in `stream_truth.json`):",
        "",
        "| word | source | speaker | licence |",
        "|---|---|---|---|",
    ]
    lines += [f"| {e['word']} | `{e['source']}` | {e['speaker']} | {e['license']} |" for e in events]
    lines += [
        "",
        'Speech Commands: P. Warden, "Speech Commands: A Dataset for Limited-Vocabulary Speech Recognition", 2018.',
        "Licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).",
        "Free Spoken Digit Dataset: Z. Jackson et al., CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/);",
        "the stream that contains its clips is shared under CC BY-SA 4.0 too.",
        "",
    ]
    (OUT / "ATTRIBUTION.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
