"""Measure the enrollment take-consistency check on held-out speakers of the training corpora.

For random triples of takes of one word, the cosine of one take to the mean of the other two ("same"), and of a
take of another word to the mean of two takes ("other"); prints percentiles and, per threshold, how many good
takes it would refuse and how many wrong-word takes it would admit. Never reads gsc_v2_test.

    .venv/bin/python tests/tools/held_out_clips.py training/shipped/udkws_edge.pt > build/held_out_clips.txt
    .venv/bin/python tests/tools/take_consistency.py --clips build/held_out_clips.txt
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge.audio import load_audio  # noqa: E402
from edge.model import load_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "build/udkws_int8.tflite")
    parser.add_argument("--clips", type=Path, required=True, help="held-out clip paths, one per line")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--triples", type=int, default=400)
    args = parser.parse_args()
    encoder = load_model(args.model)
    by_word: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for line in args.clips.read_text().splitlines():
        if line.strip():
            parts = line.strip().split("/")
            by_word[(parts[-3], parts[-2])].append(line.strip())
    cache: dict[str, np.ndarray] = {}

    def embed(path: str) -> np.ndarray:
        if path not in cache:
            audio = load_audio(path if path.startswith("/") else args.data_dir / path)[
                : encoder.window_samples
            ]
            window = np.zeros(encoder.window_samples, np.float32)
            offset = (encoder.window_samples - audio.shape[0]) // 2
            window[offset : offset + audio.shape[0]] = audio
            cache[path] = encoder.embed_windows(window[None])[0]
        return cache[path]

    rng = np.random.default_rng(0)
    words = [word for word, clips in by_word.items() if len(clips) >= 3]
    same, other = [], []
    for _ in range(args.triples):
        word = words[rng.integers(len(words))]
        takes = np.stack([embed(p) for p in rng.choice(by_word[word], 3, replace=False)])
        mean = takes[1:].mean(axis=0)
        same.append(float(takes[0] @ mean / np.linalg.norm(mean)))
        stranger = words[rng.integers(len(words))]
        if stranger != word:
            mean = takes[:2].mean(axis=0)
            clip = by_word[stranger][rng.integers(len(by_word[stranger]))]
            other.append(float(embed(clip) @ mean / np.linalg.norm(mean)))
    same_a, other_a = np.array(same), np.array(other)
    for q in (1, 2, 5, 10):
        print(f"same-word take, {q}th percentile: {np.percentile(same_a, q):.3f}")
    for q in (90, 95, 98, 99):
        print(f"other-word take, {q}th percentile: {np.percentile(other_a, q):.3f}")
    for threshold in (0.3, 0.35, 0.4, 0.45, 0.5):
        print(
            f"threshold {threshold}: refuses {(same_a < threshold).mean():.1%} of same-word takes, "
            f"admits {(other_a >= threshold).mean():.1%} of other-word takes"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
