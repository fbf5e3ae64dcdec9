"""Clip filters for generated corpora: the paper's ASR filter and an embedding-outlier filter needing no ASR.

ASR filter: keep a clip only if its transcript holds exactly one word within character error rate `max_cer`
of the clip's label (the transcriber is any callable `audio -> str`).

Embedding filter: embed every clip with a trained encoder, and per word drop the clips whose cosine to the
word's centroid (of L2-normalised embeddings) falls below `median - k * MAD` (MAD scaled by 1.4826 to match a
standard deviation), and/or below a global quantile of all cosines.

    python -m training.data.filtering embedding --corpus corpora/synthetic --checkpoint runs/x/best.pt
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.audio import TARGET_RATE, load_audio
from training.data.corpus_io import write_json_atomic, write_manifest
from training.data.manifest import MANIFEST_COLUMNS, Clip, read_manifest
from training.data.windows import load_window

__all__ = [
    "FilterDecision",
    "asr_filter",
    "character_error_rate",
    "embedding_filter",
    "filter_main",
    "transcript_matches",
    "write_filtered_manifest",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Transcriber = Callable[[FloatArray], str]
Embedder = Callable[[FloatArray], np.ndarray]
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FilterDecision:
    clip: Clip
    keep: bool
    reason: str
    score: float | None = None


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance between the strings divided by the reference length (1.0 for an empty reference
    against a non-empty hypothesis, 0.0 for two empty strings)."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    previous = list(range(len(hypothesis) + 1))
    for i, ref_char in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_char in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_char != hyp_char))
        previous = current
    return previous[-1] / len(reference)


def _words(transcript: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", transcript.lower())


def transcript_matches(label: str, transcript: str, max_cer: float = 0.2) -> tuple[bool, str]:
    """Whether exactly one word of `transcript` is within `max_cer` of `label`, and why not."""
    label = label.lower().split(":")[-1]
    words = _words(transcript)
    close = [word for word in words if character_error_rate(label, word) <= max_cer]
    if len(close) == 1:
        return True, f"transcript {transcript!r} holds {close[0]!r}"
    if not close:
        return False, f"no word of transcript {transcript!r} is within CER {max_cer} of {label!r}"
    return False, f"transcript {transcript!r} holds {len(close)} words within CER {max_cer} of {label!r}"


def asr_filter(
    clips: Sequence[Clip], transcribe: Transcriber, load: Callable[[Clip], FloatArray], max_cer: float = 0.2
) -> list[FilterDecision]:
    """The paper's filter: one decision per clip, in order."""
    from tqdm import tqdm

    decisions = []
    for clip in tqdm(clips, unit="clip", desc="ASR filter", disable=len(clips) < 100):
        keep, reason = transcript_matches(clip.word, transcribe(load(clip)), max_cer)
        decisions.append(FilterDecision(clip, keep, reason))
    return decisions


def robust_floor(scores: np.ndarray, mad_k: float) -> float:
    """median - k * 1.4826 * MAD of `scores`."""
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median)))
    return median - mad_k * MAD_TO_SIGMA * mad


def embedding_filter(
    clips: Sequence[Clip],
    embeddings: np.ndarray,
    mad_k: float | None = 3.0,
    global_quantile: float | None = None,
    min_clips_per_word: int = 5,
) -> list[FilterDecision]:
    """Drop clips far from their word's centroid. `embeddings` [N, D] is row-aligned with `clips`.

    Words with fewer than `min_clips_per_word` clips are kept whole: their centroid says too little.
    """
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(clips):
        raise ValueError(
            f"embeddings must be [{len(clips)}, D] (one row per clip), got shape {vectors.shape}"
        )
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or inf")
    if mad_k is None and global_quantile is None:
        raise ValueError("give mad_k, global_quantile or both")
    if global_quantile is not None and not 0.0 < global_quantile < 1.0:
        raise ValueError(f"global_quantile must be in (0, 1), got {global_quantile}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    by_word: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(clips):
        by_word[clip.label].append(index)
    cosine = np.full(len(clips), np.nan)
    small = set()
    for word, indices in by_word.items():
        if len(indices) < min_clips_per_word:
            small.add(word)
            continue
        centroid = unit[indices].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        cosine[indices] = unit[indices] @ centroid
    scored = cosine[np.isfinite(cosine)]
    global_floor = (
        float(np.quantile(scored, global_quantile)) if global_quantile is not None and scored.size else None
    )
    decisions: list[FilterDecision] = []
    floors = {
        word: robust_floor(cosine[idx], mad_k)
        for word, idx in by_word.items()
        if word not in small and mad_k is not None
    }
    for index, clip in enumerate(clips):
        if clip.label in small:
            decisions.append(
                FilterDecision(clip, True, f"kept: only {len(by_word[clip.label])} clips of {clip.label!r}")
            )
            continue
        score = float(cosine[index])
        floor = floors.get(clip.label)
        if floor is not None and score < floor:
            reason = f"cosine {score:.3f} to the {clip.label!r} centroid < median - {mad_k} MAD = {floor:.3f}"
            decisions.append(FilterDecision(clip, False, reason, score))
        elif global_floor is not None and score < global_floor:
            reason = f"cosine {score:.3f} below the global {global_quantile} quantile {global_floor:.3f}"
            decisions.append(FilterDecision(clip, False, reason, score))
        else:
            decisions.append(FilterDecision(clip, True, f"cosine {score:.3f}", score))
    return decisions


def write_filtered_manifest(
    decisions: Sequence[FilterDecision], output: Path, report: Path | None = None
) -> int:
    """Write the kept clips as a manifest (paths relative to `output`'s folder) and a JSON report."""
    output = Path(output)
    rows = []
    for decision in decisions:
        if not decision.keep:
            continue
        clip = decision.clip
        values = {name: getattr(clip, name) for name in MANIFEST_COLUMNS if name not in ("path", "speaker")}
        # Relative to the filtered manifest's folder (with ../ where it lies outside the corpus root).
        values["path"] = Path(os.path.relpath(Path(clip.path).resolve(), output.parent.resolve())).as_posix()
        # Clip.speaker is namespaced `<dataset>:<speaker>`; the manifest holds the bare speaker.
        values["speaker"] = (
            clip.speaker.split(":", 1)[1] if clip.speaker.startswith(f"{clip.dataset}:") else clip.speaker
        )
        values["word"] = clip.word
        rows.append(values)
    kept = write_manifest(output, rows)
    if report is not None:
        dropped = [
            {
                "key": d.clip.key,
                "path": str(d.clip.path),
                "word": d.clip.word,
                "speaker": d.clip.speaker,
                "reason": d.reason,
                "score": d.score,
            }
            for d in decisions
            if not d.keep
        ]
        per_word: dict[str, int] = defaultdict(int)
        for entry in dropped:
            per_word[str(entry["word"])] += 1
        write_json_atomic(
            report,
            {
                "kept": kept,
                "dropped": len(dropped),
                "dropped_per_word": dict(per_word),
                "dropped_clips": dropped,
            },
        )
    return kept


def _checkpoint_embedder(checkpoint_path: Path) -> tuple[Embedder, float]:
    """embed(windows [N, L]) -> [N, D] with a trained encoder (the checkpoint contract of ARCHITECTURE.md)."""
    import torch

    from edge.frontend import mfcc
    from training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model()
    mean = np.asarray(checkpoint.feature_mean, dtype=np.float32)
    std = np.asarray(checkpoint.feature_std, dtype=np.float32)

    def embed(windows: FloatArray) -> np.ndarray:
        features = np.stack([(mfcc(window) - mean) / std for window in windows]).astype(np.float32)
        with torch.no_grad():
            embedded: np.ndarray = model(torch.from_numpy(features)).numpy()
            return embedded

    return embed, float(checkpoint.window_seconds)


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise ValueError(f"--transcriber must be 'module:function', got {spec!r}")
    function: Callable[..., Any] | None = getattr(importlib.import_module(module_name), attribute, None)
    if function is None or not callable(function):
        raise ValueError(f"--transcriber {spec!r}: {attribute!r} is not a callable of {module_name}")
    return function


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.data.filtering", description="Filter a generated corpus."
    )
    parser.add_argument(
        "mode",
        choices=("asr", "embedding"),
        help="asr: the paper's transcript filter; embedding: centroid outliers",
    )
    parser.add_argument(
        "--corpus", type=Path, required=True, help="corpus root holding manifest.csv (never gsc_v2_test)"
    )
    parser.add_argument(
        "--output", type=Path, help="filtered manifest (default <corpus>/manifest.filtered.csv)"
    )
    parser.add_argument(
        "--transcriber", help="asr: 'module:function' taking 16 kHz float32 audio, returning text"
    )
    parser.add_argument(
        "--max-cer", type=float, default=0.2, help="asr: character error rate allowed (default 0.2)"
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="embedding: a udkws checkpoint (training/checkpoint.py)"
    )
    parser.add_argument(
        "--mad-k",
        type=float,
        default=3.0,
        help="embedding: drop below median - k*MAD per word (default 3; <= 0 turns it off)",
    )
    parser.add_argument(
        "--global-quantile",
        type=float,
        help="embedding: also drop below this quantile of all cosines (e.g. 0.02)",
    )
    parser.add_argument(
        "--min-clips-per-word",
        type=int,
        default=5,
        help="embedding: words with fewer clips are kept whole (default 5)",
    )
    parser.add_argument(
        "--batch", type=int, default=256, help="embedding: windows per encoder call (default 256)"
    )
    return parser


def filter_main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        clips = [clip for clip in read_manifest(args.corpus) if clip.dataset != "gsc_v2_test"]
    except ValueError as error:  # ManifestError: names the file and the offending rows
        print(f"error: {error}")
        return 2
    output = args.output or args.corpus / "manifest.filtered.csv"
    if args.mode == "asr":
        if not args.transcriber:
            print("error: asr mode needs --transcriber module:function")
            return 2
        try:
            transcribe = _import_callable(args.transcriber)
        except (ValueError, ImportError) as error:
            print(f"error: {error}")
            return 2
        decisions = asr_filter(
            clips, transcribe, lambda clip: load_audio(clip.path, TARGET_RATE), args.max_cer
        )
    else:
        if args.checkpoint is None:
            print("error: embedding mode needs --checkpoint")
            return 2
        embed, window_seconds = _checkpoint_embedder(args.checkpoint)
        rows = []
        for start in tqdm(range(0, len(clips), args.batch), unit="batch", desc="embedding"):
            windows = np.stack(
                [load_window(clip, window_seconds) for clip in clips[start : start + args.batch]]
            )
            rows.append(embed(windows))
        mad_k = args.mad_k if args.mad_k > 0 else None
        decisions = embedding_filter(
            clips, np.concatenate(rows), mad_k, args.global_quantile, args.min_clips_per_word
        )
    kept = write_filtered_manifest(decisions, output, output.with_suffix(".report.json"))
    print(
        f"kept {kept} of {len(decisions)} clips -> {output} (dropped: {output.with_suffix('.report.json')})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(filter_main())
