"""The speechocean762 threshold check: per band of the sentence-pass ASR probability, how often Whisper tiny.en
hears the word again in the 1.5 s clip cut around it, transcribed alone.

    python tests/tools/speechocean_bands.py corpora/speechocean762 ../sources/speechocean762 --per-band 30

Reads the cached alignment + ASR (`<corpus>/analysis/*.json`) and the original recordings.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from edge.audio import load_audio
from training.data.asr import WhisperAsr, heard_as
from training.data.lsk import cut_centred
from training.data.speechocean import _word_rejection, heard_probability, read_kaldi_part

BANDS = ((-1.0, 1e-4), (1e-4, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("source", type=Path, help="the speechocean762 checkout")
    parser.add_argument("--per-band", type=int, default=30)
    parser.add_argument("--window-seconds", type=float, default=1.5)
    args = parser.parse_args()
    wavs = {u.utt: u.wav for u in read_kaldi_part(args.source)}
    found: dict[tuple[float, float], list[tuple[str, dict[str, float]]]] = {band: [] for band in BANDS}
    for path in sorted((args.corpus / "analysis").glob("*.json")):
        analysis = json.loads(path.read_text())
        for aligned in analysis["aligned"]:
            if _word_rejection(aligned["word"], frozenset(), 3):
                continue
            p = heard_probability(aligned["word"], aligned["start"], aligned["end"], analysis["asr"], 0.2)
            band = next(b for b in BANDS if b[0] <= p < b[1])
            found[band].append((analysis["utt"], aligned))
    asr, rng = WhisperAsr(), random.Random(0)
    length = round(args.window_seconds * 16000)
    for band, occurrences in found.items():
        sample = rng.sample(occurrences, min(args.per_band, len(occurrences)))
        heard = sum(
            heard_as(
                w["word"], asr.text(cut_centred(load_audio(wavs[utt]), w["start"], w["end"], length)).split()
            )[0]
            for utt, w in sample
        )
        print(
            f"probability in [{max(band[0], 0):.1g}, {band[1]:.1g}): {len(occurrences)} occurrences, "
            f"heard again in the cut clip {heard}/{len(sample)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
