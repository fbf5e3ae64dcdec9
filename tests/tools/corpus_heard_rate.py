"""How often Whisper tiny.en hears a corpus clip's word in the clip itself: a check of alignment and filtering.

    python tests/tools/corpus_heard_rate.py corpora/speechocean762 --clips 200

Samples clips (seeded) from the manifest, transcribes each on its own and counts those whose transcript holds
the word (`training.data.asr.heard_as`: the word, a CMUdict homophone, or within CER 0.2).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from edge.audio import load_audio
from training.data.asr import WhisperAsr, heard_as
from training.data.manifest import read_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a corpus root with manifest.csv")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clips = read_manifest(args.root)
    sample = random.Random(args.seed).sample(clips, min(args.clips, len(clips)))
    asr = WhisperAsr()
    started = time.perf_counter()
    heard = 0
    misses = []
    for clip in sample:
        ok, reason = heard_as(clip.word, asr.text(load_audio(clip.path)).split())
        heard += ok
        if not ok:
            misses.append(f"{clip.word}: {reason}")
    seconds = time.perf_counter() - started
    print(
        f"{args.root}: Whisper heard the word in {heard}/{len(sample)} clips ({heard / len(sample):.1%}); "
        f"{seconds / len(sample):.2f} s a clip"
    )
    print("misses, first 15:", "; ".join(misses[:15]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
